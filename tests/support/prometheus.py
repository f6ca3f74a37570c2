"""A real Prometheus server on loopback, scraping a hotswap server under test.

The binary comes from the Debian package ``prometheus`` (``make test`` installs it when
missing: Makefile target ``prometheus``); a test that needs it and does not find it
fails, it is not skipped.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from support.server import ServerInfo

#: Scrape often: tests wait for scrapes.
SCRAPE_INTERVAL_S = 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """Starts one Prometheus per :meth:`scraping` block, with its own config and TSDB."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    @contextmanager
    def scraping(self, server: ServerInfo) -> Iterator[RunningPrometheus]:
        target = urlsplit(server.url).netloc
        with tempfile.TemporaryDirectory(prefix="prom-") as tmp:
            root = Path(tmp)
            auth = ""
            if server.api_key:
                (root / "key").write_text(server.api_key)
                auth = f"    authorization:\n      credentials_file: {root / 'key'}\n"
            (root / "prometheus.yml").write_text(
                f"global:\n  scrape_interval: {SCRAPE_INTERVAL_S}s\n"
                f"  scrape_timeout: {SCRAPE_INTERVAL_S}s\n"
                "scrape_configs:\n  - job_name: hotswap\n"
                f"{auth}    static_configs:\n      - targets: ['{target}']\n")
            port = _free_port()
            log = (root / "prometheus.log").open("wb")
            proc = subprocess.Popen(
                [self.binary, f"--config.file={root / 'prometheus.yml'}",
                 f"--storage.tsdb.path={root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT)
            try:
                running = RunningPrometheus(f"http://127.0.0.1:{port}", root / "prometheus.log")
                running.wait_ready(proc)
                yield running
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log.close()


class RunningPrometheus:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def wait_ready(self, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready in {seconds}s: {self.log.read_text()[-2000:]}")

    def _target(self) -> dict[str, object] | None:
        active = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]
        targets: list[dict[str, object]] = active["activeTargets"]
        return targets[0] if targets else None

    def wait_up(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            target = self._target()
            if target is not None and target.get("health") == "up":
                return True
            time.sleep(0.5)
        return False

    def wait_for_value(self, promql: str, expected: float, seconds: float) -> bool:
        """Until ``promql`` answers ``expected`` (scrapes land at their own pace)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.query(promql) == expected:
                return True
            time.sleep(0.3)
        return False

    def _query(self, promql: str) -> list[dict[str, object]]:
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = resp.json()
        assert body.get("status") == "success", body
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def query(self, promql: str) -> float | None:
        """A query whose answer is one series (or none): its value."""
        result = self._query(promql)
        assert len(result) <= 1, result
        if not result:
            return None
        value = result[0]["value"]
        assert isinstance(value, list)
        return float(value[1])

    def query_vector(self, promql: str, by: str = "adapter") -> dict[str, float]:
        out = {}
        for series in self._query(promql):
            metric, value = series["metric"], series["value"]
            assert isinstance(metric, dict) and isinstance(value, list)
            out[str(metric.get(by, ""))] = float(value[1])
        return out


def find_prometheus() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed: run `make prometheus` (Debian "
                           "package prometheus; make test installs it)")
    return binary

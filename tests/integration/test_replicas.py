"""The multi-replica deployment's semantics on one machine: three ``hotswap serve``
processes (real engines) share one store folder, as the pods of
deploy/k8s/overlays/multi-replica share their ReadWriteMany volume, and administer
adapters on their --admin-port as the NetworkPolicy there expects.

- an adapter uploaded through one replica is served by the others (tokens equal, and
  equal to PEFT's);
- a tag re-pointed through one is followed by the others on their next request;
- a delete through one is honoured by all;
- a replica SIGKILLed in the middle of an upload leaves the others serving and the
  store consistent (``Store.verify()``);
- each replica exports every series the endpoint picker's config reads.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from hotswap.adapters.store import Store
from hotswap.clients.archive import open_archive
from prometheus_client.parser import text_string_to_metric_families
from support import clients
from support.k8s import epp_metric_names
from support.metrics import scrape
from support.peft_ref import make_lora_adapter, peft_greedy
from support.server import ServerInfo, free_port, running_server, running_servers

pytestmark = pytest.mark.engine

PROMPT = "The best thing about Paris is"
MAX_TOKENS = 10
KEY = "replica-admin-key"


@dataclass(frozen=True)
class Replica:
    server: ServerInfo
    admin_url: str

    def ids(self, model: str, prompt: list[int]) -> list[int]:
        return clients.greedy_ids(self.server.url, model, prompt, MAX_TOKENS, api_key=KEY)

    def ctl(self, *args: str) -> str:
        done = clients.adapterctl(self.admin_url, *args, api_key=KEY)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def adapters(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replica-adapters")
    return {name: make_lora_adapter(base_model_dir, root / name, rank=8, seed=seed,
                                    target_modules=["q_proj", "v_proj", "down_proj"])
            for name, seed in (("one", 31), ("two", 32), ("big", 33))}


@pytest.fixture(scope="module")
def replicas(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[list[Replica]]:
    root = tmp_path_factory.mktemp("replicas")
    store = root / "store"
    # Small KV caches: three engines beside the session's on one machine.
    args = ["--model", str(base_model_dir), "--served-model-name", "smollm2",
            "--dtype", "float32", "--max-model-len", "512", "--max-loras", "2",
            "--memory-fraction", "0.01"]
    admin_ports = [free_port() for _ in range(3)]
    contexts = [running_server([*args, "--admin-port", str(port)], root / f"r{i}.log",
                               "smollm2", {}, store=store, api_key=KEY)
                for i, port in enumerate(admin_ports)]
    with running_servers(contexts) as servers:
        yield [Replica(s, f"http://127.0.0.1:{port}")
               for s, port in zip(servers, admin_ports, strict=True)]


@pytest.fixture(scope="module")
def prompt_ids(base_model_dir: Path) -> list[int]:
    return clients.tokenize(base_model_dir, PROMPT)


def test_admin_routes_only_on_the_admin_port(replicas: list[Replica],
                                             adapters: dict[str, Path]) -> None:
    a = replicas[0]
    public = clients.adapterctl(a.server.url, "upload", str(adapters["one"]), "--name", "x",
                                api_key=KEY)
    assert public.returncode != 0 and "admin port" in public.stderr + public.stdout
    # Reading stays on both.
    assert httpx.get(f"{a.server.url}/v1/models", headers=a.server.headers).status_code == 200


def test_upload_through_one_is_served_by_all(
        replicas: list[Replica], adapters: dict[str, Path], base_model_dir: Path,
        prompt_ids: list[int]) -> None:
    a, b, c = replicas
    a.ctl("upload", str(adapters["one"]), "--name", "shared")
    expected = peft_greedy(base_model_dir, adapters["one"], [prompt_ids], MAX_TOKENS)[0]
    assert [r.ids("shared", prompt_ids) for r in (b, c, a)] == [expected] * 3
    assert expected != b.ids("smollm2", prompt_ids)


def test_tag_repointed_through_one_is_followed_by_all(
        replicas: list[Replica], adapters: dict[str, Path], base_model_dir: Path,
        prompt_ids: list[int]) -> None:
    a, b, c = replicas
    b.ctl("upload", str(adapters["one"]), "--name", "svc", "--tag", "v1")
    b.ctl("upload", str(adapters["two"]), "--name", "svc", "--tag", "v2")
    one = peft_greedy(base_model_dir, adapters["one"], [prompt_ids], MAX_TOKENS)[0]
    two = peft_greedy(base_model_dir, adapters["two"], [prompt_ids], MAX_TOKENS)[0]
    assert one != two
    v1 = Store(a.server.store).resolve("svc:v1").digest  # type: ignore[arg-type]
    v2 = Store(a.server.store).resolve("svc:v2").digest  # type: ignore[arg-type]
    b.ctl("tag", "svc", "stable", "--version", v1)
    assert [r.ids("svc:stable", prompt_ids) for r in replicas] == [one] * 3
    # Promote through another replica: every replica's next request takes the new one.
    c.ctl("tag", "svc", "stable", "--version", v2)
    assert [r.ids("svc:stable", prompt_ids) for r in replicas] == [two] * 3
    # And roll back through the third.
    a.ctl("tag", "svc", "stable", "--version", v1)
    assert [r.ids("svc:stable", prompt_ids) for r in replicas] == [one] * 3


def test_delete_through_one_is_honoured_by_all(
        replicas: list[Replica], adapters: dict[str, Path], prompt_ids: list[int]) -> None:
    a, _, c = replicas
    a.ctl("upload", str(adapters["two"]), "--name", "doomed")
    for r in replicas:
        r.ids("doomed", prompt_ids)  # loaded in every engine
    c.ctl("delete", "doomed")
    for r in replicas:
        with pytest.raises(openai.NotFoundError):
            r.ids("doomed", prompt_ids)
        listed = httpx.get(f"{r.server.url}/v1/models", headers=r.server.headers).json()
        assert "doomed" not in {m["id"] for m in listed["data"]}


def test_picker_series_on_every_replica(replicas: list[Replica]) -> None:
    for r in replicas:
        text = scrape(r.server)
        names = {family.name for family in text_string_to_metric_families(text)}
        names |= {s.name for family in text_string_to_metric_families(text)
                  for s in family.samples}
        assert epp_metric_names() <= names, epp_metric_names() - names


def test_replica_killed_mid_upload_leaves_others_serving(
        replicas: list[Replica], adapters: dict[str, Path], base_model_dir: Path,
        prompt_ids: list[int]) -> None:
    """Runs last in this module: the third replica does not come back. The big adapter
    (3.9 MB) is cut at half, after the server has spooled part of it."""
    a, b, c = replicas
    with open_archive(adapters["big"]) as f:
        body = f.read()
    sent, release = threading.Event(), threading.Event()

    def chunks() -> Iterator[bytes]:
        half = len(body) // 2
        for i in range(0, half, 1 << 16):
            yield body[i : min(i + (1 << 16), half)]
        sent.set()
        release.wait(60)

    def upload() -> httpx.Response | httpx.HTTPError:
        try:
            return httpx.post(f"{c.admin_url}/v1/adapters", params={"name": "cut"},
                              content=chunks(), headers={
                                  "content-type": "application/octet-stream", **c.server.headers},
                              timeout=120)
        except httpx.HTTPError as exc:
            return exc

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(upload)
        assert sent.wait(60)
        # The kill lands once the server holds part of the archive (its spool file).
        wait_until(lambda: spooled(c.server.pid, c.server.store / "tmp") > 0)  # type: ignore[operator]
        assert c.server.process is not None
        os.kill(c.server.pid, signal.SIGKILL)
        assert c.server.process.wait(timeout=30) == -signal.SIGKILL
        release.set()
        assert isinstance(pending.result(timeout=60), httpx.HTTPError)
    store = Store(a.server.store)  # type: ignore[arg-type]
    assert store.verify() == []
    assert "cut" not in {entry.name for entry in store.list()}
    base = peft_greedy(base_model_dir, None, [prompt_ids], MAX_TOKENS)[0]
    assert a.ids("smollm2", prompt_ids) == base == b.ids("smollm2", prompt_ids)
    # The survivors still write: the name the dead replica never stored uploads and serves.
    b.ctl("upload", str(adapters["big"]), "--name", "cut")
    big = peft_greedy(base_model_dir, adapters["big"], [prompt_ids], MAX_TOKENS)[0]
    assert a.ids("cut", prompt_ids) == big == b.ids("cut", prompt_ids)


def spooled(pid: int, tmp: Path) -> int:
    """Bytes in the upload spool files ``pid`` holds open: anonymous files in ``tmp``,
    seen only through the process's descriptors."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith(str(tmp)):
                total += fd.stat().st_size
        except OSError:
            pass  # closed meanwhile
    return total


def wait_until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)

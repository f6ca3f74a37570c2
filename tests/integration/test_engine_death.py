"""The engine dies under a real server (its EngineCore process killed): requests in
flight get an error, not a hang, and the process exits non-zero so an orchestrator
restarts it. Its own server: the session's must live on."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from support.server import running_server, tail

pytestmark = pytest.mark.engine


def test_engine_death_fails_in_flight_requests_and_exits_nonzero(
        base_model_dir: Path, tmp_path: Path) -> None:
    args = ["--model", str(base_model_dir), "--served-model-name", "smollm2",
            "--max-model-len", "1024"]
    log = tmp_path / "server.log"
    with running_server(args, log, "smollm2", {}, store=tmp_path / "store") as server:
        engine_core = next(p for p in psutil.Process(server.pid).children(recursive=True)
                           if "EngineCore" in p.name())
        body = {"model": "smollm2", "prompt": "Tell me a long story.", "max_tokens": 900,
                "ignore_eos": True}
        answers: dict[str, Any] = {}
        streaming = threading.Event()

        def plain() -> None:
            resp = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120)
            answers["plain"] = (resp.status_code, resp.json())

        def stream() -> None:
            lines = []
            with httpx.stream("POST", f"{server.url}/v1/completions", timeout=120,
                              json={**body, "stream": True}) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        lines.append(line[6:])
                        streaming.set()
            answers["stream"] = lines

        threads = [threading.Thread(target=plain), threading.Thread(target=stream)]
        for thread in threads:
            thread.start()
        assert streaming.wait(120), tail(log)
        engine_core.kill()
        for thread in threads:
            thread.join(120)
            assert not thread.is_alive(), "a request hung after the engine died"
        code = server.process.wait(timeout=60) if server.process else None
    assert code == 1, tail(log)
    status, error = answers["plain"]
    assert status == 503 and error["error"]["code"] == "engine_unavailable", error
    events = answers["stream"]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "engine_unavailable", events[-3:]
    assert "the engine died" in log.read_text()

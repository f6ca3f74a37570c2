"""--admin-port: adapter administration answers on that port alone (403 on the public
one), reading and inference on both; the port is the accepting socket's, not a header."""

from __future__ import annotations

from pathlib import Path

import pytest
from hotswap.server.auth import Security
from hotswap.server.config import Settings
from pydantic import ValidationError
from support.app import in_process, make_app
from support.fakes import make_adapter_dir

ADMIN_PORT = 9001


async def test_admin_routes_answer_on_the_admin_port_only(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path, "a", seed=1)
    app = make_app(tmp_path, adapters=[("sql-writer", adapter)],
                   security=Security(admin_port=ADMIN_PORT))
    async with in_process(app, base_url="http://test:8000") as public:
        for method, path in (("DELETE", "/v1/adapters/sql-writer"),
                             ("PUT", "/v1/adapters/sql-writer/tags/stable"),
                             ("POST", "/v1/adapters/pull"),
                             ("POST", "/v1/adapters/sql-writer/load"),
                             ("POST", "/v1/load_lora_adapter"),
                             ("POST", "/v1/unload_lora_adapter")):
            resp = await public.request(method, path, json={})
            assert resp.status_code == 403, (method, path, resp.text)
            assert resp.json()["error"]["code"] == "admin_port_only"
        upload = await public.post("/v1/adapters", params={"name": "x"}, content=b"\0" * 64,
                                   headers={"content-type": "application/octet-stream"})
        assert upload.status_code == 403
        # A Host header naming the admin port changes nothing: the socket decides.
        resp = await public.delete("/v1/adapters/sql-writer",
                                   headers={"host": f"test:{ADMIN_PORT}"})
        assert resp.status_code == 403
        assert (await public.get("/v1/adapters")).status_code == 200
        models = (await public.get("/v1/models")).json()
        assert "sql-writer" in {m["id"] for m in models["data"]}
        admin = f"http://test:{ADMIN_PORT}"
        assert (await public.delete(f"{admin}/v1/adapters/sql-writer")).status_code == 200
        assert (await public.get(f"{admin}/v1/adapters/sql-writer")).status_code == 404
        assert (await public.get("/v1/adapters/sql-writer")).status_code == 404


async def test_without_admin_port_every_port_administers(tmp_path: Path) -> None:
    adapter = make_adapter_dir(tmp_path, "a", seed=1)
    app = make_app(tmp_path, adapters=[("sql-writer", adapter)])
    async with in_process(app, base_url="http://test:8000") as client:
        assert (await client.delete("/v1/adapters/sql-writer")).status_code == 200


def test_admin_port_must_differ_from_port() -> None:
    with pytest.raises(ValidationError, match="admin_port must differ"):
        Settings(port=8000, admin_port=8000)
    assert Settings(port=8000, admin_port=8001).admin_port == 8001

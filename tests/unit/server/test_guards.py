"""Browser and DNS-rebinding defences: Host allowlist, content types, no CORS."""

from __future__ import annotations

from pathlib import Path

from hotswap.server.auth import Security
from hotswap.server.config import Settings
from support.app import in_process, make_app
from support.fakes import make_adapter_dir, tar_gz
from support.http import assert_openai_error


async def test_host_allowlist_refuses_rebound_names(tmp_path: Path) -> None:
    app = make_app(tmp_path, security=Security(allowed_hosts=Settings().host_allowlist))
    async with in_process(app, base_url="http://127.0.0.1:8000") as c:
        assert (await c.get("/v1/models")).status_code == 200
        for host in ("localhost:8000", "LOCALHOST", "[::1]:8000", "127.0.0.1"):
            assert (await c.get("/v1/models", headers={"Host": host})).status_code == 200
        # A page on attacker.example whose name now resolves to 127.0.0.1.
        for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.evil.io", ""):
            resp = await c.get("/v1/models", headers={"Host": host})
            assert_openai_error(resp, 421, "host_not_allowed")
        assert_openai_error(await c.get("/health", headers={"Host": "evil"}), 421)


async def test_bodies_must_say_what_they_are(tmp_path: Path) -> None:
    async with in_process(make_app(tmp_path)) as c:
        body = '{"model": "fake-base", "prompt": "hi", "max_tokens": 2}'
        # What a cross-site form or fetch without preflight can send.
        for ctype in ("text/plain", "application/x-www-form-urlencoded",
                      "multipart/form-data; boundary=x", None):
            headers = {"Content-Type": ctype} if ctype else {}
            resp = await c.post("/v1/completions", content=body, headers=headers)
            assert_openai_error(resp, 415, "unsupported_media_type")
        ok = await c.post("/v1/completions", content=body,
                          headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 200, ok.text
        archive = tar_gz(make_adapter_dir(tmp_path / "u", "x"))
        for ctype in ("text/plain", "application/json"):
            resp = await c.post("/v1/adapters", params={"name": "x"}, content=archive,
                                headers={"Content-Type": ctype})
            assert_openai_error(resp, 415, "unsupported_media_type")
        assert_openai_error(await c.get("/v1/adapters/x"), 404)
        for ctype in ("application/octet-stream", "application/gzip"):
            resp = await c.post("/v1/adapters", params={"name": "x"}, content=archive,
                                headers={"Content-Type": ctype})
            assert resp.status_code == 201, resp.text
        # Routes without a body need no content type.
        assert (await c.post("/v1/adapters/x/unload")).status_code == 200


async def test_no_cors(tmp_path: Path) -> None:
    async with in_process(make_app(tmp_path)) as c:
        preflight = await c.options("/v1/adapters", headers={
            "Origin": "https://attacker.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
        resp = await c.get("/v1/models", headers={"Origin": "https://attacker.example"})
        assert resp.status_code == 200
        assert "access-control-allow-origin" not in resp.headers


async def test_cross_site_requests_can_not_change_anything(tmp_path: Path) -> None:
    app = make_app(tmp_path, adapters=[("a", make_adapter_dir(tmp_path, "a"))],
                   security=Security(allowed_hosts=Settings().host_allowlist))
    async with in_process(app, base_url="http://127.0.0.1:8000") as c:
        # fetch(url, {method: "POST", mode: "no-cors"}) from another site: no body, so
        # no content type to refuse; the browser's labels say where it comes from.
        for headers in ({"Sec-Fetch-Site": "cross-site"},
                        {"Origin": "https://attacker.example"},
                        {"Origin": "null"}):
            resp = await c.post("/v1/adapters/a/unload", headers=headers)
            assert_openai_error(resp, 403, "cross_site_refused")
            assert_openai_error(await c.delete("/v1/adapters/a", headers=headers), 403)
        assert (await c.get("/v1/adapters/a")).json()["loaded"] is True
        # The server's own origin (a UI it serves, a local tool) is fine.
        same = {"Origin": "http://localhost:8000", "Sec-Fetch-Site": "same-origin"}
        assert (await c.post("/v1/adapters/a/unload", headers=same)).status_code == 200
        # Reading is left alone: a cross-site page can not read the answer anyway.
        assert (await c.get("/v1/models", headers={"Sec-Fetch-Site": "cross-site"})
                ).status_code == 200


async def test_two_host_headers_are_refused(tmp_path: Path) -> None:
    app = make_app(tmp_path, security=Security(allowed_hosts=Settings().host_allowlist))
    async with in_process(app, base_url="http://127.0.0.1:8000") as c:
        resp = await c.get("/v1/models", headers=[("Host", "evil.example"),
                                                  ("Host", "localhost")])
        assert_openai_error(resp, 400)

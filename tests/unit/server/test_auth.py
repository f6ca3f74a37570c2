"""API keys, scopes and the per-key adapter policy, on the app in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hotswap.server.auth import KeyRing, Scope, Security, key_id, read_key_file
from hotswap.server.key_policy import KeyPolicy, load_policy
from support.app import in_process, make_app
from support.fakes import make_adapter_dir, tar_gz
from support.http import assert_openai_error

USER, ADMIN, SQL_TEAM, TEAM_ADMIN = "sk-user", "sk-admin", "sk-sql", "sk-team-admin"
ARCHIVE = {"Content-Type": "application/octet-stream"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    policy = KeyPolicy.model_validate({"keys": {
        key_id(SQL_TEAM): {"models": ["sql-*", "fake-base"], "manage": []},
        key_id(TEAM_ADMIN): {"manage": ["team-*"]},
    }})
    keys = KeyRing.of([USER, SQL_TEAM], [ADMIN, TEAM_ADMIN], policy)
    adapters = [("sql-writer", make_adapter_dir(tmp_path, "a", seed=1)),
                ("extract", make_adapter_dir(tmp_path, "b", seed=2))]
    app = make_app(tmp_path, adapters=adapters, security=Security(keys=keys))
    async with in_process(app) as c:
        yield c


def completion(model: str) -> dict[str, object]:
    return {"model": model, "prompt": "hi", "max_tokens": 3}


async def test_missing_or_wrong_key_is_401(client: httpx.AsyncClient) -> None:
    for headers, code in (({}, "missing_api_key"), (bearer("sk-nope"), "invalid_api_key"),
                          ({"Authorization": f"Basic {USER}"}, "missing_api_key")):
        for method, path in (("POST", "/v1/completions"), ("GET", "/v1/models"),
                             ("GET", "/v1/adapters"), ("DELETE", "/v1/adapters/extract")):
            resp = await client.request(method, path, headers=headers,
                                        json=completion("fake-base") if method == "POST"
                                        else None)
            assert_openai_error(resp, 401, code)
            assert resp.headers["www-authenticate"] == "Bearer"
    # Probes carry no key.
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/ready")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200


async def test_inference_key_serves_but_can_not_change_adapters(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    ok = await client.post("/v1/completions", json=completion("extract"), headers=bearer(USER))
    assert ok.status_code == 200, ok.text
    assert (await client.get("/v1/adapters", headers=bearer(USER))).status_code == 200
    data = tar_gz(make_adapter_dir(tmp_path / "u", "new"))
    refusals = [
        await client.post("/v1/adapters", params={"name": "new"}, content=data,
                          headers=bearer(USER) | ARCHIVE),
        await client.delete("/v1/adapters/extract", headers=bearer(USER)),
        await client.post("/v1/adapters/extract/unload", headers=bearer(USER)),
        await client.put("/v1/adapters/extract/tags/x", json={"digest": "0" * 64},
                         headers=bearer(USER)),
        await client.post("/v1/adapters/pull", json={"repo": "a/b"}, headers=bearer(USER)),
        await client.post("/v1/unload_lora_adapter", json={"lora_name": "extract"},
                          headers=bearer(USER)),
    ]
    for resp in refusals:
        assert_openai_error(resp, 403, "insufficient_scope")
    # Nothing changed.
    assert (await client.get("/v1/adapters/extract", headers=bearer(USER))).status_code == 200
    up = await client.post("/v1/adapters", params={"name": "new"}, content=data,
                           headers=bearer(ADMIN) | ARCHIVE)
    assert up.status_code == 201, up.text
    # An admin key has the inference scope too.
    served = await client.post("/v1/completions", json=completion("new"), headers=bearer(ADMIN))
    assert served.status_code == 200


async def test_policy_hides_other_adapters_from_a_key(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models", headers=bearer(SQL_TEAM))).json()["data"]
    assert [m["id"] for m in models] == ["fake-base", "sql-writer"]
    listed = (await client.get("/v1/adapters", headers=bearer(SQL_TEAM))).json()["data"]
    assert [a["name"] for a in listed] == ["sql-writer"]
    # Another team's adapter is a 404 for this key, as if it did not exist.
    resp = await client.post("/v1/completions", json=completion("extract"),
                             headers=bearer(SQL_TEAM))
    assert_openai_error(resp, 404, "model_not_found")
    assert_openai_error(await client.get("/v1/adapters/extract", headers=bearer(SQL_TEAM)),
                        404, "adapter_not_found")
    ok = await client.post("/v1/chat/completions", headers=bearer(SQL_TEAM), json={
        "model": "sql-writer:latest", "messages": [{"role": "user", "content": "x"}]})
    assert ok.status_code == 200, ok.text
    # Keys the policy does not name get its default: everything.
    models = (await client.get("/v1/models", headers=bearer(USER))).json()["data"]
    assert {m["id"] for m in models} == {"fake-base", "sql-writer", "extract"}


async def test_policy_limits_the_names_an_admin_key_manages(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    data = tar_gz(make_adapter_dir(tmp_path / "u", "x"))
    ok = await client.post("/v1/adapters", params={"name": "team-x"}, content=data,
                           headers=bearer(TEAM_ADMIN) | ARCHIVE)
    assert ok.status_code == 201, ok.text
    for resp in (
        await client.post("/v1/adapters", params={"name": "other"}, content=data,
                          headers=bearer(TEAM_ADMIN) | ARCHIVE),
        await client.delete("/v1/adapters/extract", headers=bearer(TEAM_ADMIN)),
        await client.delete("/v1/adapters/extract:latest", headers=bearer(TEAM_ADMIN)),
    ):
        assert_openai_error(resp, 403, "name_not_allowed")
    assert (await client.delete("/v1/adapters/team-x", headers=bearer(TEAM_ADMIN))
            ).status_code == 200


async def test_tagging_hidden_content_is_404(tmp_path: Path) -> None:
    policy = KeyPolicy.model_validate({"keys": {
        key_id(TEAM_ADMIN): {"models": ["team-*"], "manage": ["team-*"]}}})
    keys = KeyRing.of([], [ADMIN, TEAM_ADMIN], policy)
    app = make_app(tmp_path, adapters=[("secret", make_adapter_dir(tmp_path, "s", seed=9))],
                   security=Security(keys=keys))
    async with in_process(app) as c:
        secret = (await c.get("/v1/adapters/secret", headers=bearer(ADMIN))
                  ).json()["latest"]["digest"]
        steal = await c.put("/v1/adapters/team-x/tags/steal", json={"digest": secret},
                            headers=bearer(TEAM_ADMIN))
        assert_openai_error(steal, 404, "version_not_found")
        resp = await c.post("/v1/completions", json=completion("team-x:steal"),
                            headers=bearer(TEAM_ADMIN))
        assert_openai_error(resp, 404, "model_not_found")


async def test_metrics_auth_needs_the_metrics_scope(tmp_path: Path) -> None:
    # Metric labels name every adapter in use: a tenant's inference key does not get them.
    keys = KeyRing.of([USER], [ADMIN], metrics=["sk-scraper"])
    security = Security(keys=keys, metrics_auth=True)
    async with in_process(make_app(tmp_path, security=security)) as c:
        assert_openai_error(await c.get("/metrics"), 401, "missing_api_key")
        assert_openai_error(await c.get("/metrics", headers=bearer(USER)), 403,
                            "insufficient_scope")
        assert (await c.get("/metrics", headers=bearer("sk-scraper"))).status_code == 200
        assert (await c.get("/metrics", headers=bearer(ADMIN))).status_code == 200
        # A metrics key is good for nothing else.
        assert_openai_error(await c.get("/v1/models", headers=bearer("sk-scraper")), 403,
                            "insufficient_scope")


def test_hub_ids_match_the_policy_by_their_stored_name() -> None:
    from hotswap.server.auth import Principal
    from hotswap.server.key_policy import Rule

    p = Principal("k", rule=Rule(models=["org--*"]))
    for model in ("Org/Tiny-LoRA", "org/tiny-lora@v2", "org--tiny-lora", "org--x:stable"):
        assert p.may_use(model), model
    assert not p.may_use("other/tiny-lora") and not p.may_use("org-x")


def test_only_hashes_are_kept() -> None:
    ring = KeyRing.of(["sk-secret-inference"], ["sk-secret-admin"])
    assert "sk-secret" not in repr(ring) and "sk-secret" not in repr(vars(ring))
    assert ring.principal("sk-secret-admin") is not None
    assert ring.principal("sk-secret-admi") is None
    assert key_id("sk-secret-admin") == ring.principal("sk-secret-admin").key_id  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="empty"):
        KeyRing.of([""], [])


def test_key_file_lines() -> None:
    text = ("# team keys\nsk-a\n\ninference:sk-b\nadmin:sk-c\n  sk-d:with-colon  \n"
            "metrics:sk-e\n")
    assert read_key_file(text) == {Scope.INFERENCE: ["sk-a", "sk-b", "sk-d:with-colon"],
                                   Scope.ADMIN: ["sk-c"], Scope.METRICS: ["sk-e"]}
    with pytest.raises(ValueError, match="line 1: unknown scope 'root'"):
        read_key_file("root:sk-x")


def test_policy_files(tmp_path: Path) -> None:
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text(f"keys:\n  {key_id('k')}:\n    models: ['a-*']\ndefault:\n"
                         "  models: []\n  manage: []\n")
    policy = load_policy(yaml_file)
    assert policy.rule_for(key_id("k")).may_use("a-1")
    assert not policy.rule_for(key_id("other")).may_use("a-1")
    json_file = tmp_path / "p.json"
    json_file.write_text('{"keys": {"sk-raw-key": {}}}')
    with pytest.raises(ValueError, match="not a key id"):
        load_policy(json_file)
    json_file.write_text('{"keys": {}, "defaults": {}}')
    with pytest.raises(ValueError, match="defaults"):
        load_policy(json_file)
    with pytest.raises(ValueError, match=r"p\.missing"):
        load_policy(tmp_path / "p.missing")

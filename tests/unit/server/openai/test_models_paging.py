"""``GET /v1/models?limit=N&after=ID``: cursor pages that add up to the whole listing, in
its order, with key scoping applied before paging, and a cursor that survives deletes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hotswap.server.auth import KeyRing, Security, key_id
from hotswap.server.key_policy import KeyPolicy
from support.app import in_process, make_app
from support.fakes import make_adapter_dir
from support.http import assert_openai_error

BASE = "fake-base"
NAMES = ("b-two", "a-one", "c-three", "e-five", "d-four", "sql-x", "sql-y")
SQL = "sk-sql"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    adapters = [(n, make_adapter_dir(tmp_path, n, seed=i)) for i, n in enumerate(NAMES)]
    policy = KeyPolicy.model_validate({"keys": {key_id(SQL): {"models": ["sql-*"]}}})
    keys = KeyRing.of([SQL], ["sk-all"], policy)
    app = make_app(tmp_path, adapters=adapters, security=Security(keys=keys))
    async with in_process(app) as c:
        c.headers["Authorization"] = "Bearer sk-all"
        # Tags that sort before and after "latest", so a name spans a page boundary.
        for name in ("c-three", "sql-x"):
            digest = (await c.get(f"/v1/models/{name}")).json()["digest"]
            for tag in ("alpha", "zeta"):
                resp = await c.put(f"/v1/adapters/{name}/tags/{tag}", json={"digest": digest})
                assert resp.status_code == 200, resp.text
        yield c


async def page(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    resp = await client.get("/v1/models", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def walk(client: httpx.AsyncClient, limit: int) -> list[dict[str, Any]]:
    """Every page of ``limit`` from the start, checking each page's cursor fields."""
    cards: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        body = await page(client, limit=limit, **({} if after is None else {"after": after}))
        data = body["data"]
        assert len(data) <= limit
        if data:
            assert (body["first_id"], body["last_id"]) == (data[0]["id"], data[-1]["id"])
        cards += data
        if not body["has_more"]:
            return cards
        assert len(data) == limit
        after = body["last_id"]


async def test_pages_add_up_to_the_listing_in_order(client: httpx.AsyncClient) -> None:
    whole = await page(client)
    ids = [c["id"] for c in whole["data"]]
    assert not whole["has_more"]
    # The base first, then (name, tag) order: "c-three:alpha" < "c-three" (latest) < ":zeta".
    assert ids[0] == BASE
    assert ids[1:] == ["a-one", "b-two", "c-three:alpha", "c-three", "c-three:zeta",
                       "d-four", "e-five", "sql-x:alpha", "sql-x", "sql-x:zeta", "sql-y"]
    for limit in (1, 2, 3, 5, len(ids), 1000):
        assert await walk(client, limit) == whole["data"], limit


async def test_a_page_goes_on_from_a_deleted_cursor(client: httpx.AsyncClient) -> None:
    first = await page(client, limit=3)
    assert [c["id"] for c in first["data"]] == [BASE, "a-one", "b-two"]
    assert (await client.delete("/v1/adapters/b-two")).status_code in (200, 204)
    nxt = await page(client, limit=2, after=first["last_id"])
    assert [c["id"] for c in nxt["data"]] == ["c-three:alpha", "c-three"]
    # After the base model: the adapters from the first; an id past the end: nothing.
    assert (await page(client, limit=1, after=BASE))["data"][0]["id"] == "a-one"
    tail = await page(client, limit=5, after="zz")
    assert tail["data"] == [] and not tail["has_more"] and tail["last_id"] is None


async def test_keys_page_only_what_they_may_use(client: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {SQL}"}
    resp = await client.get("/v1/models", params={"limit": 2}, headers=headers)
    assert [c["id"] for c in resp.json()["data"]] == ["sql-x:alpha", "sql-x"]
    assert resp.json()["has_more"]
    resp = await client.get("/v1/models", params={"limit": 2, "after": "sql-x"},
                            headers=headers)
    assert [c["id"] for c in resp.json()["data"]] == ["sql-x:zeta", "sql-y"]
    assert not resp.json()["has_more"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"limit": "x"},
                                    {"after": ""}, {"after": "a" * 513}])
async def test_bad_paging_is_400(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    assert_openai_error(await client.get("/v1/models", params=params), 400)


async def test_pages_read_the_store_in_steps(client: httpx.AsyncClient,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """One store name per step: a page spans steps, and names the key may not use are
    skipped step after step, the same pages as with one big step."""
    from hotswap.server.openai.models import serving

    whole = (await page(client))["data"]
    sql = {"Authorization": f"Bearer {SQL}"}
    scoped = (await client.get("/v1/models", headers=sql)).json()["data"]
    monkeypatch.setattr(serving, "_PAGE_STEP", 1)
    for limit in (1, 2, 4):
        assert await walk(client, limit) == whole, limit
    resp = await client.get("/v1/models", params={"limit": 3}, headers=sql)
    assert resp.json()["data"] == scoped[:3] and resp.json()["has_more"]
    resp = await client.get("/v1/models", params={"after": "a-one"}, headers=sql)
    assert resp.json()["data"] == scoped and not resp.json()["has_more"]

"""Hub pulls through the admin API and ``--hub-autoload``, against a local fake hub.

huggingface_hub's real client downloads over real HTTP from ``support.fake_hub`` (the
routes snapshot_download uses); store and admission are real; only the engine is fake.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from hotswap.adapters.service import HubOptions
from hotswap.adapters.store import Store
from hotswap.server.engine.fake import FakeEngine
from hotswap.server.engine.interface import AdapterSpec
from support.app import app_client
from support.fake_hub import FakeHub, serving
from support.fakes import make_adapter_dir, service_options, tar_gz
from support.http import assert_openai_error

REPO = "Org/Tiny-LoRA"
NAME = "org--tiny-lora"


ARCHIVE = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.add(REPO, make_adapter_dir(tmp_path / "hub-src", "a", seed=11),
             **{"README.md": b"# card", "training_args.bin": b"not for us",
                # A merged model beside the adapter, over the 1 MiB cap: never fetched.
                "model.safetensors": b"\0" * (2 << 20),
                "adapter_model[ema].safetensors": b"glob characters in a name"})
    fake.add("org/other", make_adapter_dir(tmp_path / "hub-src", "b", seed=12))
    fake.add("org/pickled", make_adapter_dir(tmp_path / "hub-src", "c", seed=13))
    pickled = fake.repos["org/pickled"].files
    pickled["adapter_model.bin"] = pickled.pop("adapter_model.safetensors")
    with serving(fake):
        yield fake


class Server:
    def __init__(self, client: httpx.AsyncClient, engine: FakeEngine, store: Path) -> None:
        self.client, self.engine, self.store = client, engine, store


@pytest.fixture
def hub_options(hub: FakeHub) -> HubOptions:
    return HubOptions(allow=("org",), endpoint=hub.url)


@pytest.fixture
async def server(tmp_path: Path, hub_options: HubOptions) -> AsyncIterator[Server]:
    engine = FakeEngine()
    options = replace(service_options(tmp_path), hub=hub_options)
    async with app_client(tmp_path, engine, options=options) as client:
        yield Server(client, engine, tmp_path / "store")


def age(store: Path, name: str, seconds: float = 600, tag: str = "latest") -> None:
    """Make the hub cache's record of ``name:tag`` look last used ``seconds`` ago (refs used
    in the last two minutes are never evicted)."""
    record = store / "hub" / f"{name}@{tag}"
    when = record.stat().st_mtime - seconds
    os.utime(record, (when, when))


def versions(store: Path) -> set[str]:
    return {p.name for p in (store / "versions").iterdir()}


def pull(server: Server, repo: str, **body: object) -> asyncio.Task[httpx.Response]:
    return asyncio.ensure_future(
        server.client.post("/v1/adapters/pull", json={"repo": repo, **body}))


# --- pull --------------------------------------------------------------------------------


async def test_pull_stores_pinned_commit_and_serves(server: Server, hub: FakeHub) -> None:
    resp = await pull(server, REPO)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    commit = hub.repos[REPO].commit
    assert body["name"] == NAME and body["tag"] == "latest"
    assert body["version"]["source"] == f"hub:{REPO}@{commit}"
    assert body["version"]["peft_type"] == "LORA"
    # Only the adapter files were fetched: not the README, never the pickle.
    stored = Store(server.store).resolve(NAME)
    assert sorted(f.path for f in stored.files) == ["adapter_config.json",
                                                    "adapter_model.safetensors"]
    served = await server.client.post("/v1/completions",
                                      json={"model": NAME, "prompt": "x", "max_tokens": 40})
    assert served.status_code == 200 and served.json()["choices"][0]["text"].startswith(NAME)
    # The repo id itself is a model id too, without a second download.
    downloads = hub.downloads[REPO]
    by_repo = await server.client.post("/v1/completions",
                                       json={"model": REPO, "prompt": "x", "max_tokens": 4})
    assert by_repo.status_code == 200, by_repo.text
    assert hub.downloads[REPO] == downloads


async def test_pull_revision_name_and_tag(server: Server, hub: FakeHub) -> None:
    repo = hub.repos["org/other"]
    repo.refs["v1"] = repo.commit
    resp = await pull(server, "org/other", revision="v1", name="other", tag="stable")
    assert resp.status_code == 201, resp.text
    assert resp.json()["version"]["source"] == f"hub:org/other@{repo.commit}"
    info = (await server.client.get("/v1/adapters/other")).json()
    assert set(info["tags"]) == {"stable"}


@pytest.mark.parametrize(("repo", "status", "code"), [
    ("nobody/secret", 403, "hub_repo_not_allowed"),
    ("org/missing", 404, "hub_repo_not_found"),
    ("org/other@no-such-branch", 404, "hub_repo_not_found"),
    ("not a repo", 400, "invalid_hub_repo"),
    ("org/../etc", 400, "invalid_hub_repo"),
    ("org/a--b", 400, "invalid_hub_repo"),  # the hub's own finer rules
    ("org/name-", 400, "invalid_hub_repo"),
    ("org/name.git", 400, "invalid_hub_repo"),
    ("org/pickled", 422, "pickle_refused"),
])
async def test_pull_refusals_store_nothing(server: Server, hub: FakeHub, repo: str,
                                           status: int, code: str) -> None:
    before = versions(server.store)
    assert_openai_error(await pull(server, repo), status, code)
    assert versions(server.store) == before
    assert not list((server.store / "tmp").iterdir())
    assert hub.downloads["org/pickled"] == 0  # refused from the listing, never fetched


async def test_no_allowlist_refuses_every_pull(tmp_path: Path, hub: FakeHub) -> None:
    options = replace(service_options(tmp_path), hub=HubOptions(endpoint=hub.url))
    async with app_client(tmp_path, options=options) as c:
        resp = await c.post("/v1/adapters/pull", json={"repo": REPO})
        assert_openai_error(resp, 403, "hub_repo_not_allowed")
        assert "--hub-allow" in resp.json()["error"]["message"]


async def test_gated_repo_is_access_denied(server: Server, hub: FakeHub) -> None:
    hub.repos["org/other"].gated = True
    assert_openai_error(await pull(server, "org/other"), 403, "hub_access_denied")


async def test_download_breaking_off_stores_nothing(server: Server, hub: FakeHub) -> None:
    hub.truncate.add((REPO, "adapter_model.safetensors"))
    before = versions(server.store)
    resp = await pull(server, REPO)
    assert_openai_error(resp, 502, "hub_unavailable")
    assert versions(server.store) == before
    assert not list((server.store / "tmp").iterdir())  # staging removed
    assert_openai_error(await server.client.get(f"/v1/adapters/{NAME}"), 404,
                        "adapter_not_found")
    # The hub recovers: the same pull now works.
    hub.truncate.clear()
    assert (await pull(server, REPO)).status_code == 201


async def test_stream_reports_progress_then_result(server: Server) -> None:
    resp = await pull(server, REPO, stream=True)
    assert resp.status_code == 201
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in resp.text.splitlines()]
    assert events[0]["status"] == "pulling" and events[0]["repo"] == REPO
    assert events[-1]["status"] == "success" and events[-1]["name"] == NAME
    downloading = [e for e in events if e["status"] == "downloading"]
    assert downloading and downloading[-1]["completed"] == downloading[-1]["total"] > 0


async def test_stream_failure_is_an_error_line(server: Server, hub: FakeHub) -> None:
    hub.truncate.add((REPO, "adapter_model.safetensors"))
    resp = await pull(server, REPO, stream=True)
    last = json.loads(resp.text.splitlines()[-1])
    assert last["status"] == "error" and last["error"]["code"] == "hub_unavailable"
    # Refusals known before any download keep their own status, streaming or not.
    assert_openai_error(await pull(server, "nobody/x", stream=True), 403,
                        "hub_repo_not_allowed")


async def test_concurrent_identical_pulls_download_once(server: Server, hub: FakeHub
                                                        ) -> None:
    hub.delay_s = 0.3  # every file takes a while: the pulls overlap
    # Hub ids are case-insensitive: these are one repo, one name, one pull.
    spellings = [REPO, REPO.lower(), REPO.upper(), REPO, REPO.lower()]
    results = await asyncio.gather(*(pull(server, repo) for repo in spellings))
    assert [r.status_code for r in results] == [201] * 5
    assert len({r.json()["version"]["digest"] for r in results}) == 1
    assert hub.downloads[REPO] == 2  # config + weights, once


# --- autoload ----------------------------------------------------------------------------


async def test_autoload_off_is_model_not_found(tmp_path: Path, hub: FakeHub) -> None:
    options = replace(service_options(tmp_path),
                      hub=HubOptions(allow=("org",), endpoint=hub.url))
    async with app_client(tmp_path, options=options) as c:
        resp = await c.post("/v1/completions", json={"model": REPO, "prompt": "x"})
        assert_openai_error(resp, 404, "model_not_found")
    assert hub.downloads[REPO] == 0


async def test_autoload_single_flight(tmp_path: Path, hub: FakeHub) -> None:
    hub.delay_s = 0.3
    engine = FakeEngine()
    loads = 0
    add = engine.add_adapter

    async def counting_add(spec: AdapterSpec) -> None:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)  # like a real engine: loading yields to the loop
        await add(spec)

    engine.add_adapter = counting_add  # type: ignore[method-assign]

    options = HubOptions(allow=(REPO.lower(),), autoload=True, endpoint=hub.url)
    async with app_client(tmp_path, engine,
                          options=replace(service_options(tmp_path), hub=options)) as c:
        # Validated before resolved: requests refused anyway download nothing.
        for bad in ({"suffix": "y"}, {"max_tokens": 10_000}, {"prompt": [1 << 30]}):
            resp = await c.post("/v1/completions", json={"model": REPO, "prompt": "x", **bad})
            assert_openai_error(resp, 400)
        resp = await c.post("/v1/chat/completions", json={
            "model": REPO, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]})
        assert_openai_error(resp, 400, "unsupported_parameter")
        assert hub.downloads[REPO] == 0 and loads == 0
        body = {"model": REPO, "prompt": "x", "max_tokens": 40}
        results = await asyncio.gather(*(c.post("/v1/completions", json=body)
                                         for _ in range(6)))
        assert [r.status_code for r in results] == [200] * 6, results[0].text
        assert {r.json()["choices"][0]["text"][:len(NAME)] for r in results} == {NAME}
        assert hub.downloads[REPO] == 2  # one download ...
        assert loads == 1  # ... and one engine load
        # Not allowed: never pulled, whatever autoload says.
        resp = await c.post("/v1/completions", json={"model": "org/other", "prompt": "x"})
        assert_openai_error(resp, 404, "model_not_found")
        assert hub.downloads["org/other"] == 0


# --- the disk budget ---------------------------------------------------------------------


async def test_cache_budget_evicts_least_recently_used_pull(tmp_path: Path, hub: FakeHub
                                                           ) -> None:
    files = hub.repos[REPO].files
    one = len(files["adapter_model.safetensors"]) + len(files["adapter_config.json"])
    options = HubOptions(allow=("org",), autoload=True, endpoint=hub.url,
                         cache_bytes=int(one * 1.5))  # room for one pull, not two
    store = tmp_path / "store"
    # No grace period: evicted versions nothing uses go at once (the next test keeps one).
    service = replace(service_options(tmp_path), hub=options, gc_grace_s=0)
    async with app_client(tmp_path, options=service) as c:
        up = await c.post("/v1/adapters", params={"name": "mine"},
                          content=tar_gz(make_adapter_dir(tmp_path / "u", "mine", seed=5)),
                          headers=ARCHIVE)
        assert up.status_code == 201
        first = await c.post("/v1/adapters/pull", json={"repo": REPO})
        assert first.status_code == 201
        second = await c.post("/v1/adapters/pull", json={"repo": "org/other"})
        assert second.status_code == 201
        # Both were used just now: over budget, but neither may go yet.
        assert (await c.get(f"/v1/adapters/{NAME}")).status_code == 200
        age(store, NAME)
        third = await c.post("/v1/adapters/pull", json={"repo": "org/other"})
        assert third.status_code == 201
        # The older pull went (ref and version); the upload stays whatever the budget.
        assert_openai_error(await c.get(f"/v1/adapters/{NAME}"), 404, "adapter_not_found")
        assert first.json()["version"]["digest"] not in versions(store)
        assert (await c.get("/v1/adapters/mine")).status_code == 200
        assert (await c.get("/v1/adapters/org--other")).status_code == 200
        # Asked for again: autoload pulls it back, and now org/other is the older one.
        age(store, "org--other")
        again = await c.post("/v1/completions", json={"model": REPO, "prompt": "x"})
        assert again.status_code == 200, again.text
        assert hub.downloads[REPO] == 4
        assert_openai_error(await c.get("/v1/adapters/org--other"), 404,
                            "adapter_not_found")
        assert (await c.get("/v1/adapters/mine")).status_code == 200


async def test_evicted_pull_keeps_its_files_for_the_grace_period(tmp_path: Path,
                                                                 hub: FakeHub) -> None:
    options = HubOptions(allow=("org",), endpoint=hub.url, cache_bytes=0)
    async with app_client(tmp_path, options=replace(service_options(tmp_path), hub=options)) as c:
        first = (await c.post("/v1/adapters/pull", json={"repo": REPO})).json()
        age(tmp_path / "store", NAME)
        assert (await c.post("/v1/adapters/pull", json={"repo": "org/other"})
                ).status_code == 201
        # The ref went at once; the files stay (a request here or on another replica
        # may have resolved it just before), their clock started by the eviction's gc.
        assert_openai_error(await c.get(f"/v1/adapters/{NAME}"), 404, "adapter_not_found")
        digest = first["version"]["digest"]
        store = Store(tmp_path / "store")
        assert digest in versions(store.root) and digest in store.orphaned()
        assert store.gc() == []
        assert store.gc(grace_s=0) == [digest]


async def test_hand_made_names_can_not_take_a_pulled_name(tmp_path: Path, hub: FakeHub
                                                         ) -> None:
    """Names with '--' hold hub pulls only: no upload, import or tag by hand can put
    other content under them, so 'org/repo' can never be answered by someone else's."""
    options = HubOptions(allow=("org",), endpoint=hub.url, cache_bytes=0)
    async with app_client(tmp_path, options=replace(service_options(tmp_path), hub=options)) as c:
        pulled = (await c.post("/v1/adapters/pull", json={"repo": REPO})).json()
        up = await c.post("/v1/adapters", params={"name": NAME},
                          content=tar_gz(make_adapter_dir(tmp_path / "u", "x", seed=6)),
                          headers=ARCHIVE)
        assert_openai_error(up, 400, "invalid_name")
        assert "reserved for hub pulls" in up.json()["error"]["message"]
        mine = await c.post("/v1/adapters", params={"name": "mine"},
                            content=tar_gz(make_adapter_dir(tmp_path / "u", "y", seed=7)),
                            headers=ARCHIVE)
        assert mine.status_code == 201
        digest = mine.json()["version"]["digest"]
        for name, tag in ((NAME, "latest"), (NAME, "v2"), ("other--x", "latest")):
            resp = await c.put(f"/v1/adapters/{name}/tags/{tag}", json={"digest": digest})
            assert_openai_error(resp, 400, "invalid_name")
        # A pull may use a '--' name only if it is its repo's own.
        stolen = await c.post("/v1/adapters/pull", json={"repo": "org/other", "name": NAME})
        assert_openai_error(stolen, 400, "invalid_name")
        own = await c.post("/v1/adapters/pull", json={"repo": REPO, "name": NAME, "tag": "b"})
        assert own.status_code == 201, own.text
        info = (await c.get(f"/v1/adapters/{NAME}")).json()
        assert info["tags"] == {"latest": pulled["version"]["digest"],
                                "b": pulled["version"]["digest"]}


async def test_hub_id_is_never_answered_by_a_non_pull(tmp_path: Path, hub: FakeHub) -> None:
    """A store from before '--' names were reserved may hold an upload named like a
    pull: it keeps its own name, but the hub id only ever means the hub."""
    from hotswap.adapters.service import AdapterService

    store = tmp_path / "store"
    legacy = await AdapterService.open(service_options(tmp_path))
    made = await legacy.import_dir("legacy", make_adapter_dir(tmp_path / "u", "z", seed=8))
    (store / "refs" / NAME).mkdir()
    (store / "refs" / NAME / "latest").write_text(made.digest + "\n")  # as an old upload did

    async def complete(c: httpx.AsyncClient, model: str) -> httpx.Response:
        return await c.post("/v1/completions", json={"model": model, "prompt": "x"})

    off = replace(service_options(tmp_path), hub=HubOptions(endpoint=hub.url))
    async with app_client(tmp_path, options=off) as c:
        assert (await complete(c, NAME)).status_code == 200  # its own name still serves
        for model in (REPO, REPO.lower(), f"{REPO}@main"):
            assert_openai_error(await complete(c, model), 404, "model_not_found")
    allowed = replace(off, hub=HubOptions(allow=("org",), endpoint=hub.url))
    async with app_client(tmp_path, options=allowed) as c:
        assert_openai_error(await complete(c, REPO), 404, "model_not_found")  # not a pull
    autoload = replace(off, hub=HubOptions(allow=("org",), autoload=True, endpoint=hub.url))
    async with app_client(tmp_path, options=autoload) as c:
        served = await complete(c, REPO)
        assert served.status_code == 200, served.text
        assert hub.downloads[REPO] == 2  # the hub's own, pulled over the old upload
        assert Store(store).resolve(NAME).digest != made.digest
    # Once pulled, the hub id resolves again without autoload, while the hub allows it.
    async with app_client(tmp_path, options=allowed) as c:
        assert (await complete(c, REPO)).status_code == 200
    async with app_client(tmp_path, options=off) as c:
        assert_openai_error(await complete(c, REPO), 404, "model_not_found")


# --- names and settings ------------------------------------------------------------------


def test_hub_ref_parsing_and_default_name() -> None:
    from hotswap.adapters.errors import InvalidHubRepo
    from hotswap.adapters.sources.hub import HubPolicy, HubRef

    ref = HubRef.parse("Org/My_LoRA.v2@refs/pr/3")
    assert (ref.repo_id, ref.revision, ref.default_name) == ("Org/My_LoRA.v2", "refs/pr/3",
                                                             "org--my_lora.v2")
    assert HubRef.parse("org/x@v1", revision="main").revision == "main"
    for bad in ("org", "/x", "org/x/y", "org/x@../../etc", "org/x@", "org/ x"):
        if bad.endswith("@"):
            assert HubRef.parse(bad).revision == "main"  # empty revision: the default
            continue
        with pytest.raises(InvalidHubRepo):
            HubRef.parse(bad)
    with pytest.raises(InvalidHubRepo, match="pass a name"):
        _ = HubRef.parse("o" * 40 + "/" + "n" * 40).default_name
    policy = HubPolicy(("SomeOrg", "other/one"))
    assert policy.permits("someorg/anything") and policy.permits("Other/One")
    assert not policy.permits("other/two") and not HubPolicy().permits("a/b")
    assert HubPolicy(("*",)).permits("a/b")


def test_hub_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from hotswap.server.config import Settings

    monkeypatch.setenv("HOTSWAP_HUB_ALLOW", "someorg, other/one ,*")
    monkeypatch.setenv("HOTSWAP_ADAPTER_CACHE_BYTES", "500MB")
    settings = Settings()
    assert settings.hub_allow == ["someorg", "other/one", "*"]
    assert settings.adapter_cache_bytes == 500_000_000
    assert Settings(adapter_cache_bytes="2GiB").adapter_cache_bytes == 2 << 30
    with pytest.raises(ValueError, match="expected 'owner/name'"):
        Settings(hub_allow=["some org"])
    with pytest.raises(ValueError):
        Settings(adapter_cache_bytes="lots")


async def test_eviction_spares_a_ref_re_pointed_meanwhile(
        tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The victims are chosen from a snapshot; a pull landing on a chosen ref before it
    is removed (another thread, another replica) must survive, with its version."""
    from hotswap.adapters import hub_cache
    from hotswap.adapters.service import AdapterService
    from hotswap.adapters.sources.hub import HubRef
    from support.fakes import LIMITS, TINY_SPEC

    store = tmp_path / "store"
    options = replace(service_options(tmp_path),
                      hub=HubOptions(allow=("org",), endpoint=hub.url, cache_bytes=0))
    registry = await AdapterService.open(options)
    await registry.pull(HubRef.parse(REPO))
    age(store, NAME)
    choose = hub_cache.victims

    repull = f"hub:{REPO}@{'f' * 40}"

    def choose_then_repull(*args: object, **kwargs: object) -> list[hub_cache.CachedRef]:
        chosen = choose(*args, **kwargs)  # type: ignore[arg-type]
        assert [c.name for c in chosen] == [NAME]
        # Another replica pulls a new commit of the repo under the same name meanwhile.
        Store(store).add(make_adapter_dir(tmp_path / "up", "u", seed=9), name=NAME,
                         tag="latest", source=repull, spec=TINY_SPEC, limits=LIMITS)
        return chosen

    monkeypatch.setattr(hub_cache, "victims", choose_then_repull)
    await registry.pull(HubRef.parse("org/other"))
    entry = Store(store).entry(NAME)
    assert entry is not None and entry.latest is not None
    assert entry.latest.source == repull
    assert Store(store).verify() == []


async def test_a_pulls_stored_name_obeys_the_current_allowlist(tmp_path: Path,
                                                               hub: FakeHub) -> None:
    allowed = replace(service_options(tmp_path), hub=HubOptions(allow=("org",),
                                                                endpoint=hub.url))
    async with app_client(tmp_path, options=allowed) as c:
        assert (await c.post("/v1/adapters/pull", json={"repo": REPO})).status_code == 201
        ok = await c.post("/v1/completions", json={"model": NAME, "prompt": "x"})
        assert ok.status_code == 200, ok.text
    # Restarted with another allowlist on the same store: neither spelling answers.
    other = replace(allowed, hub=HubOptions(allow=("someoneelse",), endpoint=hub.url))
    async with app_client(tmp_path, options=other) as c:
        for model in (NAME, REPO):
            resp = await c.post("/v1/completions", json={"model": model, "prompt": "x"})
            assert_openai_error(resp, 404, "model_not_found")

"""``POST /v1/adapters/pull`` with a ``source``: what is refused before any network
traffic (no object storage runs here; none is needed to refuse these), and the settings
behind S3 pulls and watched sources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from hotswap.adapters.errors import InvalidS3Url
from hotswap.adapters.sources.s3 import S3Policy, S3Ref
from support.app import app_client
from support.fakes import service_options
from support.http import assert_openai_error


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[httpx.AsyncClient]:
    # Nowhere to connect: a request that got past the checks would fail with 502, not
    # the statuses asserted here.
    for var, value in {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
                       "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_CONFIG_FILE": "/dev/null",
                       "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    options = replace(service_options(tmp_path), s3_allow=("team-bucket/adapters",))
    async with app_client(tmp_path, options=options) as c:
        yield c


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"source": "s3://other-bucket/x"}, 403, "s3_not_allowed"),
    ({"source": "s3://team-bucket/adapters-old/x"}, 403, "s3_not_allowed"),  # by component
    ({"source": "s3://team-bucket/x"}, 403, "s3_not_allowed"),
    ({"source": "s3://Team_Bucket/x"}, 400, "invalid_s3_url"),
    ({"source": "s3://team-bucket/adapters/a/../b"}, 400, "invalid_s3_url"),
    ({"source": "s3://team-bucket/adapters/a@v1"}, 400, "invalid_s3_url"),
    ({"source": "s3://team-bucket/adapters/Bad Name"}, 400, "invalid_s3_url"),
    ({"source": "s3://team-bucket/adapters/x", "name": "a--b"}, 400, "invalid_name"),
    ({"source": "s3://team-bucket/adapters/x", "tag": "no tags"}, 400, "invalid_name"),
    ({"source": "s3://team-bucket/adapters/x", "revision": "main"}, 400, None),
    ({"source": "ftp://somewhere/x"}, 400, None),
    ({"source": "s3://team-bucket/adapters/x", "repo": "org/x"}, 400, None),
    ({}, 400, None),
    ({"source": "s3://team-bucket/adapters/x", "bucket_region": "eu"}, 400, None),
])
async def test_refused_before_any_download(client: httpx.AsyncClient, body: dict[str, str],
                                           status: int, code: str | None) -> None:
    resp = await client.post("/v1/adapters/pull", json=body)
    assert_openai_error(resp, status, code)


async def test_allowed_pull_reaches_object_storage(client: httpx.AsyncClient) -> None:
    """Past the checks, the pull really goes out (to a closed port here: 502)."""
    resp = await client.post("/v1/adapters/pull",
                             json={"source": "s3://team-bucket/adapters/sql-lora"})
    assert_openai_error(resp, 502, "s3_unavailable")
    assert "team-bucket" in resp.json()["error"]["message"]


async def test_hf_source_is_a_hub_repo(client: httpx.AsyncClient) -> None:
    # The hub allowlist is empty here: refused as a hub pull, so it was parsed as one.
    resp = await client.post("/v1/adapters/pull", json={"source": "hf://org/x@v2"})
    assert_openai_error(resp, 403, "hub_repo_not_allowed")


def test_s3_refs_and_policy() -> None:
    ref = S3Ref.parse("s3://bucket/team/Sql-LoRA/")
    assert (ref.bucket, ref.prefix, ref.default_name) == ("bucket", "team/Sql-LoRA",
                                                           "sql-lora")
    assert str(ref) == "s3://bucket/team/Sql-LoRA"
    with pytest.raises(InvalidS3Url, match="pass a name"):
        _ = S3Ref.parse("s3://bucket").default_name
    policy = S3Policy(("bucket/team",))
    assert policy.permits(ref) and policy.permits(S3Ref.parse("s3://bucket/team"))
    assert not policy.permits(S3Ref.parse("s3://bucket/team2/x"))
    assert not policy.permits(S3Ref.parse("s3://bucket"))
    assert S3Policy(("bucket",)).permits(S3Ref.parse("s3://bucket"))


def test_source_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hotswap.server.config import Settings

    monkeypatch.setenv("HOTSWAP_S3_ALLOW", "s3://one/a/, two")
    monkeypatch.setenv("HOTSWAP_WATCH", f"{tmp_path},s3://three/w")
    settings = Settings()
    assert settings.s3_allow == ["one/a", "two"]
    assert settings.watch == [str(tmp_path), "s3://three/w"]
    assert settings.watch_interval == 30
    with pytest.raises(ValueError, match="bucket name"):
        Settings(s3_allow=["Bad_Bucket"])
    with pytest.raises(ValueError, match="not a directory"):
        Settings(watch=[str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="twice"):
        Settings(watch=["s3://three/w", "s3://three/w"])
    with pytest.raises(ValueError):
        Settings(watch_interval=0)

"""Hostile archives over HTTP: each is a 4xx in OpenAI format, and the server keeps
answering /health while it handles them (a 128 KiB pax header froze it for 16 s)."""

from __future__ import annotations

import asyncio
import gzip
import struct
import tarfile
import time
from pathlib import Path

import pytest
from support.app import app_client
from support.http import assert_openai_error

ARCHIVE = {"Content-Type": "application/octet-stream"}


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _member(name: str, kind: bytes, data: bytes) -> bytes:
    return _header(name, kind, len(data)) + data + b"\0" * (-len(data) % 512)


def pax_bomb() -> bytes:
    return gzip.compress(_member("././@PaxHeader", tarfile.XHDTYPE, b"1" * (128 << 10))
                         + b"\0" * 1024)


def gnu_long_name() -> bytes:
    return gzip.compress(_member("././@LongLink", tarfile.GNUTYPE_LONGNAME, b"a" * (16 << 20))
                         + b"\0" * 1024, 1)


def zip_directory_bomb() -> bytes:
    # An end-of-central-directory record claiming 60,000 entries in a 1 GiB directory.
    return b"PK\x03\x04" + b"\0" * 26 + struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, 60000, 60000, 1 << 30, 0, 0)


def deep_config() -> bytes:
    config = ("[" * 100_000 + "]" * 100_000).encode()
    return gzip.compress(_member("adapter_config.json", tarfile.REGTYPE, config)
                         + b"\0" * 1024)


def long_member_name() -> bytes:
    name = "a" * 300
    info = tarfile.TarInfo(name)
    info.size = 1
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"x" + b"\0" * 511
                         + b"\0" * 1024)


@pytest.mark.parametrize("make, status", [
    (pax_bomb, 400), (gnu_long_name, 400), (zip_directory_bomb, 413), (deep_config, 422),
    (long_member_name, 400),
])
async def test_hostile_archive_is_a_4xx_and_health_keeps_answering(
    tmp_path: Path, make: object, status: int
) -> None:
    data = make()  # type: ignore[operator]
    async with app_client(tmp_path) as c:
        upload = asyncio.create_task(c.post("/v1/adapters", params={"name": "evil"},
                                            content=data, headers=ARCHIVE))
        slowest = 0.0
        while not upload.done():
            started = time.monotonic()
            assert (await c.get("/health")).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.01)
        assert slowest < 1.0
        resp = await upload
        assert 400 <= resp.status_code < 500
        assert_openai_error(resp, status)
        assert_openai_error(await c.get("/v1/adapters/evil"), 404)

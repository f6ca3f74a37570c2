"""Upload source: tar / tar.gz / zip extraction with path safety and byte caps."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from adapter_fixtures import (
    ARCHIVE_FORMATS,
    MakeLora,
    extract,
    tar_bytes,
    tar_member,
    tar_of_dir,
    zip_bytes,
    zip_of_dir,
)
from adapter_fixtures import refused as refusal
from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec
from hotswap.adapters.sources.upload import extract_archive
from hotswap.adapters.store import Store


class TrickleStream:
    """A network-like stream: short reads, and records the largest read asked for."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.largest_request = 0

    def read(self, size: int = -1, /) -> bytes:
        assert size >= 0, "the whole upload must never be read at once"
        self.largest_request = max(self.largest_request, size)
        return self._data.read(min(size, 4096))


def refused(data: bytes, dest: Path, limits: AdmissionLimits | None = None) -> str:
    return refusal(data, dest, limits).code


# --- accepted archives -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(ARCHIVE_FORMATS))
def test_archive_upload_end_to_end(
    tmp_path: Path,
    fmt: str,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
) -> None:
    src = make_lora(tmp_path / "src")
    stream = TrickleStream(ARCHIVE_FORMATS[fmt](src))
    store = Store(tmp_path / "store")
    with store.staging() as staged:
        extract_archive(stream, staged, limits)
        manifest = store.add(staged, name="up", source="upload", spec=spec, limits=limits)
    assert stream.largest_request <= 1 << 20  # streamed in chunks, never read whole
    stored = store.path(manifest)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (stored / name).read_bytes() == (src / name).read_bytes()
    assert os.listdir(tmp_path / "store" / "tmp") == []


def test_single_top_level_dir_is_hoisted(tmp_path: Path, dest: Path, make_lora: MakeLora) -> None:
    src = make_lora(tmp_path / "my-adapter")
    (src / "my-adapter").mkdir()  # a child with the same name as its parent
    (src / "my-adapter" / "x").write_text("x")
    extract(tar_of_dir(src, arcname="my-adapter"), dest)
    assert sorted(os.listdir(dest)) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "my-adapter",
    ]
    assert (dest / "my-adapter" / "x").read_text() == "x"


# --- unsafe members ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../evil", "a/../../evil", "/tmp/evil-abs", "C:/evil", "a\\..\\evil"]
)
def test_tar_path_traversal_is_refused(tmp_path: Path, dest: Path, name: str) -> None:
    data = tar_bytes([tar_member("adapter_config.json", b"{}"), tar_member(name)])
    assert refused(data, dest) == "unsafe_path"
    assert not (dest.parent / "evil").exists()
    assert not Path("/tmp/evil-abs").exists()
    assert [p.name for p in tmp_path.rglob("*evil*")] == []


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE]
)
def test_tar_links_and_devices_are_refused(dest: Path, kind: bytes) -> None:
    info, _ = tar_member("adapter_model.safetensors", kind=kind)
    info.linkname = "/etc/passwd"
    data = tar_bytes([tar_member("adapter_config.json", b"{}"), (info, None)])
    assert refused(data, dest) == "unsafe_path"
    assert not (dest / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "x/../../evil"])
def test_zip_path_traversal_is_refused(tmp_path: Path, dest: Path, name: str) -> None:
    # ZipInfo keeps names as given; zipfile.extract would sanitize, we refuse instead.
    data = zip_bytes([("adapter_config.json", b"{}", None), (name, b"x", None)])
    assert refused(data, dest) == "unsafe_path"
    assert [p.name for p in tmp_path.rglob("*evil*")] == []


def test_zip_symlink_member_is_refused(dest: Path) -> None:
    data = zip_bytes([("adapter_model.safetensors", b"/etc/passwd", stat.S_IFLNK | 0o777)])
    assert refused(data, dest) == "unsafe_path"


def test_duplicate_member_is_refused(dest: Path) -> None:
    data = tar_bytes([tar_member("a.json", b"1"), tar_member("a.json", b"2")])
    assert refused(data, dest) == "invalid_archive"


# --- damaged or foreign input ------------------------------------------------------------


def test_not_an_archive_is_refused(dest: Path) -> None:
    assert refused(b"just some bytes" * 100, dest) == "invalid_archive"
    assert refused(b"", dest) == "invalid_archive"


def test_truncated_tar_gz_is_refused(tmp_path: Path, dest: Path, make_lora: MakeLora) -> None:
    data = tar_of_dir(make_lora(tmp_path / "src"))
    assert refused(data[: len(data) // 2], dest) == "invalid_archive"


def test_gzip_of_non_tar_is_refused(dest: Path) -> None:
    assert refused(gzip.compress(b"hello" * 1000), dest) == "invalid_archive"


def test_corrupt_zip_is_refused(tmp_path: Path, dest: Path, make_lora: MakeLora) -> None:
    data = bytearray(zip_of_dir(make_lora(tmp_path / "src")))
    data[200:260] = b"\xff" * 60  # inside the first member's compressed data
    assert refused(bytes(data), dest) == "invalid_archive"


# --- caps --------------------------------------------------------------------------------


def test_upload_byte_cap(tmp_path: Path, dest: Path, make_lora: MakeLora) -> None:
    data = tar_of_dir(make_lora(tmp_path / "src"), compress=False)
    assert refused(data, dest, AdmissionLimits(max_total_bytes=len(data) // 2)) == (
        "adapter_too_large"
    )


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_decompression_bomb_is_stopped_at_the_cap(dest: Path, fmt: str) -> None:
    big = b"\0" * (8 << 20)  # 8 MiB of zeros compresses to a few KiB
    data = (
        tar_bytes([tar_member("adapter_model.safetensors", big)])
        if fmt == "tar.gz"
        else zip_bytes([("adapter_model.safetensors", big, None)])
    )
    assert len(data) < 64 << 10
    assert refused(data, dest, AdmissionLimits(max_total_bytes=1 << 20)) == "adapter_too_large"
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert written <= 1 << 20


def test_member_count_cap(dest: Path) -> None:
    data = tar_bytes([tar_member(f"f{i}") for i in range(10)])
    assert refused(data, dest, AdmissionLimits(max_files=5)) == "adapter_too_large"

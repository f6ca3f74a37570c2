"""A zip's central directory sized from its end records before ``zipfile`` reads it."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
from adapter_fixtures import MakeLora, extract, refused, zip_bytes, zip_of_dir
from hotswap.adapters.admission import AdmissionLimits

LIMITS = AdmissionLimits(max_files=16)


@pytest.fixture
def zipfile_never_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if ``zipfile`` reads a central directory."""

    def read(self: zipfile.ZipFile) -> Any:
        raise AssertionError("zipfile read the central directory")

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", read)


def with_comment(data: bytes, comment: bytes) -> bytes:
    """``data`` (a zip ending in a comment-less end record) with an archive comment."""
    assert data[-2:] == b"\0\0"
    return data[:-2] + struct.pack("<H", len(comment)) + comment


def end_record(entries: int, dir_size: int, dir_offset: int = 0) -> bytes:
    return b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, entries, entries, dir_size, dir_offset, 0)


@pytest.mark.usefixtures("zipfile_never_reads")
@pytest.mark.parametrize(
    "members",
    [
        [(f"f{i}", b"", None) for i in range(2000)],  # the directory of 2000 entries
        [(f"{i}" + "n" * 60000, b"", None) for i in range(8)],  # 8 entries of 60 KB names
    ],
)
def test_oversized_central_directory_is_refused_before_zipfile_reads_it(
    dest: Path, members: list[tuple[str, bytes, int | None]]
) -> None:
    err = refused(zip_bytes(members), dest, LIMITS)
    assert err.code == "adapter_too_large"
    assert "entries" in err.message or "central directory" in err.message


@pytest.mark.usefixtures("zipfile_never_reads")
def test_end_record_in_the_comment_is_checked(
    tmp_path: Path, dest: Path, make_lora: MakeLora
) -> None:
    # zipfile takes the last end record it finds: one hidden in the comment counts.
    data = with_comment(zip_of_dir(make_lora(tmp_path / "src")), end_record(60000, 1 << 30))
    assert refused(data, dest, LIMITS).code == "adapter_too_large"


def zip64(data: bytes, *, classic_sentinels: bool, entries: int | None = None) -> bytes:
    """``data`` (a comment-less zip) with zip64 end records inserted before its end record,
    stating the same directory (or ``entries`` entries)."""
    eocd = data[-22:]
    total, size, offset = struct.unpack_from("<HII", eocd, 10)
    count = total if entries is None else entries
    record = b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, count, count, size, offset)
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, len(data) - 22, 1)
    if classic_sentinels:
        eocd = end_record(0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    return data[:-22] + record + locator + eocd


@pytest.mark.parametrize("classic_sentinels", [False, True])
def test_zip64_end_records_are_read_like_zipfile_does(
    tmp_path: Path, dest: Path, make_lora: MakeLora, classic_sentinels: bool
) -> None:
    data = zip64(zip_of_dir(make_lora(tmp_path / "src")), classic_sentinels=classic_sentinels)
    extract(data, dest, LIMITS)
    assert sorted(p.name for p in dest.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    many = zip64(zip_of_dir(tmp_path / "src"), classic_sentinels=classic_sentinels, entries=1 << 40)
    assert refused(many, dest, LIMITS).code == "adapter_too_large"


def test_zip_within_the_caps_passes(tmp_path: Path, dest: Path, make_lora: MakeLora) -> None:
    src = make_lora(tmp_path / "src")
    members = [(p.name, p.read_bytes(), None) for p in sorted(src.iterdir())]
    members += [(f"docs/{'n' * 200}{i}.md", b"x", None) for i in range(LIMITS.max_files - 4)]
    buf = io.BytesIO(zip_bytes(members))
    with zipfile.ZipFile(buf, "a") as zf:
        zf.comment = b"an archive comment"
    extract(buf.getvalue(), dest, LIMITS)
    assert (dest / "adapter_model.safetensors").is_file()

"""Odd member names, depths and encodings, and damaged archives: always a 4xx refusal
(an AdmissionError), never an OSError, RecursionError or UnicodeError."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from adapter_fixtures import (
    ARCHIVE_FORMATS,
    MakeLora,
    raw_member,
    refused,
    tar_bytes,
    tar_member,
    zip_bytes,
)
from hotswap.adapters import errors
from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec, admit
from hotswap.adapters.sources.upload import extract_archive
from hotswap.adapters.store import Store

ARCHIVERS: dict[str, Callable[[str], bytes]] = {
    "tar": lambda name: tar_bytes([tar_member(name)], compress=False),
    "tar.gz": lambda name: tar_bytes([tar_member(name)]),
    "zip": lambda name: zip_bytes([(name, b"x", None)]),
}


@pytest.mark.parametrize("fmt", sorted(ARCHIVERS))
@pytest.mark.parametrize(
    "name, why",
    [
        ("a" * 300, "component over 255"),  # ENAMETOOLONG
        ("é" * 128 + ".md", "component over 255"),  # 259 bytes in UTF-8
        ("/".join(["d" * 200] * 6), "over 1024 bytes"),
        ("d/" * 17 + "f", "levels deep"),
        ("new\nline.md", "control character"),
        ("esc\x1b[31m.md", "control character"),
    ],
)
def test_odd_member_names_are_refused(dest: Path, fmt: str, name: str, why: str) -> None:
    err = refused(ARCHIVERS[fmt](name), dest)
    assert err.code == "invalid_member_name" and why in err.message
    assert list(dest.iterdir()) == []


def test_names_within_the_caps_are_accepted(dest: Path) -> None:
    names = ["é" * 126 + ".md", "/".join(["d" * 255] * 3), "a/" * 15 + "f"]
    data = tar_bytes([tar_member(n) for n in names], compress=False)
    extract_archive(io.BytesIO(data), dest, AdmissionLimits())
    assert all((dest / n).is_file() for n in names)


def test_non_utf8_tar_names_are_refused(dest: Path) -> None:
    name = "caf\udce9.md"  # the raw byte 0xe9, as tarfile decodes it
    gnu = io.BytesIO()  # GNU format: the raw bytes in the header's name field
    with tarfile.open(fileobj=gnu, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    assert refused(gnu.getvalue(), dest).code == "invalid_member_name"
    # pax format: a path record tagged hdrcharset=BINARY
    pax = tar_bytes([tar_member(name)], compress=False)
    err = refused(pax, dest)
    assert err.code == "invalid_archive" and "UTF-8" in err.message


def test_zip_name_flagged_utf8_but_not_is_refused(dest: Path) -> None:
    data = zip_bytes([("caf\u00e9.md", b"x", None)]).replace("café".encode(), b"caf\xff\xfe")
    err = refused(data, dest)
    assert err.code == "invalid_member_name" and "UTF-8" in err.message


@pytest.mark.parametrize("root", [".", "./"])
def test_file_named_as_the_archive_root_is_refused(dest: Path, root: str) -> None:
    # Never written, its data would be skipped without counting against the byte cap.
    data = raw_member(root, tarfile.REGTYPE, b"\0" * 4096) + b"\0" * 1024
    assert refused(data, dest).code == "invalid_member_name"


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_3000_nested_directories_are_refused_and_cleaned_up(tmp_path: Path, fmt: str) -> None:
    deep = "d/" * 3000 + "f"
    if fmt == "zip":
        data = zip_bytes([(deep, b"x", None)])
    else:  # one directory member per level
        dirs = [tar_member("d/" * i, kind=tarfile.DIRTYPE) for i in range(1, 3001)]
        data = tar_bytes([*dirs, tar_member(deep)], compress=False)
    store = Store(tmp_path / "store")
    # The staging dir is removed on exit (recursively): that must work, too.
    with pytest.raises(errors.AdmissionError) as info, store.staging() as staged:
        extract_archive(io.BytesIO(data), staged, AdmissionLimits(max_files=5000))
    assert info.value.code == "invalid_member_name"
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


# --- damaged archives --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(ARCHIVE_FORMATS))
def test_cut_off_archives_are_refused_or_admitted_never_crash(
    tmp_path: Path,
    fmt: str,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
) -> None:
    data = ARCHIVE_FORMATS[fmt](make_lora(tmp_path / "src"))
    cuts = sorted({0, 1, 21, 22, 100, 511, 512, 513, 1024, *range(0, len(data), len(data) // 23)})
    store = Store(tmp_path / "store")
    for cut in cuts:
        with store.staging() as staged:
            try:
                extract_archive(io.BytesIO(data[:cut]), staged, limits)
                admit(staged, spec, limits)
            except errors.AdmissionError:
                pass


def test_zip_with_a_broken_zip64_extra_field_is_refused(dest: Path) -> None:
    # A zip64 extra (id 1) too short for the 8-byte size it must hold.
    data = bytearray(zip_bytes([("a.md", b"x", None)]))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0]
    central = data.rindex(b"PK\x01\x02")
    struct.pack_into("<II", data, central + 20, 0xFFFFFFFF, 0xFFFFFFFF)  # sizes: see zip64
    extra = struct.pack("<HH", 1, 2) + b"\0\0"
    name_end = central + 46 + len(info.filename)
    data[name_end:name_end] = extra
    struct.pack_into("<H", data, central + 30, len(extra))
    eocd = data.rindex(b"PK\x05\x06")
    size = struct.unpack_from("<I", data, eocd + 12)[0]
    struct.pack_into("<I", data, eocd + 12, size + len(extra))
    assert refused(bytes(data), dest).code == "invalid_archive"

"""Tar header blocks checked before ``tarfile`` parses them: oversized pax and GNU long-name
headers, header chains, pax records that would move the layout, and the guard following
``tarfile``'s member layout (so no header slips past it unseen)."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from adapter_fixtures import TAR_END, MakeLora, extract, raw_member, refused
from hotswap.adapters import errors
from hotswap.adapters.admission import AdmissionLimits
from hotswap.adapters.sources.upload import extract_archive

CONFIG = raw_member("adapter_config.json", tarfile.REGTYPE, b"{}")


def pax(**records: str) -> bytes:
    """pax records ``"<len> <key>=<value>\\n"``, the length counting itself."""
    out = b""
    for key, value in records.items():
        body = f" {key}={value}\n".encode()
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n += 1
        out += str(n).encode() + body
    return out


@pytest.fixture
def tarfile_never_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if ``tarfile`` reaches its pax or GNU long-name parser."""

    def parsed(self: tarfile.TarInfo, tar: Any) -> Any:
        raise AssertionError(f"tarfile parsed the {self.type!r} header")

    monkeypatch.setattr(tarfile.TarInfo, "_proc_pax", parsed)
    monkeypatch.setattr(tarfile.TarInfo, "_proc_gnulong", parsed)


@pytest.mark.usefixtures("tarfile_never_parses")
@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE])
@pytest.mark.parametrize("compress", [False, True])
def test_oversized_pax_header_is_refused_before_tarfile_parses_it(
    dest: Path, kind: bytes, compress: bool
) -> None:
    # 128 KiB of digits: 16 s of quadratic regex in Python 3.11.7's tarfile.
    data = raw_member("././@PaxHeader", kind, b"1" * (128 << 10)) + CONFIG + TAR_END
    err = refused(gzip.compress(data) if compress else data, dest)
    assert err.code == "invalid_archive" and "pax extended header" in err.message


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK])
def test_oversized_gnu_long_name_is_refused_without_reading_it(dest: Path, kind: bytes) -> None:
    name = b"a" * (16 << 20)  # 16 KiB compressed; tarfile would hold it twice in memory
    data = gzip.compress(raw_member("././@LongLink", kind, name) + CONFIG + TAR_END, 1)
    tracemalloc.start()
    try:
        err = refused(data, dest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.code == "invalid_archive" and "GNU long name" in err.message
    assert peak < 4 << 20


def test_real_extended_headers_pass(tmp_path: Path, dest: Path, make_lora: MakeLora) -> None:
    src = make_lora(tmp_path / "src")
    long_dir = "d" * 150  # longer than ustar's 100-byte name field
    buf = io.BytesIO()
    # A git-archive-style global header, then pax headers (non-ASCII and long names).
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "c0ffee"}
    ) as tar:
        tar.add(src, arcname=".")
        tar.add(src / "adapter_config.json", arcname=f"{long_dir}/café.json")
    gnu = io.BytesIO()
    with tarfile.open(fileobj=gnu, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(src, arcname=".")
        tar.add(src / "adapter_config.json", arcname=f"{long_dir}/long.json")  # an 'L' header
    for i, data in enumerate([buf.getvalue(), gnu.getvalue()]):
        (dest / str(i)).mkdir()
        extract(data, dest / str(i))
    assert (dest / "0" / long_dir / "café.json").is_file()
    assert (dest / "0" / "adapter_model.safetensors").is_file()
    assert (dest / "1" / long_dir / "long.json").is_file()


@pytest.mark.parametrize(
    "records", [pax(size="1"), pax(path="a.json", size="0"), pax(**{"GNU.sparse.size": "9"})]
)
def test_pax_records_that_move_the_next_header_are_refused(dest: Path, records: bytes) -> None:
    data = raw_member("././@PaxHeader", tarfile.XHDTYPE, records) + CONFIG + TAR_END
    err = refused(data, dest)
    assert err.code == "invalid_archive" and "size or GNU sparse" in err.message


def test_sparse_member_is_refused(dest: Path) -> None:
    data = raw_member("adapter_model.safetensors", tarfile.GNUTYPE_SPARSE, b"x") + TAR_END
    err = refused(data, dest)
    assert err.code == "invalid_archive" and "sparse" in err.message


@pytest.mark.parametrize("count", [5, 3000])  # 3000: RecursionError inside tarfile
def test_chain_of_extended_headers_is_refused(dest: Path, count: int) -> None:
    chain = raw_member("././@LongLink", tarfile.GNUTYPE_LONGNAME, b"a.json\0") * count
    err = refused(chain + CONFIG + TAR_END, dest)
    assert err.code == "invalid_archive" and "in a row" in err.message


def test_extended_headers_are_capped_per_archive(dest: Path) -> None:
    header = raw_member("././@PaxHeader", tarfile.XHDTYPE, pax(comment="c" * 4000))
    members = b"".join(header + raw_member(f"f{i}.md", tarfile.REGTYPE, b"x") for i in range(12))
    err = refused(members + TAR_END, dest, AdmissionLimits(max_files=64))
    assert err.code == "invalid_archive" and "in all" in err.message


def test_extended_headers_under_the_caps_parse_quickly(dest: Path) -> None:
    # The worst case the caps let through: the regex's quadratic input, at full size.
    header = raw_member("././@PaxHeader", tarfile.XHDTYPE, pax(comment="1" * 4070))
    members = b"".join(header + raw_member(f"f{i}", tarfile.REGTYPE, b"x") for i in range(8))
    started = time.monotonic()
    extract(members + TAR_END, dest)
    assert time.monotonic() - started < 1.5
    assert len(list(dest.iterdir())) == 8


@pytest.mark.parametrize("size, code", [(1 << 40, "adapter_too_large"), (-1, "invalid_archive")])
def test_member_size_is_checked_before_its_data(dest: Path, size: int, code: str) -> None:
    info = tarfile.TarInfo("adapter_model.safetensors")
    info.size = size  # base-256 in GNU format; no data follows
    data = info.tobuf(tarfile.GNU_FORMAT) + TAR_END
    assert refused(data, dest, AdmissionLimits(max_total_bytes=1 << 20)).code == code


# --- the guard sees the headers tarfile sees ---------------------------------------------

HOSTILE = raw_member("././@PaxHeader", tarfile.XHDTYPE, b"1" * (64 << 10))


@pytest.mark.usefixtures("tarfile_never_parses")
@pytest.mark.parametrize(
    "before",
    [
        raw_member("d/", tarfile.DIRTYPE, size=1024),  # tarfile skips no data after a dir
        raw_member("v7-dir/", tarfile.AREGTYPE, size=1024),  # nor after a v7 one (name + /)
    ],
)
def test_header_after_a_dataless_member_is_checked(dest: Path, before: bytes) -> None:
    err = refused(before + HOSTILE + CONFIG + TAR_END, dest)
    assert err.code == "invalid_archive" and "pax extended header" in err.message


def test_header_shaped_file_data_is_data(dest: Path) -> None:
    data = raw_member("notes.md", tarfile.REGTYPE, HOSTILE[:512]) + CONFIG + TAR_END
    extract(data, dest)
    assert (dest / "notes.md").read_bytes() == HOSTILE[:512]


class ChunkedStream:
    """Returns at most ``n`` bytes per read, so header blocks straddle reads."""

    def __init__(self, data: bytes, n: int) -> None:
        self._data = io.BytesIO(data)
        self._n = n

    def read(self, size: int = -1, /) -> bytes:
        return self._data.read(min(size, self._n))


@pytest.mark.usefixtures("tarfile_never_parses")
@pytest.mark.parametrize("n", [1, 511, 513, 10240])
def test_headers_straddling_reads_are_checked(dest: Path, n: int) -> None:
    data = raw_member("notes.md", tarfile.REGTYPE, b"x" * 700) + HOSTILE + CONFIG + TAR_END
    with pytest.raises(errors.InvalidArchive, match="pax extended header"):
        extract_archive(ChunkedStream(data, n), dest, AdmissionLimits())

"""Imports under ``--import-root``: no check-then-use gap, symlinks only within the root,
and every odd path a clean refusal."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hotswap.adapters import errors
from hotswap.adapters.admission import AdmissionLimits
from hotswap.adapters.service import AdapterService
from hotswap.adapters.sources.local import ImportPath, check_import_path, import_dir
from support.fakes import make_adapter_dir, service_options

SECRET = b"SECRET-OUTSIDE-THE-ROOT\n" * 4
CARD = b"# model card\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "imports"
    path.mkdir()
    return path.resolve()


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def imported(src: ImportPath, dest: Path) -> dict[str, bytes]:
    dest.mkdir()
    import_dir(src, dest, AdmissionLimits())
    return {p.relative_to(dest).as_posix(): p.read_bytes()
            for p in sorted(dest.rglob("*")) if p.is_file()}


def all_bytes(tree: Path) -> Iterator[bytes]:
    for p in tree.rglob("*"):
        if p.is_file() and not p.is_symlink():
            yield p.read_bytes()


async def test_swapping_a_file_for_a_symlink_never_stores_what_it_points_at(
        tmp_path: Path, root: Path, secret: Path) -> None:
    """The attack that copied /etc/passwd: a thread keeps replacing README.md of an
    allowed dir by a symlink out of the root (and back) while imports run."""
    adapter = make_adapter_dir(root, "racy")
    (adapter / "README.md").write_bytes(CARD)
    service = await AdapterService.open(service_options(tmp_path, import_roots=(root,)))
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not stop.is_set():
            os.symlink(secret, root / "swap.lnk")
            os.replace(root / "swap.lnk", adapter / "README.md")
            (root / "swap.txt").write_bytes(CARD)
            os.replace(root / "swap.txt", adapter / "README.md")
            swaps += 1

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    stored = refused = 0
    try:
        for i in range(200):
            try:
                path = await service.check_import_path(str(adapter))
                manifest = await service.import_dir(f"r{i}", path)
            except (errors.PathNotAllowed, errors.UnsafePath):
                refused += 1
                continue
            stored += 1
            assert (service.path(manifest) / "README.md").read_bytes() == CARD
    finally:
        stop.set()
        thread.join()
    assert stored + refused == 200 and swaps > 0
    store = tmp_path / "store"
    assert not any(SECRET in data for data in all_bytes(store))


def test_a_dir_swapped_for_a_symlink_after_the_check_is_refused(
        tmp_path: Path, root: Path) -> None:
    adapter = make_adapter_dir(root, "a")
    outside = make_adapter_dir(tmp_path / "outside", "b", seed=3)
    checked = check_import_path(str(adapter), (root,))
    os.rename(adapter, root / "moved")
    adapter.symlink_to(outside, target_is_directory=True)
    with pytest.raises(errors.UnsafePath):
        imported(checked, tmp_path / "dest")


def test_hf_cache_snapshot_links_are_followed_within_the_root(
        tmp_path: Path, root: Path) -> None:
    """snapshots/<rev>/<file> -> ../../blobs/<sha>, as huggingface_hub lays a repo out."""
    repo = root / "models--org--x"
    blobs = make_adapter_dir(repo, "blobs")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (snapshot / name).symlink_to(Path("..", "..", "blobs", name))
    (snapshot / "README.md").symlink_to(root / "models--org--x" / "blobs" / "adapter_config.json")
    (snapshot / "chain").symlink_to("README.md")  # a link to a link
    files = imported(check_import_path(str(snapshot), (root,)), tmp_path / "dest")
    assert files["adapter_model.safetensors"] == (blobs / "adapter_model.safetensors"
                                                  ).read_bytes()
    assert files["README.md"] == files["chain"] == (blobs / "adapter_config.json").read_bytes()
    assert not any(p.is_symlink() for p in (tmp_path / "dest").iterdir())


@pytest.mark.parametrize(("link", "error"), [
    ("abs-outside", errors.PathNotAllowed),
    ("../../../outside/secret", errors.PathNotAllowed),  # '..' past the root
    ("..", errors.UnsafePath),  # a directory
    ("sub", errors.UnsafePath),  # a directory below
    ("sub/../adapter_config.json", errors.UnsafePath),  # '..' after a name: not guessed
    ("../../dirlink/adapter_config.json", errors.UnsafePath),  # via a symlinked dir
    ("missing", errors.UnsafePath),
    ("loop-a", errors.UnsafePath),  # loop-a -> loop-b -> loop-a
])
def test_links_leaving_the_root_or_not_to_files_are_refused(
        tmp_path: Path, root: Path, secret: Path, link: str,
        error: type[errors.AdapterError]) -> None:
    adapter = make_adapter_dir(root / "d", "a")
    (adapter / "sub").mkdir()
    (root / "dirlink").symlink_to(adapter, target_is_directory=True)
    (adapter / "loop-a").symlink_to("loop-b")
    (adapter / "loop-b").symlink_to("loop-a")
    target = str(secret) if link == "abs-outside" else link
    checked = check_import_path(str(adapter), (root,))
    (adapter / "loop-a").unlink()
    (adapter / "loop-b").unlink()
    if link == "loop-a":
        (adapter / "loop-a").symlink_to("loop-b")
        (adapter / "loop-b").symlink_to("loop-a")
    else:
        (adapter / "README.md").symlink_to(target)
    with pytest.raises(error):
        imported(checked, tmp_path / "dest")


@pytest.mark.parametrize(("raw", "error"), [
    ("{root}/a\0/x", errors.UnsafePath),
    ("{root}/new\nline", errors.UnsafePath),
    ("{root}/" + "x/" * 2100, errors.UnsafePath),  # past PATH_MAX
    ("{root}/" + "y" * 300, errors.UnsafePath),  # one name past NAME_MAX
    ("{root}/loop", errors.UnsafePath),  # a symlink loop as the dir itself
    ("{root}/missing", errors.SourceNotFound),
    ("{root}/file", errors.SourceNotFound),
    ("{root}/../elsewhere", errors.PathNotAllowed),
    ("relative/path", errors.SourceNotFound),
])
def test_odd_paths_are_clean_refusals(root: Path, raw: str,
                                      error: type[errors.AdapterError]) -> None:
    (root / "new\nline").mkdir()
    (root / "loop").symlink_to("loop")
    (root / "file").write_text("x")
    with pytest.raises(error):
        check_import_path(raw.format(root=root), (root,))


def test_odd_names_inside_the_dir_are_refused(tmp_path: Path, root: Path) -> None:
    for i, bad in enumerate(("new\nline", "tab\there", "bad-\udcff-utf8")):
        adapter = make_adapter_dir(root, f"a{i}")
        os.mkdir(os.fsencode(adapter) + b"/" + os.fsencode(bad))
        with pytest.raises(errors.UnsafePath):
            imported(check_import_path(str(adapter), (root,)), tmp_path / f"dest{i}")


def test_sizes_are_checked_on_the_open_file(tmp_path: Path, root: Path) -> None:
    adapter = make_adapter_dir(root, "big")
    (adapter / "README.md").write_bytes(b"x" * 5000)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(errors.TooLarge):
        import_dir(check_import_path(str(adapter), (root,)), dest,
                   AdmissionLimits(max_total_bytes=4000))
    deep = make_adapter_dir(root, "deep")
    nested = deep.joinpath(*["d"] * 20)
    nested.mkdir(parents=True)
    dest = tmp_path / "dest2"
    dest.mkdir()
    with pytest.raises(errors.TooLarge):
        import_dir(check_import_path(str(deep), (root,)), dest, AdmissionLimits(max_files=99))


def test_a_symlinked_dir_inside_the_root_may_name_the_import(tmp_path: Path,
                                                             root: Path) -> None:
    adapter = make_adapter_dir(root, "real")
    (root / "alias").symlink_to(adapter, target_is_directory=True)
    checked = check_import_path(str(root / "alias"), (root,))
    assert checked == ImportPath(root, ("real",))
    assert set(imported(checked, tmp_path / "dest")) == {"adapter_config.json",
                                                         "adapter_model.safetensors"}

"""Local-directory source, and adapter names / refs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from adapter_fixtures import MakeLora
from hotswap.adapters import errors
from hotswap.adapters.admission import AdmissionLimits
from hotswap.adapters.hub_cache import HubCache
from hotswap.adapters.names import (
    Ref,
    is_hub_name,
    parse_ref,
    validate_name,
    validate_own_name,
)
from hotswap.adapters.service import AdapterService, HubOptions
from hotswap.adapters.sources.local import import_dir
from hotswap.adapters.store import Store
from support.fakes import LIMITS, TINY_SPEC, make_adapter_dir, service_options

# --- local source ------------------------------------------------------------------------


def test_import_copies_files(tmp_path: Path, make_lora: MakeLora) -> None:
    src = make_lora(tmp_path / "src")
    (src / "sub").mkdir()
    (src / "sub" / "n.txt").write_text("n")
    dest = tmp_path / "dest"
    dest.mkdir()
    import_dir(src, dest, AdmissionLimits())
    for rel in ("adapter_config.json", "adapter_model.safetensors", "sub/n.txt"):
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
        assert (dest / rel).stat().st_ino != (src / rel).stat().st_ino


def test_symlinked_files_are_followed_like_a_hf_cache_snapshot(
    tmp_path: Path, make_lora: MakeLora
) -> None:
    blobs = make_lora(tmp_path / "blobs")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (snapshot / name).symlink_to(blobs / name)
    dest = tmp_path / "dest"
    dest.mkdir()
    import_dir(snapshot, dest, AdmissionLimits())
    assert not (dest / "adapter_model.safetensors").is_symlink()
    assert (dest / "adapter_model.safetensors").read_bytes() == (
        blobs / "adapter_model.safetensors"
    ).read_bytes()


def test_symlinked_directory_is_refused(tmp_path: Path, make_lora: MakeLora) -> None:
    src = make_lora(tmp_path / "src")
    (src / "loop").symlink_to(src)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(errors.UnsafePath):
        import_dir(src, dest, AdmissionLimits())


def test_fifo_is_refused_without_hanging(tmp_path: Path, make_lora: MakeLora) -> None:
    src = make_lora(tmp_path / "src")
    os.mkfifo(src / "README.md")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(errors.UnsafePath) as info:
        import_dir(src, dest, AdmissionLimits())
    assert info.value.code == "unsafe_path"


def test_missing_source_dir(tmp_path: Path) -> None:
    with pytest.raises(errors.SourceNotFound) as info:
        import_dir(tmp_path / "nope", tmp_path, AdmissionLimits())
    assert info.value.code == "source_not_found"


def test_local_caps(tmp_path: Path, make_lora: MakeLora) -> None:
    src = make_lora(tmp_path / "src")
    for i, limits in enumerate(
        [AdmissionLimits(max_total_bytes=100), AdmissionLimits(max_files=1)]
    ):
        dest = tmp_path / f"dest{i}"
        dest.mkdir()
        with pytest.raises(errors.TooLarge):
            import_dir(src, dest, limits)


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "sql-writer", "v1.2_rc", "0", "a" * 64])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "-a", ".a", "..", "a/b", "a b", "a" * 65, "é", "a\n", "a:b"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(errors.InvalidName) as info:
        validate_name(name)
    assert info.value.code == "invalid_name"


def test_names_with_double_dash_are_reserved_for_hub_pulls() -> None:
    assert validate_name("org--repo") == "org--repo"  # still a name: pulls store it
    assert is_hub_name("org--repo") and not is_hub_name("my-lora-v2")
    assert validate_own_name("my-lora-v2") == "my-lora-v2"
    for name in ("org--repo", "a--b", "x---y"):
        with pytest.raises(errors.InvalidName, match="reserved for hub pulls"):
            validate_own_name(name)


def test_store_writes_double_dash_names_only_for_hub_sources(
        tmp_path: Path, make_lora: MakeLora) -> None:
    store = Store(tmp_path / "store")
    src = make_lora(tmp_path / "src")
    for source in ("upload", f"path:{src}"):
        with pytest.raises(errors.InvalidName):
            store.add(src, name="org--repo", source=source, spec=TINY_SPEC, limits=LIMITS)
    pulled = store.add(src, name="org--repo", source="hub:org/repo@" + "a" * 40,
                       spec=TINY_SPEC, limits=LIMITS)
    with pytest.raises(errors.InvalidName):
        store.tag("org--repo", "pinned", pulled.digest)
    own = store.add(src, name="mine", source="upload", spec=TINY_SPEC, limits=LIMITS)
    store.tag("mine", "pinned", own.digest)
    assert [e.name for e in store.list()] == ["mine", "org--repo"]


async def test_service_refuses_double_dash_names_by_hand(tmp_path: Path) -> None:
    service = await AdapterService.open(service_options(tmp_path))
    src = make_adapter_dir(tmp_path, "src")
    with pytest.raises(errors.InvalidName):
        await service.import_dir("org--repo", src)

    async def body() -> AsyncIterator[bytes]:
        yield b""

    with pytest.raises(errors.InvalidName):
        await service.upload(body(), "org--repo", "latest")
    made = await service.import_dir("mine", src)
    with pytest.raises(errors.InvalidName):
        await service.tag("org--repo", "latest", made.digest)
    assert [e.name for e in await service.list()] == ["mine"]


async def test_hub_ids_resolve_only_to_pulls_and_only_with_the_hub_on(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = make_adapter_dir(tmp_path, "src")
    pulled = store.add(src, name="org--pulled", source="hub:org/pulled@" + "a" * 40,
                       spec=TINY_SPEC, limits=LIMITS)
    HubCache(store.root).record("org--pulled", "latest", pulled.digest)
    # A ref a pull did not make (a store from before '--' names were reserved).
    (store.root / "refs" / "org--legacy").mkdir()
    (store.root / "refs" / "org--legacy" / "latest").write_text(pulled.digest + "\n")

    off = await AdapterService.open(service_options(tmp_path))
    on = await AdapterService.open(replace(service_options(tmp_path),
                                           hub=HubOptions(allow=("org",))))
    assert (await on.resolve("org/pulled")).digest == pulled.digest
    assert (await on.resolve("Org/Pulled")).digest == pulled.digest  # hub ids: any case
    for service, model in ((off, "org/pulled"), (on, "org/legacy"), (on, "org/pulled@v2")):
        with pytest.raises(errors.AdapterNotFound):
            await service.resolve(model)
    # Their own names still resolve: they are in the store.
    for service in (off, on):
        assert (await service.resolve("org--legacy")).digest == pulled.digest


def test_parse_ref() -> None:
    assert parse_ref("sql") == Ref("sql", None)
    assert parse_ref("sql").effective_tag == "latest"
    assert parse_ref("sql:v2") == Ref("sql", "v2")
    assert str(parse_ref("sql:v2")) == "sql:v2"
    for bad in ("sql:", ":v1", "sql:v1:x", "sql:V1"):
        with pytest.raises(errors.InvalidName):
            parse_ref(bad)


def test_error_codes_are_unique_and_stable() -> None:
    classes: list[type[errors.AdapterError]] = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.AdapterError)
    ]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    err = errors.RankTooHigh("rank 32 > 16")
    assert (err.code, err.message, str(err)) == (
        "rank_too_high",
        "rank 32 > 16",
        "rank_too_high: rank 32 > 16",
    )

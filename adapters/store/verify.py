"""Re-checking a store folder from its bytes: what :meth:`Store.verify` reports."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ..errors import StoreCorrupt
from ..manifest import Manifest, content_digest, is_digest
from ..names import NAME_PATTERN
from .fs import sha256_and_size
from .layout import ADAPTER_DIR, MANIFEST_FILE, Layout
from .refs import read_ref


def find_problems(layout: Layout) -> list[str]:
    """The problems found in every visible version and ref (empty: consistent)."""
    problems: list[str] = []
    for vdir in sorted(layout.versions.iterdir()):
        if is_digest(vdir.name):
            found = _verify_version(vdir)
            if found and vdir.exists():  # else deleted meanwhile: not a problem
                problems += found
    for ref_file in sorted(layout.refs.glob("*/*")):
        name, tag = ref_file.parent.name, ref_file.name
        if not (NAME_PATTERN.fullmatch(name) and NAME_PATTERN.fullmatch(tag)):
            continue  # not ours, as in refs.read_tags
        if ref_file.is_dir():
            problems.append(f"ref {name}:{tag} is a directory, not a ref file")
            continue
        try:
            digest = read_ref(layout, name, tag)
        except StoreCorrupt as exc:
            problems.append(exc.message)
            continue
        if (digest is not None and not layout.has_version(digest)
                and read_ref(layout, name, tag) == digest):  # not deleted meanwhile
            problems.append(f"ref {name}:{tag} points at missing version {digest}")
    return problems


def _verify_version(vdir: Path) -> list[str]:
    digest = vdir.name
    try:
        manifest = Manifest.model_validate_json((vdir / MANIFEST_FILE).read_bytes())
    except (OSError, ValidationError) as exc:
        return [f"version {digest}: no readable {MANIFEST_FILE} ({type(exc).__name__})"]
    problems = []
    if manifest.digest != digest:
        problems.append(f"version {digest}: its manifest is that of {manifest.digest}")
    if content_digest(manifest.files) != digest:
        problems.append(f"version {digest}: content digest of the manifest's files differs")
    if manifest.size_bytes != sum(f.size for f in manifest.files):
        problems.append(f"version {digest}: size_bytes is not the sum of the file sizes")
    adapter = vdir / ADAPTER_DIR
    for entry in manifest.files:
        rel = Path(entry.path)
        if rel.is_absolute() or ".." in rel.parts:
            problems.append(f"version {digest}: file path {entry.path!r} leaves the version")
            continue
        path = adapter / rel
        try:
            if path.is_symlink() or not path.is_file():
                raise FileNotFoundError(path)
            with open(path, "rb") as f:
                sha256, size = sha256_and_size(f)
        except OSError:
            problems.append(f"version {digest}: {entry.path} is missing or unreadable")
            continue
        if size != entry.size:
            problems.append(f"version {digest}: {entry.path} has {size} bytes, "
                            f"manifest says {entry.size}")
        elif sha256 != entry.sha256:
            problems.append(f"version {digest}: {entry.path} sha256 differs from manifest")
    listed = {f.path for f in manifest.files}
    for p in sorted(adapter.rglob("*")):
        rel_path = p.relative_to(adapter).as_posix()
        if (p.is_symlink() or not p.is_dir()) and rel_path not in listed:
            problems.append(f"version {digest}: {rel_path} is not in the manifest")
    return problems

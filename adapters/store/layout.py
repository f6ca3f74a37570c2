"""Where everything lives under a store root (the tree is in the package docstring)."""

from __future__ import annotations

import os
from pathlib import Path

MANIFEST_FILE = "manifest.json"
ADAPTER_DIR = "adapter"


class Layout:
    """The paths of one store folder; creates nothing."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / "versions"
        self.refs = root / "refs"
        self.tmp = root / "tmp"
        self.orphaned = root / "orphaned"
        self.lock = root / "lock"

    def adapter_dir(self, digest: str) -> Path:
        """The version's adapter files: what the engine loads."""
        return self.versions / digest / ADAPTER_DIR

    def has_version(self, digest: str) -> bool:
        """Whether ``versions/<digest>`` is visible: its manifest is the last thing in."""
        return (self.versions / digest / MANIFEST_FILE).is_file()

    # Plain str paths on the read path: pathlib objects cost more than the syscalls there.

    def manifest_path(self, digest: str) -> str:
        return f"{os.fspath(self.versions)}/{digest}/{MANIFEST_FILE}"

    def name_dir(self, name: str) -> str:
        return f"{os.fspath(self.refs)}/{name}"

    def ref_path(self, name: str, tag: str) -> str:
        return f"{os.fspath(self.refs)}/{name}/{tag}"

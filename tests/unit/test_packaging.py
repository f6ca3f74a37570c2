"""The distribution ships every package of the source tree (pyproject lists them by hand,
because of the hotswap.* -> server/, adapters/, clients/ mapping), and vLLM is imported
only under server/engine/."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {"server": "hotswap.server", "adapters": "hotswap.adapters",
           "clients": "hotswap.clients"}


def test_every_package_dir_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {v: k for k, v in MAPPING.items()}
    on_disk = {
        ".".join([MAPPING[top], *init.parent.relative_to(ROOT / top).parts])
        for top in MAPPING for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(config["packages"]) == on_disk


def test_vllm_is_imported_only_under_server_engine() -> None:
    importer = re.compile(r"^\s*(from vllm[. ]|import vllm\b)", re.MULTILINE)
    outside = [
        str(path.relative_to(ROOT)) for top in MAPPING for path in (ROOT / top).rglob("*.py")
        if importer.search(path.read_text())
        and not path.is_relative_to(ROOT / "server" / "engine")
    ]
    assert outside == []

"""bench/'s self-contained packages (soak_core, loadgen_core) for the tests.

They live with the bench (which must not import tests/support) and import nothing of
bench/ or tests/, so each is loaded here by its path, under its own name, without putting
bench/ on ``sys.path`` (its ``common`` module would then shadow nothing, but stay
importable)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench_package(name: str) -> ModuleType:
    """bench/<name> as the module ``name`` (loaded once per process)."""
    if name in sys.modules:
        return sys.modules[name]
    where = BENCH / name
    spec = importlib.util.spec_from_file_location(
        name, where / "__init__.py", submodule_search_locations=[str(where)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: its submodules import the package
    spec.loader.exec_module(module)
    return module

"""Small helpers for tests on the fake engine."""

from __future__ import annotations

import json
from pathlib import Path


def make_adapter_dir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    return path

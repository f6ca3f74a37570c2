"""deploy/monitoring/'s dashboard, read as unit and integration tests need it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return loaded


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    return [target["expr"] for panel in dashboard()["panels"]
            for target in panel.get("targets", []) if "expr" in target]

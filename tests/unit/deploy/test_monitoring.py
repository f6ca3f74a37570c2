"""deploy/monitoring/: the alert rules pass promtool's check and its unit tests, every
alert is tested and has a runbook, and the dashboard is well-formed (its queries are
run against a real Prometheus in tests/integration/test_metrics.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from support.monitoring import MONITORING, dashboard, dashboard_queries


def _rules() -> list[dict[str, Any]]:
    spec = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]
    return [rule for group in spec["groups"] for rule in group["rules"]]


def _promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: run `make prometheus` (make test does)"
    return binary


def test_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    resource = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert resource["kind"] == "PrometheusRule"
    (tmp_path / "hotswap-rules.yaml").write_text(yaml.safe_dump(resource["spec"]))
    runbooks = {r["alert"]: r["annotations"]["runbook"] for r in _rules()}
    cases = yaml.safe_load((MONITORING / "rules-test.yaml").read_text())
    for case in cases["tests"]:
        for check in case["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                alert["exp_annotations"]["runbook"] = runbooks[check["alertname"]]
    (tmp_path / "rules-test.yaml").write_text(yaml.safe_dump(cases))
    for command in (["check", "rules", "hotswap-rules.yaml"],
                    ["test", "rules", "rules-test.yaml"]):
        done = subprocess.run([_promtool(), *command], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_has_a_runbook() -> None:
    cases = yaml.safe_load((MONITORING / "rules-test.yaml").read_text())
    fired = {check["alertname"] for case in cases["tests"]
             for check in case["alert_rule_test"] if check["exp_alerts"]}
    alerts = {r["alert"] for r in _rules()}
    assert alerts == fired
    for rule in _rules():
        notes = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(notes), rule["alert"]
        assert "{{" not in notes["runbook"], "runbooks are static (the test adds them)"
        assert rule["labels"]["severity"] in ("critical", "warning")


def test_dashboard_is_provisioning_ready() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    assert board.get("id") is None  # provisioning assigns ids
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "adapter"} <= variables
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel.get("targets"), panel["title"]
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    generated = kustomization["configMapGenerator"][0]
    assert generated["files"] == ["dashboard.json"]
    assert len(dashboard_queries()) >= 12

"""The committed monitoring assets: the dashboard JSON is what its generator writes, its queries
use only metrics the operator exports, and the alert rules pass promtool's checks and unit
tests (tests/monitoring/prometheus-rules.test.yaml)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubetune.metrics import OperatorMetrics
from kubetune.spec.reevaluation import Reevaluation
from monitoring import dashboard
from tests.monitoring.test_metrics import run_study

HERE = Path(__file__).resolve().parent
RULES = dashboard.ROOT / "charts" / "kubetune" / "files" / "prometheus-rules.yaml"
METRIC_NAME = re.compile(r"\b(kubetune_[a-z_]+)")


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    committed = dashboard.OUTPUT.read_text()
    assert committed == dashboard.render(), "regenerate it: python -m monitoring.dashboard"


def test_the_generator_writes_the_file_it_is_given(tmp_path: Path) -> None:
    output = tmp_path / "dashboard.json"
    assert dashboard.main([str(output)]) == 0
    document = json.loads(output.read_text())
    assert document["uid"] == dashboard.UID
    assert [v["name"] for v in document["templating"]["list"]] == [
        "datasource",
        "namespace",
        "study",
    ]


def exported_names() -> set[str]:
    """Every sample name the operator exports, with a study known that was re-evaluated and has
    importances (enough completed trials)."""
    metrics = OperatorMetrics()
    run_study(metrics, max_trials=12, reevaluation=Reevaluation(top_trials=1, repeats=2))
    text = generate_latest(metrics.registry).decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_dashboard_and_alerts_name_only_exported_metrics() -> None:
    exported = exported_names()
    used = set(METRIC_NAME.findall(dashboard.OUTPUT.read_text()))
    used |= set(METRIC_NAME.findall(RULES.read_text()))
    assert used - exported == set()
    # Every study gauge is on the dashboard.
    assert {"kubetune_study_phase", "kubetune_trials", "kubetune_study_parallelism"} <= used
    assert {
        "kubetune_study_generalization_gap",
        "kubetune_study_recommended_mean",
        "kubetune_study_recommended_std",
        "kubetune_reevaluation_runs_planned",
        "kubetune_reevaluation_runs_finished",
        "kubetune_study_parameter_importance",
    } <= used


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        ["promtool", "test", "rules", str(HERE / "prometheus-rules.test.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr

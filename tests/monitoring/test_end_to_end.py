"""The dashboard and the alerts against a real Prometheus scraping a real operator: after a study
runs to its end on the embedded control plane, every dashboard panel query and every alert
expression parses and returns at least one series, and deleting the study removes its series."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from monitoring.dashboard import OUTPUT as DASHBOARD

from tests.e2e.test_operator import apply, example
from tests.monitoring.conftest import GPU, MetricsOperator
from tests.prometheus_server import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "kubetune" / "files" / "prometheus-rules.yaml"
STUDY = "observed"
RATE_INTERVAL = "1m"


def observed_study() -> dict[str, Any]:
    """The synthetic example, small, on one GPU per trial, with every budget set, trial 1
    failing, and the best configuration re-run twice (ranked by its distance, so that the
    generalization gap is that of another metric than the search's loss). Six trials succeed:
    enough for parameter importances (five), which a panel shows."""
    document = example(
        "synthetic-quadratic.yaml",
        maxTrials=7,
        parallelism=2,
        maxGpuHours=1,
        money={"limit": 10, "pricePerGpuHour": {"nvidia.com/gpu": 2.5}},
    )
    document["metadata"]["name"] = STUDY
    document["spec"]["reevaluation"] = {"topTrials": 1, "repeats": 2, "metric": "distance"}
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["resources"]["limits"][GPU] = 1
    container["command"][2] = (
        'import os, sys\nif os.environ["KUBETUNE_TRIAL_NUMBER"] == "1": sys.exit(3)\n'
        + container["command"][2]
    )
    return document


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard panel, the variables set to the study."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$namespace", "default")
                .replace("$study", STUDY)
                .replace("$__rate_interval", RATE_INTERVAL)
            )
            queries.append((panel["title"], expr))
    return queries


def without_thresholds(expr: str) -> str:
    """An alert expression without its comparisons with constants: the series it looks at."""
    return re.sub(r"\s*(>=|<=|==|!=|>|<)\s*[0-9.]+", "", expr)


def test_every_panel_and_alert_query_returns_series(
    metrics_operator: MetricsOperator, tmp_path: Path
) -> None:
    kube = metrics_operator.kube
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        scrape_configs=[
            {
                "job_name": "kubetune-operator",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_operator.metrics_port}"]}],
            }
        ],
        rule_files=[RULES],
    )
    prometheus.start()
    try:
        apply(kube, observed_study())
        kube.wait_for(
            f"tuningstudy/{STUDY}", condition="jsonpath={.status.phase}=Completed", timeout=120
        )
        trials = kube.get_json("tuningtrials", "-l", f"kubetune.io/study={STUDY}")["items"]
        assert {t["status"]["state"] for t in trials} == {"Succeeded", "Failed"}
        # The final state scraped, and the study's counters seen in two scrapes (for rate()).
        prometheus.wait_for(f'kubetune_study_phase{{study="{STUDY}", phase="Completed"}} == 1')
        prometheus.wait_for(
            f'min(count_over_time(kubetune_trials_finished_total{{study="{STUDY}"}}[1m])) >= 2'
        )
        finished = prometheus.query(f'sum(kubetune_trials_finished_total{{study="{STUDY}"}})')
        assert float(finished[0]["value"][1]) == len(trials)
        gpu = prometheus.query(f'kubetune_gpu_seconds_total{{study="{STUDY}"}}')
        # One GPU per trial, for its running time (whole seconds: Kubernetes' timestamps).
        assert float(gpu[0]["value"][1]) == sum(t["status"].get("gpuSeconds", 0) for t in trials)
        # The re-evaluation's result as the study's status has it.
        recommendation = kube.get_json("tuningstudy", STUDY)["status"]["recommendation"]
        assert len([t for t in trials if t["spec"].get("reevaluation")]) == 2
        gap = prometheus.query(f'kubetune_study_generalization_gap{{study="{STUDY}"}}')
        assert float(gap[0]["value"][1]) == pytest.approx(recommendation["generalizationGap"])
        mean = prometheus.query(
            f'kubetune_study_recommended_mean{{study="{STUDY}", metric="distance"}}'
        )
        assert float(mean[0]["value"][1]) == pytest.approx(recommendation["mean"])

        for title, expr in panel_queries():
            assert prometheus.query(expr), f"panel {title!r}: {expr} returned no series"
        dashboard = json.loads(DASHBOARD.read_text())
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            selector, label = re.fullmatch(
                r"label_values\((.+), (\w+)\)", variable["query"]
            ).groups()
            result = prometheus.query(selector.replace("$namespace", "default"))
            values = {series["metric"][label] for series in result}
            assert {"default", STUDY} & values, variable["name"]

        rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
        assert {rule["alert"] for rule in rules} == {
            "KubetuneBudgetNearlyExhausted",
            "KubetuneStudyFailed",
            "KubetuneHandlerErrorsRising",
            "KubetuneTrialsStuckPending",
        }
        for rule in rules:
            expr = without_thresholds(rule["expr"])
            assert prometheus.query(expr), f"alert {rule['alert']}: {expr} returned no series"
        # Prometheus itself loaded the rule file and evaluates every rule without an error.
        response = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10.0).json()
        (group,) = response["data"]["groups"]
        health = {rule["name"]: (rule["health"], rule.get("lastError")) for rule in group["rules"]}
        assert health == {rule["alert"]: ("ok", None) for rule in rules}

        kube.kubectl("delete", "tuningstudy", STUDY, "--wait=true", timeout=60)
        prometheus.wait_for(f'absent(kubetune_study_phase{{study="{STUDY}"}})')
        prometheus.wait_for(f'absent(kubetune_trials_finished_total{{study="{STUDY}"}})')
    finally:
        prometheus.stop()

"""A study whose objective comes from Prometheus, end to end: the embedded control plane, the
operator as its own process, and a real Prometheus scraping real trainers that the local
kubelet publishes through file-based service discovery.

The trainers export their metrics only through the reporting helper's Prometheus route, so
every value the trials record went trainer -> Prometheus -> PromQL -> operator. One cluster,
one Prometheus and one operator serve the module.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubetune_localcluster.environment import free_port
from tests.e2e.conftest import Operator
from tests.localcluster.conftest import Kube, local_kube
from tests.prometheus_server import SCRAPED_BY_ENV, PrometheusServer, prometheus_trainer

DOWN = f"http://127.0.0.1:{free_port()}"
"""A Prometheus URL the operator allows where nothing listens."""
# Ten steps half a second apart: long enough for the file_sd refresh, a scrape and a poll,
# each every second, on a busy machine. The trial the pruner must stop (x = 10) trains for
# 50 s, within trialTimeout, so its end cannot outrun the first poll.
TRAINER = prometheus_trainer(steps=10, pause=0.5, hopeless_steps=100)
QUERY = (
    'kubetune_trial_metric{namespace="${trial.namespace}", pod="${trial.pod}", metric="${metric}"}'
)
# The step while the trainer trains; none once it reported its final values (which it keeps
# serving until scraped, and which are no intermediate value).
STEP_QUERY = (
    'kubetune_trial_step{namespace="${trial.namespace}", pod="${trial.pod}"}'
    ' unless on() kubetune_trial_final{namespace="${trial.namespace}", pod="${trial.pod}"} == 1'
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus-source")


@pytest.fixture(scope="module")
def prometheus(workdir: Path) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping every target the kubelet publishes, each second."""
    targets = workdir / "targets"
    targets.mkdir()
    server = PrometheusServer(
        workdir / "prometheus",
        [
            {
                "job_name": "trials",
                "file_sd_configs": [{"files": [str(targets / "*.json")], "refresh_interval": "1s"}],
            }
        ],
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kube(workdir: Path, prometheus: PrometheusServer) -> Iterator[Kube]:
    with local_kube(workdir, crds=True, service_discovery_dir=workdir / "targets") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def operator(kube: Kube, workdir: Path, prometheus: PrometheusServer) -> Iterator[Operator]:
    # The platform allows this Prometheus and DOWN, the port nothing listens on.
    allowed = ("--allow-prometheus", prometheus.url, "--allow-prometheus", DOWN)
    running = Operator(kube, workdir / "operator.log", ("--metrics-port", "0", *allowed))
    running.start()
    yield running
    running.stop()
    print(running.log.read_text()[-20000:])


def study(name: str, url: str, *, query: str = QUERY, **settings: Any) -> dict[str, Any]:
    """A grid over x in {2, 3, 10} minimizing loss read from Prometheus; the threshold pruner
    stops a trial whose polled loss is above 10 (x = 10 reports 64 and more)."""
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningStudy",
        "metadata": {"name": name},
        "spec": {
            "objective": {
                "metrics": [{"name": "loss", "direction": "minimize"}],
                "additionalMetrics": ["accuracy"],
            },
            "searchSpace": [{"name": "x", "type": "categorical", "choices": [2.0, 3.0, 10.0]}],
            "algorithm": {"name": "grid"},
            "pruner": {"name": "threshold", "upper": 10},
            "budget": {"parallelism": 3, "maxTrials": 3, "trialTimeout": "60s"},
            "metricsSource": {
                "prometheus": {
                    "url": url,
                    "query": query,
                    "stepQuery": STEP_QUERY,
                    "pollInterval": "1s",
                    "finalDelay": "1s",
                    "timeout": "2s",
                    "retries": 1,
                    **settings,
                }
            },
            "trialTemplate": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "python:3.12-slim",
                            "command": [sys.executable, "-c", TRAINER],
                            "ports": [{"name": "metrics", "containerPort": 9100}],
                            "env": [
                                {"name": "KUBETUNE_METRICS_PORT", "value": "9100"},
                                {"name": "KUBETUNE_METRICS_LINGER", "value": "5"},
                            ],
                        }
                    ]
                }
            },
        },
    }


def apply(kube: Kube, document: dict[str, Any]) -> None:
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(document))


def trials_of(kube: Kube, name: str) -> dict[float, dict[str, Any]]:
    items = kube.get_json("tuningtrials", "-l", f"kubetune.io/study={name}")["items"]
    return {t["spec"]["params"]["x"]: t for t in items}


def events_of(kube: Kube, name: str) -> list[dict[str, Any]]:
    listing = kube.get_json("events", "--field-selector", f"involvedObject.name={name}")
    return list(listing["items"])


def test_objective_from_promql_completes_with_the_exported_values_and_prunes(
    operator: Operator, prometheus: PrometheusServer
) -> None:
    kube = operator.kube
    document = study("from-prometheus", prometheus.url)
    # Each trainer waits until Prometheus holds its first step, so that a poll can see one.
    (container,) = document["spec"]["trialTemplate"]["spec"]["containers"]
    container["env"].append({"name": SCRAPED_BY_ENV, "value": prometheus.url})
    apply(kube, document)
    kube.wait_for(
        "tuningstudy/from-prometheus", condition="jsonpath={.status.phase}=Completed", timeout=40
    )

    trials = trials_of(kube, "from-prometheus")
    assert sorted(trials) == [2.0, 3.0, 10.0]
    # The final values the trainers exported, read back through PromQL: exactly (x - 2)^2,
    # not an intermediate value (those carry + 1/step).
    for x in (2.0, 3.0):
        status = trials[x]["status"]
        assert status["state"] == "Succeeded", status
        assert status["values"] == [(x - 2) ** 2]
        assert status["metrics"] == {"loss": (x - 2) ** 2, "accuracy": 0.9}
        # The polled intermediate values carry the trainer's steps (stepQuery).
        steps = {v["step"]: v["value"] for v in status["intermediateValues"]}
        assert steps, status
        for step, value in steps.items():
            assert value == pytest.approx((x - 2) ** 2 + 1 / step)
    # x = 10 reports 65, 64.5, ...: the threshold pruner acts on the first polled value.
    pruned = trials[10.0]["status"]
    assert pruned["state"] == "Pruned", pruned
    assert pruned["intermediateValues"][0]["value"] > 10
    status = kube.get_json("tuningstudy", "from-prometheus")["status"]
    assert status["bestTrial"]["value"] == 0.0
    assert status["trials"]["pruned"] == 1
    condition = {c["type"]: c for c in status["conditions"]}["MetricsSource"]
    assert (condition["status"], condition["reason"]) == ("True", "MetricsSourceReady")
    # The kubelet unpublished the ended pods, so Prometheus dropped their targets.
    prometheus.wait_for(
        'count(up{job="trials"}) or vector(0)', lambda r: r[0]["value"][1] == "0", timeout=10
    )


def test_prometheus_down_fails_the_trial_with_the_documented_status(operator: Operator) -> None:
    kube = operator.kube
    document = study("prometheus-down", DOWN, retries=0)
    document["spec"]["searchSpace"][0]["choices"] = [3.0]
    document["spec"]["budget"].update(maxTrials=1, parallelism=1)
    apply(kube, document)
    kube.wait_for(
        "tuningstudy/prometheus-down",
        condition="jsonpath={.status.conditions[?(@.type=='MetricsSource')].reason}"
        "=MetricsSourceUnreachable",
        timeout=40,
    )
    # Its only trial failed: the study has no result and fails, naming the cause.
    kube.wait_for(
        "tuningstudy/prometheus-down", condition="jsonpath={.status.phase}=Failed", timeout=40
    )
    failed = {
        c["type"]: c
        for c in kube.get_json("tuningstudy", "prometheus-down")["status"]["conditions"]
    }["Failed"]
    assert failed["reason"] == "NoTrialSucceeded"
    assert "(MetricsSourceError)" in failed["message"]
    (trial,) = trials_of(kube, "prometheus-down").values()
    status = trial["status"]
    # Never a value: the trial failed, saying why.
    assert status["state"] == "Failed"
    assert status["reason"] == "MetricsSourceError"
    assert "MetricsSourceUnreachable" in status["message"]
    assert "values" not in status or status["values"] is None
    assert status.get("intermediateValues", []) == []
    warnings = [e for e in events_of(kube, "prometheus-down") if e["type"] == "Warning"]
    assert {"MetricsSourceError", "TrialFailed"} <= {e["reason"] for e in warnings}


def test_a_bad_query_shows_in_the_status_and_is_never_a_value(
    operator: Operator, prometheus: PrometheusServer
) -> None:
    kube = operator.kube
    # Parses as a template (the placeholder is quoted) but not as PromQL: Prometheus says 400.
    bad = 'kubetune_trial_metric{pod="${trial.pod}", metric="${metric}"} +* 1'
    document = study("bad-query", prometheus.url, query=bad)
    document["spec"]["searchSpace"][0]["choices"] = [3.0]
    document["spec"]["budget"].update(maxTrials=1, parallelism=1)
    apply(kube, document)
    kube.wait_for("tuningstudy/bad-query", condition="jsonpath={.status.phase}=Failed", timeout=40)
    study_status = kube.get_json("tuningstudy", "bad-query")["status"]
    condition = {c["type"]: c for c in study_status["conditions"]}["MetricsSource"]
    assert condition["status"] == "False"
    assert condition["reason"] == "MetricsQueryInvalid"
    assert "bad_data" in condition["message"]
    (trial,) = trials_of(kube, "bad-query").values()
    assert trial["status"]["state"] == "Failed"
    assert trial["status"]["reason"] == "MetricsSourceError"
    assert "MetricsQueryInvalid" in trial["status"]["message"]
    assert study_status["trials"]["failed"] == 1
    assert study_status.get("bestTrial") is None
    assert (
        "MetricsQueryInvalid"
        in {c["type"]: c for c in study_status["conditions"]}["Failed"]["message"]
    )

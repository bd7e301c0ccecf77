"""kubetune.client against the embedded control plane with the operator running: a study applied
from Python, waited for, its trials read, round-tripped into Optuna, a trial's log read; and an
invalid manifest refused before it reaches the cluster, naming its field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from kubetune import client as kubetune_client
from kubetune.spec.study_status import StudyPhase, TuningStudyStatus
from tests.e2e.conftest import Operator
from tests.e2e.test_endings import X, study, trainer
from tests.localcluster.conftest import Kube, local_kube

NAME = "from-python"
TRIALS = 6

# loss depends on x; the held-out test_accuracy is recorded beside it, and a line of output
# says which trial this is, for logs() to find.
CODE = """
    import json, os
    x = float(os.environ["KUBETUNE_PARAM_X"])
    z = int(os.environ["KUBETUNE_PARAM_Z"])
    print(f"training with x={x} z={z}", flush=True)
    loss = (x - 2) ** 2 + 0.01 * z
    with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as log:
        json.dump({"loss": loss, "test_accuracy": 1 / (1 + loss)}, log)
"""


def manifest() -> dict[str, Any]:
    space = [X, {"name": "z", "type": "int", "low": 0, "high": 1}]
    document = study(NAME, trainer(CODE), space, {"maxTrials": TRIALS, "parallelism": 3})
    document["spec"]["objective"]["additionalMetrics"] = ["test_accuracy"]
    return document


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    home = tmp_path_factory.mktemp("client")
    with local_kube(home, crds=True) as kube:
        running = Operator(kube, home / "operator.log")
        running.start()
        yield running
        running.stop()
        print(running.log.read_text()[-20000:])


@pytest.fixture(scope="module")
def kube(operator: Operator) -> Kube:
    return operator.kube


@pytest.fixture(scope="module")
def client(kube: Kube) -> Iterator[kubetune_client.Client]:
    with kubetune_client.connect(kube.kubeconfig) as connected:
        yield connected


@pytest.fixture(scope="module")
def finished(client: kubetune_client.Client) -> TuningStudyStatus:
    # As YAML text, the way a notebook pastes a manifest (JSON is YAML).
    applied = client.apply(json.dumps(manifest()))
    assert applied.metadata.name == NAME
    assert applied.metadata.namespace == "default"
    return client.wait(NAME, timeout=120)


def test_connect_takes_the_namespace_of_the_kubeconfig_context(kube: Kube) -> None:
    with kubetune_client.connect(kube.kubeconfig) as connected:
        assert connected.namespace == "default"
    with kubetune_client.connect(kube.kubeconfig, namespace="research") as connected:
        assert connected.namespace == "research"
    with pytest.raises(kubetune_client.ConfigError, match="cannot read the kubeconfig"):
        kubetune_client.connect(Path("/nonexistent/kubeconfig"))


def test_a_study_applied_from_python_runs_and_is_waited_for(
    client: kubetune_client.Client, finished: TuningStudyStatus
) -> None:
    assert finished.phase is StudyPhase.COMPLETED
    assert finished.trials.succeeded == TRIALS
    trials = client.trials(NAME)
    assert [t.spec.number for t in trials] == list(range(TRIALS))
    assert all(t.status.metrics["test_accuracy"] > 0 for t in trials)
    # Applying the same manifest again changes nothing and returns the stored study.
    again = client.apply(manifest())
    assert again.status is not None
    assert again.status.phase is StudyPhase.COMPLETED


def test_to_optuna_round_trips_the_study(
    client: kubetune_client.Client, finished: TuningStudyStatus
) -> None:
    optuna_study = client.to_optuna(NAME)
    assert optuna_study.study_name == f"default/{NAME}"
    best = finished.best_trial
    assert best is not None
    assert optuna_study.best_trial.number == best.number
    assert optuna_study.best_value == best.value
    assert optuna_study.best_params == best.params
    frame = optuna_study.trials_dataframe()
    assert len(frame) == TRIALS
    assert sorted(frame["number"]) == list(range(TRIALS))
    importances = optuna.importance.get_param_importances(optuna_study)
    assert set(importances) == {"x", "z"}
    assert importances["x"] > importances["z"]  # loss barely depends on z


def test_logs_returns_what_the_trainer_printed(
    client: kubetune_client.Client, finished: TuningStudyStatus
) -> None:
    first = client.trials(NAME)[0]
    x, z = first.spec.params["x"], first.spec.params["z"]
    expected = f"training with x={float(x)} z={z}"
    assert expected in client.logs(NAME, 0)
    assert expected in client.logs(NAME, first.metadata.name or "")
    with pytest.raises(kubetune_client.NotFoundError, match=r"no trial 99: give a trial number"):
        client.logs(NAME, 99)


def test_an_invalid_manifest_is_refused_naming_the_field(
    client: kubetune_client.Client, kube: Kube
) -> None:
    document = manifest()
    document["metadata"]["name"] = "invalid"
    document["spec"]["budget"]["parallelism"] = 0
    with pytest.raises(kubetune_client.InvalidStudyError, match=r"spec\.budget\.parallelism"):
        client.apply(document)
    # Refused before it reached the cluster.
    with pytest.raises(kubetune_client.NotFoundError, match="no TuningStudy invalid"):
        client.study("invalid")


def test_wait_times_out_naming_the_phase(client: kubetune_client.Client) -> None:
    document = manifest()
    document["metadata"]["name"] = "never-scheduled"
    # More CPU than the node has: its trials stay Pending, and the study Running.
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["resources"]["requests"]["cpu"] = "1000"
    client.apply(document)
    with pytest.raises(TimeoutError, match=r"never-scheduled .* is still (Pending|Running)"):
        client.wait("never-scheduled", timeout=1)

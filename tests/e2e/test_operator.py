"""The operator end to end on both control planes, driven through the real kubectl:
studies applied with kubectl run to their end, and survive the operator being killed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from kubetune.spec import api
from kubetune_localcluster.access import ApiRequest
from kubetune_localcluster.kubelet import KUBELET_USER_AGENT
from tests.e2e.conftest import ROOT, Operator
from tests.localcluster.conftest import Kube


def example(name: str, **budget: Any) -> dict[str, Any]:
    """An example study, with a smaller budget for the test."""
    document: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    document["spec"]["budget"].update(budget)
    return document


def apply(kube: Kube, document: dict[str, Any]) -> None:
    # As JSON: PyYAML would write the parameter name y unquoted, which kubectl reads as true.
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(document))


def test_a_study_applied_with_kubectl_runs_to_its_end(operator: Operator) -> None:
    kube = operator.kube
    apply(kube, example("synthetic-quadratic.yaml", maxTrials=6, parallelism=3))
    kube.wait_for(
        "tuningstudy/synthetic-quadratic",
        condition="jsonpath={.status.phase}=Completed",
        timeout=120,
    )

    study = kube.get_json("tuningstudy", "synthetic-quadratic")
    status = study["status"]
    assert status["trials"]["succeeded"] == 6
    assert status["progress"] == "6/6"
    trials = kube.get_json("tuningtrials", "-l", "kubetune.io/study=synthetic-quadratic")["items"]
    assert sorted(t["spec"]["number"] for t in trials) == list(range(6))
    values = {t["metadata"]["name"]: t["status"]["values"][0] for t in trials}
    best = min(values, key=values.__getitem__)
    assert status["bestTrial"]["name"] == best
    # The trainer's own formula, from the parameters it was given.
    for trial in trials:
        x, y = trial["spec"]["params"]["x"], trial["spec"]["params"]["y"]
        expected = (x - 2) ** 2 + (y + 1) ** 2
        if trial["spec"]["params"]["shape"] == "ridge":
            expected += 1 + trial["spec"]["params"]["tilt"] * abs(x - y)
        assert abs(values[trial["metadata"]["name"]] - expected) < 1e-9
    condition = {c["type"]: c for c in status["conditions"]}["Completed"]
    assert condition["reason"] == "MaxTrialsReached"
    # Importances were computed (PED-ANOVA) without loading scikit-learn, which fANOVA would
    # (its compiled modules would be mapped into the operator's process).
    assert set(status["importances"]) == {"x", "y", "shape", "tilt"}
    assert operator.process is not None
    maps = Path(f"/proc/{operator.process.pid}/maps").read_text()
    assert "optuna" in maps or "numpy" in maps
    assert "sklearn" not in maps
    # kubectl get shows the printer columns from the status.
    table = kube.kubectl("get", "tuningstudies", "synthetic-quadratic").stdout
    assert "Completed" in table
    assert "6/6" in table
    events = kube.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=synthetic-quadratic", "-o", "json"
    ).stdout
    reasons = {event["reason"] for event in json.loads(events)["items"]}
    assert {"TrialStarted", "TrialSucceeded", "NewBest", "StudySucceeded"} <= reasons
    kube.kubectl("delete", "tuningstudy", "synthetic-quadratic", "--wait=true", timeout=60)
    # The garbage collector removes the owned trials; a real one does it after the owner is gone.
    kube.wait_for("tuningtrials", "--all", condition="delete", timeout=60)
    assert kube.get_json("tuningtrials")["items"] == []


def test_the_study_survives_the_operator_being_killed(operator: Operator) -> None:
    kube = operator.kube
    slow = example("synthetic-quadratic.yaml", maxTrials=12, parallelism=3)
    slow["metadata"]["name"] = "survivor"
    container = slow["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"][2] = "import time; time.sleep(0.4)\n" + container["command"][2]
    apply(kube, slow)
    kills = 0
    client = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
    custom = kubernetes.client.CustomObjectsApi(client)
    # Kill the operator each time three more trials exist, reacting to the study's events.
    stream = kubernetes.watch.Watch().stream(
        custom.list_namespaced_custom_object,
        "kubetune.io",
        "v1alpha1",
        "default",
        "tuningstudies",
        field_selector="metadata.name=survivor",
        timeout_seconds=120,
    )
    for event in stream:
        status = event["object"].get("status") or {}
        if status.get("phase") == "Completed" or kills == 3:
            break
        if status.get("trials", {}).get("total", 0) >= 3 * (kills + 1):
            operator.kill()
            operator.start()
            kills += 1
    client.close()
    kube.wait_for(
        "tuningstudy/survivor", condition="jsonpath={.status.phase}=Completed", timeout=90
    )
    assert kills == 3
    trials = kube.get_json("tuningtrials", "-l", "kubetune.io/study=survivor")["items"]
    assert sorted(t["spec"]["number"] for t in trials) == list(range(12))
    assert {t["status"]["state"] for t in trials} == {"Succeeded"}
    pods = kube.get_json("pods", "-l", "kubetune.io/study=survivor")["items"]
    # One pod per trial, each owned by its trial: none orphaned, none duplicated.
    owners = sorted(p["metadata"]["ownerReferences"][0]["name"] for p in pods)
    assert owners == sorted(t["metadata"]["name"] for t in trials)


# Request hooks are the emulator's: a real API server's writes are counted by nothing here.
@pytest.mark.parametrize("kube", ["embedded"], indirect=True)
def test_a_running_trial_costs_no_busy_loop(operator: Operator) -> None:
    """The study's own status writes do not wake its daemon: while one trial runs for two
    seconds, the operator writes the study a handful of times, not once per reconcile of a
    loop that feeds itself (Katib #2725)."""
    kube = operator.kube
    server = kube.running.cluster.server
    writes: list[ApiRequest] = []

    async def record(request: ApiRequest) -> None:
        if request.verb != "get" and request.user_agent != KUBELET_USER_AGENT:
            writes.append(request)

    server.request_hooks.append(record)
    try:
        study = example("synthetic-quadratic.yaml", maxTrials=1, parallelism=1)
        study["metadata"]["name"] = "idle"
        container = study["spec"]["trialTemplate"]["spec"]["containers"][0]
        container["command"][2] = "import time; time.sleep(2)\n" + container["command"][2]
        apply(kube, study)
        kube.wait_for(
            "tuningstudy/idle", condition="jsonpath={.status.phase}=Completed", timeout=120
        )
    finally:
        server.request_hooks.remove(record)
    status_writes = [
        w for w in writes if w.resource == api.STUDY_PLURAL and w.subresource == "status"
    ]
    # Trial created, running, finished, study completed, plus an elapsed-time update per
    # reconcile that pod events cause (more of them on a loaded machine: 9 were seen on two
    # busy cores). A loop feeding itself writes hundreds in these seconds.
    assert 2 <= len(status_writes) <= 12, status_writes

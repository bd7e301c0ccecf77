"""Each way a study ends, end to end: studies applied with the real kubectl to the embedded
control plane (whose node has one fake GPU), the operator running as its own process, and the
outcome read back from the TuningStudy, TuningTrial, Pod and Event objects.

Every study here has a tiny synthetic trainer (`python -c ...`) and a small budget, so each
reaches its ending in a few seconds: goal, patience, too many failures, maxDuration, GPU-hours,
money and an exhausted grid, plus pruning through the pod annotation route, importances and
events. One cluster and one operator serve the whole module.
"""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import kubernetes
import pytest

from tests.e2e.conftest import Operator, module_operator, printing_this_tests_log
from tests.localcluster.conftest import PLANES, Kube, local_kube

GPU = "nvidia.com/gpu"


# --- fixtures: a cluster with one GPU, the CRDs, and one operator for the module -------------


@pytest.fixture(scope="module", params=PLANES)
def gpu_kube(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kube]:
    """A local cluster whose node has one nvidia.com/gpu, with Kubetune's CRDs, on each control
    plane in turn."""
    folder = tmp_path_factory.mktemp(f"endings-{request.param}")
    with local_kube(folder, crds=True, capacity={GPU: "1"}, plane=request.param) as kube:
        yield kube


@pytest.fixture(scope="module")
def running_operator(
    gpu_kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with module_operator(gpu_kube, log) as operator:
        yield operator


@pytest.fixture
def kube(running_operator: Operator) -> Iterator[Kube]:
    """The cluster, with the operator's log of this test printed (shown when it fails)."""
    with printing_this_tests_log(running_operator) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(gpu_kube: Kube) -> Iterator[kubernetes.client.ApiClient]:
    api_client = kubernetes.config.new_client_from_config(str(gpu_kube.kubeconfig))
    yield api_client
    api_client.close()


# --- studies -----------------------------------------------------------------------------------


def trainer(*parts: str) -> list[str]:
    """A trainer container command: this Python (it has kubetune_report) running the parts of
    code one after the other."""
    return [sys.executable, "-c", "\n".join(textwrap.dedent(part) for part in parts)]


# The final metrics as JSON to the termination message file (the route that needs no RBAC).
WRITE_LOSS = """\
    with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as log:
        json.dump({"loss": loss}, log)
"""


def study(
    name: str,
    command: list[str],
    search_space: list[dict[str, Any]],
    budget: dict[str, Any],
    *,
    algorithm: dict[str, Any] | None = None,
    pruner: dict[str, Any] | None = None,
    goal: float | None = None,
    gpus: int = 0,
    container: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A TuningStudy minimizing `loss`, with a random sampler seeded for reproducibility."""
    metric: dict[str, Any] = {"name": "loss", "direction": "minimize"}
    if goal is not None:
        metric["goal"] = goal
    resources: dict[str, Any] = {"requests": {"cpu": "10m", "memory": "16Mi"}}
    if gpus:
        # A number, as people write it in YAML (nvidia.com/gpu: 1).
        resources["limits"] = {GPU: gpus}
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningStudy",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metrics": [metric]},
            "searchSpace": search_space,
            "algorithm": algorithm or {"name": "random", "seed": 7},
            "pruner": pruner or {"name": "none"},
            "budget": budget,
            "trialTemplate": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "python:3.12-slim",
                            "command": command,
                            "resources": resources,
                            **(container or {}),
                        }
                    ],
                }
            },
        },
    }


X = {"name": "x", "type": "float", "low": 0.0, "high": 5.0}


def reporter_account(name: str, namespace: str = "default") -> list[dict[str, Any]]:
    """A ServiceAccount for trial pods that report through their annotation: patch on pods."""
    meta = {"name": name, "namespace": namespace}
    rbac = "rbac.authorization.k8s.io"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


# --- reading the cluster -------------------------------------------------------------------------


def apply(kube: Kube, document: dict[str, Any]) -> None:
    # As JSON: PyYAML would write a parameter named y unquoted, which kubectl reads as true.
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(document))


def finish(kube: Kube, name: str, timeout: int = 60) -> dict[str, Any]:
    """Wait until the study has a completion time (whatever its phase); the study."""
    kube.wait_for(
        f"tuningstudy/{name}", condition="jsonpath={.status.completionTime}", timeout=timeout
    )
    return kube.get_json("tuningstudy", name)


def condition(document: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = {c["type"]: c for c in document["status"]["conditions"]}
    assert kind in conditions, document["status"]
    return conditions[kind]


def trials_of(kube: Kube, name: str) -> list[dict[str, Any]]:
    items = kube.get_json("tuningtrials", "-l", f"kubetune.io/study={name}")["items"]
    return sorted(items, key=lambda t: t["spec"]["number"])


def pods_of(kube: Kube, name: str) -> list[dict[str, Any]]:
    return list(kube.get_json("pods", "-l", f"kubetune.io/study={name}")["items"])


def wait_for_events(
    client: kubernetes.client.ApiClient, name: str, reasons: set[str], timeout: int = 20
) -> list[dict[str, Any]]:
    """The events about an object once every reason in `reasons` is among them (the operator
    posts events after it writes the status, so they may trail it a little)."""
    core = kubernetes.client.CoreV1Api(client)
    selector = f"involvedObject.name={name}"
    listing = core.list_namespaced_event("default", field_selector=selector)
    # By uid: a watch also reports an event again when its count goes up.
    events: dict[str, dict[str, Any]] = {}
    for event in listing.items:
        events[event.metadata.uid] = client.sanitize_for_serialization(event)
    if reasons <= {e["reason"] for e in events.values()}:
        return list(events.values())
    stream = kubernetes.watch.Watch().stream(
        core.list_namespaced_event,
        "default",
        field_selector=selector,
        resource_version=listing.metadata.resource_version,
        timeout_seconds=timeout,
    )
    for change in stream:
        event = change["object"]
        events[event.metadata.uid] = client.sanitize_for_serialization(event)
        if reasons <= {e["reason"] for e in events.values()}:
            return list(events.values())
    seen = sorted({e["reason"] for e in events.values()})
    raise AssertionError(f"no {sorted(reasons)} events about {name} in {timeout} s, only {seen}")


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# A trainer that holds its GPU for a moment. The budgets count the pods' running time, from
# container timestamps in whole seconds (as in Kubernetes): each trial counts about 1 s.
PAID_TRAINER = """\
    import json, os, time
    time.sleep(0.9)
    loss = abs(float(os.environ["KUBETUNE_PARAM_X"]))
"""


# --- the endings -------------------------------------------------------------------------------


def test_a_trial_reaching_the_goal_completes_the_study(
    kube: Kube, client: kubernetes.client.ApiClient
) -> None:
    code = """
        import json, os
        loss = (float(os.environ["KUBETUNE_PARAM_X"]) - 2) ** 2
    """
    apply(
        kube,
        study(
            "goal",
            trainer(code, WRITE_LOSS),
            [X],
            {"maxTrials": 40, "parallelism": 1},
            goal=1.0,
        ),
    )
    document = finish(kube, "goal")

    assert document["status"]["phase"] == "Completed"
    completed = condition(document, "Completed")
    assert completed["reason"] == "GoalReached"
    trials = trials_of(kube, "goal")
    values = [t["status"]["values"][0] for t in trials]
    # One trial at a time: the study stopped at the first trial within the goal.
    assert values[-1] <= 1.0
    assert all(value > 1.0 for value in values[:-1])
    assert 1 < len(trials) < 40
    best = document["status"]["bestTrial"]
    assert (best["number"], best["value"]) == (len(trials) - 1, values[-1])
    assert f"trial {best['number']} reached the goal" in completed["message"]
    reasons = {e["reason"] for e in wait_for_events(client, "goal", {"StudySucceeded"})}
    assert {"TrialStarted", "TrialSucceeded", "NewBest", "StudySucceeded"} <= reasons


def test_patience_completes_a_study_that_stopped_improving(
    kube: Kube, client: kubernetes.client.ApiClient
) -> None:
    # A plateau: every configuration gives the same loss, so only trial 0 is ever a new best.
    code = """
        import json, os
        loss = 1.5
    """
    apply(kube, study("plateau", trainer(code, WRITE_LOSS), [X], {"maxTrials": 20, "patience": 3}))
    document = finish(kube, "plateau")

    assert document["status"]["phase"] == "Completed"
    completed = condition(document, "Completed")
    assert completed["reason"] == "PatienceExhausted"
    assert "3 completed trials in a row without improvement" in completed["message"]
    trials = trials_of(kube, "plateau")
    assert [t["status"]["state"] for t in trials] == ["Succeeded"] * 4
    assert document["status"]["bestTrial"]["number"] == 0
    events = wait_for_events(client, "plateau", {"StudySucceeded"})
    assert [e["reason"] for e in events].count("NewBest") == 1


def test_too_many_failed_trials_fail_the_study(
    kube: Kube, client: kubernetes.client.ApiClient
) -> None:
    code = """
        import sys
        print("CUDA out of memory", file=sys.stderr)
        sys.exit(1)
    """
    apply(
        kube,
        study(
            "crashing",
            trainer(code),
            [X],
            {"maxTrials": 10, "maxFailedTrials": 2},
            # The log's tail becomes the message of a container that failed without one.
            container={"terminationMessagePolicy": "FallbackToLogsOnError"},
        ),
    )
    document = finish(kube, "crashing")

    status = document["status"]
    assert status["phase"] == "Failed"
    failed = condition(document, "Failed")
    assert failed["reason"] == "TooManyFailures"
    assert "3 trials failed, more than maxFailedTrials (2)" in failed["message"]
    assert condition(document, "Running")["status"] == "False"
    assert status["trials"]["failed"] == 3
    assert status.get("bestTrial") is None
    trials = trials_of(kube, "crashing")
    assert [t["spec"]["number"] for t in trials] == [0, 1, 2]
    for trial in trials:
        assert trial["status"]["state"] == "Failed"
        assert trial["status"]["reason"] == "Error"
        assert "CUDA out of memory" in trial["status"]["message"]
    events = wait_for_events(client, "crashing", {"StudyFailed"})
    assert [e["reason"] for e in events].count("TrialFailed") == 3
    study_failed = next(e for e in events if e["reason"] == "StudyFailed")
    assert study_failed["type"] == "Warning"
    assert study_failed["message"].startswith("TooManyFailures")


def test_max_duration_stops_the_running_trials(
    kube: Kube, client: kubernetes.client.ApiClient
) -> None:
    # Trial 0 succeeds at once; the next would outlive the study: the operator stops it at
    # maxDuration.
    code = """
        import json, os, time
        print("training", flush=True)
        loss = 1.0
        if os.environ["KUBETUNE_TRIAL_NUMBER"] != "0":
            time.sleep(60)
    """
    apply(
        kube,
        study(
            "deadline",
            trainer(code, WRITE_LOSS),
            [X],
            {"maxTrials": 10, "parallelism": 2, "maxDuration": "3s"},
        ),
    )
    document = finish(kube, "deadline")

    status = document["status"]
    assert status["phase"] == "Completed"
    assert condition(document, "Completed")["reason"] == "MaxDurationReached"
    elapsed = (moment(status["completionTime"]) - moment(status["startTime"])).total_seconds()
    assert 3 <= elapsed < 10
    assert status["budget"]["maxDurationSeconds"] == 3
    first, *stopped = trials_of(kube, "deadline")
    assert first["status"]["state"] == "Succeeded"
    assert stopped
    for trial in stopped:
        assert trial["status"]["state"] == "Stopped"
        assert trial["status"]["reason"] == "MaxDurationReached"
        assert trial["status"]["message"] == "the study ran for maxDuration (3s)"
    # Their pods are stopped where they ran and stay, with their logs, after the study ended.
    for trial in stopped:
        name = trial["metadata"]["name"]
        kube.wait_for(
            f"pod/{name}", condition="jsonpath={.status.reason}=DeadlineExceeded", timeout=30
        )
        assert "training" in kube.kubectl("logs", f"pod/{name}").stdout
    assert status["trials"]["stopped"] == len(stopped)
    wait_for_events(client, "deadline", {"TrialStopped", "StudySucceeded"})


def test_the_gpu_hour_budget_stops_starting_trials_it_cannot_cover(
    kube: Kube, client: kubernetes.client.ApiClient
) -> None:
    # A trial's worst case is 1 GPU x (trialTimeout + the 10 s grace period): 20 s; the budget
    # is that plus 1.5 s. So, although parallelism is 2, one trial at a time fits, and no trial
    # starts once the GPU time used leaves less than a worst case. (A generous trialTimeout: a
    # loaded machine must not time a trial out.)
    worst_case = 20.0
    limit = worst_case + 1.5
    apply(
        kube,
        study(
            "gpu-hours",
            trainer(PAID_TRAINER, WRITE_LOSS),
            [X],
            {
                "maxTrials": 30,
                "parallelism": 2,
                "trialTimeout": "10s",
                "maxGpuHours": limit / 3600,
            },
            gpus=1,
        ),
    )
    document = finish(kube, "gpu-hours")

    status = document["status"]
    assert status["phase"] == "Completed"
    completed = condition(document, "Completed")
    assert completed["reason"] == "GpuHoursExhausted"
    assert "cannot cover another trial's worst case" in completed["message"]
    trials = trials_of(kube, "gpu-hours")
    # The budget stops starts; it never had to stop a running trial.
    assert {t["status"]["state"] for t in trials} == {"Succeeded"}
    assert all(t["status"]["gpus"] == 1 for t in trials)
    used = sum(t["status"]["gpuSeconds"] for t in trials)
    assert used == pytest.approx(status["budget"]["gpuHours"] * 3600, rel=1e-6)
    assert status["budget"]["maxGpuHours"] == pytest.approx(limit / 3600)
    # Never over the limit, and it ended only when another worst case no longer fit.
    assert used <= limit
    assert used + worst_case > limit
    # Each trial was created after the one before it had finished: the worst case of the
    # running one left no room for a second.
    for before, after in itertools.pairwise(trials):
        created = moment(after["metadata"]["creationTimestamp"])
        assert created >= moment(before["status"]["completionTime"]).replace(microsecond=0)
    wait_for_events(client, "gpu-hours", {"StudySucceeded"})


def test_the_money_budget_stops_starting_trials_it_cannot_cover(kube: Kube) -> None:
    # 36 EUR per GPU-hour is 0.01 EUR per second: a trial's worst case (10 s trialTimeout and
    # the 10 s grace period) costs 0.20 EUR, and the budget covers that and 1.5 s more.
    price, worst_case, limit = 36.0, 0.20, 0.215
    apply(
        kube,
        study(
            "money",
            trainer(PAID_TRAINER, WRITE_LOSS),
            [X],
            {
                "maxTrials": 30,
                "trialTimeout": "10s",
                "money": {"limit": limit, "currency": "EUR", "pricePerGpuHour": {GPU: price}},
            },
            gpus=1,
        ),
    )
    document = finish(kube, "money")

    status = document["status"]
    assert status["phase"] == "Completed"
    completed = condition(document, "Completed")
    assert completed["reason"] == "MoneyExhausted"
    assert "the money budget (0.215 EUR) cannot cover" in completed["message"]
    budget = status["budget"]
    assert budget["currency"] == "EUR"
    assert budget["moneyLimit"] == limit
    trials = trials_of(kube, "money")
    assert {t["status"]["state"] for t in trials} == {"Succeeded"}
    spent = sum(t["status"]["cost"] for t in trials)
    assert spent == pytest.approx(budget["money"], rel=1e-6)
    assert spent == pytest.approx(budget["gpuHours"] * price, rel=1e-6)
    assert spent <= limit
    assert spent + worst_case > limit


def test_a_grid_study_on_one_gpu_completes_when_every_point_was_tried(
    kube: Kube, client: kubernetes.client.ApiClient
) -> None:
    # loss depends on x a lot and on z barely: the importances must say so.
    code = """
        import json, os
        x = float(os.environ["KUBETUNE_PARAM_X"])
        z = float(os.environ["KUBETUNE_PARAM_Z"])
        loss = x ** 2 + 0.01 * z
    """
    space = [
        {"name": "x", "type": "float", "low": -2.0, "high": 2.0, "step": 1.0},
        {"name": "z", "type": "int", "low": 0, "high": 1},
    ]
    apply(
        kube,
        study(
            "grid",
            trainer(code, WRITE_LOSS),
            space,
            {"parallelism": 4},
            algorithm={"name": "grid", "seed": 3},
            gpus=1,
        ),
    )
    document = finish(kube, "grid")

    status = document["status"]
    assert status["phase"] == "Completed"
    assert condition(document, "Completed")["reason"] == "SearchSpaceExhausted"
    trials = trials_of(kube, "grid")
    points = sorted((float(t["spec"]["params"]["x"]), t["spec"]["params"]["z"]) for t in trials)
    assert points == [(float(x), z) for x in range(-2, 3) for z in (0, 1)]
    assert {t["status"]["state"] for t in trials} == {"Succeeded"}
    assert status["trials"]["succeeded"] == 10
    assert status["bestTrial"]["params"] in ({"x": 0.0, "z": 0}, {"x": 0, "z": 0})
    importances = status["importances"]
    assert set(importances) == {"x", "z"}
    assert importances["x"] > importances["z"]
    assert status["importancesTrials"] == 10
    # One GPU on the node for four active trials: pods waited for it, and ran one at a time.
    spans = sorted(
        (moment(t["status"]["startTime"]), moment(t["status"]["completionTime"])) for t in trials
    )
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))
    scheduling = [
        event
        for trial in trials
        for event in wait_for_events(client, trial["metadata"]["name"], set())
        if event["reason"] == "FailedScheduling"
    ]
    assert scheduling, "no trial pod waited for the GPU"
    assert all(f"1 Insufficient {GPU}" in event["message"] for event in scheduling)
    wait_for_events(client, "grid", {"StudySucceeded"})


def test_hopeless_trials_are_pruned_from_their_intermediate_reports(
    kube: Kube, client: kubernetes.client.ApiClient
) -> None:
    # Reports through the pod annotation (kubetune_report: on the embedded plane with the
    # kubeconfig the kubelet gives each pod, on the real one with the pod's service-account
    # token); the larger x, the worse every step's loss.
    code = """
        import os, time
        from kubetune_report import report, report_final
        x = float(os.environ["KUBETUNE_PARAM_X"])
        for step in range(6):
            loss = 10 * x + 1 / (step + 1)
            report(step, loss=loss)
            time.sleep(0.1)
        report_final(loss=loss)
    """
    pruning = study(
        "pruning",
        trainer(code),
        [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        {"maxTrials": 10, "parallelism": 2},
        pruner={"name": "median", "startupTrials": 2, "warmupSteps": 1},
    )
    # The annotation route needs a ServiceAccount that may patch pods (docs/trial-contract.md),
    # which the real API server's RBAC enforces: the default one may not.
    for document in reporter_account("reporter"):
        apply(kube, document)
    pruning["spec"]["trialTemplate"]["spec"]["serviceAccountName"] = "reporter"
    apply(kube, pruning)
    document = finish(kube, "pruning")

    status = document["status"]
    assert status["phase"] == "Completed"
    assert condition(document, "Completed")["reason"] == "MaxTrialsReached"
    trials = trials_of(kube, "pruning")
    pruned = [t for t in trials if t["status"]["state"] == "Pruned"]
    succeeded = [t for t in trials if t["status"]["state"] == "Succeeded"]
    assert pruned, "no trial was pruned"
    assert len(pruned) + len(succeeded) == 10
    assert status["trials"]["pruned"] == len(pruned)
    best_x = min(t["spec"]["params"]["x"] for t in succeeded)
    for trial in pruned:
        record = trial["status"]
        assert record["reason"] == "Pruned"
        steps = [value["step"] for value in record["intermediateValues"]]
        assert steps == sorted(set(steps))
        # Stopped past the warm-up step, before its final report, for doing worse than the
        # median trial.
        assert 1 <= steps[-1] <= 5
        assert record.get("values") is None
        assert record["message"] == f"pruned by the median pruner at step {steps[-1]}"
        assert trial["spec"]["params"]["x"] > best_x
        # Stopped where it ran (its activeDeadlineSeconds lowered, unless it ended first): the
        # pod stays, ended.
        name = trial["metadata"]["name"]
        kube.wait_for(
            f"tuningtrial/{name}", condition="jsonpath={.status.podTerminating}=false", timeout=30
        )
        phase = kube.get_json("pod", name)["status"]["phase"]
        assert phase in ("Failed", "Succeeded")
    # The completed trials ran every step (their final value is the last step's); every trial
    # kept its pod.
    for trial in succeeded:
        assert trial["status"]["values"] == [10 * trial["spec"]["params"]["x"] + 1 / 6]
    remaining = {pod["metadata"]["name"] for pod in pods_of(kube, "pruning")}
    assert remaining == {t["metadata"]["name"] for t in trials}
    reasons = {
        e["reason"] for e in wait_for_events(client, "pruning", {"TrialPruned", "StudySucceeded"})
    }
    assert {"TrialStarted", "TrialSucceeded", "NewBest"} <= reasons

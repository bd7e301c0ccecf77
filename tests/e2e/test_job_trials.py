"""Trials that are batch/v1 Jobs (spec.trialTemplate.job), end to end on the real control plane:
its job controller runs the Jobs, the real scheduler places their pods, the local kubelet runs
them. The embedded plane has no job controller (and refuses such studies: tests/unit).

Each trial is an Indexed Job of two pods with the distributed rendezvous: rank 1 connects to
MASTER_ADDR:MASTER_PORT and says hello, rank 0 waits for it there and reports. So a trial
succeeds only if both pods ran with the injected env and reached each other. Cases: success,
one pod failing, pruning in the middle of a run, a timeout, a Job that cannot be fully
scheduled, and an operator restart while a Job runs. After each, no pod of the study runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kubetune import client as kubetune_client
from kubetune_localcluster.real import RealCluster
from tests.chart.conftest import NAMESPACE, objects, one, render
from tests.chart.recording import Call
from tests.chart.test_rbac import assert_exact, grants
from tests.e2e.conftest import Operator, module_operator, printing_this_tests_log
from tests.e2e.test_endings import X, apply, finish, reporter_account, study, trainer, trials_of
from tests.eventually import eventually
from tests.localcluster.conftest import Kube, local_kube

GPU = "nvidia.com/gpu"
SCARCE = "example.com/gpu"
"""A GPU kind the node has one of: a trial of two pods asking for one each only partly fits."""

ENV = """\
    import json, os, socket, sys, time
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    x = float(os.environ["KUBETUNE_PARAM_X"])
    print(f"rank {rank} of {world}, rendezvous at {address}:{port}", flush=True)
"""
RENDEZVOUS = """\
    if rank == 0:
        server = socket.create_server(("", port))
        for _ in range(world - 1):
            connection, _ = server.accept()
            assert connection.recv(5) == b"hello"
            connection.close()
        print("every rank said hello", flush=True)
    else:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((address, port), timeout=1).sendall(b"hello")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
"""
REPORT = """\
    if rank == 0:
        with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as log:
            json.dump({"loss": (x - 2) ** 2}, log)
"""


@pytest.fixture(scope="module")
def job_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    folder = tmp_path_factory.mktemp("job-trials")
    capacity = {GPU: "8", SCARCE: "1"}
    with local_kube(folder, crds=True, capacity=capacity, plane="real") as kube:
        for item in reporter_account("reporter"):
            apply(kube, item)
        yield kube


@pytest.fixture(scope="module")
def running_operator(
    job_kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with module_operator(job_kube, log) as operator:
        yield operator


@pytest.fixture
def kube(running_operator: Operator) -> Iterator[Kube]:
    """The cluster, with the operator's log of this test printed (shown when it fails)."""
    with printing_this_tests_log(running_operator) as cluster:
        yield cluster


def job_study(
    name: str,
    command: list[str],
    budget: dict[str, Any],
    *,
    gpu: str = GPU,
    pruner: dict[str, Any] | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """A study whose trials are Indexed Jobs of two pods, each asking for one `gpu`."""
    document = study(name, command, [X], budget, pruner=pruner)
    template = document["spec"]["trialTemplate"]
    template["job"] = {"completions": 2, "distributed": {"port": 29500}}
    container = template["spec"]["containers"][0]
    container["resources"]["limits"] = {gpu: 1}
    if service_account is not None:
        template["spec"]["serviceAccountName"] = service_account
    return document


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def pods_of_trial(kube: Kube, trial: str) -> list[dict[str, Any]]:
    return list(kube.get_json("pods", "-l", f"kubetune.io/trial={trial}")["items"])


def assert_nothing_runs(kube: Kube, name: str) -> None:
    """No pod of the study runs or waits any longer (each one has terminated, or is gone)."""

    def settled() -> list[str]:
        pods = kube.get_json("pods", "-l", f"kubetune.io/study={name}")["items"]
        return [
            p["metadata"]["name"]
            for p in pods
            if p["status"].get("phase") in ("Pending", "Running")
        ]

    eventually(lambda: settled() == [], timeout=60, message=f"pods of {name} still run")


def test_each_trial_runs_as_a_job_of_two_pods_that_reach_each_other(kube: Kube) -> None:
    name = "jobs-succeed"
    apply(
        kube, job_study(name, trainer(ENV, RENDEZVOUS, REPORT), {"maxTrials": 3, "parallelism": 2})
    )
    document = finish(kube, name, timeout=180)
    assert document["status"]["phase"] == "Completed", document["status"]
    trials = trials_of(kube, name)
    assert [t["status"]["state"] for t in trials] == ["Succeeded"] * 3
    for trial in trials:
        trial_name = trial["metadata"]["name"]
        x = trial["spec"]["params"]["x"]
        assert trial["status"]["values"] == [pytest.approx((x - 2) ** 2)]
        job = kube.get_json("job", trial_name)
        assert job["spec"]["completionMode"] == "Indexed"
        assert job["metadata"]["ownerReferences"][0]["name"] == trial_name
        pods = pods_of_trial(kube, trial_name)
        indexes = sorted(
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods
        )
        assert indexes == ["0", "1"]
        assert all(p["status"]["phase"] == "Succeeded" for p in pods)
        # Both pods' GPUs count, from the first pod's start until the last one ended.
        status = trial["status"]
        assert status["gpus"] == 2
        started, ended = moment(status["startTime"]), moment(status["podEndTime"])
        ran = [p["status"]["containerStatuses"][0]["state"]["terminated"] for p in pods]
        assert started == min(moment(container["startedAt"]) for container in ran)
        assert ended == max(moment(container["finishedAt"]) for container in ran)
        assert status["gpuSeconds"] == pytest.approx(2 * (ended - started).total_seconds())
        service = kube.get_json("service", trial_name)
        assert service["spec"]["clusterIP"] == "None"
    assert_nothing_runs(kube, name)


def test_one_failing_pod_fails_the_trial_and_names_it(kube: Kube) -> None:
    name = "jobs-fail"
    fail = """\
        if rank == 1:
            sys.exit(3)
    """
    apply(
        kube,
        job_study(
            name, trainer(ENV, fail, RENDEZVOUS, REPORT), {"maxTrials": 1, "maxFailedTrials": 1}
        ),
    )
    finish(kube, name, timeout=120)
    (trial,) = trials_of(kube, name)
    assert trial["status"]["state"] == "Failed", trial["status"]
    assert "(index 1)" in trial["status"]["message"]
    assert "exit code 3" in trial["status"]["message"]
    assert_nothing_runs(kube, name)


def test_a_pruned_job_is_stopped_whole_and_its_pods_and_logs_stay(kube: Kube) -> None:
    name = "jobs-pruned"
    report_then_wait = """\
        if rank == 0:
            from kubetune_report import report
            report(1, loss=100.0)
        time.sleep(300)
    """
    budget = {"maxTrials": 1, "trialTimeout": "10m"}
    pruner = {"name": "threshold", "upper": 10.0}
    apply(
        kube,
        job_study(
            name,
            trainer(ENV, RENDEZVOUS, report_then_wait),
            budget,
            pruner=pruner,
            service_account="reporter",
        ),
    )
    finish(kube, name, timeout=120)
    (trial,) = trials_of(kube, name)
    assert trial["status"]["state"] == "Pruned", json.dumps(trial["status"])
    trial_name = trial["metadata"]["name"]
    assert_nothing_runs(kube, name)
    # The Job is gone (deleted with its pods orphaned), its pods stay, owned by the trial,
    # with their logs.
    assert kube.kubectl("get", "job", trial_name, "--ignore-not-found").stdout.strip() == ""
    pods = pods_of_trial(kube, trial_name)
    assert len(pods) == 2
    for pod in pods:
        owners = {ref["kind"] for ref in pod["metadata"].get("ownerReferences", [])}
        assert owners == {"TuningTrial"}
        assert "rendezvous at" in kube.kubectl("logs", pod["metadata"]["name"]).stdout
    # `kubetune logs` finds each rank's pod of the trial (its status names the Job).
    with kubetune_client.connect(kube.kubeconfig) as client:
        assert "rank 0 of 2" in client.logs(name, 0)
        assert "rank 1 of 2" in client.logs(name, 0, rank=1)
    finished = finish(kube, name)
    assert not trial["status"].get("podTerminating")
    assert finished["status"]["budget"]["gpuHours"] > 0


def test_a_job_over_its_trial_timeout_times_out(kube: Kube) -> None:
    name = "jobs-timeout"
    wait = """\
        time.sleep(300)
    """
    apply(
        kube,
        job_study(name, trainer(ENV, RENDEZVOUS, wait), {"maxTrials": 1, "trialTimeout": "4s"}),
    )
    finish(kube, name, timeout=120)
    (trial,) = trials_of(kube, name)
    assert trial["status"]["state"] == "TimedOut", trial["status"]
    assert_nothing_runs(kube, name)
    for pod in pods_of_trial(kube, trial["metadata"]["name"]):
        assert "rendezvous at" in kube.kubectl("logs", pod["metadata"]["name"]).stdout


def test_a_job_that_only_partly_fits_is_stopped_at_its_pending_timeout(kube: Kube) -> None:
    name = "jobs-partial"
    budget = {"maxTrials": 1, "maxFailedTrials": 1, "pendingTimeout": "5s", "trialTimeout": "5m"}
    apply(kube, job_study(name, trainer(ENV, RENDEZVOUS, REPORT), budget, gpu=SCARCE))
    finish(kube, name, timeout=120)
    (trial,) = trials_of(kube, name)
    assert trial["status"]["state"] == "Failed", trial["status"]
    assert trial["status"]["reason"] == "PendingTimeout"
    assert "1 of 2 pods started" in trial["status"]["message"]
    # The pod that did start held its GPU, and that time is counted.
    assert trial["status"]["startTime"]
    assert trial["status"]["gpuSeconds"] > 0
    assert_nothing_runs(kube, name)


def test_an_operator_restart_while_a_job_runs_loses_and_repeats_nothing(
    kube: Kube, running_operator: Operator, tmp_path: Path
) -> None:
    name = "jobs-restart"
    gate = """\
        while not os.path.exists(os.environ["GATE"]):
            time.sleep(0.1)
    """
    gate_file = tmp_path / "gate"
    document = job_study(
        name, trainer(ENV, RENDEZVOUS, gate, REPORT), {"maxTrials": 2, "parallelism": 1}
    )
    document["spec"]["trialTemplate"]["spec"]["containers"][0]["env"] = [
        {"name": "GATE", "value": str(gate_file)}
    ]
    apply(kube, document)
    kube.wait_for(
        "tuningtrial", f"{name}-0", condition="jsonpath={.status.state}=Running", timeout=60
    )
    running_operator.kill()
    running_operator.start()
    gate_file.write_text("go")
    document = finish(kube, name, timeout=120)
    assert document["status"]["phase"] == "Completed", document["status"]
    trials = trials_of(kube, name)
    assert [t["status"]["state"] for t in trials] == ["Succeeded", "Succeeded"]
    for trial in trials:
        assert len(pods_of_trial(kube, trial["metadata"]["name"])) == 2
    assert_nothing_runs(kube, name)


def test_pod_retention_removes_an_ended_trials_job_pods_and_service(kube: Kube) -> None:
    name = "jobs-retention"
    document = job_study(name, trainer(ENV, RENDEZVOUS, REPORT), {"maxTrials": 3})
    document["spec"]["podRetention"] = {"succeeded": 0}
    apply(kube, document)
    finish(kube, name, timeout=180)
    trials = trials_of(kube, name)
    best = kube.get_json("tuningstudy", name)["status"]["bestTrial"]["name"]

    def kept() -> set[str]:
        """The trials that still have a Job, a Service or a pod."""
        selector = f"kubetune.io/study={name}"
        objects = kube.get_json("jobs,services,pods", "-l", selector)["items"]
        return {o["metadata"]["labels"]["kubetune.io/trial"] for o in objects}

    eventually(lambda: kept() == {best}, timeout=60, message="retention kept more than the best")
    assert len(trials) == 3


def test_deleting_the_study_removes_its_running_jobs_and_pods(kube: Kube) -> None:
    name = "jobs-deleted"
    wait = """\
        time.sleep(300)
    """
    apply(kube, job_study(name, trainer(ENV, RENDEZVOUS, wait), {"maxTrials": 1}))
    kube.wait_for(
        "tuningtrial", f"{name}-0", condition="jsonpath={.status.state}=Running", timeout=60
    )
    kube.kubectl("delete", "tuningstudy", name, "--wait", timeout=90)
    selector = f"kubetune.io/study={name}"
    eventually(
        lambda: kube.get_json("jobs,pods,services", "-l", selector)["items"] == [],
        timeout=60,
        message="the study's Jobs, pods or Services outlived it",
    )


def operator_calls(audit_log: Path, resources: set[str]) -> set[Call]:
    """What the operator (the kubernetes client and kopf, by User-Agent) called on these
    resources, from the real API server's audit log."""
    calls = set()
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        agent = event.get("userAgent", "")
        if ref.get("resource") in resources and agent.startswith(("OpenAPI-Generator", "kopf")):
            resource = ref["resource"] + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            calls.add(Call(ref.get("apiGroup", ""), resource, event["verb"], ref.get("namespace")))
    return calls


def test_the_charts_job_rules_grant_exactly_what_the_operator_called(job_kube: Kube) -> None:
    """After the cases above (run in file order, they make every call Job trials need): the
    chart's rules for Jobs and Services allow every call the operator made on them, and grant
    nothing it did not call. tests/chart/test_rbac.py checks the other rules on the embedded
    plane, which serves no Jobs."""
    cluster = job_kube.running.cluster
    assert isinstance(cluster, RealCluster)
    calls = operator_calls(cluster.audit_log, {"jobs", "services"})
    items = objects(render())
    account = one(items, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    granted = {
        grant
        for grant in grants(items, account, NAMESPACE)
        if grant.resource in ("jobs", "services")
    }
    assert_exact(granted, calls)

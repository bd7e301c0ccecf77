"""Trials that are batch/v1 Indexed Jobs (spec.trialTemplate.job, docs/study-spec.md "Trials as
Jobs"): what is rendered, how a Job and its pods are read as one trial, the rules and the CRD,
what the budgets count, the fingerprints, the controller and `kubetune up`."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubetune.budget import TrialCost
from kubetune.controller import PodObservation, PodPhase, StudyController, with_owner_uid
from kubetune.controller.metrics_source import due_reads
from kubetune.controller.trial_job import render_trial_workload
from kubetune.k8s.jobs import observe_job
from kubetune.spec import api
from kubetune.spec.crd import study_schema
from kubetune.spec.immutability import spec_fingerprints
from kubetune.spec.manifests import parse_study
from kubetune.spec.problems import Problem
from kubetune.spec.study import ObjectMeta, TuningStudy, TuningStudySpec
from kubetune.spec.trial import TrialState, TuningTrial, TuningTrialSpec
from kubetune.up.manifests import UpError, capacity_for, refuse_jobs_without_a_job_controller
from kubetune_report import annotation_document, termination_message
from tests.factories import at, study_spec
from tests.unit.crd_checks import kubectl_apply_errors

TRAINER = {"name": "trainer", "image": "t:1", "command": ["train", "--x=${params.x}"]}


def manifest(
    job: dict[str, Any] | None,
    *,
    name: str = "dist",
    budget: dict[str, Any] | None = None,
    containers: list[dict[str, Any]] | None = None,
    primary: str | None = None,
) -> dict[str, Any]:
    """A TuningStudy document whose trials are Jobs of `job` (None: pods)."""
    template: dict[str, Any] = {"spec": {"containers": containers or [copy.deepcopy(TRAINER)]}}
    if job is not None:
        template["job"] = job
    if primary is not None:
        template["primaryContainer"] = primary
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.STUDY_KIND,
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "objective": {"metrics": [{"name": "loss"}]},
            "searchSpace": [{"name": "x", "type": "fixed", "value": 0.5}],
            "budget": budget or {},
            "trialTemplate": template,
        },
    }


def parsed(document: dict[str, Any]) -> TuningStudy:
    study, problems = parse_study(document)
    assert problems == []
    assert study is not None
    return study


def problems_of(document: dict[str, Any]) -> list[Problem]:
    return parse_study(document)[1]


def a_trial(study: TuningStudy, number: int = 3) -> TuningTrial:
    name = f"{study.metadata.name}-{number}"
    return TuningTrial(
        metadata=ObjectMeta(name=name, namespace=study.metadata.namespace),
        spec=TuningTrialSpec(study=study.metadata.name or "", number=number, params={"x": 0.5}),
    )


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --- rendering -------------------------------------------------------------------------------


SIDECAR = {"name": "proxy", "image": "envoy:1"}


def test_a_distributed_job_study_renders_an_indexed_job_and_its_headless_service() -> None:
    study = parsed(
        manifest(
            {"completions": 2, "distributed": {"port": 29600}},
            containers=[copy.deepcopy(SIDECAR), copy.deepcopy(TRAINER)],
            primary="trainer",
        )
    )
    job, service = (
        with_owner_uid(o, "trial-uid") for o in render_trial_workload(study, a_trial(study))
    )
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    for owned in (job, service):
        assert owned["metadata"]["name"] == "dist-3"
        assert owned["metadata"]["namespace"] == "ml"
        (owner,) = owned["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "TuningTrial",
            "dist-3",
            "trial-uid",
        )
        assert owned["metadata"]["labels"][api.TRIAL_LABEL] == "dist-3"

    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"]) == (2, 2)
    assert spec["backoffLimit"] == 0
    assert spec["podReplacementPolicy"] == "Failed"
    assert "activeDeadlineSeconds" not in spec  # neither timeout is set
    template = spec["template"]
    assert template["metadata"]["labels"][api.TRIAL_LABEL] == "dist-3"
    pod_spec = template["spec"]
    assert pod_spec["subdomain"] == "dist-3"
    rank = {
        "fieldRef": {"fieldPath": f"metadata.annotations['{api.JOB_COMPLETION_INDEX_ANNOTATION}']"}
    }
    for container in pod_spec["containers"]:
        env = env_of(container)
        assert env["MASTER_ADDR"] == "dist-3-0.dist-3"
        assert env["MASTER_PORT"] == "29600"
        assert env["WORLD_SIZE"] == "2"
        assert env["RANK"] == rank
        # The trial contract is the pod trial's in every pod of the Job.
        assert env["KUBETUNE_TRIAL"] == "dist-3"
        assert env["KUBETUNE_STUDY"] == "dist"
        assert json.loads(env["KUBETUNE_PARAMS"]) == {"x": 0.5}
    proxy, trainer = pod_spec["containers"]
    assert trainer["command"] == ["train", "--x=0.5"]
    # The port is declared on the primary container only.
    assert trainer["ports"] == [{"name": "rendezvous", "containerPort": 29600}]
    assert "ports" not in proxy

    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {api.TRIAL_LABEL: "dist-3"}
    assert service["spec"]["ports"] == [{"name": "rendezvous", "port": 29600, "targetPort": 29600}]


def test_the_rendezvous_port_is_declared_once_when_the_template_declares_it() -> None:
    trainer = {**copy.deepcopy(TRAINER), "ports": [{"name": "rdzv", "containerPort": 29600}]}
    study = parsed(
        manifest({"completions": 2, "distributed": {"port": 29600}}, containers=[trainer])
    )
    job, _ = render_trial_workload(study, a_trial(study))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [29600]


def test_the_jobs_deadline_backs_up_both_timeouts_only_when_both_are_set() -> None:
    budget = {"trialTimeout": "10m", "pendingTimeout": "2m"}
    study = parsed(manifest({"completions": 2}, budget=budget))
    (job,) = render_trial_workload(study, a_trial(study))
    grace = study.spec.trial_template.spec.stop_seconds
    assert job["spec"]["activeDeadlineSeconds"] == 120 + 600 + grace + 30
    # Each pod keeps its own deadline, the trialTimeout, as a pod trial's.
    assert job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 600
    for partial in ({"trialTimeout": "10m"}, {"pendingTimeout": "2m"}):
        study = parsed(manifest({"completions": 2}, budget=partial))
        (job,) = render_trial_workload(study, a_trial(study))
        assert "activeDeadlineSeconds" not in job["spec"], partial


def test_a_job_without_distributed_has_no_service_and_no_rendezvous() -> None:
    study = parsed(manifest({"completions": 3, "parallelism": 2, "backoffLimit": 1}))
    (job,) = render_trial_workload(study, a_trial(study))
    assert job["kind"] == "Job"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (3, 2)
    assert job["spec"]["backoffLimit"] == 1
    pod_spec = job["spec"]["template"]["spec"]
    assert "subdomain" not in pod_spec
    (container,) = pod_spec["containers"]
    assert not set(env_of(container)) & set(api.DISTRIBUTED_ENV)
    assert "ports" not in container


def test_without_job_the_trial_is_one_pod() -> None:
    study = parsed(manifest(None))
    (pod,) = render_trial_workload(study, a_trial(study))
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert "MASTER_ADDR" not in env_of(pod["spec"]["containers"][0])


# --- observe_job -----------------------------------------------------------------------------

CREATED = "2026-11-26T05:29:58Z"
STARTED = "2026-11-26T05:30:01Z"
LATER = "2026-11-26T05:30:40Z"
FINISHED = "2026-11-26T05:42:17Z"
LAST_FINISHED = "2026-11-26T05:42:25Z"
REPORTED = datetime(2026, 11, 26, 5, 35, tzinfo=UTC)


def moment(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def job_object(
    *, completions: int = 2, parallelism: int | None = None, condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The trial's Job as the API server returns it (what job_essentials keeps)."""
    status: dict[str, Any] = {"active": completions, "terminating": 0}
    if condition is not None:
        status["conditions"] = [
            {"type": "FailureTarget", "status": "False"},  # a condition not (yet) true is ignored
            {"status": "True", "lastTransitionTime": LAST_FINISHED, **condition},
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "dist-3", "namespace": "ml", "uid": "job-uid"},
        "spec": {"completions": completions, "parallelism": parallelism or completions},
        "status": status,
    }


def job_pod(
    index: int,
    status: dict[str, Any],
    *,
    suffix: str = "abcde",
    created: str = CREATED,
    annotation: str | None = None,
) -> dict[str, Any]:
    """A pod of the trial's Indexed Job, as the kubelet writes it."""
    annotations = {api.JOB_COMPLETION_INDEX_ANNOTATION: str(index)}
    if annotation is not None:
        annotations[api.METRICS_ANNOTATION] = annotation
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"dist-3-{index}-{suffix}",
            "namespace": "ml",
            "creationTimestamp": created,
            "labels": {api.TRIAL_LABEL: "dist-3", "batch.kubernetes.io/job-name": "dist-3"},
            "annotations": annotations,
        },
        "spec": {
            "restartPolicy": "Never",
            "hostname": f"dist-3-{index}",
            "subdomain": "dist-3",
            "containers": [{"name": "trainer", "image": "t:1"}],
        },
        "status": status,
    }


def container(state: dict[str, Any]) -> dict[str, Any]:
    return {"name": "trainer", "restartCount": 0, "ready": "running" in state, "state": state}


def running(started: str = STARTED) -> dict[str, Any]:
    return {
        "phase": "Running",
        "startTime": started,
        "containerStatuses": [container({"running": {"startedAt": started}})],
    }


UNSCHEDULABLE = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def unschedulable() -> dict[str, Any]:
    return {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": UNSCHEDULABLE,
            }
        ],
    }


def ended(
    phase: str,
    exit_code: int,
    reason: str,
    *,
    finished: str = FINISHED,
    message: str | None = None,
) -> dict[str, Any]:
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": STARTED,
        "finishedAt": finished,
    }
    if message is not None:
        terminated["message"] = message
    return {
        "phase": phase,
        "startTime": STARTED,
        "containerStatuses": [container({"terminated": terminated})],
    }


def test_a_job_without_pods_yet_is_pending() -> None:
    observation = observe_job(job_object(), [])
    assert observation.phase is PodPhase.PENDING
    assert observation.message == "0 of 2 pods started"
    assert observation.started_at is None
    assert not observation.terminated


def test_a_job_that_partly_fits_is_pending_with_why_the_waiting_pod_waits() -> None:
    waiting = job_pod(1, unschedulable(), suffix="wait1")
    observation = observe_job(job_object(), [job_pod(0, running(LATER)), waiting])
    assert observation.phase is PodPhase.PENDING
    assert observation.reason == "Unschedulable"
    assert observation.message == f"1 of 2 pods started; pod dist-3-1-wait1 waits: {UNSCHEDULABLE}"
    # The running pod holds its GPUs: the trial's GPU time has begun.
    assert observation.started_at == moment(LATER)
    assert not observation.terminated


def test_a_job_runs_once_its_pods_at_once_have_started_and_reports_the_primary_pods_metrics() -> (
    None
):
    primary_report = annotation_document(4, {"loss": 0.25}, REPORTED, False)
    other_report = annotation_document(7, {"loss": 9.0}, REPORTED, False)
    pods = [
        job_pod(1, running(STARTED), annotation=other_report),  # rank 1's report is not read
        job_pod(0, running(LATER), annotation=primary_report),
    ]
    observation = observe_job(job_object(), pods)
    assert observation.phase is PodPhase.RUNNING
    assert (observation.reason, observation.message) == (None, None)
    assert observation.started_at == moment(STARTED)  # the first pod's start
    report = observation.latest_report
    assert report is not None
    assert (report.step, dict(report.metrics)) == (4, {"loss": 0.25})
    assert not observation.terminated


def test_parallelism_below_completions_runs_with_that_many_pods() -> None:
    observation = observe_job(job_object(completions=3, parallelism=1), [job_pod(0, running())])
    assert observation.phase is PodPhase.RUNNING


def test_a_complete_job_succeeds_with_the_primary_pods_termination_message() -> None:
    final = termination_message({"loss": 0.125})
    complete = job_object(condition={"type": "Complete", "reason": "CompletionsReached"})
    pods = [
        job_pod(0, ended("Succeeded", 0, "Completed", message=final)),
        job_pod(1, ended("Succeeded", 0, "Completed", finished=LAST_FINISHED, message="{}")),
    ]
    observation = observe_job(complete, pods)
    assert observation.phase is PodPhase.SUCCEEDED
    assert observation.final_report is not None
    assert dict(observation.final_report.metrics) == {"loss": 0.125}
    assert observation.terminated
    assert observation.terminated_at == moment(LAST_FINISHED)  # the last pod's end
    assert observation.finished_at == moment(FINISHED)  # the primary pod's


def test_a_complete_job_is_terminated_only_once_no_pod_runs() -> None:
    complete = job_object(condition={"type": "Complete"})
    final = termination_message({"loss": 0.125})
    pods = [job_pod(0, ended("Succeeded", 0, "Completed", message=final)), job_pod(1, running())]
    observation = observe_job(complete, pods)
    assert observation.phase is PodPhase.SUCCEEDED
    assert not observation.terminated
    assert observation.terminated_at is None


def test_a_failed_job_fails_with_the_failed_pod_named_by_its_index() -> None:
    failed = job_object(
        condition={"type": "Failed", "reason": "BackoffLimitExceeded", "message": "backoff"}
    )
    pods = [
        job_pod(0, ended("Failed", 137, "Error", finished=LAST_FINISHED)),  # killed after rank 1
        job_pod(1, ended("Failed", 3, "Error"), suffix="x7"),
    ]
    observation = observe_job(failed, pods)
    assert observation.phase is PodPhase.FAILED
    assert observation.reason == "Error"
    assert observation.message is not None
    assert "pod dist-3-1-x7 (index 1)" in observation.message
    assert "exit code 3" in observation.message
    assert observation.exit_code == 3
    assert observation.terminated
    assert observation.final_report is None


def test_the_pod_that_failed_on_its_own_is_named_before_one_the_job_controller_deleted() -> None:
    failed = job_object(condition={"type": "Failed", "reason": "BackoffLimitExceeded"})
    # Both ended in the same second (Kubernetes' resolution): rank 1 failed, and the job
    # controller then deleted rank 0, which the kubelet ended with SIGTERM.
    deleted = job_pod(0, ended("Failed", 143, "Error"))
    deleted["metadata"]["deletionTimestamp"] = FINISHED
    pods = [deleted, job_pod(1, ended("Failed", 3, "Error"), suffix="x7")]
    observation = observe_job(failed, pods)
    assert observation.message == "pod dist-3-1-x7 (index 1): exit code 3"


def test_a_failed_pods_own_reason_is_the_trials() -> None:
    failed = job_object(condition={"type": "Failed", "reason": "BackoffLimitExceeded"})
    pods = [job_pod(0, running()), job_pod(1, ended("Failed", 137, "OOMKilled"))]
    observation = observe_job(failed, pods)
    assert observation.phase is PodPhase.FAILED
    assert observation.reason == "OOMKilled"
    assert "(index 1)" in (observation.message or "")
    assert not observation.terminated  # rank 0 still runs


def test_a_job_past_its_deadline_fails_with_the_jobs_reason() -> None:
    failed = job_object(
        condition={
            "type": "Failed",
            "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline",
        }
    )
    pods = [job_pod(0, ended("Failed", 137, "Error")), job_pod(1, ended("Failed", 137, "Error"))]
    observation = observe_job(failed, pods)
    assert observation.phase is PodPhase.FAILED
    assert observation.reason == "DeadlineExceeded"
    assert observation.message == "Job was active longer than specified deadline"


@pytest.mark.parametrize(
    "without_end",
    [
        {
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on resource: memory.",
        },
        # Its activeDeadlineSeconds (the trialTimeout) passed while it still waited.
        {
            "phase": "Failed",
            "reason": "DeadlineExceeded",
            "message": "Pod was active on the node longer than the specified deadline",
            "containerStatuses": [container({"waiting": {"reason": "ContainerCreating"}})],
        },
    ],
    ids=["evicted", "deadline-while-waiting"],
)
def test_a_failed_job_with_a_pod_that_never_ended_a_container_is_read(
    without_end: dict[str, Any],
) -> None:
    failed = job_object(condition={"type": "Failed", "reason": "BackoffLimitExceeded"})
    pods = [job_pod(0, ended("Failed", 3, "Error")), job_pod(1, without_end, suffix="ev")]
    observation = observe_job(failed, pods)
    assert observation.phase is PodPhase.FAILED
    assert "(index 0)" in (observation.message or "")


def test_a_stopped_trials_job_is_gone_and_its_orphaned_pods_end_it() -> None:
    still_running = [job_pod(0, running()), job_pod(1, ended("Failed", 143, "Error"))]
    observation = observe_job(None, still_running)
    assert not observation.terminated
    assert observation.terminated_at is None
    all_ended = [
        job_pod(0, ended("Failed", 143, "Error", finished=LAST_FINISHED)),
        job_pod(1, ended("Failed", 143, "Error")),
    ]
    observation = observe_job(None, all_ended)
    assert observation.terminated
    assert observation.terminated_at == moment(LAST_FINISHED)


def test_after_a_retry_the_newest_index_0_pod_is_the_primary() -> None:
    old = job_pod(0, ended("Failed", 1, "Error"), suffix="old", created=CREATED)
    retried = job_pod(
        0,
        running(LATER),
        suffix="new",
        created=LATER,
        annotation=annotation_document(2, {"loss": 0.5}, REPORTED, False),
    )
    for pods in ([old, retried, job_pod(1, running())], [retried, old, job_pod(1, running())]):
        observation = observe_job(job_object(), pods)
        assert observation.phase is PodPhase.RUNNING
        assert observation.latest_report is not None
        assert dict(observation.latest_report.metrics) == {"loss": 0.5}


# --- rules and the CRD -----------------------------------------------------------------------


def test_a_valid_job_study_has_no_problems() -> None:
    document = manifest(
        {"completions": 4, "backoffLimit": 2, "distributed": {"port": 29500}}, primary="trainer"
    )
    assert problems_of(document) == []
    assert problems_of(manifest({"completions": 4, "parallelism": 2})) == []


def test_parallelism_over_completions_is_refused() -> None:
    (problem,) = problems_of(manifest({"completions": 2, "parallelism": 3}))
    assert problem.path == "spec.trialTemplate.job.parallelism"


def test_a_distributed_run_needs_all_its_ranks_at_once() -> None:
    (problem,) = problems_of(
        manifest({"completions": 4, "parallelism": 2, "distributed": {"port": 29500}})
    )
    assert problem.path == "spec.trialTemplate.job.parallelism"


def test_a_distributed_run_reserves_the_rendezvous_variables() -> None:
    trainer = {
        **copy.deepcopy(TRAINER),
        "env": [{"name": "DATA", "value": "/d"}, {"name": "MASTER_ADDR", "value": "x"}],
    }
    document = manifest(
        {"completions": 2, "distributed": {}}, containers=[copy.deepcopy(SIDECAR), trainer]
    )
    (problem,) = problems_of(document)
    assert problem.path == "spec.trialTemplate.spec.containers[1].env[1].name"
    assert "MASTER_ADDR" in problem.message
    # Without distributed the variable is the user's own.
    plain = copy.deepcopy(document)
    del plain["spec"]["trialTemplate"]["job"]["distributed"]
    assert problems_of(plain) == []


def test_the_primary_container_must_be_a_container_of_the_template() -> None:
    (problem,) = problems_of(manifest(None, primary="main"))
    assert problem.path == "spec.trialTemplate.primaryContainer"
    assert "trainer" in problem.fix


@pytest.mark.parametrize("name", ["a" * 45, "7up"])
def test_a_job_studys_name_must_fit_its_pods_hostnames(name: str) -> None:
    (problem,) = problems_of(manifest({"completions": 2}, name=name))
    assert problem.path == "metadata.name"
    assert problems_of(manifest(None, name=name)) == []  # a pod trial's name is no hostname


def test_the_longest_job_study_name_is_accepted() -> None:
    assert problems_of(manifest({"completions": 2}, name="a" * 44)) == []


def test_the_crd_has_the_job_fields_with_their_bounds() -> None:
    template = study_schema()["properties"]["spec"]["properties"]["trialTemplate"]["properties"]
    job = template["job"]["properties"]
    for field in ("completions", "parallelism", "backoffLimit"):
        assert job[field]["type"] == "integer", field
        assert job[field]["maximum"] == 1000, field
    assert job["completions"]["minimum"] == job["parallelism"]["minimum"] == 1
    assert job["backoffLimit"]["minimum"] == 0
    port = job["distributed"]["properties"]["port"]
    assert (port["minimum"], port["maximum"]) == (1, 65535)
    assert template["primaryContainer"]["type"] == "string"
    # The API server refuses what is out of bounds, naming the field.
    errors = kubectl_apply_errors(study_schema(), manifest({"completions": 1001}))
    assert any(e.startswith("spec.trialTemplate.job.completions: Invalid value") for e in errors)
    assert kubectl_apply_errors(study_schema(), manifest({"completions": 8})) == []


# --- budgets ---------------------------------------------------------------------------------


def test_a_job_trial_costs_its_pods_at_once_gpus() -> None:
    trainer = {**copy.deepcopy(TRAINER), "resources": {"limits": {"nvidia.com/gpu": 1}}}
    budget = {
        "trialTimeout": "1h",
        "money": {"limit": 100, "pricePerGpuHour": {"nvidia.com/gpu": 2.5}},
    }
    pods = parsed(manifest(None, budget=budget, containers=[trainer])).spec
    jobs = parsed(
        manifest({"completions": 4, "parallelism": 3}, budget=budget, containers=[trainer])
    ).spec
    assert TrialCost.of(pods).gpus == 1
    assert TrialCost.of(jobs).gpus == 3
    assert jobs.trial_template.gpu_resources() == {"nvidia.com/gpu": 3}
    assert TrialCost.of(jobs).money_per_hour == pytest.approx(3 * TrialCost.of(pods).money_per_hour)
    assert TrialCost.of(jobs).money_per_hour == pytest.approx(7.5)


# --- fingerprints ----------------------------------------------------------------------------

PRE_JOB_TEMPLATE_FINGERPRINT = "e04c24ac0a5c60ef"
"""The trialTemplate fingerprint of FINGERPRINTED below, as the operator before trials as Jobs
(commit ce9c81a~1) computed it: a study it started must not look changed after an upgrade."""
FINGERPRINTED: dict[str, Any] = {
    "objective": {"metrics": [{"name": "loss"}]},
    "searchSpace": [{"name": "x", "type": "float", "low": -1.0, "high": 1.0}],
    "trialTemplate": {
        "metadata": {"labels": {"team": "ml"}},
        "spec": {
            "containers": [
                {
                    "name": "trainer",
                    "image": "t:1",
                    "command": ["t"],
                    "resources": {"limits": {"nvidia.com/gpu": 1}},
                }
            ]
        },
    },
}


def test_a_study_without_job_keeps_its_fingerprints_from_before_jobs() -> None:
    spec = TuningStudySpec.model_validate(FINGERPRINTED)
    fingerprint = spec_fingerprints(spec)["trialTemplate"]
    assert fingerprint == PRE_JOB_TEMPLATE_FINGERPRINT
    dumped = spec.trial_template.model_dump(mode="json")
    before = {k: v for k, v in dumped.items() if k not in ("job", "primary_container")}
    text = json.dumps(before, sort_keys=True)
    assert fingerprint == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert (
        spec_fingerprints(study_spec())["trialTemplate"]
        == spec_fingerprints(
            TuningStudySpec.model_validate(
                study_spec().model_dump(mode="json", by_alias=True, exclude_none=True)
            )
        )["trialTemplate"]
    )


def test_job_and_primary_container_change_the_template_fingerprint() -> None:
    plain = spec_fingerprints(TuningStudySpec.model_validate(FINGERPRINTED))
    fingerprints = set()
    for change in (
        {"job": {"completions": 2}},
        {"job": {"completions": 3}},
        {"primaryContainer": "trainer"},
    ):
        document = copy.deepcopy(FINGERPRINTED)
        document["trialTemplate"].update(change)
        changed = spec_fingerprints(TuningStudySpec.model_validate(document))
        assert changed["trialTemplate"] != plain["trialTemplate"], change
        assert {k: v for k, v in changed.items() if k != "trialTemplate"} == {
            k: v for k, v in plain.items() if k != "trialTemplate"
        }
        fingerprints.add(changed["trialTemplate"])
    assert len(fingerprints) == 3


# --- the controller --------------------------------------------------------------------------


def job_study_document(budget: dict[str, Any]) -> dict[str, Any]:
    trainer = {**copy.deepcopy(TRAINER), "resources": {"limits": {"nvidia.com/gpu": 1}}}
    document = manifest(
        {"completions": 2, "distributed": {"port": 29500}}, budget=budget, containers=[trainer]
    )
    document["metadata"]["uid"] = "study-uid"
    document["spec"]["searchSpace"] = [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}]
    document["spec"]["algorithm"] = {"name": "random", "seed": 1}
    return document


def test_a_partly_started_job_trial_stays_pending_and_counts_its_gpu_time() -> None:
    controller = StudyController()
    document = job_study_document({"maxTrials": 1, "trialTimeout": "1h", "maxGpuHours": 10})
    first = controller.reconcile(document, [], {}, at(0))
    assert first.workload_kind == "Job"
    (created,) = first.create_trials
    trial = created.model_copy(
        update={"metadata": created.metadata.model_copy(update={"uid": "trial-uid"})}
    )
    kinds = [o["kind"] for o in first.new_trial_workloads[trial.metadata.name or ""]]
    assert kinds == ["Job", "Service"]
    assert trial.status.gpus == 2  # both pods' GPUs
    document["status"] = first.study_status.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )

    partly = PodObservation(
        PodPhase.PENDING,
        started_at=at(5),
        reason="Unschedulable",
        message="1 of 2 pods started; pod dist-0-1-x waits: 0/1 nodes are available",
    )
    plan = controller.reconcile(document, [trial], {"dist-0": partly}, at(10))
    (update,) = [u for u in plan.trial_updates if u.name == "dist-0"]
    assert update.status.state is TrialState.PENDING
    assert update.status.start_time == at(5)
    assert "Unschedulable" in (update.status.message or "")
    trial = trial.model_copy(update={"status": update.status})
    document["status"] = plan.study_status.model_dump(mode="json", by_alias=True, exclude_none=True)

    later = controller.reconcile(document, [trial], {"dist-0": partly}, at(3605))
    assert later.study_status.budget.gpu_hours == pytest.approx(2.0)  # 2 GPUs for an hour
    updates = {u.name: u.status for u in later.trial_updates}
    assert updates.get("dist-0", trial.status).state is TrialState.PENDING
    assert updates.get("dist-0", trial.status).start_time == at(5)


def test_the_plan_says_what_runs_each_trial() -> None:
    job_plan = StudyController().reconcile(job_study_document({"maxTrials": 1}), [], {}, at(0))
    assert job_plan.workload_kind == "Job"
    document = job_study_document({"maxTrials": 1})
    del document["spec"]["trialTemplate"]["job"]
    pod_plan = StudyController().reconcile(document, [], {}, at(0))
    assert pod_plan.workload_kind == "Pod"
    (pod,) = next(iter(pod_plan.new_trial_workloads.values()))
    assert pod["kind"] == "Pod"


# --- kubetune up -----------------------------------------------------------------------------


def test_up_refuses_job_trials_on_the_embedded_plane() -> None:
    studies = [manifest(None, name="plain"), manifest({"completions": 2}, name="dist")]
    with pytest.raises(UpError, match="--binaries") as raised:
        refuse_jobs_without_a_job_controller(studies, None)
    assert "study dist" in str(raised.value)
    refuse_jobs_without_a_job_controller(studies, Path("/opt/kube-binaries"))
    refuse_jobs_without_a_job_controller([manifest(None, name="plain")], None)


def test_up_sizes_the_node_for_every_pod_of_the_trials_at_once() -> None:
    trainer = {
        **copy.deepcopy(TRAINER),
        "resources": {"requests": {"cpu": "4"}, "limits": {"nvidia.com/gpu": 1}},
    }
    jobs = manifest(
        {"completions": 3, "parallelism": 2}, budget={"parallelism": 3}, containers=[trainer]
    )
    capacity = capacity_for([jobs])
    assert capacity["nvidia.com/gpu"] == "6"  # 3 trials x 2 pods at once
    assert capacity["cpu"] == "24"
    pods = manifest(None, budget={"parallelism": 3}, containers=[trainer])
    assert capacity_for([pods])["nvidia.com/gpu"] == "3"


def test_a_prometheus_query_of_a_job_trial_names_its_primary_pod() -> None:
    document = manifest({"completions": 2})
    document["spec"]["metricsSource"] = {
        "prometheus": {
            "url": "http://prometheus:9090",
            "query": 'last{pod="${trial.pod}", metric="${metric}"}',
        }
    }
    study = parsed(document)
    trial = a_trial(study)
    trial = trial.model_copy(
        update={"status": trial.status.model_copy(update={"state": TrialState.RUNNING})}
    )
    running_job = observe_job(
        job_object(),
        [job_pod(0, running(), suffix="prime"), job_pod(1, running())],
    )
    (read,), _ = due_reads(study, [trial], {"dist-3": running_job}, {}, at(60))
    assert read.trial == "dist-3"
    assert read.queries["loss"] == 'last{pod="dist-3-0-prime", metric="loss"}'

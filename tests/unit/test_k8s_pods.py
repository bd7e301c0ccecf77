"""observe_pod: a trial's pod, as the API returns it, read into the controller's PodObservation.

The pod objects below are written as a kubelet writes them (statuses taken from real clusters,
names changed); the last tests read pods that the embedded control plane's kubelet ran.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubetune.controller.observation import PodPhase
from kubetune.k8s.pods import MESSAGE_LIMIT, observe_pod, pod_essentials
from kubetune.spec import api
from kubetune_localcluster.cluster import ClusterThread
from kubetune_report import annotation_document, metric_number, termination_message

CREATED = "2026-11-26T05:29:58Z"
STARTED = "2026-11-26T05:30:01Z"
FINISHED = "2026-11-26T05:42:17Z"
REPORTED = datetime(2026, 11, 26, 5, 35, 0, 123000, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def trial_pod(
    status: dict[str, Any],
    *,
    annotation: str | None = None,
    policy: str = "File",
    sidecar: bool = False,
) -> dict[str, Any]:
    """A trial pod as rendered by the controller and read back from the API server."""
    container = {
        "name": "trainer",
        "image": "ghcr.io/kubetune/trainers:0.1.0",
        "command": ["python", "-m", "kubetune_trainers.digits"],
        "env": [
            {"name": "KUBETUNE_TRIAL", "value": "digits-3"},
            {"name": "KUBETUNE_TERMINATION_LOG", "value": "/dev/termination-log"},
        ],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": policy,
        "imagePullPolicy": "IfNotPresent",
    }
    containers = [container]
    if sidecar:
        containers.insert(0, {"name": "proxy", "image": "envoyproxy/envoy:v1.31.0"})
    metadata: dict[str, Any] = {
        "name": "digits-3",
        "namespace": "ml",
        "uid": "0b6c1d52-5d8a-4f57-9d1e-6f1b3f2b8a11",
        "resourceVersion": "48211",
        "creationTimestamp": CREATED,
        "labels": {api.STUDY_LABEL: "digits", api.TRIAL_LABEL: "digits-3"},
        "ownerReferences": [
            {
                "apiVersion": api.API_VERSION,
                "kind": api.TRIAL_KIND,
                "name": "digits-3",
                "uid": "5e0c4a58-2d7f-4b7e-8f0a-9c3e2d1b0a77",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if annotation is not None:
        metadata["annotations"] = {api.METRICS_ANNOTATION: annotation}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 3600,
            "terminationGracePeriodSeconds": 30,
            "containers": containers,
            "nodeName": "gpu-node-2",
        },
        "status": status,
    }


def conditions(scheduled: bool = True, ready: bool = False) -> list[dict[str, Any]]:
    result = [
        {
            "type": "PodScheduled",
            "status": "True" if scheduled else "False",
            "lastProbeTime": None,
            "lastTransitionTime": CREATED,
        }
    ]
    if scheduled:
        result += [
            {"type": kind, "status": "True" if ready or kind == "Initialized" else "False"}
            for kind in ("Initialized", "Ready", "ContainersReady")
        ]
    return result


def container_status(state: dict[str, Any], restarts: int = 0) -> dict[str, Any]:
    return {
        "name": "trainer",
        "image": "ghcr.io/kubetune/trainers:0.1.0",
        "imageID": "",
        "ready": "running" in state,
        "started": "running" in state,
        "restartCount": restarts,
        "state": state,
        "lastState": {},
    }


def terminated(exit_code: int, reason: str, message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": STARTED,
        "finishedAt": FINISHED,
        "containerID": "containerd://4f1e",
    }
    if message is not None:
        state["message"] = message
    return {"terminated": state}


def ended(phase: str, state: dict[str, Any], **pod_status: Any) -> dict[str, Any]:
    return {
        "phase": phase,
        "conditions": conditions(),
        "hostIP": "10.0.3.12",
        "podIP": "10.244.2.31",
        "startTime": "2026-11-26T05:30:00Z",
        "qosClass": "Burstable",
        "containerStatuses": [container_status(state)],
        **pod_status,
    }


RUNNING_STATUS = {
    "phase": "Running",
    "conditions": conditions(ready=True),
    "hostIP": "10.0.3.12",
    "podIP": "10.244.2.31",
    "startTime": "2026-11-26T05:30:00Z",
    "qosClass": "Burstable",
    "containerStatuses": [container_status({"running": {"startedAt": STARTED}})],
}


# --- waiting ---------------------------------------------------------------------------------


def test_an_unschedulable_pod_waits_with_the_schedulers_reason() -> None:
    message = (
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are "
        "available: 3 No preemption victims found for incoming pod."
    )
    pod = trial_pod(
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": None,
                    "lastTransitionTime": CREATED,
                    "reason": "Unschedulable",
                    "message": message,
                }
            ],
            "qosClass": "Burstable",
        }
    )
    observation = observe_pod(pod)
    assert observation.phase is PodPhase.PENDING
    assert (observation.reason, observation.message) == ("Unschedulable", message)
    assert observation.started_at is None
    assert observation.latest_report is observation.final_report is None
    assert observation.report_errors == ()


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        (
            "ImagePullBackOff",
            'Back-off pulling image "ghcr.io/kubetune/trainers:0.1.0"',
        ),
        (
            "ErrImagePull",
            'failed to pull and unpack image "ghcr.io/kubetune/trainers:0.1.0": not found',
        ),
        ("CreateContainerConfigError", 'secret "wandb-key" not found'),
        ("ContainerCreating", None),
    ],
)
def test_a_scheduled_pod_waits_with_its_containers_reason(reason: str, message: str | None) -> None:
    waiting = {"reason": reason, **({"message": message} if message else {})}
    pod = trial_pod(
        {
            "phase": "Pending",
            "conditions": conditions(),
            "hostIP": "10.0.3.12",
            "startTime": "2026-11-26T05:30:00Z",
            "qosClass": "Burstable",
            "containerStatuses": [container_status({"waiting": waiting})],
        }
    )
    observation = observe_pod(pod)
    assert observation.phase is PodPhase.PENDING
    assert (observation.reason, observation.message) == (reason, message)
    assert observation.started_at is None  # the container has not started: nothing to bill
    assert observation.exit_code is None


def test_a_waiting_init_container_is_named() -> None:
    status = {
        "phase": "Pending",
        "conditions": conditions(),
        "startTime": "2026-11-26T05:30:00Z",
        "initContainerStatuses": [
            {
                "name": "fetch-data",
                "restartCount": 0,
                "ready": False,
                "state": {
                    "waiting": {
                        "reason": "ErrImagePull",
                        "message": 'pull access denied for "busybox:nope"',
                    }
                },
            }
        ],
        "containerStatuses": [container_status({"waiting": {"reason": "PodInitializing"}})],
    }
    observation = observe_pod(trial_pod(status))
    assert observation.reason == "ErrImagePull"
    assert observation.message == 'init container fetch-data: pull access denied for "busybox:nope"'


def test_a_pod_with_no_status_yet_is_pending() -> None:
    pod = trial_pod({})
    del pod["status"]
    assert observe_pod(pod).phase is PodPhase.PENDING


@pytest.mark.parametrize(
    ("state", "phase"),
    [({"running": {"startedAt": STARTED}}, PodPhase.RUNNING), ({}, PodPhase.PENDING)],
)
def test_an_unknown_phase_is_running_only_if_the_container_was_running(
    state: dict[str, Any], phase: PodPhase
) -> None:
    status = {**RUNNING_STATUS, "phase": "Unknown", "containerStatuses": [container_status(state)]}
    assert observe_pod(trial_pod(status)).phase is phase


# --- running -----------------------------------------------------------------------------------


def test_a_running_pod_gives_its_latest_annotation_report() -> None:
    document = annotation_document(3, {"val_loss": 0.18, "val_accuracy": 0.953}, REPORTED, False)
    observation = observe_pod(trial_pod(RUNNING_STATUS, annotation=document))
    assert observation.phase is PodPhase.RUNNING
    assert observation.started_at == at(STARTED)
    assert observation.finished_at is None
    assert observation.reason is None
    report = observation.latest_report
    assert report is not None
    assert (report.step, dict(report.metrics), report.time) == (
        3,
        {"val_loss": 0.18, "val_accuracy": 0.953},
        REPORTED,
    )
    assert observation.final_report is None
    assert observation.report_errors == ()


def test_a_final_annotation_document_is_no_intermediate_report() -> None:
    # Between report_final and the exit: the values count only if the container exits 0.
    document = annotation_document(9, {"val_loss": 0.1}, REPORTED, True)
    observation = observe_pod(trial_pod(RUNNING_STATUS, annotation=document))
    assert observation.latest_report is None
    assert observation.final_report is not None
    assert observation.final_report.step is None


@pytest.mark.parametrize(
    ("annotation", "error"),
    [
        ("step 3: loss 0.2", "not JSON"),
        ('{"step": 3, "loss": 0.2}', 'no "metrics" object'),
        ('{"step": -1, "metrics": {"loss": 0.2}}', "non-negative"),
    ],
)
def test_an_unreadable_annotation_is_a_report_error(annotation: str, error: str) -> None:
    observation = observe_pod(trial_pod(RUNNING_STATUS, annotation=annotation))
    assert observation.latest_report is None
    (message,) = observation.report_errors
    assert error in message


def test_a_restarted_container_counts_from_the_pods_start() -> None:
    status = {
        **RUNNING_STATUS,
        "containerStatuses": [
            container_status(
                {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 40s restarting failed container=trainer",
                    }
                },
                restarts=3,
            )
        ],
    }
    observation = observe_pod(trial_pod(status))
    assert observation.phase is PodPhase.RUNNING
    assert observation.reason == "CrashLoopBackOff"
    assert observation.started_at == at("2026-11-26T05:30:00Z")


# --- succeeded ---------------------------------------------------------------------------------


def test_a_succeeded_pod_gives_its_termination_message_as_the_final_report() -> None:
    message = termination_message({"val_accuracy": 0.97, "val_loss": 0.1})
    # The annotation's final document may differ (metrics left out past its size limit):
    # the termination message wins.
    annotation = annotation_document(9, {"val_accuracy": 0.96}, REPORTED, True)
    pod = trial_pod(ended("Succeeded", terminated(0, "Completed", message)), annotation=annotation)
    observation = observe_pod(pod)
    assert observation.phase is PodPhase.SUCCEEDED
    assert (observation.started_at, observation.finished_at) == (at(STARTED), at(FINISHED))
    assert (observation.reason, observation.exit_code) == ("Completed", 0)
    assert observation.message is None
    assert observation.final_report is not None
    assert dict(observation.final_report.metrics) == {"val_accuracy": 0.97, "val_loss": 0.1}
    assert observation.final_report.step is None
    assert observation.latest_report is None
    assert observation.report_errors == ()


def test_without_a_termination_message_the_annotations_final_document_is_the_final_report() -> None:
    annotation = annotation_document(9, {"val_accuracy": 0.96}, REPORTED, True)
    pod = trial_pod(ended("Succeeded", terminated(0, "Completed")), annotation=annotation)
    observation = observe_pod(pod)
    assert observation.final_report is not None
    assert dict(observation.final_report.metrics) == {"val_accuracy": 0.96}
    assert observation.final_report.time == REPORTED


def test_a_succeeded_pod_that_reported_nothing_has_no_final_report() -> None:
    observation = observe_pod(trial_pod(ended("Succeeded", terminated(0, "Completed", "\n"))))
    assert observation.final_report is None
    assert observation.report_errors == ()


def test_a_garbage_termination_message_is_a_report_error() -> None:
    pod = trial_pod(ended("Succeeded", terminated(0, "Completed", "accuracy=0.97")))
    observation = observe_pod(pod)
    assert observation.final_report is None
    (error,) = observation.report_errors
    assert "termination message is not JSON" in error
    assert "accuracy=0.97" in error


# --- failed ------------------------------------------------------------------------------------


def test_an_oom_killed_container_fails_with_its_reason_and_exit_code() -> None:
    observation = observe_pod(trial_pod(ended("Failed", terminated(137, "OOMKilled"))))
    assert observation.phase is PodPhase.FAILED
    assert (observation.reason, observation.exit_code) == ("OOMKilled", 137)
    assert observation.message is None
    assert observation.finished_at == at(FINISHED)
    assert observation.final_report is None


def test_a_failed_containers_log_tail_is_its_message_never_metrics() -> None:
    # FallbackToLogsOnError: the message is the log's tail, here ending in something JSON-like.
    log = "".join(f"epoch {i}: loss 0.{i:03d}\n" for i in range(200))
    log += 'RuntimeError: CUDA out of memory\n{"val_loss": 0.5}\n'
    pod = trial_pod(ended("Failed", terminated(1, "Error", log)), policy="FallbackToLogsOnError")
    observation = observe_pod(pod)
    assert (observation.reason, observation.exit_code) == ("Error", 1)
    assert observation.final_report is None
    assert observation.report_errors == ()
    assert observation.message is not None
    assert len(observation.message.encode()) <= MESSAGE_LIMIT
    assert observation.message.startswith("…")
    assert observation.message.endswith('CUDA out of memory\n{"val_loss": 0.5}')


def test_a_pod_past_its_deadline_fails_with_deadline_exceeded() -> None:
    status = ended(
        "Failed",
        terminated(143, "Error"),
        reason="DeadlineExceeded",
        message="Pod was active on the node longer than the specified deadline",
    )
    observation = observe_pod(trial_pod(status))
    assert observation.reason == "DeadlineExceeded"
    assert observation.message == "Pod was active on the node longer than the specified deadline"
    assert observation.exit_code == 143


def test_a_deadline_before_the_container_ended_still_says_deadline_exceeded() -> None:
    # The kubelet fails the pod first, then stops the container.
    status = {
        **RUNNING_STATUS,
        "phase": "Failed",
        "reason": "DeadlineExceeded",
        "message": "Pod was active on the node longer than the specified deadline",
    }
    observation = observe_pod(trial_pod(status))
    assert (observation.reason, observation.exit_code) == ("DeadlineExceeded", None)
    assert observation.finished_at is None  # the controller uses its now
    assert observation.started_at == at(STARTED)


def test_an_evicted_pod_fails_with_the_eviction() -> None:
    message = (
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 92Mi. "
        "Container trainer was using 14Gi, request is 1Gi, has larger consumption of memory."
    )
    status = ended(
        "Failed",
        terminated(137, "ContainerStatusUnknown", "The container could not be located"),
        reason="Evicted",
        message=message,
    )
    observation = observe_pod(trial_pod(status))
    assert (observation.reason, observation.message) == ("Evicted", message)
    assert observation.exit_code == 137


def test_a_pod_rejected_at_admission_fails_with_the_pods_reason() -> None:
    status = {
        "phase": "Failed",
        "reason": "OutOfnvidia.com/gpu",
        "message": "Pod was rejected: Node didn't have enough resource: nvidia.com/gpu",
        "startTime": "2026-11-26T05:30:00Z",
    }
    observation = observe_pod(trial_pod(status))
    assert observation.reason == "OutOfnvidia.com/gpu"
    assert observation.exit_code is None


def test_a_failed_init_container_is_named() -> None:
    status = ended(
        "Failed",
        {"waiting": {"reason": "PodInitializing"}},
        initContainerStatuses=[
            {
                "name": "fetch-data",
                "restartCount": 0,
                "state": terminated(2, "Error", "gsutil: bucket not found"),
            }
        ],
    )
    observation = observe_pod(trial_pod(status))
    assert (observation.reason, observation.exit_code) == ("Error", 2)
    assert observation.message == "container fetch-data failed: gsutil: bucket not found"


# --- which container -----------------------------------------------------------------------


def test_the_named_container_is_the_trials_even_when_it_is_not_first() -> None:
    message = termination_message({"val_loss": 0.2})
    status = ended("Succeeded", terminated(0, "Completed", message))
    status["containerStatuses"].insert(
        0,
        {"name": "proxy", "restartCount": 0, "state": terminated(0, "Completed", "proxy done")},
    )
    pod = trial_pod(status, sidecar=True)
    observation = observe_pod(pod, container="trainer")
    assert observation.final_report is not None
    assert dict(observation.final_report.metrics) == {"val_loss": 0.2}
    # Unnamed, the first container is the main one, and "proxy done" is not metrics.
    assert observe_pod(pod).report_errors != ()


def test_a_container_the_pod_lacks_is_an_error_naming_the_ones_it_has() -> None:
    with pytest.raises(ValueError, match=r"no container 'train'.*trainer: name one of them"):
        observe_pod(trial_pod(RUNNING_STATUS), container="train")


def test_kopfs_read_only_body_reads_the_same() -> None:
    document = annotation_document(3, {"val_loss": 0.18}, REPORTED, False)
    pod = trial_pod(ended("Failed", terminated(137, "OOMKilled")), annotation=document)
    assert observe_pod(kopf.Body(cast(kopf.RawBody, pod))) == observe_pod(pod)


def test_a_pod_reads_the_same_from_its_essentials() -> None:
    document = annotation_document(3, {"val_loss": 0.18}, REPORTED, False)
    for pod in (
        trial_pod(ended("Failed", terminated(137, "OOMKilled")), annotation=document),
        trial_pod(RUNNING_STATUS, annotation=document),
        trial_pod(ended("Succeeded", terminated(0, "Completed", '{"val_loss": 0.1}'))),
    ):
        pod["metadata"]["managedFields"] = [{"manager": "kubectl"}]
        essentials = pod_essentials(pod)
        assert observe_pod(essentials) == observe_pod(pod)
        assert set(essentials["spec"]) == {"containers"}
        assert "managedFields" not in essentials["metadata"]
        assert "env" not in essentials["spec"]["containers"][0]


def test_the_pod_object_is_only_read() -> None:
    document = annotation_document(3, {"val_loss": 0.18}, REPORTED, False)
    pod = trial_pod(ended("Failed", terminated(137, "OOMKilled")), annotation=document)
    before = copy.deepcopy(pod)
    observe_pod(pod)
    assert pod == before


# --- round trip with the trial's own helper ---------------------------------------------------

metric_names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1)
metric_values = st.one_of(st.integers(-(2**53), 2**53), st.floats())


@given(
    step=st.integers(0, 2**31),
    metrics=st.dictionaries(metric_names, metric_values, max_size=6),
)
def test_what_kubetune_report_sends_reads_back_the_same(
    step: int, metrics: dict[str, int | float]
) -> None:
    sent = {name: metric_number(name, value) for name, value in metrics.items()}
    running = observe_pod(
        trial_pod(RUNNING_STATUS, annotation=annotation_document(step, sent, REPORTED, False))
    )
    assert running.latest_report is not None
    assert (running.latest_report.step, dict(running.latest_report.metrics)) == (step, sent)
    assert running.latest_report.time == REPORTED

    succeeded = observe_pod(
        trial_pod(
            ended("Succeeded", terminated(0, "Completed", termination_message(sent))),
            annotation=annotation_document(step, sent, REPORTED, True),
        )
    )
    assert succeeded.final_report is not None
    assert dict(succeeded.final_report.metrics) == sent
    assert succeeded.report_errors == ()


# --- pods that the local kubelet ran ------------------------------------------------------------

TRAINER = f"""
import os
from kubetune_report import termination_message
with open(os.environ["{api.TERMINATION_LOG_ENV}"], "w") as log:
    log.write(termination_message({{"val_accuracy": 0.97, "val_loss": 0.1}}))
"""
CRASHING = """
import sys
print("epoch 1: loss 0.9")
print('{"val_loss": 0.5}')
sys.exit(3)
"""


def python_pod(name: str, script: str, policy: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "trainer",
                    "image": "python:3.11",
                    "command": [sys.executable, "-c", script],
                    "env": [
                        {"name": api.TERMINATION_LOG_ENV, "value": api.DEFAULT_TERMINATION_LOG}
                    ],
                    "terminationMessagePolicy": policy,
                }
            ],
        },
    }


@dataclass(frozen=True)
class Local:
    """The local cluster's API server: its URL and the Authorization header it checks."""

    url: str
    headers: dict[str, str]


def request(
    server: Local, path: str, method: str = "GET", body: Any = None, timeout: float = 10
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **server.headers}
    call = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(call, timeout=timeout) as response:
        return json.loads(response.read())


def finished(server: Local, name: str, timeout: int = 30) -> dict[str, Any]:
    """The pod once Succeeded or Failed, from a watch (the API server ends it at timeout)."""
    query = urllib.parse.urlencode(
        {"watch": "1", "fieldSelector": f"metadata.name={name}", "timeoutSeconds": timeout}
    )
    deadline = time.monotonic() + timeout
    watch = urllib.request.Request(
        f"{server.url}/api/v1/namespaces/default/pods?{query}", headers=server.headers
    )
    with urllib.request.urlopen(watch, timeout=timeout + 5) as stream:
        for line in stream:
            pod: dict[str, Any] = json.loads(line)["object"]
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return pod
            assert time.monotonic() < deadline, f"pod {name} still {pod.get('status')}"
    raise AssertionError(f"pod {name} did not finish within {timeout} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    with ClusterThread(workdir=tmp_path_factory.mktemp("pods")) as running:
        token = running.cluster.kubeconfig()["users"][0]["user"]["token"]
        yield Local(running.url, {"Authorization": f"Bearer {token}"})


def test_a_pod_the_kubelet_ran_gives_its_termination_message(cluster: Local) -> None:
    request(cluster, "/api/v1/namespaces/default/pods", "POST", python_pod("t-0", TRAINER, "File"))
    pod = finished(cluster, "t-0")
    observation = observe_pod(pod)
    assert observation.phase is PodPhase.SUCCEEDED, pod["status"]
    assert observation.exit_code == 0
    assert observation.final_report is not None
    assert dict(observation.final_report.metrics) == {"val_accuracy": 0.97, "val_loss": 0.1}
    assert observation.report_errors == ()
    assert observation.started_at is not None
    assert observation.finished_at is not None
    assert observation.started_at <= observation.finished_at


def test_a_crashed_pod_the_kubelet_ran_shows_its_log_not_metrics(cluster: Local) -> None:
    pod_object = python_pod("t-1", CRASHING, "FallbackToLogsOnError")
    request(cluster, "/api/v1/namespaces/default/pods", "POST", pod_object)
    pod = finished(cluster, "t-1")
    observation = observe_pod(pod)
    assert observation.phase is PodPhase.FAILED, pod["status"]
    assert (observation.reason, observation.exit_code) == ("Error", 3)
    assert observation.message == 'epoch 1: loss 0.9\n{"val_loss": 0.5}'
    assert observation.final_report is None
    assert observation.report_errors == ()


def test_a_pod_has_terminated_once_every_container_has_ended() -> None:
    assert not observe_pod(trial_pod(RUNNING_STATUS)).terminated
    done = observe_pod(trial_pod(ended("Failed", terminated(137, "Error"))))
    assert (done.terminated, done.terminated_at) == (True, at(FINISHED))
    # A sidecar that ended later: the pod held its node until then.
    later = "2026-11-26T05:42:29Z"
    sidecar = container_status(terminated(0, "Completed"))
    sidecar["name"] = "exporter"
    sidecar["state"]["terminated"]["finishedAt"] = later
    status = ended("Succeeded", terminated(0, "Completed"))
    status["containerStatuses"].append(sidecar)
    assert observe_pod(trial_pod(status, sidecar=True)).terminated_at == at(later)
    # Failed by its deadline while a container still runs (the kubelet is killing it).
    still = ended("Failed", {"running": {"startedAt": STARTED}}, reason="DeadlineExceeded")
    assert not observe_pod(trial_pod(still)).terminated

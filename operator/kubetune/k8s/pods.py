"""Reading a trial's pod for the controller: its phase, times, why it waits or why it ended,
and what the trainer reported (the `kubetune.io/metrics` annotation and the termination
message, docs/trial-contract.md).

`observe_pod` is a pure function of a core/v1 Pod as the API returns it (a dict, or kopf's
read-only body); it imports neither kopf nor the kubernetes client.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from kubetune.controller.observation import (
    MetricReport,
    PodObservation,
    PodPhase,
    parse_metrics_annotation,
    parse_termination_message,
)
from kubetune.k8s.cache import without_managed_fields
from kubetune.k8s.fields import EMPTY, as_mapping, as_sequence, as_text, as_time
from kubetune.spec import api

MESSAGE_LIMIT: Final = 1024
"""Bytes of a failure message kept (a log tail under FallbackToLogsOnError can be 2 KiB)."""
POD_LEVEL_FAILURES: Final = frozenset({"DeadlineExceeded", "Evicted"})
"""Pod reasons that say more than the container's state: the kubelet killed the container."""

_PHASES: Final = {phase.value: phase for phase in PodPhase}


def pod_essentials(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a pod that `observe_pod` reads: its metadata (without managedFields), its
    status, and its containers' names. What the operator keeps of each pod it watches: a
    study's finished pods stay in the cluster, and their specs (env, command) would be most
    of the operator's memory."""
    metadata = without_managed_fields(pod)["metadata"]
    containers = as_sequence(as_mapping(pod.get("spec")).get("containers"))
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": as_mapping(c).get("name")} for c in containers]},
        "status": pod.get("status") or {},
    }


def observe_pod(pod: Mapping[str, Any], container: str | None = None) -> PodObservation:
    """What the controller needs to know about a trial's pod, for its main container: the
    first one, unless `container` names another.

    - phase: status.phase. `Unknown` (the node stopped reporting) is Running when the main
      container was last seen running, else Pending: the controller keeps waiting on it and
      its timeouts still apply.
    - started_at: when the main container started (running or terminated startedAt); after a
      restart, or when no container has started yet, the pod's startTime, except while Pending.
    - finished_at: when the main container terminated; None otherwise (the controller uses
      its `now`).
    - reason and message: while waiting, the PodScheduled=False condition (Unschedulable),
      else the first waiting init container, else the main container's waiting state
      (ContainerCreating, ImagePullBackOff, CreateContainerConfigError, CrashLoopBackOff...).
      Once Failed, the pod's reason when it is DeadlineExceeded or Evicted, else the state of
      the container that failed (OOMKilled, Error...), else the pod's reason (OutOfcpu...).
      A failure message is cut to its last MESSAGE_LIMIT bytes.
    - latest_report: the metrics annotation when it holds an intermediate report.
    - final_report: the main container's termination message when it exited 0 in a pod that
      did not fail (a failed container's message may be log text, never metrics), else the
      annotation's final document.
    - report_errors: what could not be read in the annotation or the termination message.
    - terminated: the phase is Succeeded or Failed and no container runs; terminated_at the
      latest finishedAt of its containers (the end of the pod's GPU time).

    Raises ValueError when the pod has no containers, or none named `container`.
    """
    metadata = as_mapping(pod.get("metadata"))
    status = as_mapping(pod.get("status"))
    name = _main_container(pod, container)
    statuses = as_sequence(status.get("containerStatuses"))
    main = next((s for s in statuses if as_mapping(s).get("name") == name), EMPTY)
    state = as_mapping(main.get("state"))
    running, terminated = as_mapping(state.get("running")), as_mapping(state.get("terminated"))

    phase = _phase(status.get("phase"), running_now=bool(running))

    started_at = None
    if not main.get("restartCount"):
        started_at = as_time(running.get("startedAt")) or as_time(terminated.get("startedAt"))
    if started_at is None and phase is not PodPhase.PENDING:
        started_at = as_time(status.get("startTime"))

    reason: str | None = None
    message: str | None = None
    exit_code = _exit_code(terminated)
    if phase is PodPhase.FAILED:
        reason, message, code = _failure(status, name, terminated)
        exit_code = code if code is not None else exit_code
    elif phase is PodPhase.SUCCEEDED:
        reason = as_text(terminated.get("reason"))
    else:
        # Running too: a restarting container waits (CrashLoopBackOff) in a Running pod.
        reason, message = _waiting(status, main)

    latest_report, annotation_final, errors = _read_annotation(metadata)
    final_report = None
    text = terminated.get("message")
    if exit_code == 0 and phase is not PodPhase.FAILED and isinstance(text, str) and text.strip():
        try:
            final_report = parse_termination_message(text)
        except ValueError as error:
            errors.append(str(error))
    pod_terminated, terminated_at = _termination(status, phase)
    return PodObservation(
        phase=phase,
        terminated=pod_terminated,
        terminated_at=terminated_at,
        started_at=started_at,
        finished_at=as_time(terminated.get("finishedAt")),
        reason=reason,
        message=message,
        exit_code=exit_code,
        latest_report=latest_report,
        final_report=final_report or annotation_final,
        report_errors=tuple(errors),
        pod_name=as_text(metadata.get("name")),
    )


def _termination(status: Mapping[str, Any], phase: PodPhase) -> tuple[bool, datetime | None]:
    """Whether every container of the pod has ended, and when the last one did."""
    if phase not in (PodPhase.SUCCEEDED, PodPhase.FAILED):
        return False, None
    states = [
        as_mapping(as_mapping(s).get("state"))
        for s in [
            *as_sequence(status.get("initContainerStatuses")),
            *as_sequence(status.get("containerStatuses")),
        ]
    ]
    if any(state.get("running") for state in states):
        return False, None
    ends = [
        moment
        for state in states
        if (moment := as_time(as_mapping(state.get("terminated")).get("finishedAt"))) is not None
    ]
    return True, max(ends, default=None)


def _main_container(pod: Mapping[str, Any], container: str | None) -> str:
    metadata = as_mapping(pod.get("metadata"))
    names = [
        str(as_mapping(c).get("name"))
        for c in as_sequence(as_mapping(pod.get("spec")).get("containers"))
    ]
    pod_name = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    if not names:
        raise ValueError(f"pod {pod_name} has no spec.containers: it is not a pod object")
    if container is None:
        return names[0]
    if container not in names:
        raise ValueError(
            f"pod {pod_name} has no container {container!r}; its containers are "
            f"{', '.join(names)}: name one of them"
        )
    return container


def _phase(value: object, *, running_now: bool) -> PodPhase:
    phase = _PHASES.get(value) if isinstance(value, str) else None
    if phase is not None:
        return phase
    # "Unknown" (node lost) or no status yet.
    return PodPhase.RUNNING if running_now else PodPhase.PENDING


def _waiting(status: Mapping[str, Any], main: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Why a pod is not running yet: scheduling, an init container, or the main container."""
    for condition in as_sequence(status.get("conditions")):
        condition = as_mapping(condition)
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return as_text(condition.get("reason")), as_text(condition.get("message"))
    for init in as_sequence(status.get("initContainerStatuses")):
        init = as_mapping(init)
        waiting = as_mapping(as_mapping(init.get("state")).get("waiting"))
        if waiting:
            detail = as_text(waiting.get("message"))
            prefix = f"init container {init.get('name')}"
            return as_text(waiting.get("reason")), f"{prefix}: {detail}" if detail else prefix
    waiting = as_mapping(as_mapping(main.get("state")).get("waiting"))
    return as_text(waiting.get("reason")), as_text(waiting.get("message"))


def _failure(
    status: Mapping[str, Any], main_name: str, main_terminated: Mapping[str, Any]
) -> tuple[str | None, str | None, int | None]:
    """Why a pod failed: reason, message and the failed container's exit code."""
    pod_reason = as_text(status.get("reason"))
    if pod_reason in POD_LEVEL_FAILURES:
        return pod_reason, _truncate(status.get("message")), None
    if main_terminated and _exit_code(main_terminated) != 0:
        return (
            as_text(main_terminated.get("reason")),
            _truncate(main_terminated.get("message")),
            _exit_code(main_terminated),
        )
    # Another container failed: an init container, or a second container beside the main one.
    for other in [
        *as_sequence(status.get("initContainerStatuses")),
        *as_sequence(status.get("containerStatuses")),
    ]:
        other = as_mapping(other)
        terminated = as_mapping(as_mapping(other.get("state")).get("terminated"))
        if other.get("name") != main_name and terminated and _exit_code(terminated) != 0:
            detail = _truncate(terminated.get("message"))
            prefix = f"container {other.get('name')} failed"
            return (
                as_text(terminated.get("reason")),
                f"{prefix}: {detail}" if detail else prefix,
                _exit_code(terminated),
            )
    if pod_reason is not None:  # OutOfcpu, NodeAffinity, Shutdown...: no container ran
        return pod_reason, _truncate(status.get("message")), None
    return as_text(main_terminated.get("reason")), _truncate(main_terminated.get("message")), None


def _read_annotation(
    metadata: Mapping[str, Any],
) -> tuple[MetricReport | None, MetricReport | None, list[str]]:
    """The annotation's report: (intermediate, final, errors)."""
    text = as_mapping(metadata.get("annotations")).get(api.METRICS_ANNOTATION)
    if not isinstance(text, str) or not text.strip():
        return None, None, []
    try:
        report = parse_metrics_annotation(text)
    except ValueError as error:
        return None, None, [str(error)]
    if report.step is None:  # a final document
        return None, report, []
    return report, None, []


def _exit_code(terminated: Mapping[str, Any]) -> int | None:
    code = terminated.get("exitCode")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _truncate(value: object) -> str | None:
    """A message cut to its last MESSAGE_LIMIT bytes: a log tail ends with the error."""
    text = as_text(value)
    if text is None:
        return None
    # A lone surrogate (a "\ud800" escape in the JSON) cannot be encoded: it becomes "?".
    text = text.rstrip().encode("utf-8", "replace").decode()
    data = text.encode()
    if len(data) <= MESSAGE_LIMIT:
        return text or None
    marker = "…"
    kept = data[-(MESSAGE_LIMIT - len(marker.encode())) :].decode("utf-8", "ignore")
    return marker + kept

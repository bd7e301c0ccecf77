"""The columns of `kubectl get` for the built-in kinds, as the API server's printers compute
them (pods, namespaces, events, CRDs), and the Age column every other kind shows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from kubetune_localcluster.ages import age

AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
AGE_COLUMN = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
    "description": AGE_DESCRIPTION,
}


def _pod_ready(pod: dict[str, Any], now: datetime) -> str:
    total = len(pod.get("spec", {}).get("containers", []))
    ready = sum(
        1
        for status in pod.get("status", {}).get("containerStatuses", [])
        if status.get("ready") and "running" in status.get("state", {})
    )
    return f"{ready}/{total}"


def _pod_status(pod: dict[str, Any], now: datetime) -> str:
    """The STATUS column of kubectl get pods (printPod): the phase, or the reason a container
    waits or ended with, or Terminating."""
    status = pod.get("status", {})
    reason = status.get("reason") or status.get("phase", "")
    initializing = False
    init_total = len(pod.get("spec", {}).get("initContainers", []))
    for index, init in enumerate(status.get("initContainerStatuses", [])):
        state = init.get("state", {})
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and terminated.get("exitCode", 0) == 0:
            continue
        if terminated is not None:
            reason = "Init:" + (
                terminated.get("reason") or f"ExitCode:{terminated.get('exitCode', 0)}"
            )
        elif waiting is not None and waiting.get("reason") not in (None, "", "PodInitializing"):
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{index}/{init_total}"
        initializing = True
        break
    if not initializing:
        running = False
        for container in reversed(status.get("containerStatuses", [])):
            state = container.get("state", {})
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated is not None:
                signal = terminated.get("signal")
                reason = (
                    f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode', 0)}"
                )
            elif container.get("ready") and "running" in state:
                running = True
        if reason == "Completed" and running:
            conditions = status.get("conditions", [])
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            reason = "Running" if ready else "NotReady"
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return str(reason)


def _pod_restarts(pod: dict[str, Any], now: datetime) -> int:
    return sum(
        int(s.get("restartCount", 0)) for s in pod.get("status", {}).get("containerStatuses", [])
    )


def _event_last_seen(event: dict[str, Any], now: datetime) -> str:
    series = event.get("series") or {}
    last = (
        series.get("lastObservedTime")
        or event.get("lastTimestamp")
        or event.get("deprecatedLastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or event.get("metadata", {}).get("creationTimestamp")
    )
    return age(last, now)


def _event_object(event: dict[str, Any], now: datetime) -> str:
    involved = event.get("involvedObject") or event.get("regarding") or {}
    return f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"


def _event_message(event: dict[str, Any], now: datetime) -> str:
    return str(event.get("message") or event.get("note") or "")


def _created_at(obj: dict[str, Any], now: datetime) -> str:
    # The API server's default table convertor prints the timestamp itself, not an age.
    return str(obj.get("metadata", {}).get("creationTimestamp", ""))


COMPUTED: dict[str, Callable[[dict[str, Any], datetime], Any]] = {
    "createdAt": _created_at,
    "podReady": _pod_ready,
    "podStatus": _pod_status,
    "podRestarts": _pod_restarts,
    "eventLastSeen": _event_last_seen,
    "eventObject": _event_object,
    "eventMessage": _event_message,
}


def builtin_columns(kind: str) -> list[dict[str, Any]] | None:
    """The usual columns for built-in kinds (Pod: Ready, Status, Restarts, Age; Namespace:
    Status, Age; Event: Last Seen, Type, Reason, Object, Message; others: Age). Columns shaped
    like additionalPrinterColumns; those no JSONPath can express carry `compute` instead."""
    if kind == "Pod":
        return [
            {"name": "Ready", "type": "string", "compute": "podReady",
             "description": "The aggregate readiness state of this pod for accepting traffic."},
            {"name": "Status", "type": "string", "compute": "podStatus",
             "description": "The aggregate status of the containers in this pod."},
            {"name": "Restarts", "type": "integer", "compute": "podRestarts",
             "description": "The number of times the containers in this pod have been restarted."},
            AGE_COLUMN,
            {"name": "IP", "type": "string", "jsonPath": ".status.podIP", "priority": 1,
             "description": "IP address allocated to the pod."},
            {"name": "Node", "type": "string", "jsonPath": ".spec.nodeName", "priority": 1,
             "description": "Name of the Node this pod is scheduled to."},
        ]  # fmt: skip
    if kind == "Namespace":
        return [
            {"name": "Status", "type": "string", "jsonPath": ".status.phase",
             "description": "The status of the namespace"},
            AGE_COLUMN,
        ]  # fmt: skip
    if kind == "Event":
        return [
            {"name": "Last Seen", "type": "string", "compute": "eventLastSeen",
             "description": "Time when this Event was last observed."},
            {"name": "Type", "type": "string", "jsonPath": ".type",
             "description": "Type of this event (Normal, Warning)."},
            {"name": "Reason", "type": "string", "jsonPath": ".reason",
             "description": "The reason for the transition into the object's current status."},
            {"name": "Object", "type": "string", "compute": "eventObject",
             "description": "The object that this event is about."},
            {"name": "Message", "type": "string", "compute": "eventMessage",
             "description": "A human-readable description of the status of this operation."},
        ]  # fmt: skip
    if kind == "CustomResourceDefinition":
        return [
            {"name": "Created At", "type": "date", "compute": "createdAt",
             "description": AGE_DESCRIPTION},
        ]  # fmt: skip
    return [AGE_COLUMN]

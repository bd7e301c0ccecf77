"""meta.k8s.io/v1 Tables, the answer to `kubectl get`: a CRD's additionalPrinterColumns
evaluated on each object (as apiextensions-apiserver's tableconvertor does) and the usual
columns of the built-in kinds (as the API server's printers do for pods, namespaces, events).

kubectl asks for them with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`; a plain list
would make it show NAME and AGE only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
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


# --- ages ------------------------------------------------------------------------------------


def human_duration(elapsed: timedelta) -> str:
    """A duration as kubectl shows ages (apimachinery's duration.HumanDuration): "45s", "3m20s",
    "15m", "2h30m", "10h", "2d4h", "30d", "2y100d"."""
    seconds = int(elapsed.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp (as the API server writes them) as an aware datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(timestamp: Any, now: datetime) -> str:
    """The age of a timestamp field: "<unknown>" when unset, "<invalid>" when unreadable."""
    if not timestamp:
        return "<unknown>"
    try:
        return human_duration(now - parse_time(str(timestamp)))
    except ValueError:
        return "<invalid>"


# --- JSONPath (the subset printer columns use) -----------------------------------------------

_TOKEN = re.compile(
    r"""\.(?P<name>(?:\\.|[^.\[\\])+)          # .name, with \. escaping a dot
      | \[(?P<index>-?\d+|\*)\]                 # [0], [-1], [*]
      | \[(?P<quote>['"])(?P<key>.*?)(?P=quote)\]  # ['key']
      | \[\?\(@(?P<filter>(?:\.(?:\\.|[^.=!<>\s\\])+)+)   # [?(@.a.b == 'x')]
        \s*(?P<op>==|!=)\s*(?P<rhs>'[^']*'|"[^"]*"|[^)\s]+)\s*\)\]
      | \.\.                                    # unsupported recursive descent
    """,
    re.VERBOSE,
)


class JsonPathError(ValueError):
    """A column's jsonPath is outside the supported subset."""


def _steps(expression: str) -> list[tuple[str, Any]]:
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if text.startswith("$"):
        text = text[1:]
    steps: list[tuple[str, Any]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.group(0) == "..":
            raise JsonPathError(f"unsupported jsonPath {expression!r} at {text[position:]!r}")
        if match.group("name") is not None:
            steps.append(("key", match.group("name").replace("\\.", ".")))
        elif match.group("index") is not None:
            index = match.group("index")
            steps.append(("all", None) if index == "*" else ("index", int(index)))
        elif match.group("key") is not None:
            steps.append(("key", match.group("key")))
        else:
            path = [
                p.replace("\\.", ".") for p in re.findall(r"\.((?:\\.|[^.\\])+)", match["filter"])
            ]
            rhs = match.group("rhs")
            value: Any = rhs[1:-1] if rhs[0] in "'\"" else json.loads(rhs)
            steps.append(("filter", (path, match.group("op"), value)))
        position = match.end()
    return steps


def _dig(value: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def jsonpath_values(obj: Any, expression: str) -> list[Any]:
    """Every value the expression finds (missing keys find nothing, as with allowMissingKeys)."""
    current = [obj]
    for kind, arg in _steps(expression):
        found: list[Any] = []
        for value in current:
            if (kind == "key" and isinstance(value, dict) and arg in value) or (
                kind == "index" and isinstance(value, list) and -len(value) <= arg < len(value)
            ):
                found.append(value[arg])
            elif kind == "all" and isinstance(value, list | dict):
                found.extend(value if isinstance(value, list) else value.values())
            elif kind == "filter" and isinstance(value, list):
                path, op, wanted = arg
                for item in value:
                    actual = _dig(item, path)
                    if (actual == wanted) == (op == "=="):
                        found.append(item)
        current = found
    return current


# --- cells -----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A value as kubectl's JSONPath printer prints it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _cell(column_type: str, value: Any, now: datetime) -> Any:
    """cellForJSONValue: the cell for a found value, None when it has the wrong type."""
    if value is None:
        return None
    if column_type == "string":
        return _text(value)
    if column_type == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if column_type == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date" and isinstance(value, str):
        return age(value, now)
    return None


def _column_cell(column: dict[str, Any], obj: dict[str, Any], now: datetime) -> Any:
    compute = column.get("compute")
    if compute is not None:
        return _COMPUTED[compute](obj, now)
    try:
        found = jsonpath_values(obj, column["jsonPath"])
    except JsonPathError:
        return None
    if not found:
        return None  # a missing value is an empty cell (null), not "<none>"
    return _cell(column["type"], found[0], now)


def _definition(column: dict[str, Any]) -> dict[str, Any]:
    description = column.get("description") or (
        f"Custom resource definition column (in JSONPath format): {column.get('jsonPath', '')}"
    )
    return {
        "name": column["name"],
        "type": column["type"],
        "format": column.get("format", ""),
        "description": description,
        "priority": column.get("priority", 0),
    }


def _row_object(obj: dict[str, Any], include_object: str) -> dict[str, Any] | None:
    if include_object == "Object":
        return obj
    if include_object == "Metadata":
        return {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {}),
        }
    return None


def table(
    objects: list[dict[str, Any]],
    columns: list[dict[str, Any]] | None,
    *,
    kind: str,
    include_object: str = "Metadata",
    now: datetime,
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table: Name first, then the columns (JSONPath evaluated on each object,
    type-formatted: integer, number, string, boolean, date as age like kubectl '5m'), rows with
    `object` as PartialObjectMetadata (includeObject=Metadata), Object, or None.

    `columns` None means the kind's built-in columns (builtin_columns). The caller sets
    metadata.resourceVersion (and continue) as for the list it converts."""
    if include_object not in ("None", "Metadata", "Object"):
        raise ValueError(f"includeObject must be None, Metadata or Object, not {include_object!r}")
    if columns is None:
        columns = builtin_columns(kind) or [AGE_COLUMN]
    definitions = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": NAME_DESCRIPTION,
            "priority": 0,
        },
        *(_definition(c) for c in columns),
    ]
    rows = []
    for obj in objects:
        cells = [obj.get("metadata", {}).get("name", "")]
        cells += [_column_cell(column, obj, now) for column in columns]
        row: dict[str, Any] = {"cells": cells}
        included = _row_object(obj, include_object)
        if included is not None:
            row["object"] = included
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": definitions,
        "rows": rows,
    }


# --- built-in kinds --------------------------------------------------------------------------


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


_COMPUTED: dict[str, Callable[[dict[str, Any], datetime], Any]] = {
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

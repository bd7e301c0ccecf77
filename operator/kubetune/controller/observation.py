"""What the controller is told about a trial's pod: its phase, times, and what it reported.

The Kubernetes adapters build these from pod objects (annotation `kubetune.io/metrics`, the
container termination message, Prometheus); the controller never sees a pod itself.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

REPORT_SIZE_LIMIT: Final = 65536
"""Characters of a report document (annotation or termination message) the operator reads.
The reporting helper keeps the annotation under 8 KiB and Kubernetes cuts termination
messages at 4 KiB; a larger document is a trainer's mistake, refused before it is parsed."""
MAX_STEP: Final = 2**63 - 1
"""The largest step: status.intermediateValues[].step is an int64 in the API."""
MAX_REPORT_NESTING: Final = 32
"""Levels of arrays and objects a report may nest (reports need 2). Checked before parsing:
json.loads refuses depth only by RecursionError, whose depth depends on the interpreter's
recursion limit (celpy raises it to 2500 process-wide) and on the caller's stack depth (kopf's
threads), so the same report would fail in one place and be read in another."""
_SHOWN: Final = 200
"""Characters of a rejected value quoted in an error."""
_JSON_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*(?:"|$)', re.DOTALL)
"""A JSON string, or an unterminated one up to the end: brackets inside it do not nest."""
_JSON_BRACKET: Final = re.compile(r"[\[\]{}]")


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class MetricReport:
    """Metrics a trainer reported: at a step while training, or its final values (step None)."""

    metrics: Mapping[str, object]
    step: int | None = None
    time: datetime | None = None


class SourceErrorKind(StrEnum):
    """Why a read of the metrics source failed; the reason of the study's MetricsSource
    condition."""

    QUERY_INVALID = "MetricsQueryInvalid"
    """Prometheus refused the query (400, 422), or it returned several series or a value that
    is not a number: the study's query must be fixed."""
    UNREACHABLE = "MetricsSourceUnreachable"
    """No answer after the retries: connection refused, timeout, TLS, 5xx, 401/403."""


@dataclass(frozen=True)
class SourceReading:
    """What the metrics source (Prometheus) gave for one trial at one evaluation time: metric
    values (a metric with no series is absent), or why the read failed (never a value)."""

    at: datetime
    final: bool
    """The final read (evaluated at the time the pod finished), else an intermediate one."""
    values: Mapping[str, float] = field(default_factory=dict)
    step: int | None = None
    """The step of an intermediate read."""
    error: str | None = None
    error_kind: SourceErrorKind | None = None


@dataclass(frozen=True)
class PodObservation:
    """A trial pod as last seen."""

    phase: PodPhase
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    """Why it waits or why it ended: Unschedulable, ImagePullBackOff, OOMKilled,
    DeadlineExceeded, Error..."""
    message: str | None = None
    exit_code: int | None = None
    latest_report: MetricReport | None = None
    """The latest intermediate report (the pod annotation holds only the latest)."""
    final_report: MetricReport | None = None
    """The final report (termination message, or the annotation's final document)."""
    report_errors: tuple[str, ...] = field(default=())
    """Reports that could not be read (not JSON, wrong shape): the trial fails with these."""
    terminated: bool = False
    """Every container of the pod has ended (phase Succeeded or Failed, none running): it holds
    its node's resources no more."""
    terminated_at: datetime | None = None
    """When the last of its containers ended, once terminated."""
    pod_name: str | None = None
    """The pod's name; of a trial that is a Job, its primary pod's (completion index 0), whose
    name changes if it is retried: what `${trial.pod}` names in a metrics-source query."""


class InvalidMetricError(ValueError):
    """A trainer reported something that is not a finite number for a recorded metric."""


def shown(value: object) -> str:
    """A value as an error quotes it: its repr, cut to a few hundred characters (a trainer may
    send megabytes, and the error goes into the trial's status)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int past Python's digit limit, deep nesting
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def metric_value(name: str, value: object) -> float:
    """A reported metric as a float, or InvalidMetricError naming the metric and what was sent."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidMetricError(
            f"metric {shown(name)} reported {shown(value)}, which is not a number"
        )
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the largest float (1.8e308)
        raise InvalidMetricError(
            f"metric {shown(name)} reported {shown(value)}, an integer beyond the largest "
            "float (about 1.8e308)"
        ) from None
    if not math.isfinite(number):
        raise InvalidMetricError(
            f"metric {shown(name)} reported {shown(value)}, which is not finite"
        )
    return number


def _load(text: str, what: str) -> Any:
    """A report document parsed as JSON, or ValueError saying what is wrong with it. Whatever
    a trainer writes ends here: too large, too deep, an integer past Python's digit limit."""
    if len(text) > REPORT_SIZE_LIMIT:
        raise ValueError(
            f"{what} is {len(text)} characters long, over the {REPORT_SIZE_LIMIT} the operator "
            f"reads: report fewer metrics: {text[:_SHOWN]!r}"
        )
    if _nests_deeper_than(text, MAX_REPORT_NESTING):
        raise ValueError(
            f"{what} is nested too deeply to read (over {MAX_REPORT_NESTING} levels of arrays "
            f"and objects): {text[:_SHOWN]!r}"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} is not JSON ({error}): {text[:_SHOWN]!r}") from None
    except RecursionError:  # a caller already near the recursion limit
        raise ValueError(f"{what} is nested too deeply to read: {text[:_SHOWN]!r}") from None
    except ValueError as error:  # "Exceeds the limit (4300 digits) for integer string ..."
        raise ValueError(f"{what} is not readable ({error}): {text[:_SHOWN]!r}") from None


def _nests_deeper_than(text: str, levels: int) -> bool:
    """Whether a JSON text nests arrays and objects more than `levels` deep, counted without
    recursion; brackets inside strings do not count, and unbalanced ones are left to the parser."""
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > levels:
            return True
    return False


def _report_time(value: object) -> datetime | None:
    """The time of an annotation report, in UTC; ValueError when it is not RFC 3339 with an
    offset (a time without one could be any zone, and cannot be compared with the operator's)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"metrics annotation time {shown(value)} is not an RFC 3339 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"metrics annotation time {shown(value)} is not RFC 3339") from None
    if moment.tzinfo is None:
        raise ValueError(
            f"metrics annotation time {shown(value)} has no timezone: end it with Z (UTC) "
            "or an offset such as +00:00"
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"metrics annotation time {shown(value)} is out of range") from None


def parse_termination_message(text: str) -> MetricReport:
    """The final report in a container's termination message: a flat JSON object of metric
    name to number (docs/trial-contract.md). Raises ValueError saying what is wrong with it;
    values are checked later, against the metrics the study records."""
    document = _load(text, "termination message")
    if not isinstance(document, dict):
        raise ValueError(f"termination message is not a JSON object: {text[:_SHOWN]!r}")
    return MetricReport(document)


def parse_metrics_annotation(text: str) -> MetricReport:
    """The latest report in the kubetune.io/metrics pod annotation:
    {"step": int, "metrics": {name: number}, "time": RFC 3339, "final": bool}.
    A final document (final: true) has no step. The time, when given, must carry a timezone;
    it is returned in UTC. Raises ValueError saying what is wrong."""
    document = _load(text, "metrics annotation")
    if not isinstance(document, dict) or not isinstance(document.get("metrics"), dict):
        raise ValueError(f'metrics annotation has no "metrics" object: {text[:_SHOWN]!r}')
    final = document.get("final") is True
    step = document.get("step")
    if not final and (
        isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP
    ):
        raise ValueError(
            f'metrics annotation has no whole, non-negative "step" up to {MAX_STEP}: {shown(step)}'
        )
    time = _report_time(document.get("time"))
    return MetricReport(document["metrics"], step=None if final else step, time=time)

"""What the controller is told about a trial's pod: its phase, times, and what it reported.

The Kubernetes adapters build these from pod objects (annotation `kubetune.io/metrics`, the
container termination message, Prometheus); the controller never sees a pod itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


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
    source_reading: SourceReading | None = None
    """The latest read of the study's metrics source (Prometheus) for this trial, when the
    study has one; its reports (annotation, termination message) are then not used."""


class InvalidMetricError(ValueError):
    """A trainer reported something that is not a finite number for a recorded metric."""


def metric_value(name: str, value: object) -> float:
    """A reported metric as a float, or InvalidMetricError naming the metric and what was sent."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidMetricError(f"metric {name!r} reported {value!r}, which is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidMetricError(f"metric {name!r} reported {value!r}, which is not finite")
    return number


def parse_termination_message(text: str) -> MetricReport:
    """The final report in a container's termination message: a flat JSON object of metric
    name to number (docs/trial-contract.md). Raises ValueError saying what is wrong with it;
    values are checked later, against the metrics the study records."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"termination message is not JSON ({error}): {text[:200]!r}") from None
    if not isinstance(document, dict):
        raise ValueError(f"termination message is not a JSON object: {text[:200]!r}")
    return MetricReport(document)


def parse_metrics_annotation(text: str) -> MetricReport:
    """The latest report in the kubetune.io/metrics pod annotation:
    {"step": int, "metrics": {name: number}, "time": RFC 3339, "final": bool}.
    A final document (final: true) has no step. Raises ValueError saying what is wrong."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"metrics annotation is not JSON ({error}): {text[:200]!r}") from None
    if not isinstance(document, dict) or not isinstance(document.get("metrics"), dict):
        raise ValueError(f'metrics annotation has no "metrics" object: {text[:200]!r}')
    final = document.get("final") is True
    step = document.get("step")
    if not final and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise ValueError(f'metrics annotation has no whole, non-negative "step": {step!r}')
    time = None
    if isinstance(document.get("time"), str):
        try:
            time = datetime.fromisoformat(document["time"].replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"metrics annotation time {document['time']!r} is not RFC 3339"
            ) from None
    return MetricReport(document["metrics"], step=None if final else step, time=time)

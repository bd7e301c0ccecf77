"""What a report sends: metric values as JSON carries them, the annotation's document and the
termination message, each kept within its size limit."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

logger = logging.getLogger(__name__)

ANNOTATION_LIMIT: Final = 8192
"""Bytes of the annotation's JSON document: metrics that do not fit are left out."""
TERMINATION_LIMIT: Final = 4096
"""Kubernetes keeps at most 4096 bytes of a termination message."""

# JSON has no NaN or infinity: such values travel as these strings, which the operator
# rejects as "not a number" (a diverged trial fails with that reason).
_NON_FINITE: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

JsonNumber = int | float | str


def metric_number(name: str, value: object) -> JsonNumber:
    """A metric value as JSON can carry it; a bool or a non-number is the caller's bug."""
    if isinstance(value, bool) or (
        not isinstance(value, int | float) and not hasattr(value, "__float__")
    ):
        raise TypeError(f"metric {name!r} must be a number, got {value!r}")
    if isinstance(value, int):
        return value
    number = float(value)
    return number if math.isfinite(number) else _NON_FINITE[str(number)]


def _compact(document: object) -> str:
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def fit_metrics(
    metrics: Mapping[str, JsonNumber], render: Callable[[dict[str, JsonNumber]], str], limit: int
) -> tuple[dict[str, JsonNumber], list[str]]:
    """Keep metrics in the caller's order while `render` of them stays within `limit` bytes;
    return the kept ones and the names left out. Put the objective first."""
    kept: dict[str, JsonNumber] = {}
    dropped: list[str] = []
    for name, value in metrics.items():
        candidate = {**kept, name: value}
        if len(render(candidate).encode()) <= limit:
            kept = candidate
        else:
            dropped.append(name)
    return kept, dropped


def rfc3339(moment: datetime) -> str:
    """A time in RFC 3339, UTC, with milliseconds: 2026-11-26T05:30:00.123Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def annotation_document(
    step: int, metrics: Mapping[str, JsonNumber], now: datetime, final: bool
) -> str:
    """The value of the kubetune.io/metrics annotation."""
    return _compact({"step": step, "metrics": dict(metrics), "time": rfc3339(now), "final": final})


def termination_message(metrics: Mapping[str, JsonNumber]) -> str:
    """The termination message: a flat JSON object of metric name to number."""
    return _compact(dict(metrics))

"""Reading fields of Kubernetes objects as the API returns them (dicts, or kopf's read-only
bodies), where any field may be absent or of the wrong type: each reader gives a value of the
expected type or an empty one, never an error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

EMPTY: Mapping[str, Any] = {}


def as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else EMPTY


def as_sequence(value: object) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def as_text(value: object) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def as_time(value: object) -> datetime | None:
    """A metav1.Time (RFC 3339) in UTC; None when absent, unreadable, or the zero time a runtime
    writes for a container that never started."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # OverflowError: before year 1 once in UTC
        return None
    return moment if moment.timestamp() > 0 else None

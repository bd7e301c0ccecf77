"""The control plane's clock and the two ways Kubernetes writes a moment.

metav1.Time is RFC 3339 in UTC to the second (creationTimestamp, conditions, container
states); metav1.MicroTime keeps microseconds (a Lease's renewTime, an Event's eventTime).
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current moment, in UTC."""
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as metav1.Time is written."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC to the microsecond, as metav1.MicroTime is written."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

"""Ages as kubectl shows them ("5m", "2d4h"): apimachinery's duration.HumanDuration of the time
since an RFC 3339 timestamp.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


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

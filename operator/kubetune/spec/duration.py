"""Durations written the Kubernetes way ("90s", "30m", "1h30m"), as in metav1.Duration."""

import re
from typing import Annotated

from pydantic import AfterValidator, Field

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION_SECONDS = 366 * 24 * 3600
"""The longest duration: a year and a day is more than any study or trial needs, and a longer
one overflows what Python's datetime (and Kubernetes' int64 nanoseconds) can add to a time."""
MAX_DURATION_LENGTH = 32


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "1h30m"; raises ValueError with the accepted form."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit (ms, s, m, h), "
            'such as "90s", "30m" or "1h30m"'
        )
    return sum(float(amount) * _SECONDS_PER_UNIT[unit] for amount, unit in _PART.findall(text))


def _positive(text: str) -> str:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r} is longer than a year and a day (8784h): write at most 8784h")
    return text


Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=MAX_DURATION_LENGTH,
        json_schema_extra={"example": "30m"},
    ),
    AfterValidator(_positive),
]

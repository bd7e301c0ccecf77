"""Durations written the Kubernetes way ("90s", "30m", "1h30m"), as in metav1.Duration."""

import re
from typing import Annotated

from pydantic import AfterValidator, Field

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "1h30m"; raises ValueError with the accepted form."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit (ms, s, m, h), "
            'such as "90s", "30m" or "1h30m"'
        )
    return sum(float(amount) * _SECONDS_PER_UNIT[unit] for amount, unit in _PART.findall(text))


def _positive(text: str) -> str:
    if parse_duration(text) <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return text


Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, json_schema_extra={"example": "30m"}),
    AfterValidator(_positive),
]

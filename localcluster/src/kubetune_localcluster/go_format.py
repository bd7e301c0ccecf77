"""Values as Go's fmt prints them, so that the emulated API server's messages read like the
real one's (field.Error.ErrorBody, %v and %#v of unstructured values).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def go_float(value: float) -> str:
    """A float64 as Go's %v prints it: shortest digits, exponent form from 1e+06 or below 1e-4."""
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # where the decimal point goes
    exp = point - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{text}"
    if point >= len(text):
        return prefix + text + "0" * (point - len(text))
    return f"{prefix}{text[:point]}.{text[point:]}"


def go_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    return json.dumps(value, ensure_ascii=False)


def _go_sharp(value: Any) -> str:
    """Go's %#v of an unstructured value (map[string]interface {}{...}, keys sorted)."""
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)}:{_go_sharp(v)}" for k, v in sorted(value.items()))
        return "map[string]interface {}{" + inner + "}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(_go_sharp(v) for v in value) + "}"
    if value is None:
        return "interface {}(nil)"
    return go_scalar(value)


def go_value(value: Any) -> str:
    """A bad value as field.Error.ErrorBody prints it."""
    if value is None:
        return '"null"'
    if isinstance(value, dict | list):
        return _go_sharp(value)
    return go_scalar(value)

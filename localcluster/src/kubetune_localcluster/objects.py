"""The shape of a Kubernetes object as the emulator holds it (a JSON dict), and its metadata."""

from __future__ import annotations

from typing import Any

Object = dict[str, Any]


def metadata(obj: Object) -> dict[str, Any]:
    found: dict[str, Any] = obj["metadata"]
    return found

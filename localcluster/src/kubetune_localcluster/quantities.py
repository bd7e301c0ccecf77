"""Kubernetes quantities and what the scheduler and the API server make of them.

Quantities are parsed to exact fractions ("500m" is 1/2), so that sums and comparisons of
requests against a node's capacity are exact. The QoS class is the API server's: it is set
when a pod is created, and the kubelet writes the same one.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any, Final

DEFAULT_PODS_CAPACITY: Final = "110"

Resources = dict[str, Fraction]

_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(value: str | int | float) -> Fraction:
    """A Kubernetes quantity as an exact number: "500m" -> 1/2, "4Gi" -> 4 * 2**30."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    if isinstance(value, int | float):
        return Fraction(value)
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity: write a number with an optional suffix, "
            'e.g. "500m", "2", "4Gi", "1G"'
        )
    number, exponent, suffix = match.groups()
    amount = Fraction(number)
    if exponent:
        amount *= Fraction(10) ** int(exponent[1:])
    elif suffix in _BINARY:
        amount *= 1024 ** _BINARY[suffix]
    elif suffix:
        amount *= Fraction(10) ** _DECIMAL[suffix]
    return amount


def format_quantity(amount: Fraction) -> str:
    """An amount as a Node's capacity writes it: an integer, else a short decimal."""
    return str(amount.numerator) if amount.denominator == 1 else f"{float(amount):g}"


def node_capacity(capacity: Mapping[str, str] | None) -> Resources:
    """The node's capacity: this machine's cpu count, memory and 110 pods, overridden and
    extended by `capacity` (e.g. {"nvidia.com/gpu": "2"})."""
    defaults = {"cpu": str(os.cpu_count() or 1), "pods": DEFAULT_PODS_CAPACITY}
    with contextlib.suppress(ValueError, OSError, AttributeError):
        defaults["memory"] = str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    merged = {**defaults, **(capacity or {})}
    result: Resources = {}
    for name, text in merged.items():
        try:
            result[name] = parse_quantity(text)
        except ValueError as error:
            raise ValueError(f"capacity[{name!r}]: {error}") from None
    return result


def _container_requests(container: Mapping[str, Any]) -> Resources:
    resources = container.get("resources") or {}
    # Kubernetes defaults a missing request to the limit.
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: parse_quantity(value) for name, value in merged.items()}


def pod_requests(spec: Mapping[str, Any]) -> Resources:
    """What a pod asks of its node, as the scheduler counts it: the sum over its containers or
    the largest init container, whichever is larger, plus the overhead and one pod."""
    total: Resources = {}
    for container in spec.get("containers") or []:
        for name, amount in _container_requests(container).items():
            total[name] = total.get(name, Fraction(0)) + amount
    for container in spec.get("initContainers") or []:
        for name, amount in _container_requests(container).items():
            total[name] = max(total.get(name, Fraction(0)), amount)
    for name, value in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, Fraction(0)) + parse_quantity(value)
    total["pods"] = Fraction(1)
    return total


def add_resources(total: Resources, amounts: Resources, sign: int = 1) -> None:
    """Add `amounts` to `total` in place (subtract them with sign=-1)."""
    for name, amount in amounts.items():
        total[name] = total.get(name, Fraction(0)) + sign * amount


def insufficient(requests: Resources, capacity: Resources, allocated: Resources) -> list[str]:
    """The resources the node lacks for these requests, sorted by name."""
    return sorted(
        name
        for name, amount in requests.items()
        if amount > 0 and allocated.get(name, Fraction(0)) + amount > capacity.get(name, 0)
    )


def unschedulable_message(missing: Iterable[str]) -> str:
    """The scheduler's message for a pod that fits no node (this cluster has one)."""
    reasons = [
        "1 Too many pods" if name == "pods" else f"1 Insufficient {name}" for name in missing
    ]
    return f"0/1 nodes are available: {', '.join(sorted(reasons))}."


def _counts_for_qos(name: str) -> bool:
    """Kubernetes classes pods by cpu, memory and huge pages only: a GPU is no QoS resource."""
    return name in ("cpu", "memory") or name.startswith("hugepages-")


def qos_class(spec: Mapping[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, as Kubernetes computes it (ComputePodQOS in
    pkg/apis/core/helper/qos): only cpu, memory and hugepages-* count, and only amounts above
    zero; a missing request defaults to its limit. BestEffort: no such request or limit.
    Guaranteed: every container, init containers included, has cpu and memory limits, and
    the pod's summed requests equal its summed limits. Else Burstable. Raises ValueError for a
    quantity that does not parse."""
    requests: Resources = {}
    limits: Resources = {}
    guaranteed = True
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if not isinstance(container, Mapping):
            continue  # left to the API's validation
        resources = container.get("resources") or {}
        container_limits = resources.get("limits") or {}
        container_requests = {**container_limits, **(resources.get("requests") or {})}
        for given, total in ((container_requests, requests), (container_limits, limits)):
            for name, value in given.items():
                if _counts_for_qos(name) and (amount := parse_quantity(value)) > 0:
                    total[name] = total.get(name, Fraction(0)) + amount
        if not all(
            name in container_limits and parse_quantity(container_limits[name]) > 0
            for name in ("cpu", "memory")
        ):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"

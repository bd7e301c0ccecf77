"""Quantities, a node's capacity, a pod's requests, the scheduler's verdict and the QoS class."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from kubetune_localcluster.quantities import (
    insufficient,
    node_capacity,
    parse_quantity,
    pod_requests,
    qos_class,
    unschedulable_message,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500m", Fraction(1, 2)),
        ("2", Fraction(2)),
        ("4Gi", Fraction(4 * 2**30)),
        ("1G", Fraction(10**9)),
        ("1.5", Fraction(3, 2)),
        ("1e3", Fraction(1000)),
        ("100Mi", Fraction(100 * 2**20)),
        (3, Fraction(3)),
    ],
)
def test_quantities_parse_as_kubernetes_writes_them(text: str | int, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["4GB", "lots", "", "1.2.3"])
def test_a_bad_quantity_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r'e\.g\. "500m"'):
        parse_quantity(text)


def test_capacity_extends_this_machine_and_names_a_bad_entry() -> None:
    capacity = node_capacity({"nvidia.com/gpu": "2", "cpu": "500m"})
    assert capacity["nvidia.com/gpu"] == 2
    assert capacity["cpu"] == Fraction(1, 2)
    assert capacity["pods"] == 110
    assert capacity["memory"] > 0
    with pytest.raises(ValueError, match=r"capacity\['memory'\]"):
        node_capacity({"memory": "much"})


def test_pod_requests_sum_containers_and_take_the_largest_init_container() -> None:
    spec = {
        "initContainers": [{"name": "setup", "resources": {"requests": {"cpu": "3"}}}],
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
            # A limit without a request counts as the request.
            {"name": "b", "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": "1"}}},
        ],
    }
    assert pod_requests(spec) == {
        "cpu": Fraction(3),
        "memory": Fraction(2**30),
        "nvidia.com/gpu": Fraction(1),
        "pods": Fraction(1),
    }


def test_unschedulable_pods_get_the_schedulers_words() -> None:
    capacity = node_capacity({"cpu": "2", "nvidia.com/gpu": "1"})
    used = {"nvidia.com/gpu": Fraction(1), "cpu": Fraction(1)}
    gpu_pod = {"nvidia.com/gpu": Fraction(1), "pods": Fraction(1)}
    assert insufficient(gpu_pod, capacity, used) == ["nvidia.com/gpu"]
    assert insufficient(gpu_pod, capacity, {}) == []
    both = {**gpu_pod, "cpu": Fraction(2)}
    assert unschedulable_message(insufficient(both, capacity, used)) == (
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient nvidia.com/gpu."
    )
    assert unschedulable_message(["pods"]) == "0/1 nodes are available: 1 Too many pods."
    # A resource the node does not have at all is insufficient too.
    assert insufficient({"example.com/fpga": Fraction(1)}, capacity, {}) == ["example.com/fpga"]


def containers(*resources: dict[str, Any], init: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod spec whose containers have these `resources`, and an init container with `init`."""
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "resources": r} for i, r in enumerate(resources)]
    }
    if init is not None:
        spec["initContainers"] = [{"name": "setup", "resources": init}]
    return spec


BOTH = {"cpu": "1", "memory": "1Gi"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (containers({}), "BestEffort"),
        ({}, "BestEffort"),
        # Only cpu, memory and huge pages count: a GPU-only pod is BestEffort.
        (containers({"limits": {"nvidia.com/gpu": "1"}}), "BestEffort"),
        (
            containers({"requests": {"nvidia.com/gpu": "1", "ephemeral-storage": "1Gi"}}),
            "BestEffort",
        ),
        # Amounts of zero do not count.
        (containers({"requests": {"cpu": "0"}}), "BestEffort"),
        # Limits equal to requests for cpu and memory: Guaranteed (a GPU limit changes nothing).
        (containers({"limits": BOTH, "requests": BOTH}), "Guaranteed"),
        (containers({"limits": {**BOTH, "nvidia.com/gpu": "1"}}), "Guaranteed"),
        # A missing request defaults to its limit.
        (containers({"limits": BOTH}), "Guaranteed"),
        (
            containers({"limits": {"cpu": "2", "memory": "1024Mi"}, "requests": {"cpu": "2000m"}}),
            "Guaranteed",
        ),
        # A cpu limit alone defaults the cpu request, but without memory it is Burstable.
        (containers({"limits": {"cpu": "1"}}), "Burstable"),
        (containers({"requests": {"memory": "1Gi"}}), "Burstable"),
        (containers({"limits": BOTH, "requests": {"cpu": "500m"}}), "Burstable"),
        # Every container counts, init containers too.
        (containers({"limits": BOTH}, {}), "Burstable"),
        (containers({"limits": BOTH}, init={}), "Burstable"),
        (containers({"limits": BOTH}, init={"limits": BOTH}), "Guaranteed"),
        (containers({}, init={"requests": {"cpu": "1"}}), "Burstable"),
        # Huge pages count as a QoS resource.
        (containers({"requests": {"hugepages-2Mi": "4Mi"}}), "Burstable"),
        (containers({"limits": {**BOTH, "hugepages-2Mi": "4Mi"}}), "Guaranteed"),
        (
            containers({"limits": BOTH, "requests": {**BOTH, "hugepages-2Mi": "4Mi"}}),
            "Burstable",
        ),
    ],
)
def test_the_qos_class_follows_kubernetes(spec: dict[str, Any], expected: str) -> None:
    assert qos_class(spec) == expected


def test_a_qos_quantity_that_does_not_parse_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        qos_class(containers({"limits": {"cpu": "lots"}}))

"""The chart's rendered non-workload objects (CRDs, RBAC, ServiceAccounts, Services,
ConfigMaps, the lease's Role, PodDisruptionBudget, NetworkPolicy) apply with the real
kubectl to the embedded control plane, and a second apply changes nothing.

Not applied: the Deployment and the `helm test` Pod (workloads: the local kubelet would run
them), and the Prometheus Operator's kinds, whose CRDs are not the chart's (they are checked
against minimal shapes in test_render.py). The workloads are checked another way: the
Deployment's arguments start `kubetune operator`, and the `helm test` pod's script passes
against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubetune_localcluster.environment import free_port
from tests.chart.conftest import (
    DASHBOARD,
    EVERYTHING,
    MONITORING,
    NAMESPACE,
    chart_crds,
    objects,
    one,
    render,
)
from tests.localcluster.conftest import Kube
from tests.planes import kube_on_both_planes  # noqa: F401 (the fixture `kube`, both planes)

WORKLOADS = {"Deployment", "Pod"}


def apply(kube: Kube, items: list[dict[str, Any]]) -> list[str]:
    result = kube.kubectl("apply", "-f", "-", stdin=stream(items))
    return result.stdout.splitlines()


def stored_objects(kube: Kube, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored objects, read back with kubectl, in the order of `items`."""
    listing = kube.kubectl("get", "-f", "-", "-o", "json", stdin=stream(items)).stdout
    found: list[dict[str, Any]] = json.loads(listing)["items"]
    return found


def stream(items: list[dict[str, Any]]) -> str:
    """Objects as a YAML stream of JSON documents (JSON keeps `y` a string, not a bool)."""
    return "\n---\n".join(json.dumps(item) for item in items)


# Everything, with the dashboard reading team-a behind an Ingress.
WITH_DASHBOARD = {
    **EVERYTHING,
    "dashboard": {**DASHBOARD["dashboard"], "namespace": "team-a"},
}


@pytest.mark.parametrize(
    "values",
    [{}, EVERYTHING, WITH_DASHBOARD],
    ids=["default", "namespaced-ha-monitoring-networkpolicy", "everything-and-the-dashboard"],
)
def test_the_rendered_objects_apply_with_kubectl(kube: Kube, values: dict[str, Any]) -> None:
    crds = chart_crds()
    assert [line.split()[-1] for line in apply(kube, crds)] in (
        ["created"] * len(crds),
        ["unchanged"] * len(crds),
    )
    namespaces = {NAMESPACE, *values.get("watch", {}).get("namespaces", [])}
    apply(
        kube,
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces],
    )
    rendered = objects(render(values, api_versions=(MONITORING,)))
    # The emulator serves no Ingress (the real plane applies it; test_render validates it).
    unserved = {"Ingress"} if kube.plane == "embedded" else set()
    items = [
        item
        for item in rendered
        if item["kind"] not in WORKLOADS | unserved
        and not item["apiVersion"].startswith("monitoring.")
    ]
    kinds = {item["kind"] for item in items}
    assert {"ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Service"} <= kinds
    if values:
        assert {"Role", "RoleBinding", "ConfigMap"} <= kinds
        assert {"PodDisruptionBudget", "NetworkPolicy"} <= kinds
    if "dashboard" in values and kube.plane == "real":
        assert "Ingress" in kinds
    first = apply(kube, items)
    assert len(first) == len(items)
    assert all(line.endswith(" created") for line in first), first
    stored = stored_objects(kube, items)
    for item, kept in zip(items, stored, strict=True):
        assert kept["metadata"]["labels"] == item["metadata"]["labels"]
        for field in ("rules", "subjects", "roleRef", "data"):
            assert kept.get(field) == item.get(field), (item["kind"], field)
        # A real API server adds defaults to a spec (a Service's clusterIP, its IP families):
        # what the chart set is kept as set.
        for key, value in (item.get("spec") or {}).items():
            assert kept["spec"][key] == value, (item["kind"], "spec", key)
    # Applied again, nothing changes: what was stored is what the chart renders. (kubectl
    # always patches a PodDisruptionBudget's selector, its patch strategy being "replace", so
    # the resourceVersions tell, not kubectl's "unchanged".)
    apply(kube, items)
    again = stored_objects(kube, items)
    assert [o["metadata"]["resourceVersion"] for o in again] == [
        o["metadata"]["resourceVersion"] for o in stored
    ]
    # Clean up the cluster-scoped objects for the next case (names are shared).
    kube.kubectl("delete", "-f", "-", "--wait=true", stdin=stream(items), timeout=120)


def test_the_helm_test_pod_passes_against_the_deployed_operator(
    kube: Kube,
    tmp_path: Path,
) -> None:
    """The rendered Deployment's arguments start the operator, and the rendered `helm test`
    script, pointed at it instead of the Service's DNS name, finds both endpoints."""
    for crd in chart_crds():
        kube.kubectl("apply", "-f", "-", stdin=json.dumps(crd))
    ports = {"healthPort": free_port(), "metricsPort": free_port()}
    items = objects(render({"operator": ports}))
    container = one(items, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    script = one(items, "Pod")["spec"]["containers"][0]["command"][-1]
    service = f"http://kt-kubetune-metrics.{NAMESPACE}.svc"
    assert service in script
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        operator = subprocess.Popen(
            [sys.executable, "-m", "kubetune", "operator", *container["args"]],
            env=kube.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # The script retries while the operator starts.
        checked = subprocess.run(
            [sys.executable, "-c", script.replace(service, "http://127.0.0.1")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        operator.terminate()
        operator.wait(timeout=15)
    assert checked.returncode == 0, checked.stdout + checked.stderr + log.read_text()
    assert checked.stdout.count(": OK") == 2

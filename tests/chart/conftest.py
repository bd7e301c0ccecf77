"""The Helm chart rendered by Helm's own engine (helm-python-sdk, Helm's Go SDK in a wheel),
as the tests of charts/kubetune see it: the objects of a release for some values, the
Kubernetes versions the chart claims (Chart.yaml kubeVersion), the chart's files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from helm_python import _native

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
RELEASE = "kt"
NAMESPACE = "kubetune"
MONITORING = "monitoring.coreos.com/v1"

# The modes a platform team installs: each renders and validates (test_render), and the RBAC
# of each is compared with a recorded run (test_rbac).
CLUSTER_WIDE: dict[str, Any] = {}
NAMESPACED: dict[str, Any] = {"watch": {"namespaces": ["team-a", "team-b"]}}
HA: dict[str, Any] = {"ha": {"enabled": True, "replicas": 3}}
MONITORING_ON: dict[str, Any] = {
    "metrics": {
        "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True, "additionalLabels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "additionalLabels": {"release": "prometheus"}},
        "grafanaDashboard": {"enabled": True},
    }
}
MONITORING_OFF: dict[str, Any] = {
    "metrics": {
        "service": {"enabled": False},
        "serviceMonitor": {"enabled": False},
        "podMonitor": {"enabled": False},
        "prometheusRule": {"enabled": False},
        "grafanaDashboard": {"enabled": False},
    }
}
EVERYTHING: dict[str, Any] = {
    **NAMESPACED,
    **HA,
    **MONITORING_ON,
    "networkPolicy": {
        "enabled": True,
        "apiServer": {"peers": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]},
    },
    "trials": {"annotationReporting": True},
    "imagePullSecrets": [{"name": "registry"}],
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "kubetune"}},
                    },
                }
            ]
        }
    },
}
# The dashboard, reading every namespace (a ClusterRole) with an Ingress and the
# NetworkPolicies, and reading the one namespace of a list that it is told (a Role there).
DASHBOARD: dict[str, Any] = {
    "dashboard": {
        "enabled": True,
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/auth-type": "basic"},
            "tls": [{"hosts": ["kubetune.example.com"], "secretName": "kubetune-tls"}],
        },
    },
    "networkPolicy": {"enabled": True},
}
DASHBOARD_NAMESPACED: dict[str, Any] = {
    **NAMESPACED,
    "dashboard": {"enabled": True, "namespace": "team-b", "port": 9000},
}
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "cluster-wide": CLUSTER_WIDE,
    "namespaced": NAMESPACED,
    "ha": HA,
    "ha-namespaced": {**NAMESPACED, **HA},
    "monitoring-on": MONITORING_ON,
    "monitoring-off": MONITORING_OFF,
    "everything": EVERYTHING,
    "dashboard": DASHBOARD,
    "dashboard-namespaced": DASHBOARD_NAMESPACED,
}


def supported_versions() -> tuple[str, str]:
    """The oldest and newest Kubernetes minor versions of Chart.yaml's kubeVersion, which reads
    ">=1.A.0-0 <1.B.0-0": ("1.A", "1.(B-1)")."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    match = re.fullmatch(r">=1\.(\d+)\.0-0 <1\.(\d+)\.0-0", chart["kubeVersion"])
    assert match, f"kubeVersion {chart['kubeVersion']!r} is not a range of minor versions"
    return f"1.{match[1]}", f"1.{int(match[2]) - 1}"


def render(
    values: dict[str, Any] | None = None,
    *,
    api_versions: tuple[str, ...] = (),
    kube_version: str | None = None,
    namespace: str = NAMESPACE,
) -> dict[str, str]:
    """The rendered templates (path -> text). helm-python's Chart.render takes no
    capabilities, but Helm's render options do (api_versions, kube_version), so they are
    passed to the library directly."""
    options: dict[str, Any] = {"name": RELEASE, "namespace": namespace, "is_install": True}
    if api_versions:
        options["api_versions"] = list(api_versions)
    if kube_version:
        options["kube_version"] = kube_version
    with helm.Chart.load(CHART) as chart:
        # Values are checked against values.schema.json as `helm install` does.
        chart.validate_schema(chart.merge_values(values))
        rendered = _native.call_string(
            "helm_render", chart._raw(), json.dumps(values or {}), json.dumps(options)
        )
    manifests: dict[str, str] = json.loads(rendered)
    return manifests


def objects(manifests: dict[str, str], *, hooks: bool = True) -> list[dict[str, Any]]:
    """The Kubernetes objects of rendered templates (NOTES.txt aside), test hooks included
    unless `hooks` is false."""
    found = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if not document:
                continue
            annotations = document["metadata"].get("annotations") or {}
            if not hooks and "helm.sh/hook" in annotations:
                continue
            found.append(document)
    return found


def of_kind(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in items if item["kind"] == kind]


def one(items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(items, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def chart_crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in the chart's crds/."""
    documents = []
    for path in sorted((CHART / "crds").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents

"""The chart rendered by Helm's own engine for each mode a platform team installs: it lints,
every object validates against the Kubernetes schemas of the oldest and the newest version
the chart supports, and each mode produces the objects it promises."""

from __future__ import annotations

import filecmp
import json
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    EVERYTHING,
    HA,
    MODES,
    MONITORING,
    MONITORING_OFF,
    MONITORING_ON,
    NAMESPACE,
    NAMESPACED,
    ROOT,
    objects,
    of_kind,
    one,
    render,
    supported_versions,
)

OLDEST, NEWEST = supported_versions()
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_the_chart_crds_are_the_repositorys() -> None:
    # Kubetune's own: crds/kopf-peering.yaml (kopf's, for `--peering` outside the chart) is
    # not in the chart, whose HA elects a leader on a Lease instead.
    names = sorted(path.name for path in (ROOT / "crds").glob("*.kubetune.io.yaml"))
    assert sorted(path.name for path in (CHART / "crds").glob("*.yaml")) == names
    match, mismatch, errors = filecmp.cmpfiles(ROOT / "crds", CHART / "crds", names, shallow=False)
    assert (mismatch, errors) == ([], []), "copy crds/ into charts/kubetune/crds/"
    assert match == names


def test_the_supported_versions_have_schemas() -> None:
    # kubernetes-validate ships the schemas of both ends of Chart.yaml's kubeVersion.
    shipped = set(kubernetes_validate.utils.all_versions())
    assert {f"{OLDEST}.0", f"{NEWEST}.0"} <= shipped
    assert (OLDEST, NEWEST) == ("1.29", "1.37")


@pytest.mark.parametrize("mode", list(MODES))
def test_helm_lint_passes(mode: str) -> None:
    for version in (OLDEST, NEWEST):
        report = helm.lint(CHART, MODES[mode], strict=True, kube_version=f"v{version}.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert (report["errors"], problems) == ([], [])


# Minimal shapes of the Prometheus Operator's kinds (kubernetes-validate has no schema for a
# CRD's kinds): the fields the chart sets, typed, with nothing unknown where we write.
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
LABEL_SELECTOR = {"type": "object"}
ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
    },
}
NAMESPACE_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "any": {"type": "boolean"},
        "matchNames": {"type": "array", "items": {"type": "string"}},
    },
}
RULE = {
    "type": "object",
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": DURATION,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
MONITORING_SPECS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": LABEL_SELECTOR,
            "namespaceSelector": NAMESPACE_SELECTOR,
            "endpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
        },
    },
    "PodMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "podMetricsEndpoints"],
        "properties": {
            "selector": LABEL_SELECTOR,
            "namespaceSelector": NAMESPACE_SELECTOR,
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
        },
    },
    "PrometheusRule": {
        "type": "object",
        "additionalProperties": False,
        "required": ["groups"],
        "properties": {
            "groups": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string"},
                        "interval": DURATION,
                        "rules": {"type": "array", "items": RULE},
                    },
                },
            }
        },
    },
}


def validate(item: dict[str, Any], version: str) -> None:
    """One rendered object against the schema of its kind for a Kubernetes version."""
    if item["apiVersion"] == MONITORING:
        jsonschema.validate(item["spec"], MONITORING_SPECS[item["kind"]])
        # Their metadata is an ObjectMeta, as any object's.
        meta_only = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": item["metadata"]}
        kubernetes_validate.validate(meta_only, version, strict=True)
        return
    kubernetes_validate.validate(item, version, strict=True)


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_object_validates(mode: str, version: str) -> None:
    manifests = render(MODES[mode], api_versions=(MONITORING,), kube_version=f"v{version}.0")
    items = objects(manifests)
    assert items
    for item in items:
        try:
            validate(item, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            path = ".".join(str(part) for part in error.absolute_path)
            pytest.fail(f"{item['kind']} {item['metadata']['name']}: {path}: {error.message}")


def args_of(items: list[dict[str, Any]]) -> list[str]:
    args: list[str] = operator_container(items)["args"]
    return args


def operator_container(items: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(items, "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]
    return container


def test_the_default_is_one_cluster_wide_replica_with_recreate() -> None:
    items = objects(render())
    deployment = one(items, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    args = args_of(items)
    assert args == [
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=8000",
        "--metrics-bind-address=0.0.0.0",
    ]
    assert not of_kind(items, "PodDisruptionBudget")
    assert not [i for i in items if i["apiVersion"] == "kopf.dev/v1"]
    assert not of_kind(items, "Role") or all(
        r["metadata"]["name"].startswith("kubetune-trial") for r in of_kind(items, "Role")
    )
    assert one(items, "ClusterRoleBinding")["roleRef"]["name"] == "kt-kubetune"
    # The trial ServiceAccount is in the release's namespace.
    trial = [
        sa for sa in of_kind(items, "ServiceAccount") if sa["metadata"]["name"] == "kubetune-trial"
    ]
    assert [sa["metadata"]["namespace"] for sa in trial] == [NAMESPACE]


def test_the_operator_runs_locked_down() -> None:
    items = objects(render())
    pod = one(items, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(items)
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    # A writable /tmp on the read-only root filesystem.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["medium"] == "Memory"
    # Both probes ask kopf's health endpoint, the port the operator serves it on.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 8000}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]


def test_namespaced_mode_has_roles_in_each_namespace() -> None:
    items = objects(render(NAMESPACED))
    args = args_of(items)
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args
    roles = [r for r in of_kind(items, "Role") if r["metadata"]["name"] == "kt-kubetune"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = [b for b in of_kind(items, "RoleBinding") if b["metadata"]["name"] == "kt-kubetune"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    # Cluster-wide, only what kopf reads there: nothing about pods or studies.
    (cluster_role,) = [
        r for r in of_kind(items, "ClusterRole") if r["metadata"]["name"] == "kt-kubetune-cluster"
    ]
    resources = {res for rule in cluster_role["rules"] for res in rule["resources"]}
    assert resources == {"customresourcedefinitions", "namespaces"}
    trial = [
        sa for sa in of_kind(items, "ServiceAccount") if sa["metadata"]["name"] == "kubetune-trial"
    ]
    assert sorted(sa["metadata"]["namespace"] for sa in trial) == ["team-a", "team-b"]


@pytest.mark.parametrize("watch", [{}, NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_ha_mode_elects_a_leader_on_a_lease(watch: dict[str, Any]) -> None:
    items = objects(render({**watch, **HA}))
    deployment = one(items, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert one(items, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    args = args_of(items)
    assert "--leader-elect" in args
    assert "--leader-elect-resource-name=kt-kubetune" in args
    assert f"--leader-elect-resource-namespace={NAMESPACE}" in args
    assert "--leader-elect-lease-duration=15" in args
    assert "--leader-elect-renew-deadline=10" in args
    assert "--leader-elect-retry-period=2" in args
    assert not [a for a in args if a.startswith("--peering")]
    assert [i for i in items if i["apiVersion"] == "kopf.dev/v1"] == []
    # The lease's Role: in the release's namespace, leases only, bound to the operator.
    role = next(
        r for r in of_kind(items, "Role") if r["metadata"]["name"].endswith("-leader-election")
    )
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["create", "get", "update"],
        }
    ]
    binding = next(
        b for b in of_kind(items, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]
    )
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert [s["name"] for s in binding["subjects"]] == [account]


def test_without_ha_there_is_no_lease_role() -> None:
    items = objects(render({}))
    assert "--leader-elect" not in args_of(items)
    assert not [r for r in of_kind(items, "Role") if "leader-election" in r["metadata"]["name"]]


def test_monitoring_objects_need_the_prometheus_operator() -> None:
    with_it = objects(render(MONITORING_ON, api_versions=(MONITORING,)))
    for kind in MONITORING_KINDS:
        assert one(with_it, kind)["metadata"]["labels"]["release"] == "prometheus"
    pod_monitor = one(with_it, "PodMonitor")["spec"]
    assert pod_monitor["selector"]["matchExpressions"] == [
        {"key": "kubetune.io/study", "operator": "Exists"}
    ]
    assert pod_monitor["podMetricsEndpoints"][0]["port"] == "metrics"
    assert one(with_it, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert one(with_it, "PrometheusRule")["spec"] == rules

    manifests = render(MONITORING_ON)
    without = objects(manifests)
    assert not [i for i in without if i["kind"] in MONITORING_KINDS]
    notes = " ".join(manifests["kubetune/templates/NOTES.txt"].split())
    assert "this cluster does not serve monitoring.coreos.com/v1" in notes
    # The dashboard needs only Grafana's sidecar.
    assert of_kind(without, "ConfigMap")


def test_the_dashboard_configmap_carries_the_sidecar_label() -> None:
    items = objects(render(MONITORING_ON))
    dashboard = one(items, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["kubetune.json"]) == shipped
    custom = {"sidecarLabel": "dashboards", "sidecarLabelValue": "kubetune", "namespace": "grafana"}
    values = {"metrics": {"grafanaDashboard": {"enabled": True, **custom}}}
    dashboard = one(objects(render(values)), "ConfigMap")
    assert dashboard["metadata"]["labels"]["dashboards"] == "kubetune"
    assert "grafana_dashboard" not in dashboard["metadata"]["labels"]
    assert dashboard["metadata"]["namespace"] == "grafana"


def test_monitoring_off_renders_none_of_it() -> None:
    items = objects(render(MONITORING_OFF, api_versions=(MONITORING,)))
    kinds = {i["kind"] for i in items}
    assert not kinds & (MONITORING_KINDS | {"Service", "ConfigMap"})
    # No Service, so no `helm test` pod asking through it.
    assert not of_kind(items, "Pod")


def test_the_helm_test_pod_asks_health_and_metrics() -> None:
    items = objects(render())
    pod = one(items, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "kt-kubetune-metrics.kubetune.svc" in script
    assert ":8080/healthz" in script
    assert ":8000/metrics" in script
    service = one(items, "Service")
    assert service["metadata"]["name"] == "kt-kubetune-metrics"
    assert {p["port"] for p in service["spec"]["ports"]} == {8000, 8080}
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_scheduling_and_pull_values_reach_the_pod() -> None:
    items = objects(render(EVERYTHING, api_versions=(MONITORING,)))
    pod = one(items, "Deployment")["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets", "priorityClassName"):
        assert pod[key] == EVERYTHING[key]
    policy = one(items, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]


def test_annotation_reporting_can_be_turned_off() -> None:
    items = objects(render({"trials": {"annotationReporting": False}}))
    trial = [o for o in items if o["metadata"]["name"].startswith("kubetune-trial")]
    assert [o["kind"] for o in trial] == ["ServiceAccount"]


def test_aggregated_roles_let_edit_users_apply_studies() -> None:
    items = objects(render())
    roles = {r["metadata"]["name"]: r for r in of_kind(items, "ClusterRole")}
    edit, view = roles["kt-kubetune-edit"], roles["kt-kubetune-view"]
    for label in ("aggregate-to-admin", "aggregate-to-edit"):
        assert edit["metadata"]["labels"][f"rbac.authorization.k8s.io/{label}"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    studies = next(r for r in edit["rules"] if r["resources"] == ["tuningstudies"])
    assert {"create", "update", "patch", "delete"} <= set(studies["verbs"])
    assert all(set(r["verbs"]) == {"get", "list", "watch"} for r in view["rules"])

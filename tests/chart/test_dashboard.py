"""The chart's dashboard (dashboard.enabled): `kubetune dashboard` from the operator's image,
under its own ServiceAccount that may only get, list and watch TuningStudies and TuningTrials
(in every namespace, or in the one it reads), locked down like the operator, behind a Service
and an optional Ingress. Off by default: then nothing of it is rendered."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.chart.conftest import (
    DASHBOARD,
    DASHBOARD_NAMESPACED,
    NAMESPACE,
    NAMESPACED,
    objects,
    of_kind,
    render,
)

COMPONENT = "app.kubernetes.io/component"
NAME = "kt-kubetune-dashboard"
READ_ONLY = [
    {
        "apiGroups": ["kubetune.io"],
        "resources": ["tuningstudies", "tuningtrials"],
        "verbs": ["get", "list", "watch"],
    }
]


def dashboard_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The rendered objects labelled as the dashboard's."""
    return [
        item
        for item in objects(render(values))
        if item["metadata"]["labels"].get(COMPONENT) == "dashboard"
    ]


def the(items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(items, kind)
    assert len(found) == 1, f"{len(found)} dashboard {kind} objects"
    return found[0]


def container_of(items: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = the(items, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def test_disabled_by_default_nothing_of_it_is_rendered() -> None:
    manifests = render({})
    items = objects(manifests)
    assert [i for i in items if i["metadata"]["labels"].get(COMPONENT) == "dashboard"] == []
    assert not [i for i in items if "dashboard" in i["metadata"]["name"]]
    assert of_kind(items, "Ingress") == []
    assert "port-forward" not in manifests["kubetune/templates/NOTES.txt"]
    # The operator's objects are those of a chart without a dashboard.
    assert len(of_kind(items, "Deployment")) == 1


def test_cluster_wide_it_reads_every_namespace_through_a_cluster_role() -> None:
    items = dashboard_objects(DASHBOARD)
    assert sorted(i["kind"] for i in items) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Ingress",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
    ]
    account = the(items, "ServiceAccount")
    assert account["metadata"] == {**account["metadata"], "name": NAME, "namespace": NAMESPACE}
    assert the(items, "ClusterRole")["rules"] == READ_ONLY
    binding = the(items, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": NAME,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    pod = the(items, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == NAME
    container = container_of(items)
    assert container["command"] == ["kubetune", "dashboard"]
    assert container["args"] == ["--host=0.0.0.0", "--port=8080"]


def test_the_operator_image_runs_it_locked_down_and_probed_at_the_root() -> None:
    everything = objects(render(DASHBOARD))
    operator = next(
        d
        for d in of_kind(everything, "Deployment")
        if d["metadata"]["labels"][COMPONENT] == "operator"
    )
    operator_pod = operator["spec"]["template"]["spec"]
    items = dashboard_objects(DASHBOARD)
    pod = the(items, "Deployment")["spec"]["template"]["spec"]
    container = container_of(items)
    assert container["image"] == operator_pod["containers"][0]["image"]
    assert pod["securityContext"] == operator_pod["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": "http"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    # The operator's Services and NetworkPolicy select the operator only, the dashboard's
    # the dashboard only.
    selector = the(items, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector[COMPONENT] == "dashboard"
    assert the(items, "Service")["spec"]["selector"] == selector
    assert the(items, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"] == selector
    assert operator["spec"]["selector"]["matchLabels"][COMPONENT] == "operator"


def test_watching_a_list_it_reads_one_namespace_through_a_role_there() -> None:
    items = dashboard_objects(DASHBOARD_NAMESPACED)
    assert of_kind(items, "ClusterRole") == of_kind(items, "ClusterRoleBinding") == []
    role = the(items, "Role")
    assert role["metadata"]["namespace"] == "team-b"
    assert role["rules"] == READ_ONLY
    binding = the(items, "RoleBinding")
    assert binding["metadata"]["namespace"] == "team-b"
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    container = container_of(items)
    assert container["args"] == ["--host=0.0.0.0", "--port=9000", "--namespace=team-b"]
    assert container["ports"][0]["containerPort"] == 9000
    # No Ingress unless asked for.
    assert of_kind(items, "Ingress") == []


def test_one_watched_namespace_is_the_one_it_reads() -> None:
    values = {"watch": {"namespaces": ["team-a"]}, "dashboard": {"enabled": True}}
    items = dashboard_objects(values)
    assert the(items, "Role")["metadata"]["namespace"] == "team-a"
    assert "--namespace=team-a" in container_of(items)["args"]


def test_several_watched_namespaces_need_the_one_it_reads() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"set dashboard\.namespace to one of them"):
        render({**NAMESPACED, "dashboard": {"enabled": True}})
    unwatched = {**NAMESPACED, "dashboard": {"enabled": True, "namespace": "team-c"}}
    with pytest.raises(helm.HelmRenderError, match=r'dashboard\.namespace "team-c" is not watched'):
        render(unwatched)


def test_the_service_and_the_ingress_reach_the_dashboard_port() -> None:
    values = {"dashboard": {**DASHBOARD["dashboard"], "service": {"port": 80, "type": "NodePort"}}}
    items = dashboard_objects(values)
    service = the(items, "Service")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    ingress = the(items, "Ingress")
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/auth-type": "basic"}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["kubetune.example.com"], "secretName": "kubetune-tls"}
    ]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "kubetune.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": NAME, "port": {"name": "http"}}},
        }
    ]


def test_its_network_policy_admits_only_its_port_and_reaches_only_the_api_server() -> None:
    items = dashboard_objects(DASHBOARD)
    policy = the(items, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": [{"port": "http", "protocol": "TCP"}]}
    ]
    assert policy["egress"] == [
        {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    ]
    ingress_controller = [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]
    api_server = [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    values = {
        "dashboard": {"enabled": True, "networkPolicy": {"from": ingress_controller}},
        "networkPolicy": {"enabled": True, "apiServer": {"peers": api_server}},
    }
    policy = the(dashboard_objects(values), "NetworkPolicy")["spec"]
    assert policy["ingress"][0]["from"] == ingress_controller
    assert policy["egress"][0]["to"] == api_server
    # Without networkPolicy.enabled, none.
    assert of_kind(dashboard_objects({"dashboard": {"enabled": True}}), "NetworkPolicy") == []


def test_the_notes_say_how_to_port_forward_to_it() -> None:
    notes = render(DASHBOARD_NAMESPACED)["kubetune/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} port-forward service/{NAME} 8080:8080" in notes
    assert "TuningStudies of namespace team-b" in notes

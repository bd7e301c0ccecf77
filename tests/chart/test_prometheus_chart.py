"""The chart's Prometheus values: the allowed URLs reach the operator's arguments and the
NetworkPolicy's egress, and the operator reads no Secret or ConfigMap unless told to."""

from __future__ import annotations

from typing import Any

from tests.chart.conftest import objects, of_kind, one, render

ALLOWED = ["http://prometheus-operated.monitoring:9090", "https://thanos.example/tenant"]


def rules_of(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        rule
        for role in of_kind(items, "Role") + of_kind(items, "ClusterRole")
        for rule in role["rules"]
    ]


def reads_credentials(items: list[dict[str, Any]]) -> bool:
    return any({"secrets", "configmaps"} & set(rule["resources"]) for rule in rules_of(items))


def test_by_default_no_secret_or_configmap_is_readable_and_no_prometheus_allowed() -> None:
    for watch in ({}, {"watch": {"namespaces": ["team-a"]}}):
        items = objects(render(watch))
        assert not reads_credentials(items)
        args = one(items, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        assert not [a for a in args if a.startswith("--allow-prometheus")]


def test_credentials_are_readable_only_where_studies_are_watched_when_opted_in() -> None:
    values = {"watch": {"namespaces": ["team-a"]}, "prometheus": {"readCredentials": True}}
    items = objects(render(values))
    (role,) = [r for r in of_kind(items, "Role") if reads_credentials([r])]
    assert role["metadata"]["namespace"] == "team-a"
    assert not any(reads_credentials([r]) for r in of_kind(items, "ClusterRole"))


def test_allowed_urls_reach_the_operator_and_the_network_policy() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    values = {
        "prometheus": {"allowedUrls": ALLOWED, "namespaceLabel": "namespace"},
        "networkPolicy": {"enabled": True, "prometheusPeers": peers},
    }
    items = objects(render(values))
    args = one(items, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [f"--allow-prometheus={url}" for url in ALLOWED] == [
        a for a in args if a.startswith("--allow-prometheus")
    ]
    assert "--prometheus-namespace-label=namespace" in args
    egress = one(items, "NetworkPolicy")["spec"]["egress"]
    to_prometheus = [rule for rule in egress if rule.get("to") == peers]
    assert [rule["ports"] for rule in to_prometheus] == [
        [{"port": 9090, "protocol": "TCP"}],
        [{"port": 443, "protocol": "TCP"}],
    ]


def test_allowed_trial_service_accounts_reach_the_operator() -> None:
    items = objects(render({"trials": {"allowedServiceAccounts": ["kubetune-trial"]}}))
    args = one(items, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--trial-service-account=kubetune-trial" in args


def test_the_operator_binds_its_metrics_where_the_values_say() -> None:
    items = objects(render({"operator": {"metricsBindAddress": "127.0.0.1"}}))
    args = one(items, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--metrics-bind-address=127.0.0.1" in args

"""The platform's allow-list of Prometheus URLs (kubetune operator --allow-prometheus): how a
study's URL is matched against a prefix, and a study outside it being Invalid, with no read."""

from __future__ import annotations

from datetime import timedelta

import pytest
from typer.testing import CliRunner

from kubetune.cli import app
from kubetune.controller import StudyController
from kubetune.controller.metrics_source import PrometheusPolicy
from tests.prometheus_source.test_controller_source import run, spec, trainer
from tests.simulation import SimulatedCluster

PREFIX = "http://prometheus.monitoring:9090/tenant"


@pytest.mark.parametrize(
    "url",
    [
        "http://prometheus.monitoring:9090/tenant",
        "http://prometheus.monitoring:9090/tenant/",
        "http://prometheus.monitoring:9090/tenant/team-a",
        "HTTP://Prometheus.Monitoring:9090/tenant",
        "http://prometheus.monitoring.:9090/tenant",
    ],
)
def test_a_url_under_the_prefix_is_allowed(url: str) -> None:
    assert PrometheusPolicy.of([PREFIX]).problem(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://prometheus.monitoring:9090/tenantx",  # not a segment boundary
        "http://prometheus.monitoring:9090/",
        "http://prometheus.monitoring:9091/tenant",
        "https://prometheus.monitoring:9090/tenant",
        "http://prometheus.monitoring:9090.evil.example/tenant",
        "http://prometheus.monitoring.evil.example:9090/tenant",
        "http://prometheus.monitoring:9090@evil.example/tenant",
        "http://user@prometheus.monitoring:9090/tenant",
        "http://evil.example/#@prometheus.monitoring:9090/tenant",
        "http://prometheus.monitoring:9090/tenant/../admin",
        "http://prometheus.monitoring:9090/tenant/%2e%2e/admin",
        "http://prometheus.monitoring:9090/tenant?x=1",
        "ftp://prometheus.monitoring:9090/tenant",
        "http://prometheus.monitoring:99999/tenant",
    ],
)
def test_a_url_outside_the_prefix_is_refused_naming_the_field(url: str) -> None:
    problem = PrometheusPolicy.of([PREFIX]).problem(url)
    assert problem is not None
    assert problem.startswith("spec.metricsSource.prometheus.url: ")


def test_the_default_port_of_the_scheme_is_the_same_server() -> None:
    policy = PrometheusPolicy.of(["https://prom.example"])
    assert policy.problem("https://prom.example:443/api") is None
    assert policy.problem("https://prom.example:8443") is not None


@pytest.mark.parametrize("prefix", ["prom:9090", "http://user@prom", "http://prom/?a=b", "http://"])
def test_a_bad_prefix_is_refused_at_start(prefix: str) -> None:
    with pytest.raises(ValueError, match=r"http|user|query|host"):
        PrometheusPolicy.of([prefix])


def invalid_message(policy: PrometheusPolicy) -> tuple[str, str, int]:
    cluster = SimulatedCluster.of(spec(maxTrials=1, parallelism=1), trainer)
    cluster.controller = StudyController(policy)
    reads: list[object] = []

    def prometheus(read: object) -> object:
        reads.append(read)
        raise AssertionError("a refused source is never read")

    (plan, *_) = run(cluster, prometheus, 3)
    return (
        plan.study_status.phase.value,
        plan.study_status.message or "",
        len(cluster.trials) + len(reads),
    )


def test_with_no_allowed_url_a_prometheus_study_is_invalid_and_says_how_to_allow_it() -> None:
    phase, message, started = invalid_message(PrometheusPolicy())
    assert phase == "Invalid"
    assert "spec.metricsSource.prometheus.url" in message
    assert "'http://prometheus:9090'" in message
    assert "--allow-prometheus" in message
    assert started == 0  # no trial, no read


def test_a_url_outside_the_allow_list_is_invalid_and_lists_the_allowed() -> None:
    phase, message, started = invalid_message(PrometheusPolicy.of([PREFIX]))
    assert phase == "Invalid"
    assert PREFIX in message
    assert "prometheus.allowedUrls" in message
    assert started == 0


def test_the_namespace_label_is_set_to_the_study_namespace() -> None:
    cluster = SimulatedCluster.of(spec(maxTrials=1, parallelism=1), trainer)
    cluster.controller = StudyController(
        PrometheusPolicy.of(["http://prometheus:9090"], namespace_label="namespace")
    )
    for _ in range(5):  # until the trial's pod runs and its first read is due
        observations = {n: o for n in cluster.pods if (o := cluster.observe(n)) is not None}
        trials = list(cluster.trials.values())
        plan = cluster.controller.reconcile(cluster.document(), trials, observations, cluster.now)
        due = plan.source_reads
        if due is not None:
            break
        cluster.apply(plan)
        cluster.now += timedelta(seconds=1)
    assert due is not None
    assert due.enforced_label == ("namespace", cluster.study.metadata.namespace)


def test_the_operator_refuses_a_bad_prefix_before_it_starts() -> None:
    result = CliRunner().invoke(
        app, ["operator", "--metrics-port", "0", "--allow-prometheus", "http://user@prom:9090"]
    )
    assert result.exit_code == 2
    assert "--allow-prometheus" in result.output
    assert "user" in result.output  # what is wrong with it (rich wraps the phrase)

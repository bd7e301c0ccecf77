"""kubetune_report, the trial's reporting helper: each route against a local API server that
records what it receives (docs/trial-contract.md is the contract these tests hold it to)."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubetune.controller.observation import (
    parse_metrics_annotation,
    parse_termination_message,
)
from kubetune.spec import api
from kubetune_localcluster.environment import free_port
from kubetune_report import (
    ANNOTATION_LIMIT,
    TERMINATION_LIMIT,
    KubeConnection,
    PodAnnotator,
    Reporter,
    RetryPolicy,
    annotation_document,
    fit_metrics,
    metric_number,
)
from tests.trainers.conftest import ApiServer, Tls

NOW = datetime(2026, 11, 26, 5, 30, 0, 123000, tzinfo=UTC)
NO_WAIT = RetryPolicy(attempts=4, backoff=0.0, max_backoff=0.0, timeout=5.0)


def reporter_for(
    server: ApiServer, tmp_path: Path, retry: RetryPolicy = NO_WAIT, **options: object
) -> Reporter:
    annotator = PodAnnotator(
        KubeConnection(server.url, token="s3cret"), "team-a", "digits-7", retry=retry
    )
    return Reporter(
        annotator=annotator,
        termination_log=tmp_path / "termination-log",
        now=lambda: NOW,
        **options,  # type: ignore[arg-type]
    )


def test_report_patches_the_pod_annotation(api_server: ApiServer, tmp_path: Path) -> None:
    reporter = reporter_for(api_server, tmp_path)
    reporter.report(3, val_accuracy=0.91, val_loss=0.25)

    (request,) = api_server.requests
    assert request.method == "PATCH"
    assert request.path == "/api/v1/namespaces/team-a/pods/digits-7"
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert list(request.json) == ["metadata"]
    assert list(request.json["metadata"]) == ["annotations"]
    assert request.annotation == {
        "step": 3,
        "metrics": {"val_accuracy": 0.91, "val_loss": 0.25},
        "time": "2026-11-26T05:30:00.123Z",
        "final": False,
    }
    # What the operator reads back from it.
    parsed = parse_metrics_annotation(json.dumps(request.annotation))
    assert parsed.step == 3
    assert parsed.metrics == {"val_accuracy": 0.91, "val_loss": 0.25}
    assert parsed.time == NOW
    # Intermediate reports leave the termination message alone.
    assert not (tmp_path / "termination-log").exists()


def test_report_final_sets_final_annotation_and_termination_message(
    api_server: ApiServer, tmp_path: Path
) -> None:
    reporter = reporter_for(api_server, tmp_path)
    reporter.report(11, val_accuracy=0.97)
    reporter.report(12, val_accuracy=0.96)
    reporter.report_final(val_accuracy=0.97, val_loss=0.1, test_accuracy=0.96)

    final = api_server.requests[-1].annotation
    assert final == {
        "step": 12,
        "metrics": {"val_accuracy": 0.97, "val_loss": 0.1, "test_accuracy": 0.96},
        "time": "2026-11-26T05:30:00.123Z",
        "final": True,
    }
    assert parse_metrics_annotation(json.dumps(final)).step is None
    message = (tmp_path / "termination-log").read_text()
    assert json.loads(message) == {"val_accuracy": 0.97, "val_loss": 0.1, "test_accuracy": 0.96}
    assert parse_termination_message(message).metrics["test_accuracy"] == 0.96


@pytest.mark.parametrize("status", [409, 429, 500, 503])
def test_retries_with_backoff_until_the_api_accepts(
    api_server: ApiServer, tmp_path: Path, status: int
) -> None:
    api_server.script = [(status, {}), (status, {})]
    delays: list[float] = []
    annotator = PodAnnotator(
        KubeConnection(api_server.url),
        "ns",
        "pod",
        RetryPolicy(attempts=5, backoff=0.5, max_backoff=8.0),
        sleep=delays.append,
    )
    assert annotator.patch("{}", final=False) is True
    assert len(api_server.requests) == 3
    assert {r.body for r in api_server.requests} == {api_server.requests[0].body}
    # Exponential with jitter in [base/2, base]: 0.5 then 1.0.
    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0


def test_backoff_is_capped_and_honours_retry_after(api_server: ApiServer) -> None:
    policy = RetryPolicy(backoff=1.0, max_backoff=3.0)
    assert all(1.5 <= policy.delay(attempt) <= 3.0 for attempt in range(3, 10))
    api_server.script = [(429, {"Retry-After": "2"})]
    delays: list[float] = []
    annotator = PodAnnotator(
        KubeConnection(api_server.url), "ns", "pod", policy, sleep=delays.append
    )
    assert annotator.patch("{}", final=False) is True
    assert delays == [2.0]


def test_client_errors_are_not_retried(
    api_server: ApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api_server.script = [(403, {})]
    reporter = reporter_for(api_server, tmp_path)
    with caplog.at_level(logging.WARNING, logger="kubetune_report"):
        reporter.report(1, val_accuracy=0.5)
    assert len(api_server.requests) == 1
    assert "after 1 attempt(s): HTTP 403" in caplog.text
    assert "needs 'patch' on pods in team-a" in caplog.text


def test_a_failed_report_warns_once_and_later_reports_try_once(
    api_server: ApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api_server.script = [(503, {})] * 6
    reporter = reporter_for(api_server, tmp_path)
    with caplog.at_level(logging.WARNING, logger="kubetune_report"):
        reporter.report(1, val_accuracy=0.5)  # 4 attempts, all 503
        reporter.report(2, val_accuracy=0.6)  # 1 attempt while failing
        reporter.report(3, val_accuracy=0.7)  # 1 attempt, 200: recovered
        reporter.report(4, val_accuracy=0.8)
    assert [r.annotation["step"] for r in api_server.requests] == [1, 1, 1, 1, 2, 3, 4]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "after 4 attempt(s): HTTP 503" in warnings[0]
    assert "training goes on" in warnings[0]
    assert "reachable again" in warnings[1]


def test_the_final_report_always_gets_every_attempt(api_server: ApiServer, tmp_path: Path) -> None:
    api_server.script = [(500, {})] * 6
    reporter = reporter_for(api_server, tmp_path)
    reporter.report(1, val_accuracy=0.5)  # 4 failed attempts
    reporter.report(2, val_accuracy=0.5)  # 1 failed attempt
    reporter.report_final(val_accuracy=0.5)  # 1 more failure, then accepted
    assert [r.annotation["final"] for r in api_server.requests[-2:]] == [True, True]
    assert len(api_server.requests) == 7


def test_no_crash_when_the_api_is_down(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    annotator = PodAnnotator(
        KubeConnection(f"http://127.0.0.1:{free_port()}"), "ns", "pod", NO_WAIT
    )
    reporter = Reporter(annotator=annotator, termination_log=tmp_path / "log")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="kubetune_report"):
        for step in range(1, 6):
            reporter.report(step, loss=1.0 / step)
        reporter.report_final(loss=0.2)
    assert time.monotonic() - started < 5
    assert "ConnectionRefusedError" in caplog.text or "Connection refused" in caplog.text
    # The route that needs no API still works.
    assert json.loads((tmp_path / "log").read_text()) == {"loss": 0.2}


def test_annotation_size_is_bounded(
    api_server: ApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = reporter_for(api_server, tmp_path)
    metrics = {"objective": 0.5} | {f"layer_{i:04d}_gradient_norm": i / 7 for i in range(600)}
    with caplog.at_level(logging.WARNING, logger="kubetune_report"):
        reporter.report(1, **metrics)
        reporter.report_final(**metrics)
    for request in api_server.requests:
        value = request.json["metadata"]["annotations"][api.METRICS_ANNOTATION]
        assert len(value.encode()) <= ANNOTATION_LIMIT
        kept = json.loads(value)["metrics"]
        assert next(iter(kept)) == "objective"  # the caller's order: objective first
        assert 100 < len(kept) < 600
    message = (tmp_path / "termination-log").read_text()
    assert len(message.encode()) <= TERMINATION_LIMIT
    assert next(iter(json.loads(message))) == "objective"
    assert "annotation over 8192 bytes without layer_" in caplog.text
    assert "termination message over 4096 bytes without layer_" in caplog.text


def test_fit_metrics_skips_what_does_not_fit_and_keeps_later_small_ones() -> None:
    kept, dropped = fit_metrics(
        {"a": 1, "b" * 50: 2, "c": 3},
        lambda subset: json.dumps(subset),
        limit=20,
    )
    assert kept == {"a": 1, "c": 3}
    assert dropped == ["b" * 50]
    assert len(annotation_document(7, kept, NOW, final=False)) < 100


def test_metric_values_must_be_numbers() -> None:
    assert metric_number("x", 3) == 3
    assert metric_number("x", 0.25) == 0.25
    assert metric_number("x", float("nan")) == "NaN"
    assert metric_number("x", float("-inf")) == "-Infinity"

    class Tensorish:
        def __float__(self) -> float:
            return 0.5

    assert metric_number("x", Tensorish()) == 0.5
    with pytest.raises(TypeError, match="metric 'x' must be a number, got True"):
        metric_number("x", True)
    with pytest.raises(TypeError, match=r"got '0\.5'"):
        metric_number("x", "0.5")


def test_non_finite_values_reach_the_operator_as_invalid(
    api_server: ApiServer, tmp_path: Path
) -> None:
    reporter = reporter_for(api_server, tmp_path)
    reporter.report_final(val_loss=float("nan"), val_accuracy=0.1)
    message = (tmp_path / "termination-log").read_text()
    assert json.loads(message) == {"val_loss": "NaN", "val_accuracy": 0.1}
    assert api_server.requests[0].annotation["metrics"]["val_loss"] == "NaN"


def test_step_must_be_a_whole_number(tmp_path: Path) -> None:
    reporter = Reporter(termination_log=tmp_path / "log")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="step must be a whole number"):
            reporter.report(bad, loss=1.0)  # type: ignore[arg-type]


def test_from_environment_in_cluster(tls_api_server: ApiServer, tls: Tls, tmp_path: Path) -> None:
    """The service-account route: token and CA from the mounted directory, the API server
    from KUBERNETES_SERVICE_HOST/PORT, the pod from the downward API; a rotated token is
    picked up by the next request."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("token-1\n")
    (account / "ca.crt").write_bytes(tls.ca.read_bytes())
    (account / "namespace").write_text("from-file")
    port = tls_api_server.url.rsplit(":", 1)[1]
    environ = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": port,
        api.POD_NAME_ENV: "study-3",
        api.POD_NAMESPACE_ENV: "team-b",
        api.STUDY_ENV: "study",
        api.TRIAL_ENV: "study-3",
        api.TERMINATION_LOG_ENV: str(tmp_path / "termination"),
    }
    reporter = Reporter.from_environment(environ, NO_WAIT, service_account=account)
    reporter.report(1, loss=0.9)
    (account / "token").write_text("token-2\n")
    reporter.report_final(loss=0.5)

    first, second = tls_api_server.requests
    assert first.path == "/api/v1/namespaces/team-b/pods/study-3"
    assert first.headers["Authorization"] == "Bearer token-1"
    assert second.headers["Authorization"] == "Bearer token-2"
    assert second.annotation["final"] is True
    assert json.loads((tmp_path / "termination").read_text()) == {"loss": 0.5}

    # Without KUBETUNE_POD_NAMESPACE the service account's namespace file names it.
    del environ[api.POD_NAMESPACE_ENV]
    Reporter.from_environment(environ, NO_WAIT, service_account=account).report(1, loss=1.0)
    assert tls_api_server.requests[-1].path == "/api/v1/namespaces/from-file/pods/study-3"


def test_in_cluster_rejects_a_server_the_ca_did_not_sign(
    tls_api_server: ApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t")
    environ = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": tls_api_server.url.rsplit(":", 1)[1],
        api.POD_NAME_ENV: "p",
    }
    reporter = Reporter.from_environment(environ, NO_WAIT, service_account=account)
    with caplog.at_level(logging.WARNING, logger="kubetune_report"):
        reporter.report(1, loss=1.0)
    assert tls_api_server.requests == []
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_routes_are_off_without_their_settings(tmp_path: Path) -> None:
    """A local run: no pod name, no termination-log variable, no /dev/termination-log, no
    Prometheus port. Reports go nowhere and nothing fails."""
    reporter = Reporter.from_environment({}, service_account=tmp_path / "none")
    assert reporter.annotator is None
    assert reporter.serving_port is None
    assert reporter.termination_log == (
        Path(api.DEFAULT_TERMINATION_LOG) if Path(api.DEFAULT_TERMINATION_LOG).exists() else None
    )
    reporter.report(1, loss=1.0)


def test_pod_name_without_credentials_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {api.POD_NAME_ENV: "p", "HOME": str(tmp_path)}
    with caplog.at_level(logging.WARNING, logger="kubetune_report"):
        reporter = Reporter.from_environment(environ, service_account=tmp_path / "none")
    assert reporter.annotator is None
    assert "neither a service account nor a kubeconfig" in caplog.text


def test_termination_message_write_failure_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = Reporter(termination_log=tmp_path / "missing-dir" / "log")
    with caplog.at_level(logging.WARNING, logger="kubetune_report"):
        reporter.report_final(loss=0.1)
    assert "could not write the termination message" in caplog.text


def test_prometheus_route_serves_labelled_gauges() -> None:
    reporter = Reporter(study="digits", trial="digits-4", metrics_port=0, metrics_addr="127.0.0.1")
    try:
        port = reporter.serving_port
        assert port
        reporter.report(2, val_accuracy=0.9, val_loss=0.3)

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                return str(page.read().decode())

        text = scrape()
        labels = 'study="digits",trial="digits-4"'
        assert f'kubetune_trial_metric{{metric="val_accuracy",{labels}}} 0.9' in text
        assert f'kubetune_trial_metric{{metric="val_loss",{labels}}} 0.3' in text
        assert f"kubetune_trial_step{{{labels}}} 2.0" in text
        assert f"kubetune_trial_final{{{labels}}} 0.0" in text
        reporter.report_final(val_accuracy=0.95)
        text = scrape()
        assert f'kubetune_trial_metric{{metric="val_accuracy",{labels}}} 0.95' in text
        assert f"kubetune_trial_final{{{labels}}} 1.0" in text
    finally:
        reporter.close()


def test_prometheus_port_from_environment(tmp_path: Path) -> None:
    port = free_port()
    reporter = Reporter.from_environment(
        {"KUBETUNE_METRICS_PORT": str(port)}, service_account=tmp_path / "none"
    )
    try:
        assert reporter.serving_port == port
    finally:
        reporter.close()

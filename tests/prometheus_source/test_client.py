"""kubetune.k8s.prometheus: instant queries with retries, classified errors, the bearer token
and CA from the cluster (respx plays Prometheus here; test_end_to_end uses the real one)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from kubetune.controller.metrics_source import SourceReads, TrialRead
from kubetune.controller.observation import SourceErrorKind
from kubetune.k8s import prometheus
from kubetune.spec.metrics_source import PrometheusSource

URL = "http://prometheus.test:9090"
AT = datetime(2026, 1, 1, tzinfo=UTC)


def vector(*values: str) -> dict[str, Any]:
    result = [
        {"metric": {"pod": f"p{i}"}, "value": [AT.timestamp(), v]} for i, v in enumerate(values)
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def reads(
    step_query: str | None = "step",
    *,
    enforced_label: tuple[str, str] | None = None,
    **source: Any,
) -> SourceReads:
    settings: dict[str, Any] = {"url": URL, "query": "q", "retries": 2, **source}
    read = TrialRead("demo-0", False, AT, {"loss": 'loss{pod="demo-0"}'}, step_query=step_query)
    return SourceReads(
        "default", PrometheusSource.model_validate(settings), (read,), enforced_label
    )


async def no_objects(plural: str, name: str) -> None:
    return None


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus, "BACKOFF_SECONDS", 0.0)


@respx.mock
async def test_a_reading_has_each_metric_and_the_step_evaluated_at_one_time() -> None:
    route = respx.get(f"{URL}/api/v1/query")
    route.side_effect = lambda request: httpx.Response(
        200, json=vector("0.25" if request.url.params["query"].startswith("loss") else "7")
    )
    (reading,) = (await prometheus.read_source(reads(), no_objects)).values()
    assert reading.error is None
    assert reading.values == {"loss": 0.25}
    assert reading.step == 7
    assert {call.request.url.params["time"] for call in route.calls} == {f"{AT.timestamp():.3f}"}


@respx.mock
async def test_no_series_is_no_value_and_no_error() -> None:
    respx.get(f"{URL}/api/v1/query").respond(200, json=vector())
    (reading,) = (await prometheus.read_source(reads(), no_objects)).values()
    assert (reading.values, reading.step, reading.error) == ({}, None, None)


@respx.mock
async def test_a_bad_query_is_not_retried_and_never_a_value() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}
    route = respx.get(f"{URL}/api/v1/query").respond(400, json=body)
    (reading,) = (await prometheus.read_source(reads(), no_objects)).values()
    assert reading.error_kind is SourceErrorKind.QUERY_INVALID
    assert "HTTP 400, bad_data" in (reading.error or "")
    assert "parse error" not in (reading.error or "")  # the server's text is never shown
    assert reading.values == {}
    assert route.call_count == 2  # one per query: no retry


@respx.mock
async def test_several_series_are_a_query_to_fix() -> None:
    respx.get(f"{URL}/api/v1/query").respond(200, json=vector("1", "2"))
    (reading,) = (await prometheus.read_source(reads(), no_objects)).values()
    assert reading.error_kind is SourceErrorKind.QUERY_INVALID
    assert "returned 2 series" in (reading.error or "")


@respx.mock
async def test_an_outage_is_retried_then_reported_unreachable() -> None:
    route = respx.get(f"{URL}/api/v1/query")
    route.side_effect = [
        httpx.ConnectError("refused"),
        httpx.Response(503, text="overloaded"),
        httpx.Response(200, json=vector("0.5")),
        httpx.ConnectError("refused"),
        httpx.ConnectError("refused"),
        httpx.ConnectError("refused"),
    ]
    (reading,) = (await prometheus.read_source(reads(None), no_objects)).values()
    assert reading.values == {"loss": 0.5}  # the third attempt answered
    (reading,) = (await prometheus.read_source(reads(None), no_objects)).values()
    assert reading.error_kind is SourceErrorKind.UNREACHABLE
    assert "after 3 attempts" in (reading.error or "")
    assert reading.values == {}
    assert route.call_count == 6


@respx.mock
async def test_the_bearer_token_comes_from_its_secret() -> None:
    route = respx.get(f"{URL}/api/v1/query").respond(200, json=vector("1"))
    token = base64.b64encode(b"s3cret\n").decode()

    async def objects(plural: str, name: str) -> dict[str, Any] | None:
        assert (plural, name) == ("secrets", "prometheus-token")
        return {"data": {"token": token}}

    source = {"bearerTokenSecret": {"name": "prometheus-token", "key": "token"}}
    (reading,) = (await prometheus.read_source(reads(**source), objects)).values()
    assert reading.error is None
    assert route.calls[0].request.headers["Authorization"] == "Bearer s3cret"


async def test_a_missing_secret_is_reported_on_every_read() -> None:
    source = {"bearerTokenSecret": {"name": "gone", "key": "token"}}
    (reading,) = (await prometheus.read_source(reads(**source), no_objects)).values()
    assert reading.error_kind is SourceErrorKind.UNREACHABLE
    assert "bearerTokenSecret: Secret gone not found" in (reading.error or "")


async def test_a_ca_bundle_that_is_not_pem_is_reported() -> None:
    async def objects(plural: str, name: str) -> dict[str, Any] | None:
        return {"data": {"ca.crt": "not a certificate"}}

    source = {"caConfigMap": {"name": "ca", "key": "ca.crt"}}
    (reading,) = (await prometheus.read_source(reads(**source), objects)).values()
    assert "CA bundle" in (reading.error or "")


LEAK = "secret-series-of-another-namespace\x1b[31m\r\n"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text=LEAK * 50),
        httpx.Response(500, text=LEAK * 50),
        httpx.Response(403, json={"status": "error", "errorType": LEAK, "error": LEAK}),
        httpx.Response(422, json={"status": "error", "errorType": "execution", "error": LEAK}),
        httpx.Response(
            200,
            json={
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [
                        {"metric": {"namespace": LEAK}, "value": [0, "1"]},
                        {"metric": {"namespace": LEAK}, "value": [0, "2"]},
                    ],
                },
            },
        ),
        httpx.Response(
            200, json={"status": "success", "data": {"resultType": "scalar", "result": [0, LEAK]}}
        ),
    ],
)
@respx.mock
async def test_no_answer_text_reaches_the_status(response: httpx.Response) -> None:
    respx.get(f"{URL}/api/v1/query").mock(return_value=response)
    (reading,) = (await prometheus.read_source(reads(None, retries=0), no_objects)).values()
    error = reading.error or ""
    assert error
    assert "secret-series" not in error
    assert error.isprintable()
    assert len(error) < 400
    assert f"HTTP {response.status_code}" in error or "returned" in error


@respx.mock
async def test_a_redirect_is_not_followed_so_the_token_stays_with_the_allowed_url() -> None:
    respx.get(f"{URL}/api/v1/query").respond(302, headers={"Location": "http://evil.test/x"})
    elsewhere = respx.get(url__startswith="http://evil.test").respond(200, json=vector("1"))
    secret = {"data": {"token": base64.b64encode(b"s3cret").decode()}}

    async def token(plural: str, name: str) -> dict[str, Any]:
        return secret

    token_secret = {"name": "prom", "key": "token"}
    source = reads(None, retries=0, bearerTokenSecret=token_secret)
    (reading,) = (await prometheus.read_source(source, token)).values()
    assert not elsewhere.called
    assert reading.error_kind is SourceErrorKind.UNREACHABLE
    assert "HTTP 302, a redirect" in (reading.error or "")


@respx.mock
async def test_the_namespace_label_goes_with_every_query_for_a_label_proxy() -> None:
    route = respx.get(f"{URL}/api/v1/query").respond(200, json=vector("3"))
    (reading,) = (
        await prometheus.read_source(reads(enforced_label=("namespace", "team-a")), no_objects)
    ).values()
    assert reading.values == {"loss": 3.0}
    assert route.call_count == 2  # the metric and the step
    assert all(c.request.url.params["namespace"] == "team-a" for c in route.calls)

"""Reads of a study's Prometheus metrics source: instant queries through the HTTP API
(/api/v1/query) with an async httpx client, timeouts, retries with backoff, an optional bearer
token from a Secret and a CA bundle from a ConfigMap or Secret.

The controller names the reads (kubetune.controller.metrics_source); this module carries them
out and classifies what went wrong, so a failure is reported, never taken as a value:
- a bad query (HTTP 400 or 422, several series, a result that is not a number) is
  MetricsQueryInvalid and is not retried;
- no answer (connection refused, timeout, TLS, 429, 5xx, 401, 403, a body that is not the
  Prometheus API) is MetricsSourceUnreachable, after the retries where a retry can help;
- no series at all is no error: the metric has no value yet (nothing scraped).

What a server answered never reaches a study's status: its messages are a status code and a
fixed phrase (and Prometheus's errorType when it is one of the API's own), since the URL may
serve anything. Redirects are not followed, so the bearer token goes to the allowed URL only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from kubetune.controller.metrics_source import SourceReads, TrialRead
from kubetune.controller.observation import SourceErrorKind, SourceReading
from kubetune.spec.duration import parse_duration
from kubetune.spec.metrics_source import KeySelector, PrometheusSource

QUERY_PATH = "/api/v1/query"
BACKOFF_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 4.0
CONCURRENT_QUERIES = 8
_BAD_QUERY_STATUSES = frozenset({400, 422})
_RETRIED_STATUSES = frozenset({429})  # and every 5xx
# Prometheus's API error types (web/api/v1): a fixed vocabulary, so safe to show.
_ERROR_TYPES = frozenset(
    {"timeout", "canceled", "execution", "bad_data", "internal", "unavailable", "not_found"}
)

ReadObject = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]
"""Reads a Secret ("secrets") or ConfigMap ("configmaps") by plural and name in the study's
namespace; None when it does not exist."""


class SourceError(Exception):
    """A query that gave no value, and why."""

    def __init__(self, kind: SourceErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Connection:
    """How to reach one Prometheus: its URL, headers (the bearer token), TLS verification."""

    url: str
    headers: Mapping[str, str]
    verify: ssl.SSLContext | bool
    timeout: float
    retries: int


def _key_value(obj: Mapping[str, Any], key: str, *, secret: bool) -> str | None:
    if secret:
        encoded = (obj.get("data") or {}).get(key)
        if encoded is None:
            return (obj.get("stringData") or {}).get(key)
        return base64.b64decode(encoded).decode()
    value = (obj.get("data") or {}).get(key)
    if value is None and key in (obj.get("binaryData") or {}):
        return base64.b64decode(obj["binaryData"][key]).decode()
    return value if value is None else str(value)


async def _selected(
    read_object: ReadObject, plural: str, selector: KeySelector, field_name: str
) -> str:
    kind = "Secret" if plural == "secrets" else "ConfigMap"
    try:
        obj = await read_object(plural, selector.name)
    except Exception as error:  # the API's own error, shown to the user
        raise SourceError(
            SourceErrorKind.UNREACHABLE,
            f"{field_name}: cannot read {kind} {selector.name}: {error}",
        ) from None
    if obj is None:
        raise SourceError(
            SourceErrorKind.UNREACHABLE, f"{field_name}: {kind} {selector.name} not found"
        )
    value = _key_value(obj, selector.key, secret=plural == "secrets")
    if value is None:
        raise SourceError(
            SourceErrorKind.UNREACHABLE,
            f"{field_name}: {kind} {selector.name} has no key {selector.key!r}",
        )
    return value


async def connection_for(source: PrometheusSource, read_object: ReadObject) -> Connection:
    """The connection a source describes, its token and CA read from the cluster."""
    headers = {"Accept": "application/json"}
    if source.bearer_token_secret is not None:
        token = await _selected(
            read_object, "secrets", source.bearer_token_secret, "bearerTokenSecret"
        )
        headers["Authorization"] = f"Bearer {token.strip()}"
    verify: ssl.SSLContext | bool = True
    ca = None
    if source.ca_config_map is not None:
        ca = await _selected(read_object, "configmaps", source.ca_config_map, "caConfigMap")
    elif source.ca_secret is not None:
        ca = await _selected(read_object, "secrets", source.ca_secret, "caSecret")
    if ca is not None:
        try:
            verify = ssl.create_default_context(cadata=ca)
        except (ssl.SSLError, ValueError) as error:
            raise SourceError(
                SourceErrorKind.UNREACHABLE, f"the CA bundle is not PEM certificates: {error}"
            ) from None
    return Connection(
        url=source.url.rstrip("/"),
        headers=headers,
        verify=verify,
        timeout=parse_duration(source.timeout),
        retries=source.retries,
    )


def _error_type(body: Mapping[str, Any]) -> str:
    kind = body.get("errorType")
    return f", {kind}" if isinstance(kind, str) and kind in _ERROR_TYPES else ""


def parse_response(query: str, status: int, text: str) -> float | None:
    """The value of an instant query's response: a number, None for no series, or
    SourceError saying why there is no value."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or "status" not in body:
        raise SourceError(
            SourceErrorKind.UNREACHABLE,
            f"HTTP {status} with a body that is not the Prometheus API",
        )
    if status in _BAD_QUERY_STATUSES or body.get("errorType") in ("bad_data", "execution"):
        raise SourceError(
            SourceErrorKind.QUERY_INVALID,
            f"Prometheus refused {query!r} (HTTP {status}{_error_type(body)}): run it in "
            "Prometheus's own query page to see why",
        )
    if status != 200 or body["status"] != "success":
        raise SourceError(
            SourceErrorKind.UNREACHABLE,
            f"HTTP {status} from Prometheus{_error_type(body)}",
        )
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        sample = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise SourceError(
                SourceErrorKind.QUERY_INVALID,
                f"{query!r} returned {len(result)} series; it must return one: select it by "
                "more labels or aggregate it, e.g. max(...)",
            )
        sample = result[0].get("value")
    else:
        raise SourceError(
            SourceErrorKind.QUERY_INVALID,
            f"{query!r} returned a {kind}; it must return an instant vector or a scalar",
        )
    try:
        return float(sample[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        raise SourceError(
            SourceErrorKind.QUERY_INVALID, f"{query!r} returned a sample that is not a number"
        ) from None


def _printable(text: str, limit: int = 200) -> str:
    """A local error's text for a status: printable characters only, at most `limit`."""
    shown = "".join(c if c.isprintable() else "?" for c in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _backoff(attempt: int) -> float:
    delay: float = min(BACKOFF_MAX_SECONDS, BACKOFF_SECONDS * 2**attempt)
    return delay * (0.5 + random.random() / 2)


async def instant_query(
    client: httpx.AsyncClient,
    connection: Connection,
    query: str,
    at: datetime,
    enforced_label: tuple[str, str] | None = None,
) -> float | None:
    """One instant query evaluated at `at`, retried on transient failures; with
    `enforced_label`, that label's name and value as a query parameter (for a
    prom-label-proxy)."""
    params = {"query": query, "time": f"{at.timestamp():.3f}"}
    if enforced_label is not None:
        params[enforced_label[0]] = enforced_label[1]
    url = connection.url + QUERY_PATH
    attempt = 0
    while True:
        try:
            response = await client.get(url, params=params)
        except httpx.HTTPError as error:
            failure = SourceError(
                SourceErrorKind.UNREACHABLE,
                f"{url}: {type(error).__name__}: {_printable(str(error)) or 'no answer'}",
            )
        else:
            if response.is_redirect:
                raise SourceError(
                    SourceErrorKind.UNREACHABLE,
                    f"{url}: HTTP {response.status_code}, a redirect, which kubetune does not "
                    "follow (the token goes to the allowed URL only): give the URL it leads to",
                )
            retried = response.status_code in _RETRIED_STATUSES or response.status_code >= 500
            if not retried:
                return parse_response(query, response.status_code, response.text)
            failure = SourceError(
                SourceErrorKind.UNREACHABLE,
                f"{url}: HTTP {response.status_code} from Prometheus",
            )
        if attempt >= connection.retries:
            if connection.retries:
                failure.message += f" (after {connection.retries + 1} attempts)"
            raise failure
        await asyncio.sleep(_backoff(attempt))  # backoff between retries of a remote call
        attempt += 1


async def read_trial(
    client: httpx.AsyncClient,
    connection: Connection,
    read: TrialRead,
    enforced_label: tuple[str, str] | None = None,
) -> SourceReading:
    """The reading of one trial: every metric's query and the step query, evaluated at the
    same time (so they see the same scrape). Any failure makes the whole reading an error."""
    names = list(read.queries)
    queries = [read.queries[name] for name in names]
    if read.step_query is not None:
        queries.append(read.step_query)
    results = await asyncio.gather(
        *(instant_query(client, connection, query, read.at, enforced_label) for query in queries),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        unexpected = [e for e in errors if not isinstance(e, SourceError)]
        if unexpected:
            raise unexpected[0]
        known = [e for e in errors if isinstance(e, SourceError)]
        # A bad query says more than an outage; it is the one to fix.
        first = next((e for e in known if e.kind is SourceErrorKind.QUERY_INVALID), known[0])
        return SourceReading(read.at, read.final, error=first.message, error_kind=first.kind)
    values = {
        name: value
        for name, value in zip(names, results[: len(names)], strict=True)
        if isinstance(value, float)
    }
    step = read.step
    if read.step_query is not None:
        raw = results[-1]
        step = int(raw) if isinstance(raw, float) and math.isfinite(raw) and raw >= 0 else None
    return SourceReading(read.at, read.final, values=values, step=step)


async def read_source(reads: SourceReads, read_object: ReadObject) -> dict[str, SourceReading]:
    """Every read the controller asked for, by trial name. Errors come back as readings."""
    try:
        connection = await connection_for(reads.source, read_object)
    except SourceError as error:
        return {
            read.trial: SourceReading(
                read.at, read.final, error=error.message, error_kind=error.kind
            )
            for read in reads.reads
        }
    limit = asyncio.Semaphore(CONCURRENT_QUERIES)

    async def one(client: httpx.AsyncClient, read: TrialRead) -> SourceReading:
        async with limit:
            return await read_trial(client, connection, read, reads.enforced_label)

    async with httpx.AsyncClient(
        headers=dict(connection.headers),
        verify=connection.verify,
        timeout=httpx.Timeout(connection.timeout),
        follow_redirects=False,  # the token must not follow a redirect to another server
    ) as client:
        readings = await asyncio.gather(*(one(client, read) for read in reads.reads))
    return {read.trial: reading for read, reading in zip(reads.reads, readings, strict=True)}

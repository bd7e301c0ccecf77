"""The annotation route: merge-patching the trial's own pod's kubetune.io/metrics annotation,
with retries that never slow training down."""

from __future__ import annotations

import http.client
import json
import logging
import random
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kubetune_report import contract as api
from kubetune_report.connection import (
    SERVICE_ACCOUNT_DIR,
    KubeConnection,
    in_cluster_connection,
    kubeconfig_connection,
    kubeconfig_path,
)
from kubetune_report.errors import ReportError

logger = logging.getLogger(__name__)

MERGE_PATCH: Final = "application/merge-patch+json"
_RETRIED_STATUSES: Final = frozenset({409, 429})
"""Retried, as is every 5xx status."""


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per report and the exponential backoff between them (with jitter, capped).
    A 429's Retry-After is honoured up to max_backoff."""

    attempts: int = 5
    backoff: float = 0.25
    max_backoff: float = 4.0
    timeout: float = 5.0
    """Seconds for one request."""

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt number `attempt` + 1 (attempt counts from 1)."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        base = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return float(base * (0.5 + random.random() / 2))  # jitter, not security


class PodAnnotator:
    """Merge-patches the metrics annotation of one pod, with retries on 409, 429, 5xx and
    connection errors. After a report fails entirely, later intermediate reports try once
    (no waiting) until the API answers again, so an outage does not slow training down."""

    def __init__(
        self,
        connection: KubeConnection,
        namespace: str,
        pod: str,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connection = connection
        self.namespace = namespace
        self.pod = pod
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.failing = False
        # No proxies: the API server is reached directly, as in-cluster clients do.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=connection.ssl_context),
        )

    @property
    def url(self) -> str:
        quote = urllib.parse.quote
        return (
            f"{self.connection.server}/api/v1/namespaces/{quote(self.namespace, safe='')}"
            f"/pods/{quote(self.pod, safe='')}"
        )

    def patch(self, value: str, *, final: bool) -> bool:
        """Set the annotation; True when the API accepted it. Never raises."""
        body = json.dumps({"metadata": {"annotations": {api.METRICS_ANNOTATION: value}}})
        attempts = self.retry.attempts if final or not self.failing else 1
        reason, tried = "", 0
        for attempt in range(1, attempts + 1):
            tried, retry_after = attempt, None
            try:
                request = urllib.request.Request(
                    self.url,
                    data=body.encode(),
                    method="PATCH",
                    headers={
                        "Content-Type": MERGE_PATCH,
                        "Accept": "application/json",
                        **self.connection.headers(),
                    },
                )
                with self._opener.open(request, timeout=self.retry.timeout) as response:
                    response.read()
                if self.failing:
                    logger.warning("kubetune_report: pod %s is reachable again", self.pod)
                self.failing = False
                return True
            except urllib.error.HTTPError as error:
                detail = error.read(300).decode(errors="replace")
                reason = f"HTTP {error.code} {error.reason}: {detail}"
                if error.code == 403:
                    reason += (
                        f" (the pod's ServiceAccount needs 'patch' on pods in {self.namespace})"
                    )
                if error.code not in _RETRIED_STATUSES and error.code < 500:
                    break
                if error.code == 429 and error.headers.get("Retry-After", "").isdigit():
                    retry_after = float(error.headers["Retry-After"])
            except (OSError, ValueError, http.client.HTTPException) as error:  # refused, TLS...
                reason = f"{type(error).__name__}: {error}"
            if attempt < attempts:
                self.sleep(self.retry.delay(attempt, retry_after))
        if not self.failing or final:
            logger.warning(
                "kubetune_report: could not set annotation %s on pod %s/%s after %d attempt(s): "
                "%s; training goes on",
                api.METRICS_ANNOTATION,
                self.namespace,
                self.pod,
                tried,
                reason,
            )
        self.failing = True
        return False


def annotator_from_environment(
    environ: Mapping[str, str],
    retry: RetryPolicy | None = None,
    service_account: Path = SERVICE_ACCOUNT_DIR,
) -> PodAnnotator | None:
    """The annotation route as the environment sets it up: the pod's name and namespace from
    the downward API, credentials in-cluster or from a kubeconfig. None (route off) when the
    pod is not known or no credentials are found."""
    pod = environ.get(api.POD_NAME_ENV)
    if not pod:
        return None
    namespace = environ.get(api.POD_NAMESPACE_ENV)
    connection = in_cluster_connection(environ, service_account)
    if connection is not None:
        namespace_file = service_account / "namespace"
        if not namespace and namespace_file.is_file():
            namespace = namespace_file.read_text().strip()
    else:
        path = kubeconfig_path(environ)
        if path is None:
            logger.warning(
                "kubetune_report: %s is set but neither a service account nor a kubeconfig "
                "was found: the metrics annotation is off",
                api.POD_NAME_ENV,
            )
            return None
        try:
            connection, context_namespace = kubeconfig_connection(path)
        except (OSError, ValueError, ssl.SSLError, ReportError) as error:
            logger.warning("kubetune_report: %s; the metrics annotation is off", error)
            return None
        namespace = namespace or context_namespace
    return PodAnnotator(connection, namespace or "default", pod, retry)

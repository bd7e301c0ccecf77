"""The trial side of the reporting contract (docs/trial-contract.md): a trainer calls
`report(step, **metrics)` while it trains and `report_final(**metrics)` once at the end.

It imports nothing outside the standard library (kubetune.spec.api imports only `typing`), so
any training image can copy or install it. Three routes, each optional, none able to crash
training (a failing route logs a warning and training goes on):

1. the pod annotation `kubetune.io/metrics`: a merge patch of the trial's own pod holding the
   latest report, through the in-cluster service account or a kubeconfig;
2. the termination message (final metrics only), which needs no RBAC at all;
3. Prometheus gauges, when prometheus_client is importable and KUBETUNE_METRICS_PORT is set;
   with KUBETUNE_METRICS_LINGER, report_final waits (that many seconds at most) until
   Prometheus has scraped the final values, so a study reading its objective from Prometheus
   sees them.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import os
import random
import re
import socketserver
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import wsgiref.simple_server
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from kubetune.spec import api

logger = logging.getLogger(__name__)

KUBECONFIG_ENV: Final = "KUBECONFIG"
SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")

ANNOTATION_LIMIT: Final = 8192
"""Bytes of the annotation's JSON document: metrics that do not fit are left out."""
TERMINATION_LIMIT: Final = 4096
"""Kubernetes keeps at most 4096 bytes of a termination message."""
MERGE_PATCH: Final = "application/merge-patch+json"

# JSON has no NaN or infinity: such values travel as these strings, which the operator
# rejects as "not a number" (a diverged trial fails with that reason).
_NON_FINITE: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_RETRIED_STATUSES: Final = frozenset({409, 429})
"""Retried, as is every 5xx status."""

JsonNumber = int | float | str


class ReportError(Exception):
    """A report that could not be delivered (logged as a warning, never raised to a trainer)."""


# ---- what is sent ------------------------------------------------------------------------


def metric_number(name: str, value: object) -> JsonNumber:
    """A metric value as JSON can carry it; a bool or a non-number is the caller's bug."""
    if isinstance(value, bool) or (
        not isinstance(value, int | float) and not hasattr(value, "__float__")
    ):
        raise TypeError(f"metric {name!r} must be a number, got {value!r}")
    if isinstance(value, int):
        return value
    number = float(value)
    return number if math.isfinite(number) else _NON_FINITE[str(number)]


def _compact(document: object) -> str:
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def fit_metrics(
    metrics: Mapping[str, JsonNumber], render: Callable[[dict[str, JsonNumber]], str], limit: int
) -> tuple[dict[str, JsonNumber], list[str]]:
    """Keep metrics in the caller's order while `render` of them stays within `limit` bytes;
    return the kept ones and the names left out. Put the objective first."""
    kept: dict[str, JsonNumber] = {}
    dropped: list[str] = []
    for name, value in metrics.items():
        candidate = {**kept, name: value}
        if len(render(candidate).encode()) <= limit:
            kept = candidate
        else:
            dropped.append(name)
    return kept, dropped


def rfc3339(moment: datetime) -> str:
    """A time in RFC 3339, UTC, with milliseconds: 2026-11-26T05:30:00.123Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def annotation_document(
    step: int, metrics: Mapping[str, JsonNumber], now: datetime, final: bool
) -> str:
    """The value of the kubetune.io/metrics annotation."""
    return _compact({"step": step, "metrics": dict(metrics), "time": rfc3339(now), "final": final})


def termination_message(metrics: Mapping[str, JsonNumber]) -> str:
    """The termination message: a flat JSON object of metric name to number."""
    return _compact(dict(metrics))


# ---- where it goes: the Kubernetes API ---------------------------------------------------


@dataclass(frozen=True)
class KubeConnection:
    """How to reach the API server: its URL, credentials and TLS settings."""

    server: str
    token: str | None = None
    token_file: Path | None = None
    """Read before each request: bound service-account tokens are rotated by the kubelet."""
    basic_auth: tuple[str, str] | None = None
    ssl_context: ssl.SSLContext | None = None

    def headers(self) -> dict[str, str]:
        token = self.token_file.read_text().strip() if self.token_file else self.token
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self.basic_auth:
            user_pass = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            return {"Authorization": f"Basic {user_pass}"}
        return {}


def in_cluster_connection(
    environ: Mapping[str, str], service_account: Path = SERVICE_ACCOUNT_DIR
) -> KubeConnection | None:
    """The pod's own service account, as client-go finds it; None outside a cluster."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    token_file = service_account / "token"
    if not host or not port or not token_file.is_file():
        return None
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    ca_file = service_account / "ca.crt"
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file.is_file() else None)
    return KubeConnection(f"https://{host}:{port}", token_file=token_file, ssl_context=context)


def _kubeconfig_path(environ: Mapping[str, str]) -> Path | None:
    """The first existing file of KUBECONFIG (a path list, as kubectl reads it), else
    ~/.kube/config."""
    listed = environ.get(KUBECONFIG_ENV)
    candidates = (
        [Path(part) for part in listed.split(os.pathsep) if part]
        if listed
        else [Path(environ.get("HOME", "~")).expanduser() / ".kube" / "config"]
    )
    return next((path for path in candidates if path.is_file()), None)


def _named(config: Mapping[str, Any], section: str, name: str, kind: str) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(kind)
            return value if isinstance(value, dict) else {}
    raise ReportError(f"kubeconfig has no {kind} named {name!r} in {section}")


def kubeconfig_connection(path: Path) -> tuple[KubeConnection, str | None]:
    """The current context of a kubeconfig file: the connection and the context's namespace.
    Supports server, certificate-authority(-data), insecure-skip-tls-verify, token, tokenFile,
    username/password and client-certificate/key (files or data); exec and auth-provider
    plugins are not supported (use a token)."""
    config = load_kubeconfig(path.read_text())
    base = path.parent

    def file(value: str) -> str:
        return str((base / value).expanduser())

    current = config.get("current-context")
    if not current:
        raise ReportError(f"kubeconfig {path} has no current-context")
    context = _named(config, "contexts", current, "context")
    cluster = _named(config, "clusters", context.get("cluster", ""), "cluster")
    user = _named(config, "users", context["user"], "user") if context.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ReportError(f"kubeconfig {path}: cluster {context.get('cluster')!r} has no server")
    for plugin in ("exec", "auth-provider"):
        if plugin in user:
            raise ReportError(
                f"kubeconfig {path}: user {context.get('user')!r} uses {plugin} credentials, "
                "which kubetune.report does not support; give it a token or a client certificate"
            )
    context_ssl = None
    if str(server).startswith("https:"):
        ca_data = cluster.get("certificate-authority-data")
        ca_file = cluster.get("certificate-authority")
        context_ssl = ssl.create_default_context(
            cafile=file(ca_file) if ca_file and not ca_data else None,
            cadata=base64.b64decode(ca_data).decode() if ca_data else None,
        )
        if cluster.get("insecure-skip-tls-verify") in (True, "true"):
            context_ssl.check_hostname = False
            context_ssl.verify_mode = ssl.CERT_NONE
        _load_client_certificate(context_ssl, user, file)
    token_file = user.get("tokenFile")
    basic = (user["username"], user.get("password", "")) if user.get("username") else None
    connection = KubeConnection(
        str(server).rstrip("/"),
        token=user.get("token"),
        token_file=Path(file(token_file)) if token_file and not user.get("token") else None,
        basic_auth=basic,
        ssl_context=context_ssl,
    )
    return connection, context.get("namespace")


def _load_client_certificate(
    context: ssl.SSLContext, user: Mapping[str, Any], file: Callable[[str], str]
) -> None:
    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    if cert_data or key_data:
        # ssl loads a certificate chain from files only: a private, short-lived directory.
        with tempfile.TemporaryDirectory(prefix="kubetune-report-") as directory:
            paths: list[str | None] = []
            for name, data, path in (
                ("cert", cert_data, user.get("client-certificate")),
                ("key", key_data, user.get("client-key")),
            ):
                if data:
                    path = os.path.join(directory, name)
                    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
                        out.write(base64.b64decode(data))
                    paths.append(path)
                else:
                    paths.append(file(path) if path else None)
            if paths[0] is None:
                raise ReportError("kubeconfig user has a client key but no client certificate")
            context.load_cert_chain(paths[0], paths[1])
    elif user.get("client-certificate"):
        key = user.get("client-key")
        context.load_cert_chain(file(user["client-certificate"]), file(key) if key else None)


# ---- kubeconfig: JSON, PyYAML when importable, or the simple YAML kubectl writes ----------


def load_kubeconfig(text: str) -> dict[str, Any]:
    """A kubeconfig document as a dict."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        document = json.loads(text)
    else:
        try:
            import yaml  # type: ignore[import-untyped,unused-ignore]

            document = yaml.safe_load(text)
        except ImportError:
            document = parse_simple_yaml(text)
    if not isinstance(document, dict):
        raise ReportError("a kubeconfig must be a mapping")
    return document


_KEY = re.compile(r"""^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s'"#][^:#]*?)\s*:(?:\s+|$)(.*)$""")


def _strip_comment(line: str) -> str:
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def _scalar(text: str, line: int) -> Any:
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise ReportError(f"kubeconfig line {line}: unterminated quote")
        return text[1:-1].replace("''", "'")
    if text in ("{}", "[]"):
        return {} if text == "{}" else []
    if text[0] in "[{|>&*!":
        raise ReportError(f"kubeconfig line {line}: YAML construct {text[:20]!r} not supported")
    if text in ("true", "True", "false", "False"):
        return text.lower() == "true"
    if text in ("null", "~"):
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _key(text: str, line: int) -> str:
    value = _scalar(text, line)
    return str(value) if not isinstance(value, str) else value


def parse_simple_yaml(text: str) -> Any:
    """The YAML subset kubectl writes: block mappings and sequences, plain and quoted scalars,
    `{}` and `[]`. Anything else (anchors, flow collections, block scalars) is a ReportError."""
    lines: list[list[Any]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        content = _strip_comment(raw).rstrip()
        if not content.strip() or content.strip() in ("---", "..."):
            continue
        indent = len(content) - len(content.lstrip(" "))
        if content[indent] == "\t":
            raise ReportError(f"kubeconfig line {number}: tabs are not YAML indentation")
        lines.append([indent, content.strip(), number])
    if not lines:
        return None
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise ReportError(f"kubeconfig line {lines[end][2]}: unexpected indentation")
    return value


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _block(lines: list[list[Any]], index: int, indent: int) -> tuple[Any, int]:
    if _is_item(lines[index][1]):
        items: list[Any] = []
        while index < len(lines) and lines[index][0] == indent and _is_item(lines[index][1]):
            rest = lines[index][1][1:].lstrip()
            if not rest:
                if index + 1 < len(lines) and lines[index + 1][0] > indent:
                    item, index = _block(lines, index + 1, lines[index + 1][0])
                else:
                    item, index = None, index + 1
            elif _KEY.match(rest):
                # "- key: value" opens a mapping whose keys line up after the dash.
                column = indent + len(lines[index][1]) - len(rest)
                lines[index] = [column, rest, lines[index][2]]
                item, index = _block(lines, index, column)
            else:
                item, index = _scalar(rest, lines[index][2]), index + 1
            items.append(item)
        return items, index
    mapping: dict[str, Any] = {}
    while index < len(lines) and lines[index][0] == indent and not _is_item(lines[index][1]):
        _, content, number = lines[index]
        match = _KEY.match(content)
        if not match:
            raise ReportError(f"kubeconfig line {number}: expected 'key: value'")
        key, rest = _key(match[1], number), match[2].strip()
        index += 1
        if rest:
            mapping[key] = _scalar(rest, number)
        elif index < len(lines) and (
            lines[index][0] > indent or (lines[index][0] == indent and _is_item(lines[index][1]))
        ):
            mapping[key], index = _block(lines, index, lines[index][0])
        else:
            mapping[key] = None
    if not mapping:
        raise ReportError(f"kubeconfig line {lines[index][2]}: unexpected content")
    return mapping, index


# ---- the annotation route ------------------------------------------------------------------


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
                    logger.warning("kubetune.report: pod %s is reachable again", self.pod)
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
                "kubetune.report: could not set annotation %s on pod %s/%s after %d attempt(s): "
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
        path = _kubeconfig_path(environ)
        if path is None:
            logger.warning(
                "kubetune.report: %s is set but neither a service account nor a kubeconfig "
                "was found: the metrics annotation is off",
                api.POD_NAME_ENV,
            )
            return None
        try:
            connection, context_namespace = kubeconfig_connection(path)
        except (OSError, ValueError, ssl.SSLError, ReportError) as error:
            logger.warning("kubetune.report: %s; the metrics annotation is off", error)
            return None
        namespace = namespace or context_namespace
    return PodAnnotator(connection, namespace or "default", pod, retry)


# ---- the reporter --------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Reporter:
    """Sends a trial's reports through every route configured. Build one from the environment
    with `Reporter.from_environment()`, or use the module's `report` and `report_final`."""

    annotator: PodAnnotator | None = None
    termination_log: Path | None = None
    study: str = ""
    trial: str = ""
    metrics_port: int | None = None
    """Port of the Prometheus route (0: any free port, see `serving_port`); None: off."""
    metrics_addr: str = "0.0.0.0"  # Prometheus scrapes the pod's IP
    metrics_linger: float = 0.0
    """Seconds report_final waits at most for a scrape of the final values (0: no wait)."""
    annotation_limit: int = ANNOTATION_LIMIT
    now: Callable[[], datetime] = _utc_now
    last_step: int = field(default=0, init=False)
    _gauges: Any = field(default=None, init=False, repr=False)
    _server: Any = field(default=None, init=False, repr=False)
    _sets: int = field(default=0, init=False, repr=False)
    """Updates of the gauges so far."""
    _served: int = field(default=0, init=False, repr=False)
    """The latest update of the gauges a scrape has received in full."""
    _scraped: threading.Condition = field(
        default_factory=threading.Condition, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.metrics_port is not None:
            self._start_prometheus(self.metrics_port)

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        service_account: Path = SERVICE_ACCOUNT_DIR,
    ) -> Reporter:
        """Routes as the trial's environment sets them: annotation when the pod and its
        credentials are known; termination message to KUBETUNE_TERMINATION_LOG, else to
        /dev/termination-log when it exists (Kubernetes creates it); Prometheus on
        KUBETUNE_METRICS_PORT when set."""
        environ = os.environ if environ is None else environ
        log = environ.get(api.TERMINATION_LOG_ENV)
        default_log = Path(api.DEFAULT_TERMINATION_LOG)
        port_text = environ.get(api.METRICS_PORT_ENV, "").strip()
        port = None
        if port_text:
            try:
                port = int(port_text)
            except ValueError:
                logger.warning(
                    "kubetune.report: %s=%r is not a port number: Prometheus route off",
                    api.METRICS_PORT_ENV,
                    port_text,
                )
        linger_text = environ.get(api.METRICS_LINGER_ENV, "").strip()
        linger = 0.0
        if linger_text:
            try:
                linger = max(0.0, float(linger_text))
            except ValueError:
                logger.warning(
                    "kubetune.report: %s=%r is not a number of seconds: no wait",
                    api.METRICS_LINGER_ENV,
                    linger_text,
                )
        return cls(
            metrics_linger=linger,
            annotator=annotator_from_environment(environ, retry, service_account),
            termination_log=Path(log) if log else default_log if default_log.exists() else None,
            study=environ.get(api.STUDY_ENV, ""),
            trial=environ.get(api.TRIAL_ENV, ""),
            metrics_port=port,
        )

    @property
    def serving_port(self) -> int | None:
        """The port the Prometheus route listens on, once started."""
        return int(self._server.server_port) if self._server is not None else None

    def report(self, step: int, **metrics: float) -> None:
        """Intermediate values at a step (an epoch, an iteration): the pruner reads these."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a whole number >= 0, got {step!r}")
        self.last_step = step
        self._send(step, metrics, final=False)

    def report_final(self, **metrics: float) -> None:
        """The trial's final values: the annotation (final: true) and the termination message.
        Put the objective first: metrics past a size limit are left out, last ones first."""
        values = self._send(self.last_step, metrics, final=True)
        if self._gauges is not None and self.metrics_linger > 0:
            self._wait_for_scrape()
        if self.termination_log is not None:
            kept, dropped = fit_metrics(values, termination_message, TERMINATION_LIMIT)
            if dropped:
                logger.warning(
                    "kubetune.report: termination message over %d bytes without %s",
                    TERMINATION_LIMIT,
                    ", ".join(dropped),
                )
            try:
                self.termination_log.write_text(termination_message(kept))
            except OSError as error:
                logger.warning(
                    "kubetune.report: could not write the termination message: %s", error
                )

    def _send(self, step: int, metrics: Mapping[str, object], final: bool) -> dict[str, JsonNumber]:
        values = {name: metric_number(name, value) for name, value in metrics.items()}
        if self._gauges is not None:
            self._set_gauges(step, values, final)
        if self.annotator is not None:
            moment = self.now()
            kept, dropped = fit_metrics(
                values,
                lambda subset: annotation_document(step, subset, moment, final),
                self.annotation_limit,
            )
            if dropped:
                logger.warning(
                    "kubetune.report: annotation over %d bytes without %s",
                    self.annotation_limit,
                    ", ".join(dropped),
                )
            self.annotator.patch(annotation_document(step, kept, moment, final), final=final)
        return values

    def _wait_for_scrape(self) -> None:
        """Until a scrape that began after the final values were set has been sent in full
        (exiting mid-response would fail the scrape)."""
        with self._scraped:
            final = self._sets
            served = self._scraped.wait_for(
                lambda: self._served >= final, timeout=self.metrics_linger
            )
        if not served:
            logger.warning(
                "kubetune.report: no Prometheus scrape of the final values within %gs (%s)",
                self.metrics_linger,
                api.METRICS_LINGER_ENV,
            )

    def _metrics_app(self, metrics: Any) -> Any:
        """The /metrics WSGI app, noting which update of the gauges each response carried
        once the server has written all of it (WSGI calls close() then)."""
        reporter = self

        class Response:
            def __init__(self, body: Any, carried: int) -> None:
                self.body, self.carried = body, carried

            def __iter__(self) -> Any:
                return iter(self.body)

            def close(self) -> None:
                with reporter._scraped:
                    reporter._served = max(reporter._served, self.carried)
                    reporter._scraped.notify_all()

        def app(environ: Any, start_response: Any) -> Any:
            with reporter._scraped:
                carried = reporter._sets  # the gauges are read after this
            return Response(metrics(environ, start_response), carried)

        return app

    def _start_prometheus(self, port: int) -> None:
        try:
            import prometheus_client
        except ImportError:
            logger.warning(
                "kubetune.report: %s is set but prometheus_client is not installed: "
                "the Prometheus route is off",
                api.METRICS_PORT_ENV,
            )
            return
        registry = prometheus_client.CollectorRegistry()
        labels = ["study", "trial"]
        self._gauges = (
            prometheus_client.Gauge(
                "kubetune_trial_metric",
                "The latest value a trial reported for a metric.",
                [*labels, "metric"],
                registry=registry,
            ),
            prometheus_client.Gauge(
                "kubetune_trial_step",
                "The step of the trial's latest report.",
                labels,
                registry=registry,
            ),
            prometheus_client.Gauge(
                "kubetune_trial_final",
                "1 once the trial reported its final values.",
                labels,
                registry=registry,
            ),
        )
        try:
            server = _ThreadingWSGIServer((self.metrics_addr, port), _QuietHandler)
        except OSError as error:
            logger.warning("kubetune.report: Prometheus route off, port %d: %s", port, error)
            self._gauges = None
            return
        server.set_app(self._metrics_app(prometheus_client.make_wsgi_app(registry)))
        threading.Thread(target=server.serve_forever, name="kubetune-metrics", daemon=True).start()
        self._server = server

    def _set_gauges(self, step: int, values: Mapping[str, JsonNumber], final: bool) -> None:
        metric, step_gauge, final_gauge = self._gauges
        for name, value in values.items():
            metric.labels(self.study, self.trial, name).set(float(value))
        step_gauge.labels(self.study, self.trial).set(step)
        final_gauge.labels(self.study, self.trial).set(1 if final else 0)
        with self._scraped:
            self._sets += 1

    def close(self) -> None:
        """Stop the Prometheus route's server, if any."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    """The Prometheus route's server: a thread per scrape, none keeping the process alive."""

    daemon_threads = True


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per scrape on stderr would drown the trainer's own output


# ---- module-level use: one reporter per process, configured by the environment -------------

_default: Reporter | None = None


def default_reporter() -> Reporter:
    """The process's reporter, built from the environment on first use."""
    global _default
    if _default is None:
        _default = Reporter.from_environment()
    return _default


def report(step: int, **metrics: float) -> None:
    """Report intermediate values at a step through the default reporter."""
    default_reporter().report(step, **metrics)


def report_final(**metrics: float) -> None:
    """Report the final values through the default reporter (objective first)."""
    default_reporter().report_final(**metrics)

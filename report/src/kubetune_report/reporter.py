"""The Reporter: each report through every route configured (annotation, termination
message, Prometheus), none able to crash training."""

from __future__ import annotations

import logging
import os
import socketserver
import threading
import wsgiref.simple_server
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubetune_report import contract as api
from kubetune_report.annotation import PodAnnotator, RetryPolicy, annotator_from_environment
from kubetune_report.connection import SERVICE_ACCOUNT_DIR
from kubetune_report.messages import (
    ANNOTATION_LIMIT,
    TERMINATION_LIMIT,
    JsonNumber,
    annotation_document,
    fit_metrics,
    metric_number,
    termination_message,
)

logger = logging.getLogger(__name__)


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
                    "kubetune_report: %s=%r is not a port number: Prometheus route off",
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
                    "kubetune_report: %s=%r is not a number of seconds: no wait",
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
                    "kubetune_report: termination message over %d bytes without %s",
                    TERMINATION_LIMIT,
                    ", ".join(dropped),
                )
            try:
                self.termination_log.write_text(termination_message(kept))
            except OSError as error:
                logger.warning(
                    "kubetune_report: could not write the termination message: %s", error
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
                    "kubetune_report: annotation over %d bytes without %s",
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
                "kubetune_report: no Prometheus scrape of the final values within %gs (%s)",
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
                "kubetune_report: %s is set but prometheus_client is not installed: "
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
            logger.warning("kubetune_report: Prometheus route off, port %d: %s", port, error)
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

"""Which Prometheus reads a study needs now: the pure half of the Prometheus metrics source.

The controller names the reads (an intermediate poll of each running trial every pollInterval,
one final read of each trial whose pod succeeded, finalDelay after it finished) with their
queries rendered and escaped; kubetune.k8s.prometheus carries
them out and hands back `SourceReading`s, which the controller then takes as the trials'
reports. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import unquote, urlsplit

from kubetune.controller.observation import PodObservation, PodPhase
from kubetune.spec import promql
from kubetune.spec.duration import parse_duration
from kubetune.spec.metrics_source import PrometheusSource
from kubetune.spec.study import TuningStudy
from kubetune.spec.trial import TuningTrial


@dataclass(frozen=True)
class TrialRead:
    """One read of one trial: the PromQL of each metric, evaluated at `at`."""

    trial: str
    final: bool
    at: datetime
    queries: Mapping[str, str]
    """Metric name to rendered PromQL."""
    step_query: str | None = None
    """Rendered PromQL of the step (intermediate reads with spec stepQuery)."""
    step: int | None = None
    """The step of an intermediate read without a step query: whole pollIntervals since the
    pod started, so the same step means the same time into every trial."""


@dataclass(frozen=True)
class SourceReads:
    """The reads a study needs now, and where to send them."""

    namespace: str
    source: PrometheusSource
    reads: tuple[TrialRead, ...]
    enforced_label: tuple[str, str] | None = None
    """A label name and value for a prom-label-proxy, sent as a query parameter with every
    query (PrometheusPolicy.namespace_label and the study's namespace)."""


FINAL_LOOKBACK_SECONDS = 60
"""How far before the pod's end the final read looks for the last value, beyond finalDelay."""


def final_query(query: str, final_delay: float) -> str:
    """The final read of a query: its last value over a window reaching from before the pod
    ended to now. Once a trainer exits, Prometheus marks its series stale, so a plain instant
    query would find nothing; the subquery evaluates the query every second of the window and
    keeps its last value (the last scrape before the end, or a later one of a series that
    outlives the pod)."""
    window = math.ceil(final_delay) + FINAL_LOOKBACK_SECONDS
    return f"last_over_time(({query})[{window}s:1s])"


def prometheus_of(study: TuningStudy) -> PrometheusSource | None:
    return study.spec.metrics_source.prometheus if study.spec.metrics_source else None


def template_values(study: TuningStudy, trial: TuningTrial, pod: str) -> dict[str, str]:
    """The value of every placeholder for one trial (escaped later, by promql.render)."""
    namespace = study.metadata.namespace or ""
    return {
        "study.name": study.metadata.name or "",
        "study.namespace": namespace,
        "trial.name": trial.metadata.name or "",
        "trial.number": str(trial.spec.number),
        "trial.pod": pod,
        "trial.namespace": trial.metadata.namespace or namespace,
        "metric": study.spec.objective.metrics[0].name,
    }


def trial_read(
    study: TuningStudy,
    source: PrometheusSource,
    trial: TuningTrial,
    pod: str,
    *,
    final: bool,
    at: datetime,
    started: datetime | None,
) -> TrialRead:
    """The read of one trial at `at`, its templates rendered for it."""
    values = template_values(study, trial, pod)
    objective = study.spec.objective
    queries = {}
    for name in [m.name for m in objective.metrics] + list(objective.additional_metrics):
        template = source.template_for(name)
        if template is not None:  # the validator makes sure there is one
            query = promql.render(template, {**values, "metric": name})
            if final:
                query = final_query(query, parse_duration(source.final_delay))
            queries[name] = query
    step_query = None
    step = None
    if not final:
        if source.step_query is not None:
            step_query = promql.render(source.step_query, values)
        else:
            elapsed = (at - started).total_seconds() if started is not None else 0.0
            step = max(0, math.floor(elapsed / parse_duration(source.poll_interval)))
    return TrialRead(
        trial.metadata.name or "", final, at, queries, step_query=step_query, step=step
    )


def due_reads(
    study: TuningStudy,
    trials: Sequence[TuningTrial],
    pods: Mapping[str, PodObservation],
    polled: Mapping[str, datetime],
    now: datetime,
) -> tuple[list[TrialRead], datetime | None]:
    """The reads due at `now`, and when the next one falls due (None: none pending).

    `polled` is when each trial was last read (intermediate). A running trial is read every
    pollInterval; a trial whose pod succeeded is read once, finalDelay after its pod finished.
    A failed pod needs no read: the pod's own reason ends the trial."""
    source = prometheus_of(study)
    if source is None:
        return [], None
    interval = timedelta(seconds=parse_duration(source.poll_interval))
    delay = timedelta(seconds=parse_duration(source.final_delay))
    reads: list[TrialRead] = []
    upcoming: list[datetime] = []
    for trial in sorted(trials, key=lambda t: t.spec.number):
        name = trial.metadata.name or ""
        pod = pods.get(name)
        if not trial.status.state.is_active or pod is None:
            continue
        started = pod.started_at or trial.status.start_time
        pod_name = pod.pod_name or name
        if pod.phase is PodPhase.RUNNING:
            due = polled[name] + interval if name in polled else now
            if due <= now:
                reads.append(
                    trial_read(study, source, trial, pod_name, final=False, at=now, started=started)
                )
                upcoming.append(now + interval)
            else:
                upcoming.append(due)
        elif pod.phase is PodPhase.SUCCEEDED:
            finished = pod.finished_at or now
            if finished + delay <= now:
                reads.append(
                    trial_read(
                        study,
                        source,
                        trial,
                        pod_name,
                        final=True,
                        at=finished + delay,
                        started=started,
                    )
                )
            else:
                upcoming.append(finished + delay)
    return reads, min(upcoming, default=None)


URL_FIELD = "spec.metricsSource.prometheus.url"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Origin:
    """A URL split the way a client connects to it: scheme, host, port, path segments."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]


def _origin(url: str) -> _Origin:
    """`url` split for comparison, or ValueError saying what is wrong with it. Userinfo
    (`http://allowed@evil`), dot segments, queries and fragments are refused outright: each
    is a way for a URL to look like one server while it reaches another."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError(f"{url!r} holds user information (user@host); give the host alone")
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise ValueError(f"{url!r} has a query or fragment; give the server's base URL alone")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has a port that is not a number from 0 to 65535") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"{url!r} names no host")
    segments = tuple(s for s in parts.path.split("/") if s)
    if any(unquote(s) in (".", "..") for s in segments):
        raise ValueError(f"{url!r} has a . or .. path segment")
    return _Origin(scheme, host.lower(), port or _DEFAULT_PORTS[scheme], segments)


@dataclass(frozen=True)
class AllowedPrometheus:
    """One URL prefix the platform allows studies to read from (`--allow-prometheus`): a URL
    is under it when scheme, host and port are the same and its path begins with the prefix's
    path at a segment boundary (`/prom` admits `/prom/` and `/prom/x`, not `/prometheus`)."""

    prefix: str
    origin: _Origin

    @classmethod
    def parse(cls, prefix: str) -> AllowedPrometheus:
        return cls(prefix, _origin(prefix))

    def admits(self, url: str) -> bool:
        try:
            origin = _origin(url)
        except ValueError:
            return False
        allowed = self.origin
        return (origin.scheme, origin.host, origin.port) == (
            allowed.scheme,
            allowed.host,
            allowed.port,
        ) and origin.segments[: len(allowed.segments)] == allowed.segments


@dataclass(frozen=True)
class PrometheusPolicy:
    """What the platform lets studies read: the allowed URL prefixes (none: no study may read
    Prometheus) and the label a prom-label-proxy in front of them enforces, which the operator
    sets to the study's namespace on every query (None: no label)."""

    allowed: tuple[AllowedPrometheus, ...] = ()
    namespace_label: str | None = None

    @classmethod
    def of(cls, prefixes: Sequence[str], namespace_label: str | None = None) -> PrometheusPolicy:
        """The policy of the operator's options, or ValueError naming the bad prefix."""
        return cls(tuple(AllowedPrometheus.parse(p) for p in prefixes), namespace_label or None)

    def problem(self, url: str) -> str | None:
        """Why a study may not read `url` (None: it may)."""
        try:
            _origin(url)
        except ValueError as error:
            return f"{URL_FIELD}: {error}"
        if any(allowed.admits(url) for allowed in self.allowed):
            return None
        if not self.allowed:
            return (
                f"{URL_FIELD}: {url!r}: this operator reads no Prometheus: the platform allows "
                "one with `kubetune operator --allow-prometheus URL_PREFIX` (chart value "
                "prometheus.allowedUrls)"
            )
        listed = ", ".join(a.prefix for a in self.allowed)
        return (
            f"{URL_FIELD}: {url!r} is under none of the Prometheus URLs this operator allows "
            f"({listed}): use one of them, or ask the platform to add it with "
            "`kubetune operator --allow-prometheus URL_PREFIX` (chart value "
            "prometheus.allowedUrls)"
        )


REFUSE_ALL = PrometheusPolicy()

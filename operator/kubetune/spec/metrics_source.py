"""Where trial metrics come from when not from the trainer's own reports
(spec.metricsSource): Prometheus, queried with PromQL templates.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from kubetune.spec.base import ApiModel
from kubetune.spec.bounds import MetricName
from kubetune.spec.duration import Duration

PROMETHEUS_URL_PATTERN = r"^https?://[^\s/?#]+[^\s?#]*$"


class KeySelector(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The Secret or ConfigMap, in the study's namespace."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """The key within it."""


class PrometheusSource(ApiModel):
    # The pattern is in the CRD; the validator says what is wrong in words.
    url: Annotated[
        str, Field(max_length=2048, json_schema_extra={"pattern": PROMETHEUS_URL_PATTERN})
    ]
    """Base URL of the Prometheus HTTP API, for example http://prometheus-operated.monitoring:9090
    (the operator queries <url>/api/v1/query)."""
    query: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """PromQL template for every metric without an entry in queries; ${metric} stands for the
    metric's name. Placeholders (${study.name}, ${study.namespace}, ${trial.name},
    ${trial.number}, ${trial.pod}, ${trial.namespace}, ${metric}) must stand inside a quoted
    string; their values are escaped. The query must return one series."""
    queries: Annotated[
        dict[MetricName, Annotated[str, Field(min_length=1, max_length=4096)]],
        Field(max_length=40),
    ] = {}
    """PromQL template per metric name (objective or additional metric), overriding query."""
    step_query: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """PromQL template giving the trainer's current step, the pruner's resource (for example
    kubetune_trial_step{...}). Without it the step is the number of whole pollIntervals since
    the trial's pod started."""
    poll_interval: Duration = "15s"
    """How often the intermediate values of a running trial are read (they feed the pruner)."""
    final_delay: Duration = "5s"
    """How long after the pod finished the final values are read (evaluated at the time the pod
    finished), so the last scrape before it ended is stored."""
    timeout: Duration = "10s"
    """Timeout of one query."""
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    """Retries of a query that failed for a transient reason (unreachable, timeout, 429, 5xx),
    with exponential backoff. A bad query (400, 422) is not retried."""
    bearer_token_secret: KeySelector | None = None
    """A Secret key holding a bearer token sent with each query."""
    ca_config_map: KeySelector | None = None
    """A ConfigMap key holding the PEM CA bundle that signs Prometheus's certificate."""
    ca_secret: KeySelector | None = None
    """A Secret key holding the PEM CA bundle (instead of caConfigMap)."""

    def template_for(self, metric: str) -> str | None:
        """The query template of a metric: its own, else the shared one."""
        return self.queries.get(metric, self.query)


class MetricsSource(ApiModel):
    prometheus: PrometheusSource
    """Read the objective and additional metrics from Prometheus instead of the trainer's pod
    annotation and termination message."""

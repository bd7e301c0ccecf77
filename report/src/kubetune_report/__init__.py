"""The trial side of the reporting contract (docs/trial-contract.md): a trainer calls
`report(step, **metrics)` while it trains and `report_final(**metrics)` once at the end.

It imports nothing outside the standard library, so any training image can install it
(`pip install kubetune-report`, this repository's report/). Three routes, each optional, none
able to crash training (a failing route logs a warning and training goes on):

1. the pod annotation `kubetune.io/metrics`: a merge patch of the trial's own pod holding the
   latest report, through the in-cluster service account or a kubeconfig;
2. the termination message (final metrics only), which needs no RBAC at all;
3. Prometheus gauges, when prometheus_client is importable and KUBETUNE_METRICS_PORT is set;
   with KUBETUNE_METRICS_LINGER, report_final waits (that many seconds at most) until
   Prometheus has scraped the final values, so a study reading its objective from Prometheus
   sees them.
"""

from __future__ import annotations

from kubetune_report.annotation import PodAnnotator, RetryPolicy, annotator_from_environment
from kubetune_report.connection import KubeConnection, in_cluster_connection, kubeconfig_connection
from kubetune_report.errors import ReportError
from kubetune_report.kubeconfig_yaml import load_kubeconfig, parse_simple_yaml
from kubetune_report.messages import (
    ANNOTATION_LIMIT,
    TERMINATION_LIMIT,
    annotation_document,
    fit_metrics,
    metric_number,
    termination_message,
)
from kubetune_report.reporter import Reporter

__all__ = [
    "ANNOTATION_LIMIT",
    "TERMINATION_LIMIT",
    "KubeConnection",
    "PodAnnotator",
    "ReportError",
    "Reporter",
    "RetryPolicy",
    "annotation_document",
    "annotator_from_environment",
    "default_reporter",
    "fit_metrics",
    "in_cluster_connection",
    "kubeconfig_connection",
    "load_kubeconfig",
    "metric_number",
    "parse_simple_yaml",
    "report",
    "report_final",
    "termination_message",
]


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

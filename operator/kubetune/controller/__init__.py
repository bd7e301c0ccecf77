"""Reconcile decisions for a study: pure, deterministic, testable with no cluster."""

from kubetune.controller.core import StudyController
from kubetune.controller.observation import MetricReport, PodObservation, PodPhase
from kubetune.controller.plan import Event, Plan, TrialUpdate
from kubetune.controller.trial_pod import STOP_DEADLINE_SECONDS, with_owner_uid

__all__ = [
    "STOP_DEADLINE_SECONDS",
    "Event",
    "MetricReport",
    "Plan",
    "PodObservation",
    "PodPhase",
    "StudyController",
    "TrialUpdate",
    "with_owner_uid",
]

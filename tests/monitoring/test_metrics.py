"""The operator's metrics (kubetune.metrics): the study gauges follow the status, finished trials
and asks are counted once, a deleted study leaves no series, and labels stay bounded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubetune.controller import Plan
from kubetune.metrics import FINISHED_STATES, OperatorMetrics
from kubetune.spec.reevaluation import Reevaluation
from kubetune.spec.study_status import (
    BestTrial,
    BudgetUsage,
    MetricSummary,
    Recommendation,
    ReevaluatedConfiguration,
    ReevaluationStatus,
    StudyPhase,
    TrialCounts,
    TuningStudyStatus,
)
from kubetune.spec.trial import TrialState, TuningTrial
from tests.factories import at, study_spec
from tests.simulation import PodScript, SimulatedCluster

STUDY = {"namespace": "ml", "study": "resnet"}


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def series(metrics: OperatorMetrics) -> Iterator[tuple[str, dict[str, str]]]:
    """Every sample of the exposition, as /metrics serves it."""
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, sample.labels


def test_the_study_gauges_follow_its_status() -> None:
    metrics = OperatorMetrics(clock=lambda: at(300))
    status = TuningStudyStatus(
        phase=StudyPhase.RUNNING,
        trials=TrialCounts(total=7, pending=1, running=2, succeeded=3, pruned=1),
        best_trial=BestTrial(name="resnet-3", number=3, params={"lr": 0.1}, value=0.25),
        budget=BudgetUsage(
            trials=7, max_trials=20, gpu_hours=1.5, max_gpu_hours=2.0, money=3.0, elapsed_seconds=90
        ),
    )
    metrics.update_study("ml", "resnet", status, parallelism=3, oldest_pending=at(120))

    phases = {
        phase.value: value(metrics, "kubetune_study_phase", **STUDY, phase=phase.value)
        for phase in StudyPhase
    }
    assert phases == {
        "Pending": 0,
        "Running": 1,
        "Reevaluating": 0,
        "Completed": 0,
        "Failed": 0,
        "Invalid": 0,
    }
    trials = {s.value: value(metrics, "kubetune_trials", **STUDY, state=s) for s in TrialState}
    assert trials == {
        "Pending": 1,
        "Running": 2,
        "Succeeded": 3,
        "Pruned": 1,
        "Failed": 0,
        "MetricsUnavailable": 0,
        "TimedOut": 0,
        "Stopped": 0,
    }
    assert value(metrics, "kubetune_best_objective_value", **STUDY, objective="0") == 0.25
    assert value(metrics, "kubetune_study_parallelism", **STUDY) == 3
    # Computed at scrape time: 300 s (the clock) - 120 s (the oldest Pending trial).
    assert value(metrics, "kubetune_trials_pending_oldest_age_seconds", **STUDY) == 180
    used = {
        budget: value(metrics, "kubetune_budget_used", **STUDY, budget=budget)
        for budget in ("trials", "gpu_seconds", "money", "elapsed_seconds")
    }
    assert used == {"trials": 7, "gpu_seconds": 5400, "money": 3.0, "elapsed_seconds": 90}
    limits = {
        budget: value(metrics, "kubetune_budget_limit", **STUDY, budget=budget)
        for budget in ("trials", "gpu_seconds", "money", "elapsed_seconds")
    }
    # No money or duration limit: no series (not a 0 that would read as exhausted).
    assert limits == {"trials": 20, "gpu_seconds": 7200, "money": None, "elapsed_seconds": None}

    # The next status replaces the gauges: no Pending trial, a limit removed, two objectives.
    finished = status.model_copy(
        update={
            "phase": StudyPhase.COMPLETED,
            "best_trial": BestTrial(name="resnet-4", number=4, params={}, values=[0.2, 7.0]),
            "budget": status.budget.model_copy(update={"max_gpu_hours": None}),
        }
    )
    metrics.update_study("ml", "resnet", finished, parallelism=3)
    assert value(metrics, "kubetune_study_phase", **STUDY, phase="Completed") == 1
    assert value(metrics, "kubetune_study_phase", **STUDY, phase="Running") == 0
    assert value(metrics, "kubetune_trials_pending_oldest_age_seconds", **STUDY) == 0
    assert value(metrics, "kubetune_budget_limit", **STUDY, budget="gpu_seconds") is None
    assert value(metrics, "kubetune_best_objective_value", **STUDY, objective="0") == 0.2
    assert value(metrics, "kubetune_best_objective_value", **STUDY, objective="1") == 7.0


RERUN_PENALTY = 0.5
"""How much worse than its search value a re-run of run_study reports: the generalization gap."""


def run_study(
    metrics: OperatorMetrics,
    max_trials: int,
    name: str = "demo",
    reevaluation: Reevaluation | None = None,
) -> SimulatedCluster:
    """A simulated study to its end, each applied plan shown to the metrics as the handler
    does: odd trials fail, even ones succeed after 10 s on one GPU (with `reevaluation`, their
    re-runs report a loss RERUN_PENALTY higher than the search trial's)."""

    def script(trial: TuningTrial) -> PodScript:
        if trial.spec.number % 2:
            return PodScript(start_after=1, end_after=4, succeeds=False, reason="OOMKilled")
        loss = float(trial.spec.number)
        if trial.spec.reevaluation is not None:
            loss += RERUN_PENALTY
        return PodScript(start_after=1, end_after=11, final={"loss": loss})

    spec = study_spec(
        budget={"maxTrials": max_trials, "parallelism": 2, "maxFailedTrials": max_trials},
        gpus=1,
    ).model_copy(update={"reevaluation": reevaluation})
    cluster = SimulatedCluster.of(spec, script, name=name)
    while True:
        before = list(cluster.trials.values())
        plan = cluster.reconcile()
        metrics.record_plan("default", name, cluster.document(), before, plan, cluster.now)
        if cluster.study_status.phase is StudyPhase.COMPLETED:
            return cluster
        cluster.now = cluster.now + (at(1) - at(0))


REEVALUATION_GAUGES = (
    "kubetune_study_generalization_gap",
    "kubetune_study_recommended_mean",
    "kubetune_study_recommended_std",
    "kubetune_reevaluation_runs_planned",
    "kubetune_reevaluation_runs_finished",
)


def test_the_reevaluation_gauges_follow_the_recommendation() -> None:
    metrics = OperatorMetrics()
    searching = TuningStudyStatus(phase=StudyPhase.RUNNING)
    metrics.update_study("ml", "resnet", searching)
    # Before the search ends there is no re-evaluation: no series (not a 0 read as no gap).
    assert {name for name, _ in series(metrics)} & set(REEVALUATION_GAUGES) == set()

    configuration = ReevaluatedConfiguration(
        trial=3,
        params={"lr": 0.1},
        seeds=[11, 12],
        scores=[MetricSummary(metric="test_accuracy", values=[0.9, 0.8], validation_value=0.95)],
    )
    reevaluating = TuningStudyStatus(
        phase=StudyPhase.REEVALUATING,
        reevaluation=ReevaluationStatus(runs=6, finished=2, configurations=[configuration]),
    )
    metrics.update_study("ml", "resnet", reevaluating)
    assert value(metrics, "kubetune_study_phase", **STUDY, phase="Reevaluating") == 1
    assert value(metrics, "kubetune_reevaluation_runs_planned", **STUDY) == 6
    assert value(metrics, "kubetune_reevaluation_runs_finished", **STUDY) == 2
    assert value(metrics, "kubetune_study_generalization_gap", **STUDY) is None

    recommended = reevaluating.model_copy(
        update={
            "phase": StudyPhase.COMPLETED,
            "reevaluation": reevaluating.reevaluation.model_copy(update={"finished": 6}),
            "recommendation": Recommendation(
                trial=3,
                params={"lr": 0.1},
                metric="test_accuracy",
                values=[0.9, 0.8],
                seeds=[11, 12],
                mean=0.85,
                std=0.0707,
                validation_value=0.95,
                generalization_gap=0.1,
            ),
        }
    )
    metrics.update_study("ml", "resnet", recommended)
    assert value(metrics, "kubetune_reevaluation_runs_finished", **STUDY) == 6
    assert value(metrics, "kubetune_study_generalization_gap", **STUDY) == 0.1
    by_metric = {**STUDY, "metric": "test_accuracy"}
    assert value(metrics, "kubetune_study_recommended_mean", **by_metric) == 0.85
    assert value(metrics, "kubetune_study_recommended_std", **by_metric) == 0.0707

    # A metric the search never recorded as a value has no gap; the mean still shows.
    assert recommended.recommendation is not None
    no_gap = recommended.recommendation.model_copy(
        update={"validation_value": None, "generalization_gap": None}
    )
    metrics.update_study("ml", "resnet", recommended.model_copy(update={"recommendation": no_gap}))
    assert value(metrics, "kubetune_study_generalization_gap", **STUDY) is None
    assert value(metrics, "kubetune_study_recommended_mean", **by_metric) == 0.85


def test_a_reevaluated_study_exports_its_gap_and_recommended_mean() -> None:
    metrics = OperatorMetrics()
    cluster = run_study(metrics, max_trials=4, reevaluation=Reevaluation(top_trials=2, repeats=2))
    labels = {"namespace": "default", "study": "demo"}

    recommendation = cluster.study_status.recommendation
    assert recommendation is not None
    assert recommendation.trial == 0  # trials 0 and 2 succeeded; loss 0 is the smaller
    assert value(metrics, "kubetune_study_generalization_gap", **labels) == RERUN_PENALTY
    mean = value(metrics, "kubetune_study_recommended_mean", **labels, metric="loss")
    assert mean == recommendation.mean == RERUN_PENALTY
    assert value(metrics, "kubetune_reevaluation_runs_planned", **labels) == 4
    assert value(metrics, "kubetune_reevaluation_runs_finished", **labels) == 4
    # Re-runs are trials: they are counted by outcome with the search's (2 + 4 succeeded).
    assert value(metrics, "kubetune_trials_finished_total", **labels, outcome="Succeeded") == 6


def test_a_study_s_trials_are_counted_once_by_outcome() -> None:
    metrics = OperatorMetrics()
    cluster = run_study(metrics, max_trials=6)
    labels = {"namespace": "default", "study": "demo"}

    finished = {
        state.value: value(metrics, "kubetune_trials_finished_total", **labels, outcome=state)
        for state in FINISHED_STATES
    }
    assert finished == {
        "Succeeded": 3,
        "Pruned": 0,
        "Failed": 3,
        "MetricsUnavailable": 0,
        "TimedOut": 0,
        "Stopped": 0,
    }
    # Running time: pods start 1 s after creation; successes run 10 s, failures 3 s.
    durations = "kubetune_trial_duration_seconds"
    assert value(metrics, f"{durations}_sum", **labels, outcome="Succeeded") == 30
    assert value(metrics, f"{durations}_sum", **labels, outcome="Failed") == 9
    assert value(metrics, f"{durations}_count", **labels, outcome="Failed") == 3
    gpu_seconds = sum(t.status.gpu_seconds for t in cluster.trials.values())
    assert gpu_seconds == 39
    assert value(metrics, "kubetune_gpu_seconds_total", **labels) == gpu_seconds
    # One ask per trial, timed in the controller.
    assert value(metrics, "kubetune_suggestion_duration_seconds_count", **labels) == 6
    assert value(metrics, "kubetune_study_phase", **labels, phase="Completed") == 1


def test_a_forgotten_study_leaves_no_series_and_others_keep_theirs() -> None:
    metrics = OperatorMetrics()
    run_study(metrics, max_trials=2, name="gone")
    run_study(metrics, max_trials=2, name="kept")

    metrics.forget_study("default", "gone")

    studies = {labels.get("study") for _, labels in series(metrics)}
    assert "gone" not in studies
    assert "kept" in studies
    kept = {"namespace": "default", "study": "kept"}
    assert value(metrics, "kubetune_trials_finished_total", **kept, outcome="Succeeded") == 1


def test_series_do_not_grow_with_trials_and_labels_hold_no_trial_values() -> None:
    few, many = OperatorMetrics(), OperatorMetrics()
    run_study(few, max_trials=2, reevaluation=Reevaluation(top_trials=1, repeats=1))
    # More trials, more configurations re-run, more repeats: the same series.
    cluster = run_study(many, max_trials=12, reevaluation=Reevaluation(top_trials=3, repeats=2))

    # Importances appear once enough trials completed: one series per parameter, at most.
    importance = "kubetune_study_parameter_importance"
    assert len([s for s in series(few) if s[0] != importance]) == len(
        [s for s in series(many) if s[0] != importance]
    )
    parameters = {labels["parameter"] for name, labels in series(many) if name == importance}
    assert parameters
    assert parameters <= {p.name for p in cluster.study.spec.search_space}
    allowed = {"namespace", "study", "phase", "state", "objective", "budget", "outcome", "handler"}
    allowed |= {"metric", "le", "version", "python", "optuna", "parameter"}
    trial_names = {t.metadata.name for t in cluster.trials.values()}
    for name, labels in series(many):
        assert set(labels) <= allowed, name
        assert not trial_names & set(labels.values()), name


def test_a_handler_is_timed_and_its_errors_counted() -> None:
    metrics = OperatorMetrics()
    assert value(metrics, "kubetune_handler_errors_total", handler="reconcile") == 0
    with metrics.handler("reconcile"):
        pass
    with pytest.raises(RuntimeError, match="API down"), metrics.handler("reconcile"):
        raise RuntimeError("API down")

    assert value(metrics, "kubetune_handler_errors_total", handler="reconcile") == 1
    assert value(metrics, "kubetune_handler_duration_seconds_count", handler="reconcile") == 2


def test_build_info_names_the_versions() -> None:
    import kubetune

    (labels,) = [
        labels for name, labels in series(OperatorMetrics()) if name == "kubetune_build_info"
    ]
    assert labels["version"] == kubetune.__version__
    assert labels["optuna"] == "5.0.0"


def test_a_pending_trial_ages_from_its_creation() -> None:
    clock: list[datetime] = [at(0)]
    metrics = OperatorMetrics(clock=lambda: clock[0])

    # Pods that stay Pending: the oldest Pending trial is the first one created.
    cluster = SimulatedCluster.of(
        study_spec(budget={"maxTrials": 2, "parallelism": 2}),
        lambda trial: PodScript(start_after=10_000),
    )
    for seconds in (0, 5, 10):
        cluster.now = at(seconds)
        before = list(cluster.trials.values())
        plan = cluster.reconcile()
        metrics.record_plan("default", "demo", cluster.document(), before, plan, cluster.now)
    clock[0] = at(70)
    age = value(
        metrics,
        "kubetune_trials_pending_oldest_age_seconds",
        **{"namespace": "default", "study": "demo"},
    )
    assert age == 70


def test_ask_durations_do_not_change_what_a_plan_equals() -> None:
    status = TuningStudyStatus()
    assert Plan(study_status=status, ask_seconds=(0.5,)) == Plan(study_status=status)


def test_the_gpu_seconds_of_a_stopped_pod_count_until_it_has_terminated() -> None:
    # Trials are stopped at a 3 s trialTimeout; the trainers ignore SIGTERM and are killed at
    # the end of a 5 s grace period: each pod holds its GPU 8 s, not 3.
    metrics = OperatorMetrics()
    spec = study_spec(
        budget={"maxTrials": 2, "parallelism": 2, "trialTimeout": "3s", "maxFailedTrials": 2},
        gpus=1,
        grace=5,
    )
    cluster = SimulatedCluster.of(
        spec, lambda t: PodScript(start_after=0, end_after=None, exits_after_sigterm=float("inf"))
    )
    labels = {"namespace": "default", "study": "demo"}
    for _ in range(30):
        before = list(cluster.trials.values())
        plan = cluster.reconcile()
        metrics.record_plan("default", "demo", cluster.document(), before, plan, cluster.now)
        cluster.now = cluster.now + (at(1) - at(0))
    assert cluster.gpu_seconds_held() == 2 * 8
    assert value(metrics, "kubetune_gpu_seconds_total", **labels) == 2 * 8
    assert sum(t.status.gpu_seconds for t in cluster.trials.values()) == 2 * 8


def test_the_importance_gauge_follows_status_importances() -> None:
    metrics = OperatorMetrics()
    metrics.update_study("ml", "resnet", TuningStudyStatus(phase=StudyPhase.RUNNING))
    # Before enough trials completed there are no importances: no series, not zeros.
    assert "kubetune_study_parameter_importance" not in {name for name, _ in series(metrics)}

    importances = {"lr": 0.7, "momentum": 0.2, "batch": 0.1}
    status = TuningStudyStatus(phase=StudyPhase.RUNNING, importances=importances)
    metrics.update_study("ml", "resnet", status)
    gauge = "kubetune_study_parameter_importance"
    shown = {name: value(metrics, gauge, **STUDY, parameter=name) for name in importances}
    assert shown == importances

    # A parameter that drops out of status.importances drops out of the gauge.
    metrics.update_study("ml", "resnet", status.model_copy(update={"importances": {"lr": 1.0}}))
    assert value(metrics, gauge, **STUDY, parameter="lr") == 1.0
    assert value(metrics, gauge, **STUDY, parameter="batch") is None

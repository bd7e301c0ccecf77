"""spec.warmStart.fromStudies through the controller: a study refused for an incompatible
source, waiting for a source's search to end, then informed by its succeeded search trials
exactly as by warmStart.results, across restarts and later changes of the source."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from kubetune.controller import StudyController
from kubetune.controller.warm_start import SourceStudy, study_essentials
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.study_status import Condition, StudyPhase, TuningStudyStatus
from kubetune.spec.trial import ReevaluationRun, TrialState, TuningTrial
from tests.factories import study, study_spec, trial
from tests.simulation import SimulatedCluster
from tests.unit.test_controller import quadratic

TPE = {"name": "tpe", "seed": 5, "startupTrials": 1}


def small_trials() -> list[TuningTrial]:
    """The source's records: two that fit, one outside this study's range, one failed, and a
    re-evaluation run whose (held-out) value must not steer the search."""
    rerun = trial(0, TrialState.SUCCEEDED, values=[-100.0], study_name="small")
    rerun = rerun.model_copy(
        update={
            "metadata": rerun.metadata.model_copy(update={"name": "small-0-r0"}),
            "spec": rerun.spec.model_copy(
                update={"reevaluation": ReevaluationRun(trial=0, repeat=0)}
            ),
        }
    )
    return [
        trial(
            3, TrialState.SUCCEEDED, values=[2.0], params={"x": -2.0, "y": 4}, study_name="small"
        ),
        trial(0, TrialState.SUCCEEDED, values=[1.0], params={"x": 1.0, "y": 1}, study_name="small"),
        trial(1, TrialState.FAILED, params={"x": 5.0, "y": 0}, study_name="small"),
        trial(
            2, TrialState.SUCCEEDED, values=[0.5], params={"x": 30.0, "y": 1}, study_name="small"
        ),
        rerun,
    ]


# What the source gives this study, as warmStart.results would give it.
IMPORTED_AS_RESULTS = [
    {"params": {"x": 1.0, "y": 1}, "values": [1.0]},
    {"params": {"x": -2.0, "y": 4}, "values": [2.0]},
]


def source(
    spec: TuningStudySpec | None = None,
    *,
    phase: str = "Completed",
    trials: Sequence[TuningTrial] | None = None,
    name: str = "small",
) -> SourceStudy:
    body = study(spec or study_spec(), name).model_dump(mode="json", by_alias=True)
    body["status"] = {"phase": phase, "progress": "4/10"}
    return SourceStudy(
        name, study_essentials(body), tuple(small_trials() if trials is None else trials)
    )


def importing(budget: dict[str, Any] | None = None, **sources: SourceStudy) -> SimulatedCluster:
    spec = study_spec(
        algorithm=TPE,
        budget=budget or {"maxTrials": 4, "parallelism": 1},
        warm_start={"fromStudies": ["small"]},
    )
    cluster = SimulatedCluster.of(spec, quadratic)
    cluster.sources = dict(sources)
    return cluster


def warm_start_condition(status: TuningStudyStatus) -> Condition:
    (condition,) = [c for c in status.conditions if c.type == "WarmStart"]
    return condition


@pytest.mark.parametrize(
    ("given", "words"),
    [
        (None, "there is no TuningStudy small in namespace default"),
        (
            source(study_spec(objective={"metrics": [{"name": "val_loss"}]})),
            "study small optimizes val_loss (minimize); this study loss (minimize)",
        ),
        (
            source(study_spec(objective={"metrics": [{"name": "loss", "direction": "maximize"}]})),
            "study small optimizes loss (maximize); this study loss (minimize)",
        ),
        (
            source(study_spec(search_space=[{"name": "z", "type": "int", "low": 0, "high": 2}])),
            "has none of the parameters this study searches (it has z; this study searches x, y)",
        ),
        (
            source(study_spec(warm_start={"fromStudies": ["demo"]}), phase="Pending", trials=[]),
            "study small has not started and warm-starts from this study",
        ),
    ],
    ids=["missing", "other-metric", "other-direction", "no-shared-parameter", "each-other"],
)
def test_a_source_it_cannot_learn_from_makes_the_study_invalid(
    given: SourceStudy | None, words: str
) -> None:
    cluster = importing(**({"small": given} if given else {}))
    plan = cluster.reconcile()

    status = cluster.study_status
    assert status.phase is StudyPhase.INVALID
    assert status.message.startswith("spec.warmStart.fromStudies[0]: ")
    assert words in status.message
    assert "; fix: " in status.message
    assert (plan.create_trials, plan.new_trial_workloads) == ((), {})
    assert [e.reason for e in plan.events] == ["SpecInvalid"]


def test_the_study_waits_until_the_search_of_its_source_has_ended() -> None:
    cluster = importing(small=source(phase="Running"))
    first, second = cluster.reconcile(), cluster.reconcile()

    status = cluster.study_status
    assert status.phase is StudyPhase.PENDING
    assert status.start_time is None  # maxDuration's clock has not started
    condition = warm_start_condition(status)
    assert (condition.status, condition.reason) == ("False", "WaitingForStudies")
    assert condition.message.startswith("waiting for the search of small (Running, 4/10 trials)")
    assert status.message == condition.message
    assert first.create_trials == second.create_trials == ()
    assert [e.reason for e in first.events] == ["WaitingForStudies"]
    assert second.events == ()  # said once

    # Completed, but one of its trials is not recorded as ended yet in this view.
    running = trial(4, TrialState.RUNNING, study_name="small")
    cluster.sources["small"] = source(trials=[*small_trials(), running])
    plan = cluster.reconcile()
    assert plan.create_trials == ()
    assert "1 of its trials not recorded as ended yet" in cluster.study_status.message
    assert plan.events == ()  # the message follows the source; the event was once

    cluster.sources["small"] = source()
    plan = cluster.reconcile()
    assert [t.spec.number for t in plan.create_trials] == [0]
    condition = warm_start_condition(cluster.study_status)
    assert (condition.status, condition.reason) == ("True", "TrialsImported")


@pytest.mark.parametrize("phase", ["Failed", "Reevaluating"])
def test_a_search_that_failed_or_is_being_reevaluated_has_ended(phase: str) -> None:
    cluster = importing(small=source(phase=phase))
    assert [t.spec.number for t in cluster.reconcile().create_trials] == [0]


def test_imported_trials_inform_the_search_exactly_as_the_same_results_would() -> None:
    cluster = importing(small=source())
    status = cluster.run()
    same_results = SimulatedCluster.of(
        study_spec(
            algorithm=TPE,
            budget={"maxTrials": 4, "parallelism": 1},
            warm_start={"results": IMPORTED_AS_RESULTS},
        ),
        quadratic,
    )
    same_results.run()
    unaided = SimulatedCluster.of(
        study_spec(algorithm=TPE, budget={"maxTrials": 4, "parallelism": 1}), quadratic
    )
    unaided.run()

    def asked(of: SimulatedCluster) -> dict[int, Any]:
        return {t.spec.number: t.spec.params for t in of.trials.values()}

    assert asked(cluster) == asked(same_results)
    assert asked(cluster) != asked(unaided), "the imported trials changed nothing"
    # Imports are no trials of this study: numbers from 0, not counted toward maxTrials.
    assert sorted(asked(cluster)) == [0, 1, 2, 3]
    assert (status.phase, status.progress, status.trials.total) == (StudyPhase.COMPLETED, "4/4", 4)
    condition = warm_start_condition(status)
    assert condition.message == (
        "2 trials imported: 2 of small (1 skipped: a value this study's search space cannot "
        "take, or no parameter it searches)"
    )
    [imported] = [
        e for plan in cluster.plans for e in plan.events if e.reason == "WarmStartImported"
    ]
    assert (imported.type, imported.message) == ("Normal", condition.message)


def test_a_restarted_operator_asks_the_same_as_one_that_ran_throughout() -> None:
    budget = {"maxTrials": 8, "parallelism": 2}
    steady = importing(budget, small=source())
    steady.run()
    restarted = importing(budget, small=source())
    for tick in range(400):
        if tick % 3 == 0:
            restarted.controller = StudyController()  # a new process: only the cluster remains
        restarted.reconcile()
        if restarted.study_status.phase is StudyPhase.COMPLETED:
            break
        restarted.now += timedelta(seconds=1)

    assert {t.spec.number: t.spec.params for t in restarted.trials.values()} == {
        t.spec.number: t.spec.params for t in steady.trials.values()
    }


def test_once_started_the_study_follows_its_source_and_outlives_it() -> None:
    cluster = importing({"maxTrials": 3, "parallelism": 1}, small=source())
    cluster.reconcile()
    assert warm_start_condition(cluster.study_status).message.startswith("2 trials imported")

    # The source resumed (its budget raised) and another trial succeeded: it informs too.
    more = trial(
        5, TrialState.SUCCEEDED, values=[0.1], params={"x": 0.5, "y": 2}, study_name="small"
    )
    cluster.sources["small"] = source(phase="Running", trials=[*small_trials(), more])
    cluster.now += timedelta(seconds=1)
    plan = cluster.reconcile()
    assert warm_start_condition(cluster.study_status).message.startswith(
        "3 trials imported: 3 of small"
    )
    assert [e.reason for e in plan.events].count("WarmStartImported") == 1

    # Deleted: this study goes on without it, and says so once.
    del cluster.sources["small"]
    cluster.now += timedelta(seconds=1)
    plan = cluster.reconcile()
    [gone] = [e for e in plan.events if e.reason == "WarmStartImported"]
    assert gone.type == "Warning"
    assert gone.message == (
        "0 trials imported; informing nothing: small (there is no TuningStudy small in "
        "namespace default)"
    )
    cluster.now += timedelta(seconds=1)
    status = cluster.run()
    assert (status.phase, status.trials.succeeded) == (StudyPhase.COMPLETED, 3)

"""The budget usage a study's status shows: refreshed with every other change, and at least
every USAGE_REFRESH_SECONDS while only the clock moves (kubetune.controller.status)."""

from __future__ import annotations

from typing import Any

from kubetune.controller.status import USAGE_REFRESH_SECONDS, shown_usage, usage_due_in
from kubetune.spec.study_status import BudgetUsage, StudyPhase, TrialCounts, TuningStudyStatus

WRITTEN = TuningStudyStatus(
    phase=StudyPhase.RUNNING,
    trials=TrialCounts(total=4, running=4),
    budget=BudgetUsage(trials=4, gpu_hours=0.5, money=2.0, elapsed_seconds=100.0),
)


def later(seconds: float, **usage: Any) -> BudgetUsage:
    return WRITTEN.budget.model_copy(
        update={
            "gpu_hours": 0.5 + seconds / 900,
            "money": 2.0 + seconds / 225,
            "elapsed_seconds": 100.0 + seconds,
            **usage,
        }
    )


def test_usage_that_only_moved_with_the_clock_stays_as_written_until_it_is_due() -> None:
    new = WRITTEN.model_copy(update={"budget": later(USAGE_REFRESH_SECONDS - 1)})
    assert shown_usage(WRITTEN, new) == WRITTEN.budget


def test_usage_is_refreshed_once_the_written_one_is_due() -> None:
    measured = later(USAGE_REFRESH_SECONDS)
    new = WRITTEN.model_copy(update={"budget": measured})
    assert shown_usage(WRITTEN, new) == measured


def test_any_other_change_of_the_status_writes_the_usage_as_measured() -> None:
    measured = later(1)
    counts = TrialCounts(total=4, running=3, succeeded=1)
    new = WRITTEN.model_copy(update={"budget": measured, "trials": counts})
    assert shown_usage(WRITTEN, new) == measured


def test_a_change_of_the_usage_beyond_the_clock_is_written_at_once() -> None:
    for change in ({"trials": 5}, {"max_gpu_hours": 10.0}):
        measured = later(1, **change)
        new = WRITTEN.model_copy(update={"budget": measured})
        assert shown_usage(WRITTEN, new) == measured


def test_a_clock_that_went_back_writes_the_measurement() -> None:
    """A study that resumed restarts its elapsed seconds: the old figure is no guide."""
    measured = later(-50)
    new = WRITTEN.model_copy(update={"budget": measured})
    assert shown_usage(WRITTEN, new) == measured


def test_an_ended_study_writes_what_its_last_pods_held_at_once() -> None:
    """Its clock is stopped, so the age of the written usage cannot be told: pods that
    outlived the end must not be shown at what they held when it was last written."""
    ended = WRITTEN.model_copy(update={"phase": StudyPhase.COMPLETED})
    measured = later(0, gpu_hours=0.6, money=2.4)
    new = ended.model_copy(update={"budget": measured})
    assert shown_usage(ended, new) == measured


def test_a_usage_held_back_wakes_the_study_when_it_is_due() -> None:
    measured = later(USAGE_REFRESH_SECONDS - 10)
    assert usage_due_in(WRITTEN.budget, measured) == 10
    assert usage_due_in(measured, measured) is None

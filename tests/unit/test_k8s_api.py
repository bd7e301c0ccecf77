"""The status patch the operator sends: a merge patch that also removes what is gone."""

from datetime import UTC, datetime

from kubetune.k8s.api import merge_patch_to, study_status_patch
from kubetune.spec.study_status import BestTrial, BudgetUsage, StudyPhase, TuningStudyStatus


def test_keys_the_new_status_lost_are_nulled_at_every_depth() -> None:
    old = {"bestTrial": {"number": 1, "params": {"optimizer": "sgd", "momentum": 0.9}}, "x": 1}
    new = {"bestTrial": {"number": 4, "params": {"optimizer": "adamw"}}}
    assert merge_patch_to(old, new) == {
        "bestTrial": {"number": 4, "params": {"optimizer": "adamw", "momentum": None}},
        "x": None,
    }


def test_lists_and_scalars_are_replaced_whole() -> None:
    assert merge_patch_to({"a": [1, 2], "b": {"c": 1}}, {"a": [3], "b": 5}) == {"a": [3], "b": 5}
    assert merge_patch_to(None, {"a": 1}) == {"a": 1}


def test_a_status_the_study_already_shows_is_not_written_again() -> None:
    """The stored status has no nulls (the merge patch removed those keys); a new status
    whose only difference is its unset fields changes nothing."""
    status = TuningStudyStatus(
        phase=StudyPhase.RUNNING,
        best_trial=BestTrial(name="s-1", number=1, params={"x": 0.5}, value=0.5),
        budget=BudgetUsage(trials=2, elapsed_seconds=3.0),
    )
    stored = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert study_status_patch({**stored, "kopf": {"progress": {}}}, status) is None


def test_a_status_write_removes_what_the_new_status_no_longer_has() -> None:
    stored = TuningStudyStatus(
        phase=StudyPhase.COMPLETED, completion_time=datetime(2026, 1, 1, tzinfo=UTC)
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    patch = study_status_patch(stored, TuningStudyStatus(phase=StudyPhase.RUNNING))
    assert patch is not None
    assert patch["phase"] == "Running"
    assert patch["completionTime"] is None

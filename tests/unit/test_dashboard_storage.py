"""kubetune.dashboard.storage: reads of the snapshots, refused writes, whole replacement."""

from __future__ import annotations

import threading

import optuna
import pytest
from optuna.trial import TrialState as OptunaState

from kubetune.dashboard.storage import (
    TRIAL_ID_STRIDE,
    ReadOnlyStorageError,
    SnapshotStorage,
    snapshot_of,
)
from kubetune.spec.study import TuningStudy
from kubetune.spec.trial import TrialState, TuningTrial
from tests.factories import study, study_spec, trial


def finished(number: int, loss: float, study_name: str = "demo") -> TuningTrial:
    return trial(number, TrialState.SUCCEEDED, ended=5, values=[loss], study_name=study_name)


def named(name: str) -> TuningStudy:
    return study(study_spec(), name)


def test_studies_and_trials_are_read_as_the_records_say() -> None:
    storage = SnapshotStorage()
    demo = named("demo")
    storage.replace(snapshot_of(demo, [finished(0, 3.0), finished(1, 1.0)], 0))

    [summary] = storage.get_all_studies()
    assert summary.study_name == "default/demo"
    assert summary.user_attrs == {"phase": "Pending"}
    loaded = optuna.load_study(study_name="default/demo", storage=storage)
    assert [t.values for t in loaded.trials] == [[3.0], [1.0]]
    assert loaded.best_trial.number == 1
    assert storage.get_trial(loaded.trials[1]._trial_id).values == [1.0]
    assert storage.get_all_trials(summary._study_id, states=(OptunaState.RUNNING,)) == []
    with pytest.raises(KeyError):
        storage.get_trial(TRIAL_ID_STRIDE * 5)
    with pytest.raises(KeyError):
        storage.get_study_id_from_name("default/other")


def test_ids_are_unique_across_studies_and_stable_across_updates_and_deletion() -> None:
    storage = SnapshotStorage()
    first_id = storage.study_id("default/a")
    storage.replace(snapshot_of(named("a"), [finished(0, 1.0, "a")], first_id))
    second_id = storage.study_id("default/b")
    storage.replace(snapshot_of(named("b"), [finished(0, 2.0, "b")], second_id))
    a_trial = storage.get_all_trials(first_id)[0]._trial_id
    b_trial = storage.get_all_trials(second_id)[0]._trial_id
    assert a_trial != b_trial

    storage.replace(snapshot_of(named("a"), [finished(0, 1.0, "a"), finished(1, 0.5, "a")], 0))
    assert storage.get_all_trials(first_id)[0]._trial_id == a_trial
    assert len(storage.get_all_trials(first_id)) == 2

    storage.remove("default/a")
    assert [s.study_name for s in storage.get_all_studies()] == ["default/b"]
    with pytest.raises(KeyError):
        storage.get_all_trials(first_id)
    assert storage.study_id("default/a") == first_id  # the same id when it comes back


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.create_new_study([optuna.study.StudyDirection.MINIMIZE], "x"),
        lambda s: s.delete_study(0),
        lambda s: s.set_study_user_attr(0, "k", 1),
        lambda s: s.set_study_system_attr(0, "dashboard:note", "hi"),
        lambda s: s.create_new_trial(0),
        lambda s: s.set_trial_state_values(0, OptunaState.COMPLETE, [1.0]),
        lambda s: s.set_trial_intermediate_value(0, 1, 1.0),
        lambda s: s.set_trial_user_attr(0, "k", 1),
        lambda s: s.set_trial_system_attr(0, "k", 1),
    ],
)
def test_every_write_is_refused_with_a_403_that_says_why(write: object) -> None:
    storage = SnapshotStorage()
    storage.replace(snapshot_of(named("demo"), [finished(0, 1.0)], 0))
    with pytest.raises(ReadOnlyStorageError) as refused:
        write(storage)  # type: ignore[operator]
    assert refused.value.status_code == 403
    assert "read-only" in refused.value.body
    assert len(storage.get_all_trials(0)) == 1


def test_a_reader_sees_a_whole_snapshot_while_another_thread_replaces_it() -> None:
    storage = SnapshotStorage()
    small = snapshot_of(named("demo"), [finished(0, 1.0)], 0)
    large = snapshot_of(named("demo"), [finished(n, float(n)) for n in range(50)], 0)
    storage.replace(small)
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            storage.replace(large)
            storage.replace(small)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        seen = {len(storage.get_all_trials(0, deepcopy=False)) for _ in range(2000)}
    finally:
        stop.set()
        flipper.join()
    assert seen <= {1, 50}

"""kubetune.engine.export: a study's TuningTrial records as Optuna trials and an Optuna study."""

from __future__ import annotations

import math
from typing import Any

from optuna.study import StudyDirection
from optuna.trial import TrialState as OptunaState

from kubetune.engine.export import frozen_trials, optuna_directions, optuna_study
from kubetune.spec.trial import IntermediateValue, TrialState, TuningTrial, is_search_trial
from tests.factories import study_spec, trial
from tests.simulation import PodScript, SimulatedCluster
from tests.unit.test_reevaluation import reevaluated_spec, seeded_trainer


def with_status(record: TuningTrial, **fields: Any) -> TuningTrial:
    return record.model_copy(update={"status": record.status.model_copy(update=fields)})


def test_records_become_trials_with_their_params_values_states_and_attributes() -> None:
    spec = study_spec(objective={"metrics": [{"name": "loss"}], "additionalMetrics": ["test"]})
    done = with_status(
        trial(0, TrialState.SUCCEEDED, ended=5, values=[0.25], params={"x": 1.5, "y": 2}),
        metrics={"loss": 0.25, "test": 0.5},
        intermediate_values=[IntermediateValue(step=1, value=0.5)],
    )
    done = done.model_copy(update={"spec": done.spec.model_copy(update={"seed": 7})})
    pruned = with_status(
        trial(1, TrialState.PRUNED, ended=6, params={"x": -2.0, "y": 0}),
        intermediate_values=[
            IntermediateValue(step=1, value=0.9),
            IntermediateValue(step=2, value=0.8),
        ],
    )
    timed_out = with_status(trial(2, TrialState.TIMED_OUT, ended=7), reason="DeadlineExceeded")
    running = trial(3, TrialState.RUNNING)

    first, second, third, fourth = frozen_trials(spec, [running, timed_out, pruned, done], 100)

    assert [t.number for t in (first, second, third, fourth)] == [0, 1, 2, 3]
    assert [t._trial_id for t in (first, second, third, fourth)] == [100, 101, 102, 103]
    assert first.state is OptunaState.COMPLETE
    assert first.values == [0.25]
    assert first.params == {"x": 1.5, "y": 2}
    assert first.intermediate_values == {1: 0.5}
    assert first.user_attrs == {
        "test": 0.5,
        "kubetune_state": "Succeeded",
        "pod": "demo-0",
        "seed": 7,
    }
    assert first.datetime_complete == done.status.completion_time
    # A pruned trial keeps its last intermediate value, as Study.tell stores it.
    assert second.state is OptunaState.PRUNED
    assert second.values == [0.8]
    assert third.state is OptunaState.FAIL
    assert third.user_attrs["reason"] == "DeadlineExceeded"
    assert third.user_attrs["kubetune_state"] == "TimedOut"
    assert fourth.state is OptunaState.RUNNING
    assert fourth.datetime_complete is None


def test_a_deleted_or_unreadable_record_keeps_the_numbers_aligned() -> None:
    spec = study_spec()
    unreadable = trial(1, TrialState.SUCCEEDED, ended=1, values=[1.0], params={"z": 1})
    kept = trial(2, TrialState.SUCCEEDED, ended=1, values=[2.0])

    deleted, bad, good = frozen_trials(spec, [unreadable, kept])

    assert deleted.state is OptunaState.FAIL
    assert deleted.user_attrs == {"deleted": True}
    assert bad.state is OptunaState.FAIL
    assert "spec.searchSpace" in bad.user_attrs["error"]
    assert good.number == 2
    assert good.values == [2.0]


def test_directions_follow_the_objective_metrics() -> None:
    spec = study_spec(
        objective={"metrics": [{"name": "a", "direction": "maximize"}, {"name": "b"}]}
    )
    assert optuna_directions(spec) == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]


def test_the_optuna_study_of_a_simulated_study_has_its_best_trial_and_reruns() -> None:
    cluster = SimulatedCluster.of(reevaluated_spec(), seeded_trainer)
    status = cluster.run()
    records = list(cluster.trials.values())
    search = sorted((t for t in records if is_search_trial(t)), key=lambda t: t.spec.number)

    study = optuna_study(cluster.study.spec, "default/demo", records)

    assert status.best_trial is not None
    assert study.best_trial.number == status.best_trial.number
    assert study.best_value == status.best_trial.value
    assert study.metric_names == ["loss"]
    assert len(study.trials) == len(search)
    for optuna_trial, record in zip(study.trials, search, strict=True):
        assert optuna_trial.values == record.status.values
        assert optuna_trial.params == record.spec.params
        assert optuna_trial.user_attrs["test_loss"] == record.status.metrics["test_loss"]
    rerun_counts = {t.number: len(t.user_attrs.get("reevaluations", [])) for t in study.trials}
    assert sum(rerun_counts.values()) == len(records) - len(search) == 9  # 3 best x 3 repeats


def test_intermediate_values_round_trip() -> None:
    def reporting(record: object) -> PodScript:
        return PodScript(end_after=5, reports=((1, 1, 3.0), (2, 2, 2.0)), final={"loss": 1.5})

    spec = study_spec(budget={"maxTrials": 3})
    cluster = SimulatedCluster.of(spec, reporting)
    cluster.run()
    study = optuna_study(spec, "default/demo", list(cluster.trials.values()))

    for optuna_trial in study.trials:
        record = cluster.trials[f"demo-{optuna_trial.number}"]
        expected = {iv.step: iv.value for iv in record.status.intermediate_values}
        assert optuna_trial.intermediate_values == expected
        assert not any(math.isnan(v) for v in optuna_trial.intermediate_values.values())

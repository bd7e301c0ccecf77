"""The engine's behaviour: the search space, warm start, pruners, several objectives, grid
exhaustion, importances, and the bookkeeping the controller relies on."""

from __future__ import annotations

import math
from typing import Any

import pytest

from kubetune.engine import Engine
from kubetune.engine import samplers as samplers_module
from kubetune.spec.trial import TrialState
from tests.factories import study_spec
from tests.unit.test_engine_rebuild import (
    CONDITIONAL_SPACE,
    GRID_SPACE,
    PLAIN_SPACE,
    STUDY,
    TWO_OBJECTIVES,
    Simulation,
)


def engine_for(**spec: Any) -> Engine:
    return Engine(study_spec(**spec), STUDY, 99)


def test_params_come_in_search_space_order_with_conditions_and_fixed_values() -> None:
    engine = engine_for(algorithm={"name": "random", "seed": 1}, search_space=CONDITIONAL_SPACE)
    optimizers = set()
    for _ in range(30):
        params = engine.ask().params
        optimizers.add(params["optimizer"])
        expected = ["x", "y", "optimizer", "momentum", "epochs"]
        if params["optimizer"] != "sgd":
            expected.remove("momentum")
        assert list(params) == expected
        assert params["epochs"] == 3
        assert isinstance(params["x"], float)
        assert isinstance(params["y"], int)
        assert -10.0 <= params["x"] <= 10.0
    assert optimizers == {"sgd", "adam"}


def test_categorical_booleans_and_numbers_stay_apart() -> None:
    space = [
        {"name": "flag", "type": "categorical", "choices": [True, False]},
        {
            "name": "depth",
            "type": "int",
            "low": 1,
            "high": 3,
            "condition": {"parameter": "flag", "values": [True]},
        },
    ]
    engine = engine_for(algorithm={"name": "random", "seed": 2}, search_space=space)
    for _ in range(20):
        params = engine.ask().params
        assert type(params["flag"]) is bool
        assert ("depth" in params) is params["flag"]


def test_warm_start_configurations_come_first_and_results_inform_without_numbers() -> None:
    engine = engine_for(
        algorithm={"name": "tpe", "seed": 3},
        search_space=PLAIN_SPACE,
        warm_start={
            "configurations": [{"x": 1.0, "y": 2, "lr": 0.01}, {"x": -1.0}],
            "results": [{"params": {"x": 0.0, "y": 2, "lr": 0.001}, "values": [-100.0]}],
        },
    )
    first, second, third = engine.ask(), engine.ask(), engine.ask()
    assert [first.number, second.number, third.number] == [0, 1, 2]
    assert first.params == {"x": 1.0, "y": 2, "lr": 0.01}
    assert second.params["x"] == -1.0
    assert set(second.params) == {"x", "y", "lr"}
    engine.tell(0, TrialState.SUCCEEDED, [5.0])
    # The imported result (-100) is better, but it is not a trial of this study.
    assert engine.best_numbers() == [0]


def test_median_pruner_prunes_a_clearly_bad_trial_after_startup() -> None:
    engine = engine_for(
        algorithm={"name": "random", "seed": 4},
        search_space=PLAIN_SPACE,
        pruner={"name": "median", "startupTrials": 2},
    )
    for _ in range(3):
        number = engine.ask().number
        for step in range(3):
            engine.report(number, step, 1.0 - step * 0.1)
            assert not engine.should_prune(number)
        engine.tell(number, TrialState.SUCCEEDED, [0.8])
    good, bad = engine.ask().number, engine.ask().number
    engine.report(good, 0, 0.9)
    engine.report(bad, 0, 50.0)
    assert not engine.should_prune(good)
    assert engine.should_prune(bad)


def test_threshold_pruner_prunes_past_its_bound() -> None:
    engine = engine_for(
        algorithm={"name": "random", "seed": 5},
        search_space=PLAIN_SPACE,
        pruner={"name": "threshold", "upper": 10.0},
    )
    ok, diverged = engine.ask().number, engine.ask().number
    engine.report(ok, 0, 9.0)
    engine.report(diverged, 0, 11.0)
    assert not engine.should_prune(ok)
    assert engine.should_prune(diverged)


def test_successive_halving_prunes_at_a_rung_and_writes_rung_attrs() -> None:
    engine = engine_for(
        algorithm={"name": "random", "seed": 6},
        search_space=PLAIN_SPACE,
        pruner={"name": "successiveHalving", "minResource": 1, "reductionFactor": 2},
    )
    for value in (1.0, 2.0, 3.0):
        number = engine.ask().number
        for step in range(3):
            engine.report(number, step, value)
            engine.should_prune(number)
        engine.tell(number, TrialState.SUCCEEDED, [value])
    assert "completed_rung_0" in engine.system_attrs(0)
    bad = engine.ask().number
    engine.report(bad, 0, 10.0)
    assert not engine.should_prune(bad)  # step 0 is before the first rung (minResource 1)
    engine.report(bad, 1, 10.0)
    assert engine.should_prune(bad)


def test_patience_prunes_a_trial_that_stopped_improving() -> None:
    engine = engine_for(
        algorithm={"name": "random", "seed": 7},
        search_space=PLAIN_SPACE,
        pruner={"name": "patient", "patience": 1},
    )
    number = engine.ask().number
    verdicts = []
    for step, value in enumerate([3.0, 2.0, 2.5, 2.6]):
        engine.report(number, step, value)
        verdicts.append(engine.should_prune(number))
    # Patience 1: pruned at the first step after the best (2.0) that brings no improvement.
    assert verdicts == [False, False, True, True]


def test_several_objectives_ignore_reports_and_give_the_pareto_front() -> None:
    engine = engine_for(
        algorithm={"name": "nsga2", "seed": 8},
        objective=TWO_OBJECTIVES,  # minimize loss, maximize accuracy
        search_space=PLAIN_SPACE,
        pruner={"name": "none"},
    )
    outcomes = {0: [1.0, 0.5], 1: [2.0, 0.9], 2: [3.0, 0.8], 3: [0.5, 0.1]}
    for number, values in outcomes.items():
        assert engine.ask().number == number
        engine.report(number, 0, 1.0)
        assert not engine.should_prune(number)
        engine.tell(number, TrialState.SUCCEEDED, values)
    assert engine.best_numbers() == [0, 1, 3]  # 2 is dominated by 1


def test_grid_search_asks_every_point_once_then_is_exhausted() -> None:
    engine = engine_for(algorithm={"name": "grid", "seed": 9}, search_space=GRID_SPACE)
    size = 5 * 3 * 2  # x in -1..1 step 0.5, y in 0..2, two optimizers; epochs is fixed
    seen = set()
    for i in range(size):
        assert not engine.search_space_exhausted
        suggestion = engine.ask()
        seen.add((suggestion.params["x"], suggestion.params["y"], suggestion.params["optimizer"]))
        if i % 2:
            engine.tell(suggestion.number, TrialState.SUCCEEDED, [float(i)])
    assert engine.search_space_exhausted
    for number in range(0, size, 2):
        engine.tell(number, TrialState.FAILED)  # the last tell makes Optuna call Study.stop
    assert len(seen) == size
    assert {x for x, _, _ in seen} == {-1.0, -0.5, 0.0, 0.5, 1.0}


def test_grid_rejects_a_continuous_float_and_a_partial_configuration() -> None:
    continuous = [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}]
    with pytest.raises(ValueError, match=r"spec\.searchSpace\[0\]\.step"):
        engine_for(algorithm={"name": "grid"}, search_space=continuous)
    with pytest.raises(ValueError, match=r"spec\.warmStart\.configurations\[0\].*add \['y'"):
        engine_for(
            algorithm={"name": "grid"},
            search_space=GRID_SPACE,
            warm_start={"configurations": [{"x": 0.5, "optimizer": "sgd"}]},
        )


def test_importances_cover_every_searched_parameter() -> None:
    space = [
        {"name": "x", "type": "float", "low": -10.0, "high": 10.0},
        {"name": "y", "type": "int", "low": 0, "high": 5},
        {"name": "c", "type": "categorical", "choices": ["a", "b"]},
        {"name": "epochs", "type": "fixed", "value": 3},
    ]
    engine = engine_for(algorithm={"name": "random", "seed": 10}, search_space=space)
    for _ in range(3):
        suggestion = engine.ask()
        engine.tell(suggestion.number, TrialState.SUCCEEDED, [suggestion.params["x"] ** 2])
    assert engine.importances() is None
    for _ in range(30):
        suggestion = engine.ask()
        value = suggestion.params["x"] ** 2 + 0.01 * suggestion.params["y"]
        engine.tell(suggestion.number, TrialState.SUCCEEDED, [value])
    importances = engine.importances()
    assert importances is not None
    assert set(importances) == {"x", "y", "c"}
    assert max(importances, key=importances.__getitem__) == "x"


def test_a_succeeded_trial_without_a_value_counts_as_failed_in_tell_and_rebuild() -> None:
    spec = study_spec(algorithm={"name": "random", "seed": 11}, search_space=PLAIN_SPACE)
    simulation = Simulation(Engine(spec, STUDY, 1))
    simulation.tick()
    simulation.engine.tell(0, TrialState.SUCCEEDED, [math.nan])
    simulation.trials[0].state = TrialState.SUCCEEDED
    simulation.trials[0].values = [math.nan]
    assert simulation.engine.best_numbers() == []
    records = simulation.records()
    assert simulation.engine.is_in_sync_with(records)
    assert Engine.rebuild(spec, STUDY, 1, records).best_numbers() == []


def test_sync_check_notices_new_finished_changed_and_missing_records() -> None:
    spec = study_spec(algorithm={"name": "random", "seed": 12}, search_space=PLAIN_SPACE)
    simulation = Simulation(Engine(spec, STUDY, 1))
    simulation.tick()
    records = simulation.records()
    engine = simulation.engine
    assert engine.is_in_sync_with(records)
    assert not engine.is_in_sync_with(records[1:])
    finished = records[0].model_copy(
        update={"status": records[0].status.model_copy(update={"state": TrialState.FAILED})}
    )
    assert not engine.is_in_sync_with([finished, *records[1:]])
    changed = records[0].model_copy(
        update={"spec": records[0].spec.model_copy(update={"params": {"x": 0.0}})}
    )
    assert not engine.is_in_sync_with([changed, *records[1:]])


def test_the_per_study_sampler_reseeded_per_trial_equals_a_fresh_one_per_trial(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Samplers.for_trial (reseeding one sampler) must mean what create_sampler means."""
    for algorithm, space, objective in [
        ({"name": "random", "seed": 1}, CONDITIONAL_SPACE, None),
        ({"name": "tpe", "seed": 2, "startupTrials": 3}, CONDITIONAL_SPACE, None),
        ({"name": "cmaes", "seed": 3, "populationSize": 4}, PLAIN_SPACE, None),
        ({"name": "qmc", "seed": 4, "scramble": True}, PLAIN_SPACE, None),
        ({"name": "nsga2", "seed": 5, "populationSize": 3}, CONDITIONAL_SPACE, TWO_OBJECTIVES),
        ({"name": "grid", "seed": 6}, GRID_SPACE, None),
    ]:
        spec = study_spec(algorithm=algorithm, search_space=space, objective=objective)
        objectives = len(spec.objective.metrics)
        reseeded = Simulation(Engine(spec, STUDY, 1), objectives=objectives)
        with monkeypatch.context() as patch:
            patch.setattr(
                samplers_module.Samplers,
                "for_trial",
                lambda self, n, spec=spec: samplers_module.create_sampler(
                    spec.algorithm, spec.objective, spec.search_space, n, self._seed
                ),
            )
            fresh = Simulation(Engine(spec, STUDY, 1), objectives=objectives)
            for _ in range(6):
                fresh.tick()
        for _ in range(6):
            reseeded.tick()
        assert reseeded.log == fresh.log, algorithm["name"]

"""The engine's ask+tell hot path, made cheap (see docs/benchmarks.md), must keep its meaning:
the per-trial seed rule, params as Optuna's public suggest calls give them, JSON-safe system
attributes that share nothing with the study, and tell's answers."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.samplers import RandomSampler

from kubetune.engine import Engine
from kubetune.engine.samplers import trial_seed
from kubetune.engine.study import _jsonable
from kubetune.spec.trial import TrialState
from tests.factories import study_spec
from tests.unit.test_engine_rebuild import PLAIN_SPACE, STUDY

MIXED_SPACE: list[dict[str, Any]] = [
    {"name": "lr", "type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    {"name": "dropout", "type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
    {"name": "width", "type": "int", "low": 16, "high": 512, "step": 16},
    {"name": "layers", "type": "int", "low": 1, "high": 64, "log": True},
    {"name": "flag", "type": "categorical", "choices": [True, False, 1, 0]},
    {"name": "optimizer", "type": "categorical", "choices": ["sgd", "adam"]},
    {
        "name": "momentum",
        "type": "float",
        "low": 0.0,
        "high": 0.9,
        "condition": {"parameter": "optimizer", "values": ["sgd"]},
    },
    {"name": "epochs", "type": "fixed", "value": 3},
]


def test_trial_seeds_are_splitmix64_outputs() -> None:
    # Reference outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c), upper 32 bits.
    assert [trial_seed(0, n) for n in range(3)] == [0xE220A839, 0x6E789E6A, 0x06C45D18]
    seeds = {trial_seed(2**32 - 1, n) for n in range(1000)}
    assert len(seeds) == 1000
    assert all(0 <= s < 2**32 for s in seeds)  # what numpy's RandomState.seed accepts


def test_params_equal_what_optunas_public_suggest_calls_give() -> None:
    seed = 21
    engine = Engine(
        study_spec(algorithm={"name": "random", "seed": seed}, search_space=MIXED_SPACE), STUDY, 1
    )
    bare = optuna.create_study()
    for number in range(40):
        suggestion = engine.ask()
        bare.sampler = RandomSampler(seed=trial_seed(seed, number))
        trial = bare.ask()
        expected: dict[str, Any] = {
            "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5, step=0.1),
            "width": trial.suggest_int("width", 16, 512, step=16),
            "layers": trial.suggest_int("layers", 1, 64, log=True),
            "flag": trial.suggest_categorical("flag", [True, False, 1, 0]),
            "optimizer": trial.suggest_categorical("optimizer", ["sgd", "adam"]),
        }
        if expected["optimizer"] == "sgd":
            expected["momentum"] = trial.suggest_float("momentum", 0.0, 0.9)
        expected["epochs"] = 3
        assert suggestion.params == expected
        assert [type(v) for v in suggestion.params.values()] == [type(v) for v in expected.values()]
        engine.tell(number, TrialState.SUCCEEDED, [1.0])
        bare.tell(trial, 1.0)


def test_jsonable_equals_a_json_round_trip_and_shares_no_container() -> None:
    value = {
        "text": "a",
        "number": 1,
        "ratio": 0.5,
        "flag": True,
        "none": None,
        "nested": {"list": [1, (2, 3)], "tuple": ("x", np.float64(1.5))},
        "numpy": [np.int64(7), np.array([1.0, 2.0]), np.bool_(True)],
        "keys": {1: "int key", 2.5: "float key"},
    }

    def default(o: Any) -> Any:
        return o.item() if isinstance(o, np.generic) else o.tolist()

    expected = json.loads(json.dumps(value, default=default))
    result = _jsonable(value)
    assert result == expected
    assert json.dumps(result) == json.dumps(expected)  # same types, not just equal numbers
    result["nested"]["list"].append(4)
    assert value["nested"]["list"] == [1, (2, 3)]
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        _jsonable({"bad": object()})


def test_system_attrs_are_copies_the_controller_may_change() -> None:
    engine = Engine(
        study_spec(algorithm={"name": "qmc", "seed": 3}, search_space=PLAIN_SPACE), STUDY, 1
    )
    first = engine.ask()  # QMC learns its search space from the first trial
    engine.tell(first.number, TrialState.SUCCEEDED, [1.0])
    suggestion = engine.ask()
    assert any(key.startswith("kubetune:study:qmc") for key in suggestion.system_attrs)
    stored = engine.system_attrs(suggestion.number)
    assert stored == suggestion.system_attrs
    assert json.loads(json.dumps(stored)) == stored
    suggestion.system_attrs.clear()
    stored["extra"] = 1
    assert engine.system_attrs(suggestion.number) == {
        k: v for k, v in stored.items() if k != "extra"
    }


def test_tell_keeps_the_first_final_state_and_refuses_an_active_one() -> None:
    engine = Engine(
        study_spec(algorithm={"name": "random", "seed": 4}, search_space=PLAIN_SPACE), STUDY, 1
    )
    first, second = engine.ask(), engine.ask()
    engine.tell(first.number, TrialState.SUCCEEDED, [2.0])
    engine.tell(first.number, TrialState.FAILED)  # ignored: the trial is finished
    engine.tell(second.number, TrialState.PRUNED)
    assert engine.best_numbers() == [first.number]
    with pytest.raises(ValueError, match="not a final state"):
        engine.tell(second.number, TrialState.RUNNING)

"""Restart safety: an engine rebuilt from its TuningTrial records continues exactly like one that
was never interrupted (same suggestions, same pruning decisions), sampler by sampler."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from kubetune.engine import Engine
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.trial import (
    IntermediateValue,
    TrialState,
    TuningTrial,
    TuningTrialSpec,
    TuningTrialStatus,
)
from tests.factories import study_spec

STUDY = "rebuild"
DEFAULT_SEED = 1234

CONDITIONAL_SPACE: list[dict[str, Any]] = [
    {"name": "x", "type": "float", "low": -10.0, "high": 10.0},
    {"name": "y", "type": "int", "low": 0, "high": 5},
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
PLAIN_SPACE: list[dict[str, Any]] = [
    {"name": "x", "type": "float", "low": -10.0, "high": 10.0},
    {"name": "y", "type": "int", "low": 0, "high": 5},
    {"name": "lr", "type": "float", "low": 1e-4, "high": 1e-1, "log": True},
]
GRID_SPACE: list[dict[str, Any]] = [
    {"name": "x", "type": "float", "low": -1.0, "high": 1.0, "step": 0.5},
    {"name": "y", "type": "int", "low": 0, "high": 2},
    {"name": "optimizer", "type": "categorical", "choices": ["sgd", "adam"]},
    {"name": "epochs", "type": "fixed", "value": 3},
]
TWO_OBJECTIVES = {
    "metrics": [
        {"name": "loss", "direction": "minimize"},
        {"name": "accuracy", "direction": "maximize"},
    ]
}


def loss(params: dict[str, Any]) -> float:
    value = float(params["x"]) ** 2 + (int(params["y"]) - 2) ** 2
    value += 1.0 if params.get("optimizer") == "sgd" else 0.0
    return value + float(params.get("momentum", 0.0)) + float(params.get("lr", 0.0))


@dataclass
class TrialRecord:
    """What the controller keeps of a trial (it becomes a TuningTrial)."""

    params: dict[str, Any]
    state: TrialState = TrialState.RUNNING
    values: list[float] | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    steps_done: int = 0
    system_attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Simulation:
    """Drives an engine as the controller does: parallel trials, reports, pruning, tells.

    Each tick fills free slots up to `parallelism` with new trials, then every running trial
    reports its next step (and may be pruned); trial n finishes after 2 + n % 3 steps (so
    trials overlap), every seventh one fails instead. Every answer of the engine is logged, so
    that two runs compare.
    """

    engine: Engine
    objectives: int = 1
    parallelism: int = 3
    trials: dict[int, TrialRecord] = field(default_factory=dict)
    log: list[tuple[Any, ...]] = field(default_factory=list)

    def tick(self) -> None:
        running = [n for n, t in self.trials.items() if t.state is TrialState.RUNNING]
        for _ in range(self.parallelism - len(running)):
            suggestion = self.engine.ask()
            self.trials[suggestion.number] = TrialRecord(
                params=suggestion.params, system_attrs=suggestion.system_attrs
            )
            self.log.append(("ask", suggestion.number, suggestion.params))
        for number, trial in sorted(self.trials.items()):
            if trial.state is not TrialState.RUNNING:
                continue
            step = trial.steps_done
            trial.steps_done += 1
            value = loss(trial.params) + 5.0 / (step + 1)
            if self.objectives == 1:
                self.engine.report(number, step, value)
                trial.intermediate[step] = value
                pruned = self.engine.should_prune(number)
                trial.system_attrs = self.engine.system_attrs(number)
                self.log.append(("prune?", number, step, pruned))
                if pruned:
                    self._finish(number, TrialState.PRUNED, None)
                    continue
            if trial.steps_done >= 2 + number % 3:
                if number % 7 == 6:
                    self._finish(number, TrialState.FAILED, None)
                else:
                    values = [loss(trial.params) * (i + 1) for i in range(self.objectives)]
                    self._finish(number, TrialState.SUCCEEDED, values)

    def _finish(self, number: int, state: TrialState, values: list[float] | None) -> None:
        self.engine.tell(number, state, values)
        trial = self.trials[number]
        trial.state, trial.values = state, values
        trial.system_attrs = self.engine.system_attrs(number)
        self.log.append(("tell", number, state))

    def records(self) -> list[TuningTrial]:
        """The TuningTrial objects as the API server would hand them back (through JSON)."""
        out = []
        for number, trial in sorted(self.trials.items()):
            record = TuningTrial(
                spec=TuningTrialSpec(study=STUDY, number=number, params=trial.params),
                status=TuningTrialStatus(
                    state=trial.state,
                    values=trial.values,
                    intermediate_values=[
                        IntermediateValue(step=s, value=v) for s, v in trial.intermediate.items()
                    ],
                    system_attrs=trial.system_attrs,
                ),
            )
            document = json.loads(json.dumps(record.to_manifest()))
            out.append(TuningTrial.model_validate(document))
        return out

    def resumed_with(self, engine: Engine) -> Simulation:
        return Simulation(
            engine=engine,
            objectives=self.objectives,
            parallelism=self.parallelism,
            trials=copy.deepcopy(self.trials),
        )


def assert_rebuild_continues_exactly(spec: TuningStudySpec, ticks: int, more: int) -> None:
    objectives = len(spec.objective.metrics)
    uninterrupted = Simulation(Engine(spec, STUDY, DEFAULT_SEED), objectives=objectives)
    for _ in range(ticks):
        uninterrupted.tick()
    records = uninterrupted.records()
    assert any(r.status.state is TrialState.RUNNING for r in records), "interrupt mid-flight"

    rebuilt_engine = Engine.rebuild(spec, STUDY, DEFAULT_SEED, records)
    assert rebuilt_engine.is_in_sync_with(records)
    assert rebuilt_engine.best_numbers() == uninterrupted.engine.best_numbers()
    rebuilt = uninterrupted.resumed_with(rebuilt_engine)
    for _ in range(more):
        uninterrupted.tick()
        rebuilt.tick()
    continued = uninterrupted.log[-len(rebuilt.log) :]
    assert rebuilt.log == continued
    assert len([e for e in rebuilt.log if e[0] == "ask"]) >= 2, "too few suggestions compared"


@pytest.mark.parametrize(
    ("algorithm", "space", "pruner", "objective", "ticks", "more"),
    [
        pytest.param(
            {"name": "random", "seed": 11},
            CONDITIONAL_SPACE,
            {"name": "successiveHalving", "reductionFactor": 2},
            None,
            5,
            4,
            id="random+successiveHalving",
        ),
        pytest.param({"name": "grid", "seed": 12}, GRID_SPACE, None, None, 4, 5, id="grid"),
        pytest.param(
            {"name": "tpe", "seed": 13, "startupTrials": 4},
            CONDITIONAL_SPACE,
            {"name": "median", "startupTrials": 2},
            None,
            6,
            4,
            id="tpe+median",
        ),
        pytest.param(
            {"name": "cmaes", "seed": 14, "populationSize": 4},
            PLAIN_SPACE,
            {"name": "hyperband", "reductionFactor": 2},
            None,
            6,
            5,
            id="cmaes+hyperband",
        ),
        pytest.param(
            {"name": "qmc", "seed": 15, "qmcType": "halton", "scramble": True},
            PLAIN_SPACE,
            {"name": "percentile", "percentile": 25, "startupTrials": 2},
            None,
            5,
            4,
            id="qmc+percentile",
        ),
        pytest.param(
            {"name": "qmc", "seed": 16},
            PLAIN_SPACE,
            None,
            None,
            3,
            3,
            id="qmc-sobol",
        ),
        pytest.param(
            {"name": "nsga2", "seed": 17, "populationSize": 4},
            CONDITIONAL_SPACE,
            None,
            TWO_OBJECTIVES,
            6,
            5,
            id="nsga2",
        ),
        pytest.param(
            {"name": "gp", "seed": 18, "startupTrials": 2},
            PLAIN_SPACE,
            None,
            None,
            3,
            2,
            id="gp",
        ),
    ],
)
def test_rebuilt_engine_continues_like_the_uninterrupted_one(
    algorithm: dict[str, Any],
    space: list[dict[str, Any]],
    pruner: dict[str, Any] | None,
    objective: dict[str, Any] | None,
    ticks: int,
    more: int,
) -> None:
    spec = study_spec(algorithm=algorithm, search_space=space, pruner=pruner, objective=objective)
    assert_rebuild_continues_exactly(spec, ticks, more)


def test_a_study_without_a_seed_rebuilds_exactly_from_the_default_seed() -> None:
    spec = study_spec(algorithm={"name": "tpe", "startupTrials": 2}, search_space=PLAIN_SPACE)
    assert_rebuild_continues_exactly(spec, 4, 3)


def test_rebuild_with_warm_start_continues_with_the_unused_configurations() -> None:
    spec = study_spec(
        algorithm={"name": "tpe", "seed": 19, "startupTrials": 2},
        search_space=CONDITIONAL_SPACE,
        warm_start={
            "configurations": [{"x": float(i), "optimizer": "adam"} for i in range(6)],
            "results": [
                {"params": {"x": 0.5, "y": 2, "optimizer": "adam"}, "values": [0.25]},
                {"params": {"x": 3.0, "y": 1, "optimizer": "sgd", "momentum": 0.1}, "values": [11]},
            ],
        },
    )
    uninterrupted = Simulation(Engine(spec, STUDY, DEFAULT_SEED))
    uninterrupted.tick()  # trials 0-2 use configurations 0-2
    records = uninterrupted.records()
    rebuilt = uninterrupted.resumed_with(Engine.rebuild(spec, STUDY, DEFAULT_SEED, records))
    for _ in range(5):
        uninterrupted.tick()
        rebuilt.tick()
    assert rebuilt.log == uninterrupted.log[-len(rebuilt.log) :]
    asked = {e[1]: e[2] for e in rebuilt.log if e[0] == "ask"}
    assert [asked[n]["x"] for n in range(3, 6)] == [3.0, 4.0, 5.0]


def test_a_deleted_record_leaves_a_gap_that_keeps_numbers_aligned() -> None:
    spec = study_spec(algorithm={"name": "random", "seed": 20}, search_space=PLAIN_SPACE)
    uninterrupted = Simulation(Engine(spec, STUDY, DEFAULT_SEED))
    for _ in range(3):
        uninterrupted.tick()
    records = [r for r in uninterrupted.records() if r.spec.number != 1]

    engine = Engine.rebuild(spec, STUDY, DEFAULT_SEED, records)

    assert engine.is_in_sync_with(records)
    assert engine.next_number == uninterrupted.engine.next_number
    assert engine.ask().number == uninterrupted.engine.ask().number

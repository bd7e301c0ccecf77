"""The patient pruner and `patience` / `minDelta` on other pruners, through the engine.

The rule is Keras's and Lightning's EarlyStopping one: a trial is pruned once `patience` reported
steps in a row brought no improvement of at least `minDelta` over the reference (the trial's
first value, then each value that counted as an improvement). With a wrapped pruner, that pruner
decides once patience is exhausted (Optuna's PatientPruner combination).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from kubetune.engine import Engine
from kubetune.engine.pruners import EarlyStoppingPruner
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.trial import (
    IntermediateValue,
    TrialState,
    TuningTrial,
    TuningTrialSpec,
    TuningTrialStatus,
)
from tests.factories import study_spec
from tests.unit.test_engine_rebuild import PLAIN_SPACE, STUDY

MINIMIZE = {"metrics": [{"name": "loss", "direction": "minimize"}]}
MAXIMIZE = {"metrics": [{"name": "accuracy", "direction": "maximize"}]}


def spec_for(pruner: dict[str, Any], direction: str = "minimize") -> TuningStudySpec:
    return study_spec(
        algorithm={"name": "random", "seed": 21},
        search_space=PLAIN_SPACE,
        objective=MINIMIZE if direction == "minimize" else MAXIMIZE,
        pruner=pruner,
    )


def engine_for(pruner: dict[str, Any], direction: str = "minimize") -> Engine:
    return Engine(spec_for(pruner, direction), STUDY, 99)


def verdicts(engine: Engine, values: list[float], steps: list[int] | None = None) -> list[bool]:
    """should_prune after each report of a new trial's curve (the trial is left running)."""
    return verdicts_of(engine, engine.ask().number, values, steps)


def verdicts_of(
    engine: Engine, number: int, values: list[float], steps: list[int] | None = None
) -> list[bool]:
    answers = []
    for step, value in zip(steps or range(len(values)), values, strict=True):
        engine.report(number, step, value)
        answers.append(engine.should_prune(number))
    return answers


def mirrored(values: list[float], direction: str) -> list[float]:
    """A minimizing curve as the same curve for `direction` (negated for maximize)."""
    return values if direction == "minimize" else [-v for v in values]


BOTH = pytest.mark.parametrize("direction", ["minimize", "maximize"])


@BOTH
@pytest.mark.parametrize("patience", [1, 2, 3])
def test_a_plateau_is_pruned_after_exactly_patience_steps(direction: str, patience: int) -> None:
    engine = engine_for({"name": "patient", "patience": patience, "minDelta": 0.01}, direction)
    answers = verdicts(engine, mirrored([1.0] * 6, direction))
    assert answers == [False] * patience + [True] * (6 - patience)


def test_every_flat_trial_of_a_study_is_pruned() -> None:
    # Optuna's PatientPruner prunes none of these (it waits for values to get worse by minDelta).
    engine = engine_for({"name": "patient", "patience": 2, "minDelta": 0.01})
    pruned = 0
    for trial in range(8):
        number = engine.ask().number
        for step in range(6):
            engine.report(number, step, 0.5 + trial * 0.125)
            if engine.should_prune(number):
                engine.tell(number, TrialState.PRUNED)
                pruned += 1
                assert step == 2
                break
        else:
            engine.tell(number, TrialState.SUCCEEDED, [0.5])
    assert pruned == 8


@BOTH
def test_a_worsening_curve_is_pruned(direction: str) -> None:
    engine = engine_for({"name": "patient", "patience": 2, "minDelta": 0.01}, direction)
    answers = verdicts(engine, mirrored([1.0, 2.0, 3.0, 4.0], direction))
    assert answers == [False, False, True, True]


@BOTH
def test_a_curve_improving_by_more_than_min_delta_is_never_pruned(direction: str) -> None:
    engine = engine_for({"name": "patient", "patience": 1, "minDelta": 0.05}, direction)
    answers = verdicts(engine, mirrored([1.0 - 0.1 * step for step in range(12)], direction))
    assert not any(answers)


@BOTH
def test_an_improvement_smaller_than_min_delta_does_not_reset_the_count(direction: str) -> None:
    engine = engine_for({"name": "patient", "patience": 2, "minDelta": 0.5}, direction)
    # Each step is better than the last, but by 0.125 (and 0.25 in all) only.
    answers = verdicts(engine, mirrored([8.0, 7.875, 7.75], direction))
    assert answers == [False, False, True]


@BOTH
def test_small_gains_add_up_against_the_reference_until_they_reach_min_delta(
    direction: str,
) -> None:
    engine = engine_for({"name": "patient", "patience": 2, "minDelta": 0.5}, direction)
    # 7.5 is 0.5 better than the reference 8 (though only 0.25 better than 7.75): an improvement
    # of exactly minDelta counts, and it resets the count; so does 7.0 against 7.5.
    curve = [8.0, 7.75, 7.5, 7.25, 7.0, 7.0, 7.0]
    answers = verdicts(engine, mirrored(curve, direction))
    assert answers == [False, False, False, False, False, False, True]


@BOTH
def test_with_min_delta_zero_any_strict_improvement_counts(direction: str) -> None:
    engine = engine_for({"name": "patient", "patience": 1}, direction)
    improving = [3.0 - 0.001 * step for step in range(8)]
    assert not any(verdicts(engine, mirrored(improving, direction)))
    # An equal value is no improvement.
    assert verdicts(engine, mirrored([3.0, 2.0, 2.0], direction)) == [False, False, True]


@BOTH
def test_a_value_worse_than_the_best_is_no_improvement_even_if_better_than_the_last(
    direction: str,
) -> None:
    engine = engine_for({"name": "patient", "patience": 2, "minDelta": 0.1}, direction)
    answers = verdicts(engine, mirrored([1.0, 3.0, 2.0, 1.5], direction))
    assert answers == [False, False, True, True]


def test_the_direction_decides_what_is_better() -> None:
    # A falling curve improves when minimizing and gets worse when maximizing.
    falling = [4.0, 3.0, 2.0, 1.0]
    options = {"name": "patient", "patience": 2, "minDelta": 0.5}
    assert verdicts(engine_for(options, "minimize"), falling) == [False] * 4
    assert verdicts(engine_for(options, "maximize"), falling) == [False, False, True, True]


def test_patience_zero_prunes_at_the_first_step_without_improvement() -> None:
    engine = engine_for({"name": "patient", "patience": 0, "minDelta": 0.5})
    assert verdicts(engine, [3.0, 2.0, 1.75]) == [False, False, True]


def test_steps_count_as_reported_not_by_their_numbers() -> None:
    # A thinned record keeps every tenth step: three reports are still three steps.
    engine = engine_for({"name": "patient", "patience": 2, "minDelta": 0.01})
    assert verdicts(engine, [1.0, 1.0, 1.0], steps=[0, 10, 20]) == [False, False, True]


def test_a_nan_value_is_never_an_improvement() -> None:
    engine = engine_for({"name": "patient", "patience": 2, "minDelta": 0.01})
    assert verdicts(engine, [1.0, math.nan, math.nan]) == [False, False, True]
    # The first finite value is the reference.
    assert verdicts(engine, [math.nan, 1.0, 0.5, 0.5]) == [False, False, False, False]


def median_engine(direction: str) -> Engine:
    """A median pruner with patience 2, after one completed trial whose every step is 1."""
    engine = engine_for(
        {"name": "median", "startupTrials": 1, "patience": 2, "minDelta": 0.01}, direction
    )
    number = engine.ask().number
    for step in range(5):
        engine.report(number, step, mirrored([1.0], direction)[0])
    engine.tell(number, TrialState.SUCCEEDED, mirrored([1.0], direction))
    return engine


@BOTH
def test_wrapping_a_pruner_prunes_when_patience_is_exhausted_and_it_agrees(
    direction: str,
) -> None:
    engine = median_engine(direction)
    # Worse than the median at every step, but patience holds the median back for 2 steps.
    answers = verdicts(engine, mirrored([5.0, 5.0, 5.0, 5.0], direction))
    assert answers == [False, False, True, True]


@BOTH
def test_wrapping_a_pruner_keeps_a_plateau_that_pruner_would_keep(direction: str) -> None:
    engine = median_engine(direction)
    # Patience is exhausted at step 2, but the plateau is better than the median.
    answers = verdicts(engine, mirrored([0.5, 0.5, 0.5, 0.5, 0.5], direction))
    assert not any(answers)


@BOTH
def test_wrapping_a_pruner_keeps_an_improving_trial_that_pruner_would_prune(
    direction: str,
) -> None:
    engine = median_engine(direction)
    # Worse than the median throughout, but improving by more than minDelta at every step.
    answers = verdicts(engine, mirrored([9.0, 8.0, 7.0, 6.0, 5.0], direction))
    assert not any(answers)
    # Without patience the median pruner alone prunes that curve at once.
    alone = engine_for({"name": "median", "startupTrials": 1}, direction)
    number = alone.ask().number
    for step in range(2):
        alone.report(number, step, mirrored([1.0], direction)[0])
    alone.tell(number, TrialState.SUCCEEDED, mirrored([1.0], direction))
    assert verdicts(alone, mirrored([9.0, 8.0], direction)) == [True, True]


def test_patience_builds_the_keras_rule_pruner_for_patient_and_wrapped_pruners() -> None:
    patient = engine_for({"name": "patient", "patience": 3, "minDelta": 0.25})
    pruner = patient._study.pruner
    assert isinstance(pruner, EarlyStoppingPruner)
    assert (pruner.wrapped_pruner, pruner.patience, pruner.min_delta) == (None, 3, 0.25)
    median = engine_for({"name": "median", "patience": 1})._study.pruner
    assert isinstance(median, EarlyStoppingPruner)
    assert median.min_delta == 0.0
    assert type(median.wrapped_pruner).__name__ == "MedianPruner"


def record(number: int, params: dict[str, Any], values: list[float], attrs: Any) -> TuningTrial:
    """A running trial's record as the API server hands it back (through JSON)."""
    trial = TuningTrial(
        spec=TuningTrialSpec(study=STUDY, number=number, params=params),
        status=TuningTrialStatus(
            state=TrialState.RUNNING,
            intermediate_values=[
                IntermediateValue(step=step, value=value) for step, value in enumerate(values)
            ],
            system_attrs=attrs,
        ),
    )
    return TuningTrial.model_validate(json.loads(json.dumps(trial.to_manifest())))


def test_a_rebuilt_engine_counts_the_steps_in_the_records() -> None:
    pruner = {"name": "patient", "patience": 2, "minDelta": 0.01}
    engine = engine_for(pruner)
    suggestion = engine.ask()
    values = [2.0, 1.0, 1.0, 1.0]  # the records hold one step without improvement
    assert verdicts_of(engine, suggestion.number, values[:3]) == [False, False, False]
    records = [record(0, suggestion.params, values[:3], engine.system_attrs(0))]

    rebuilt = Engine.rebuild(spec_for(pruner), STUDY, 99, records)
    assert not rebuilt.should_prune(0)
    rebuilt.report(0, 3, values[3])
    engine.report(0, 3, values[3])
    assert rebuilt.should_prune(0)
    assert engine.should_prune(0)

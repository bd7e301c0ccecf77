"""The measured cases of issue 13: manifests whose checks used to take minutes or raise
(quadratic duplicate detection, decimal.DivisionImpossible, numpy and timedelta overflow, grids
past 10^7 points, integers past int64) each become a Problem naming the field, quickly, through
both parse_study and `kubetune validate`'s validate_text."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import yaml

from kubetune.spec import values
from kubetune.spec.bounds import MAX_CHOICES
from kubetune.spec.manifests import parse_study, validate_text
from kubetune.spec.rules import check_study_spec
from kubetune.spec.search_space import Parameter, ParameterType
from kubetune.spec.study import TuningStudy
from tests.localcluster.conftest import REPO

GRID = yaml.safe_load((REPO / "examples" / "grid.yaml").read_text())


def grid(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = copy.deepcopy(GRID)
    for index, fields in changes.items():
        document["spec"]["searchSpace"][int(index.removeprefix("p"))].update(fields)
    return document


def paths(document: dict[str, Any]) -> list[str]:
    """The fields parse_study names (within 2 s) and validate_text too, checked to agree."""
    started = time.monotonic()
    _, problems = parse_study(document)
    assert time.monotonic() - started < 2.0
    (report,) = validate_text(json.dumps(document), "<test>")
    assert [p.path for p in report.problems] == [p.path for p in problems]
    return [p.path for p in problems]


CASES = {
    "a float step over a huge range": (
        grid(p0={"low": -1e300, "high": 1e300, "step": 1e-300}),
        ["spec.searchSpace[0].low", "spec.searchSpace[0].high"],
    ),
    "a range of +-1e308": (
        grid(p0={"low": -1e308, "high": 1e308}),
        ["spec.searchSpace[0].low", "spec.searchSpace[0].high"],
    ),
    "an int range past int64": (
        grid(p1={"low": 0, "high": 2**70}),
        ["spec.searchSpace[1].high"],
    ),
    "a trialTimeout of 99999999999999h": (
        {**GRID, "spec": {**GRID["spec"], "budget": {"trialTimeout": "99999999999999h"}}},
        ["spec.budget.trialTimeout"],
    ),
    "a grid of more than 10^7 points": (
        grid(p0={"low": 0, "high": 1000, "step": 0.1}, p1={"low": 0, "high": 10_000, "step": 1}),
        ["spec.searchSpace"],
    ),
    "100,000 choices": (
        grid(p2={"choices": [f"c{i}" for i in range(100_000)]}),
        ["spec.searchSpace[2].choices"],
    ),
    "a study name of 64 characters": (
        {**GRID, "metadata": {"name": "n" * 64}},
        ["metadata.name"],
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_each_measured_case_is_a_problem_naming_its_field(case: str) -> None:
    document, expected = CASES[case]
    assert sorted(paths(document)) == sorted(expected)


def test_a_tiny_float_step_within_the_bounds_is_checked_exactly() -> None:
    # 2e15 / 1e-300 is a quotient of 316 digits: the default decimal context raised
    # DivisionImpossible here; now the step is found to divide the range (only the grid axis's
    # size is a problem), and a step that does not divide it is named.
    assert paths(grid(p0={"low": -1e15, "high": 1e15, "step": 1e-300})) == [
        "spec.searchSpace[0].step"
    ]
    document = grid(p0={"low": -1e15, "high": 1e15, "step": 7e-7})
    document["spec"]["algorithm"] = {"name": "tpe"}
    _, (problem,) = parse_study(document)
    assert problem.path == "spec.searchSpace[0].step"
    assert "does not divide" in problem.message


def test_duplicate_choices_are_found_in_linear_time() -> None:
    # Past the schema's bound (model_construct skips it) to measure the rule itself: 100,000
    # choices took 194 s with the quadratic scan.
    study = TuningStudy.model_validate(GRID)
    choices: list[Any] = [f"c{i}" for i in range(100_000)] + ["c7", True, 1]
    study.spec.search_space[2] = Parameter.model_construct(
        name="mode", type=ParameterType.CATEGORICAL, choices=choices, log=False
    )
    started = time.monotonic()
    problems = check_study_spec(study.spec)
    assert time.monotonic() - started < 2.0
    repeated = [p for p in problems if "repeats" in p.message]
    assert [p.path for p in repeated] == [
        "spec.searchSpace[2].choices[100000]",  # c7 again
        "spec.searchSpace[2].choices[100002]",  # 1 == true for Optuna
    ]


def test_membership_and_grid_counting_agree_with_the_engine() -> None:
    from kubetune.engine import space

    assert values.same_value is space.same_value
    assert values.value_key(True) != values.value_key(1)
    assert values.value_key(1) == values.value_key(1.0)
    parameter = Parameter(name="x", type=ParameterType.FLOAT, low=0.0, high=0.3, step=0.1)
    assert values.grid_points(parameter) == len(space.grid_values(parameter, 0)) == 4
    choices = Parameter(name="c", type=ParameterType.CATEGORICAL, choices=list(range(MAX_CHOICES)))
    assert values.grid_points(choices) == MAX_CHOICES

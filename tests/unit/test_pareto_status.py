"""A multi-objective study's result in its status: the Pareto front up to its cap, in a stated
order (first objective best first, ties by trial number), its true size, a deterministic
bestTrial, the FRONT printer column, and how `kubetune up` and the CLI print it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubetune.controller.best import best_and_front
from kubetune.engine import Engine
from kubetune.spec.bounds import MAX_PARETO_FRONT_IN_STATUS
from kubetune.spec.crd import study_crd
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.study_status import ParetoTrial, TuningStudyStatus
from kubetune.spec.trial import TrialState, TuningTrial
from kubetune.summaries import FRONT_MEMBERS_SHOWN, best_cell, front_lines
from tests.factories import study_spec, trial
from tests.simulation import PodScript, SimulatedCluster

CAP = MAX_PARETO_FRONT_IN_STATUS
FRONT = CAP + 12
"""More Pareto-optimal trials than the status lists."""


def two_objectives(first: str, second: str) -> TuningStudySpec:
    return study_spec(
        objective={
            "metrics": [
                {"name": "loss", "direction": first},
                {"name": "size", "direction": second},
            ]
        },
        algorithm={"name": "random", "seed": 3},
    )


def told(
    spec: TuningStudySpec, outcomes: dict[int, list[float]]
) -> tuple[Engine, dict[int, TuningTrial]]:
    """An engine told `outcomes` (trial number: values) and the matching trial records."""
    engine = Engine(spec, "pareto", 7)
    records = {}
    for number in sorted(outcomes):
        suggestion = engine.ask()
        assert suggestion.number == number
        engine.tell(number, TrialState.SUCCEEDED, outcomes[number])
        records[number] = trial(
            number,
            TrialState.SUCCEEDED,
            ended=1.0,
            values=outcomes[number],
            params=suggestion.params,
        )
    return engine, records


def scrambled(count: int) -> list[int]:
    """0..count-1 in an order unrelated to trial numbers (37 is prime to count)."""
    assert count % 37
    return [(n * 37) % count for n in range(count)]


# --- the cap, the order and the true size ----------------------------------------------------


def test_a_front_larger_than_the_cap_lists_the_first_cap_in_order_and_its_true_size() -> None:
    spec = two_objectives("minimize", "minimize")
    firsts = scrambled(FRONT)
    # (v, -v) for distinct v: no trial beats another in both, so every one is on the front.
    outcomes = {n: [float(v), -float(v)] for n, v in enumerate(firsts)}
    # And some dominated ones, which are not: (v + 0.5, -v + 0.5) is worse than (v, -v).
    for extra in range(5):
        outcomes[FRONT + extra] = [extra + 0.5, -extra + 0.5]
    engine, records = told(spec, outcomes)

    best, front, size = best_and_front(spec, engine, records)

    assert size == FRONT
    assert len(front) == CAP
    by_loss = sorted(range(FRONT), key=lambda n: firsts[n])  # minimize: smallest loss first
    assert [p.number for p in front] == by_loss[:CAP]
    assert [p.values[0] for p in front] == [float(v) for v in range(CAP)]
    assert all(p.number < FRONT for p in front)  # no dominated trial
    assert front[0] == ParetoTrial(name=f"demo-{by_loss[0]}", number=by_loss[0], values=[0.0, -0.0])
    # The status takes exactly that many: the cap is the schema's maxItems too.
    status = TuningStudyStatus(best_trial=best, pareto_front=front, pareto_front_size=size)
    assert status.to_manifest()["paretoFrontSize"] == FRONT


@pytest.mark.parametrize(
    ("first", "outcomes", "expected"),
    [
        # 4 is dominated by 2; 1 and 3 tie (same values, both optimal): the lower number first.
        ("minimize", {0: [3.0, 1.0], 1: [1.0, 3.0], 2: [2.0, 2.0], 3: [1.0, 3.0], 4: [4.0, 4.0]},
         [1, 3, 2, 0]),
        # The first objective maximized: the largest first. 4 is dominated by 1; 0 and 3 tie.
        ("maximize", {0: [3.0, 3.0], 1: [1.0, 1.0], 2: [2.0, 2.0], 3: [3.0, 3.0], 4: [1.0, 2.0]},
         [0, 3, 2, 1]),
    ],
    ids=["minimize", "maximize"],
)  # fmt: skip
def test_the_front_is_ordered_by_the_first_objective_best_first_ties_by_number(
    first: str, outcomes: dict[int, list[float]], expected: list[int]
) -> None:
    spec = two_objectives(first, "minimize")
    engine, records = told(spec, outcomes)
    best, front, size = best_and_front(spec, engine, records)
    assert [p.number for p in front] == expected
    assert size == len(expected)
    assert best is not None
    assert best.number == expected[0]
    assert best.values == outcomes[expected[0]]


def test_best_trial_of_several_objectives_is_the_first_of_the_front() -> None:
    spec = two_objectives("maximize", "maximize")
    outcomes = {0: [0.2, 0.9], 1: [0.9, 0.1], 2: [0.5, 0.5], 3: [0.1, 0.1]}
    engine, records = told(spec, outcomes)
    best, front, size = best_and_front(spec, engine, records)
    assert [p.number for p in front] == [1, 2, 0]  # 3 is dominated
    assert size == 3
    assert best is not None
    assert (best.number, best.name) == (front[0].number, front[0].name)
    assert best.values == [0.9, 0.1]
    assert best.value is None
    assert best.params == records[1].spec.params


def test_a_single_objective_study_keeps_its_best_trial_and_no_front() -> None:
    spec = study_spec(objective={"metrics": [{"name": "acc", "direction": "maximize"}]})
    engine, records = told(spec, {0: [0.5], 1: [0.9], 2: [0.9], 3: [0.1]})
    best, front, size = best_and_front(spec, engine, records)
    assert (front, size) == ([], 0)
    assert best is not None
    assert (best.number, best.value, best.values) == (1, 0.9, None)  # ties: the lower number


def test_no_completed_trial_gives_no_best_and_no_front() -> None:
    spec = two_objectives("minimize", "minimize")
    assert best_and_front(spec, Engine(spec, "pareto", 7), {}) == (None, [], 0)


def test_the_status_refuses_more_entries_than_the_cap() -> None:
    entry = ParetoTrial(name="t", number=0, values=[1.0, 2.0])
    TuningStudyStatus(pareto_front=[entry] * CAP)
    with pytest.raises(ValidationError):
        TuningStudyStatus(pareto_front=[entry] * (CAP + 1))


def test_a_simulated_study_with_a_large_front_writes_the_capped_ordered_front() -> None:
    spec = study_spec(
        objective={
            "metrics": [
                {"name": "loss", "direction": "minimize"},
                {"name": "size", "direction": "minimize"},
            ]
        },
        algorithm={"name": "random", "seed": 4},
        budget={"parallelism": 20, "maxTrials": FRONT},
    )

    def script(record: TuningTrial) -> PodScript:
        x = float(record.spec.params["x"])
        return PodScript(end_after=2, final={"loss": x, "size": -x})  # every trial is optimal

    cluster = SimulatedCluster.of(spec, script)
    status = cluster.run()
    assert status.pareto_front_size == FRONT
    losses = sorted(
        (t.status.values[0], t.spec.number)  # type: ignore[index]
        for t in cluster.trials.values()
    )
    assert [p.number for p in status.pareto_front] == [n for _, n in losses[:CAP]]
    assert status.best_trial is not None
    assert status.best_trial.number == losses[0][1]


# --- the documentation of the cap and the order ----------------------------------------------


def test_the_status_field_descriptions_state_the_cap_and_the_order() -> None:
    status = study_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"
    ]["properties"]
    assert status["paretoFront"]["maxItems"] == CAP
    described = status["paretoFront"]["description"]
    assert f"first {CAP}" in described
    assert "best first" in described
    assert "ties by trial number" in described
    assert "first trial of paretoFront" in status["bestTrial"]["description"]


# --- kubectl get ------------------------------------------------------------------------------


def test_kubectl_get_shows_the_front_size_next_tobest_cell() -> None:
    (version,) = study_crd()["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    names = list(columns)
    assert names.index("Front") == names.index("Best") + 1
    assert columns["Front"]["jsonPath"] == ".status.paretoFrontSize"
    assert columns["Front"]["type"] == "integer"
    assert "priority" not in columns["Front"]  # shown by a plain kubectl get, as Best is


# --- kubetune up and the command line --------------------------------------------------------


def _status(size: int, members: int) -> dict[str, Any]:
    front = [
        {"name": f"s-{n}", "number": n, "values": [0.1 * n, 1.0 - 0.1 * n]} for n in range(members)
    ]
    return {
        "bestTrial": {"name": "s-0", "number": 0, "params": {}, "values": front[0]["values"]},
        "paretoFront": front,
        "paretoFrontSize": size,
    }


def test_kubetune_up_shows_the_front_size_and_its_first_members() -> None:
    shown = best_cell(_status(FRONT, CAP))
    assert shown.startswith(f"front of {FRONT}: 0, 1 (trial 0); 0.1, 0.9 (trial 1); ")
    assert shown.endswith(f"; {FRONT - 3} more")
    assert best_cell(_status(2, 2)) == "front of 2: 0, 1 (trial 0); 0.1, 0.9 (trial 1)"


def test_kubetune_up_shows_a_single_objective_best_as_before() -> None:
    status = {"bestTrial": {"name": "s-4", "number": 4, "params": {}, "value": 0.123456}}
    assert best_cell(status) == "0.1235 (trial 4)"
    assert best_cell({}) == ""


def test_the_cli_prints_the_front_size_order_and_first_members() -> None:
    metrics = [{"name": "loss", "direction": "maximize"}, {"name": "size"}]
    status = _status(FRONT, CAP)
    front = [(m["number"], m["values"]) for m in status["paretoFront"]]
    lines = front_lines(front, FRONT, metrics)
    assert lines[0] == f"Pareto front: {FRONT} trials, best first by loss (maximize):"
    assert lines[1] == "  trial 0: loss=0, size=1"
    assert lines[2] == "  trial 1: loss=0.1, size=0.9"
    assert len(lines) == 1 + FRONT_MEMBERS_SHOWN + 1
    assert lines[-1] == (
        f"  ... and {FRONT - FRONT_MEMBERS_SHOWN} more (status.paretoFront lists the first {CAP})"
    )
    assert len(front_lines(front[:2], 2, metrics)) == 3

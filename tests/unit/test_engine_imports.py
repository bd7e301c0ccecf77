"""Trials imported from other studies (spec.warmStart.fromStudies): they inform the search
exactly as warmStart.results do, over the parameters this study searches, and a trial that does
not fit this study's search space is skipped and counted."""

from __future__ import annotations

from typing import Any

from kubetune.engine import Engine, ImportCount, ImportedTrial
from tests.factories import study_spec
from tests.unit.test_engine_rebuild import (
    CONDITIONAL_SPACE,
    DEFAULT_SEED,
    PLAIN_SPACE,
    STUDY,
    Simulation,
    loss,
)

TPE = {"name": "tpe", "seed": 8, "startupTrials": 2}
EARLIER = [
    {"x": 0.5, "y": 2, "lr": 0.001},
    {"x": -3.0, "y": 0, "lr": 0.05},
    {"x": 1.5, "y": 4, "lr": 0.0002},
    {"x": 0.2, "y": 2, "lr": 0.01},
]


def imported(params: list[dict[str, Any]], study: str = "small") -> list[ImportedTrial]:
    return [ImportedTrial(study, n, p, (loss(p),)) for n, p in enumerate(params)]


def run(engine: Engine, ticks: int = 5) -> list[tuple[Any, ...]]:
    simulation = Simulation(engine)
    for _ in range(ticks):
        simulation.tick()
    return simulation.log


def test_imported_trials_shape_the_search_exactly_like_warm_start_results() -> None:
    results = [{"params": p, "values": [loss(p)]} for p in EARLIER]
    with_results = study_spec(
        algorithm=TPE, search_space=PLAIN_SPACE, warm_start={"results": results}
    )
    plain = study_spec(algorithm=TPE, search_space=PLAIN_SPACE)

    from_results = run(Engine(with_results, STUDY, DEFAULT_SEED))
    from_imports = run(Engine(plain, STUDY, DEFAULT_SEED, imported(EARLIER)))

    assert from_imports == from_results
    assert from_imports != run(Engine(plain, STUDY, DEFAULT_SEED)), "the imports made no change"
    asked = [entry[1] for entry in from_imports if entry[0] == "ask"]
    assert asked[:3] == [0, 1, 2]  # this study's own numbers still start at 0


def test_values_this_space_cannot_take_are_skipped_and_counted() -> None:
    spec = study_spec(algorithm={"name": "random", "seed": 1}, search_space=PLAIN_SPACE)
    small = [
        {"x": 1, "y": 3.0, "lr": 0.01, "width": 64},  # JSON's 1 and 3.0; width is not here
        {"x": 20.0, "y": 1, "lr": 0.01},  # outside [-10, 10]
        {"x": 0.0, "y": 2.5},  # y is an int parameter
        {"width": 32},  # nothing this study searches
    ]
    tiny = [ImportedTrial("tiny", 0, {"x": 2.0}, (1.0, 2.0))]  # two values, one objective
    from_small = [ImportedTrial("small", n, p, (float(n),)) for n, p in enumerate(small)]
    engine = Engine(spec, STUDY, DEFAULT_SEED, [*from_small, *tiny])

    assert engine.import_counts == {
        "small": ImportCount(imported=1, skipped=3),
        "tiny": ImportCount(imported=0, skipped=1),
    }
    # The Optuna study holds the one that fits, in this study's types, before trial 0.
    (kept,) = engine._study.get_trials(deepcopy=False)
    assert kept.params == {"x": 1.0, "y": 3, "lr": 0.01}
    assert (type(kept.params["x"]), type(kept.params["y"])) == (float, int)
    assert kept.values == [0.0]
    assert engine.ask().number == 0
    assert engine.best_numbers() == []  # an imported trial is never this study's best


def test_conditions_hold_by_this_space_and_fixed_parameters_are_not_compared() -> None:
    spec = study_spec(algorithm={"name": "random", "seed": 1}, search_space=CONDITIONAL_SPACE)
    # epochs is fixed at 3 here (the other study ran 10); momentum applies to sgd only here.
    earlier = [
        {"x": 0.5, "y": 1, "optimizer": "adam", "momentum": 0.3, "epochs": 10},
        {"x": -0.5, "y": 2, "optimizer": "sgd", "momentum": 0.3, "epochs": 10},
    ]
    engine = Engine(spec, STUDY, DEFAULT_SEED, imported(earlier))

    assert engine.import_counts == {"small": ImportCount(imported=2, skipped=0)}
    adam, sgd = engine._study.get_trials(deepcopy=False)
    assert adam.params == {"x": 0.5, "y": 1, "optimizer": "adam"}
    assert sgd.params == {"x": -0.5, "y": 2, "optimizer": "sgd", "momentum": 0.3}


def test_a_rebuilt_engine_with_the_same_imports_continues_exactly() -> None:
    spec = study_spec(algorithm=TPE, search_space=PLAIN_SPACE)
    imports = imported(EARLIER)
    uninterrupted = Simulation(Engine(spec, STUDY, DEFAULT_SEED, imports))
    for _ in range(3):
        uninterrupted.tick()
    records = uninterrupted.records()

    rebuilt = uninterrupted.resumed_with(
        Engine.rebuild(spec, STUDY, DEFAULT_SEED, records, imports)
    )
    assert rebuilt.engine.is_in_sync_with(records)
    for _ in range(4):
        uninterrupted.tick()
        rebuilt.tick()

    assert rebuilt.log == uninterrupted.log[-len(rebuilt.log) :]
    assert sum(1 for entry in rebuilt.log if entry[0] == "ask") >= 2

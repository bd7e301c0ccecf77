"""The study's best trial and, with several objectives, its Pareto front, as the status shows
them.

The front's order, which `status.paretoFront`, `status.bestTrial`, `kubetune up` and
`kubetune trials` all follow: by the first objective, best first (ascending when it is
minimized, descending when it is maximized), ties by trial number. The status lists the first
MAX_PARETO_FRONT_IN_STATUS trials of that order; `paretoFrontSize` counts the whole front. The
best trial of a multi-objective study is the first of that order: the Pareto-optimal trial that
is best in the first objective.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kubetune.engine import Engine
from kubetune.spec.bounds import MAX_PARETO_FRONT_IN_STATUS
from kubetune.spec.objective import Direction
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.study_status import BestTrial, ParetoTrial
from kubetune.spec.trial import TuningTrial


def front_order(spec: TuningStudySpec, trials: Sequence[TuningTrial]) -> list[TuningTrial]:
    """`trials` (with values) in the front's order: by the first objective, best first, ties by
    trial number."""
    sign = -1.0 if spec.objective.metrics[0].direction is Direction.MAXIMIZE else 1.0

    def key(trial: TuningTrial) -> tuple[float, int]:
        return (sign * (trial.status.values or [0.0])[0], trial.spec.number)

    return sorted(trials, key=key)


def best_and_front(
    spec: TuningStudySpec, engine: Engine, trials: Mapping[int, TuningTrial]
) -> tuple[BestTrial | None, list[ParetoTrial], int]:
    """The best trial and (several objectives) the Pareto front, bounded for the status.

    Returns the best trial, the first MAX_PARETO_FRONT_IN_STATUS trials of the front in
    front_order, and the size of the whole front (0 with a single objective).
    """
    numbers = [n for n in engine.best_numbers() if n in trials and trials[n].status.values]
    if not numbers:
        return None, [], 0
    multi = spec.objective.is_multi_objective
    ordered = front_order(spec, [trials[n] for n in numbers])
    first = ordered[0]
    values = list(first.status.values or [])
    best = BestTrial(
        name=first.metadata.name or "",
        number=first.spec.number,
        params=first.spec.params,
        value=None if multi else values[0],
        values=values if multi else None,
    )
    if not multi:
        return best, [], 0
    front = [
        ParetoTrial(
            name=t.metadata.name or "", number=t.spec.number, values=list(t.status.values or [])
        )
        for t in ordered[:MAX_PARETO_FRONT_IN_STATUS]
    ]
    return best, front, len(ordered)

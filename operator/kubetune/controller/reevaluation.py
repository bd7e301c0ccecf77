"""Re-evaluation: once the search ends, the best configurations run again with new seeds, and
the one whose held-out metric is best on average is recommended (spec.reevaluation).

A validation value that won the search is an optimistic estimate: the search chose it because
it was high, on one validation set and one seed. Re-running the top configurations with fresh
seeds, and ranking them by a metric the search never saw, corrects for both.

Pure functions of the spec and the trial records:
- `seeds`: the seed each trial receives (KUBETUNE_SEED);
- `candidates`: which search trials are re-run;
- `planned_runs`: the re-runs, with their deterministic names and seeds;
- `summarize`: the status, best configuration first, and the recommendation.

The re-runs are TuningTrials with `spec.reevaluation` set. They never reach Optuna (the held-out
metric must never steer the search); everything else about them (pods, reports, timeouts, GPU
time) is that of any trial.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kubetune.controller.best import front_order
from kubetune.spec.bounds import ParameterValue
from kubetune.spec.objective import Direction
from kubetune.spec.study import TuningStudy, TuningStudySpec
from kubetune.spec.study_status import (
    MetricSummary,
    Recommendation,
    ReevaluatedConfiguration,
    ReevaluationStatus,
)
from kubetune.spec.trial import (
    MAX_SEED,
    ReevaluationRun,
    TrialState,
    TuningTrial,
    is_search_trial,
    reevaluation_trial_name,
)


def _derive(study_seed: int, *path: object) -> int:
    text = ":".join(str(part) for part in (study_seed, *path))
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) % (MAX_SEED + 1)


def trial_seed(study_seed: int, number: int) -> int:
    """The seed of search trial `number`: stable for the study (its seed, or its uid when it
    sets none), so a rebuilt or re-applied study gives each trial the same seed."""
    return _derive(study_seed, "trial", number)


def rerun_seeds(study_seed: int, number: int, repeats: int) -> list[int]:
    """The seeds of the re-runs of trial `number`'s configuration: one per repeat, each
    different from the search trial's and from the other repeats'."""
    taken = {trial_seed(study_seed, number)}
    seeds = []
    for repeat in range(repeats):
        seed = _derive(study_seed, "reevaluation", number, repeat)
        while seed in taken:  # a collision in 2**31 values: step to the next free seed
            seed = (seed + 1) % (MAX_SEED + 1)
        taken.add(seed)
        seeds.append(seed)
    return seeds


def ranking_metric(spec: TuningStudySpec) -> tuple[str, Direction]:
    """The metric single-objective configurations are ranked by, and its direction."""
    reevaluation = spec.reevaluation
    objective = spec.objective.metrics[0]
    metric = reevaluation.metric if reevaluation and reevaluation.metric else objective.name
    by_name = {m.name: m.direction for m in spec.objective.metrics}
    direction = (reevaluation.direction if reevaluation else None) or by_name.get(
        metric, objective.direction
    )
    return metric, direction


def candidates(
    spec: TuningStudySpec, trials: Iterable[TuningTrial], front: Sequence[int]
) -> list[TuningTrial]:
    """The search trials whose configurations are re-run: the `topTrials` best succeeded ones
    (ties by trial number); with several objectives, members of the Pareto front (`front`, the
    engine's numbers), spread evenly along the first objective when the front is larger."""
    if spec.reevaluation is None:
        return []
    top = spec.reevaluation.top_trials
    succeeded = [
        t
        for t in trials
        if is_search_trial(t) and t.status.state is TrialState.SUCCEEDED and t.status.values
    ]
    if not spec.objective.is_multi_objective:
        return front_order(spec, succeeded)[:top]
    on_front = set(front)
    ordered = front_order(spec, [t for t in succeeded if t.spec.number in on_front])
    if len(ordered) <= top:
        return ordered
    if top == 1:
        return ordered[:1]
    step = (len(ordered) - 1) / (top - 1)
    return [ordered[round(i * step)] for i in range(top)]


@dataclass(frozen=True)
class PlannedRun:
    """A re-run of a candidate's configuration."""

    name: str
    candidate: TuningTrial
    run: ReevaluationRun
    seed: int

    @property
    def params(self) -> Mapping[str, ParameterValue]:
        return self.candidate.spec.params


def planned_runs(
    study_name: str, study_seed: int, spec: TuningStudySpec, chosen: Sequence[TuningTrial]
) -> list[PlannedRun]:
    """Every re-run, repeat by repeat (the first repeat of every configuration before the
    second of any), so that a budget that runs out leaves each configuration with runs."""
    repeats = spec.reevaluation.repeats if spec.reevaluation else 0
    seeds = {t.spec.number: rerun_seeds(study_seed, t.spec.number, repeats) for t in chosen}
    return [
        PlannedRun(
            reevaluation_trial_name(study_name, trial.spec.number, repeat),
            trial,
            ReevaluationRun(trial=trial.spec.number, repeat=repeat),
            seeds[trial.spec.number][repeat],
        )
        for repeat in range(repeats)
        for trial in chosen
    ]


def summarize(
    spec: TuningStudySpec, chosen: Sequence[TuningTrial], runs: Iterable[TuningTrial]
) -> tuple[ReevaluationStatus, Recommendation | None]:
    """What the re-runs have shown so far: each configuration's values, mean and standard
    deviation (best first by the ranking metric's mean; several objectives: in the front's
    order), and the recommendation once one configuration has a value (single objective)."""
    by_trial: dict[int, list[TuningTrial]] = {}
    for run in runs:
        if run.spec.reevaluation is not None:
            by_trial.setdefault(run.spec.reevaluation.trial, []).append(run)
    repeats = spec.reevaluation.repeats if spec.reevaluation else 0
    configurations = []
    finished = 0
    for trial in chosen:
        mine = sorted(
            by_trial.get(trial.spec.number, []),
            key=lambda t: t.spec.reevaluation.repeat if t.spec.reevaluation else 0,
        )
        done = [t for t in mine if not t.status.holds_pod and not t.status.state.is_active]
        finished += len(done)
        configurations.append(_configuration(spec, trial, done))
    if not spec.objective.is_multi_objective:
        _, direction = ranking_metric(spec)
        configurations.sort(key=lambda c: _rank(c, direction))
    status = ReevaluationStatus(
        runs=len(chosen) * repeats, finished=finished, configurations=configurations
    )
    return status, _recommendation(spec, configurations)


def _metrics_of(spec: TuningStudySpec) -> list[tuple[str, int | None]]:
    """The metrics re-evaluated, each with the index of its objective (None: not one)."""
    names = [m.name for m in spec.objective.metrics]
    if spec.objective.is_multi_objective:
        return [(name, i) for i, name in enumerate(names)]
    metric, _ = ranking_metric(spec)
    return [(metric, names.index(metric) if metric in names else None)]


def _configuration(
    spec: TuningStudySpec, trial: TuningTrial, done: Sequence[TuningTrial]
) -> ReevaluatedConfiguration:
    metrics = _metrics_of(spec)
    reported = [
        t
        for t in done
        if t.status.state is TrialState.SUCCEEDED
        and all(name in t.status.metrics for name, _ in metrics)
    ]
    validation = trial.status.values or []
    scores = []
    for name, index in metrics:
        values = [t.status.metrics[name] for t in reported]
        scores.append(
            MetricSummary(
                metric=name,
                values=values,
                mean=statistics.fmean(values) if values else None,
                std=_std(values),
                validation_value=validation[index if index is not None else 0]
                if validation
                else None,
            )
        )
    return ReevaluatedConfiguration(
        trial=trial.spec.number,
        params=dict(trial.spec.params),
        seeds=[t.spec.seed or 0 for t in reported],
        failed_runs=len(done) - len(reported),
        scores=scores,
    )


def _std(values: Sequence[float]) -> float | None:
    if not values:
        return None
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _rank(configuration: ReevaluatedConfiguration, direction: Direction) -> tuple[float, ...]:
    """Best mean first; then the steadier (smaller std); then the lower trial number. One
    without a value comes last."""
    score = configuration.scores[0]
    if score.mean is None:
        return (1.0, 0.0, 0.0, float(configuration.trial))
    sign = -1.0 if direction is Direction.MAXIMIZE else 1.0
    return (0.0, sign * score.mean, score.std or 0.0, float(configuration.trial))


def _recommendation(
    spec: TuningStudySpec, configurations: Sequence[ReevaluatedConfiguration]
) -> Recommendation | None:
    if spec.objective.is_multi_objective or not configurations:
        return None
    best = configurations[0]
    score = best.scores[0]
    if score.mean is None:
        return None
    _, direction = ranking_metric(spec)
    gap = None
    if score.validation_value is not None and math.isfinite(score.validation_value):
        difference = score.validation_value - score.mean
        gap = difference if direction is Direction.MAXIMIZE else -difference
    return Recommendation(
        trial=best.trial,
        params=best.params,
        metric=score.metric,
        values=score.values,
        seeds=best.seeds,
        mean=score.mean,
        std=score.std or 0.0,
        validation_value=score.validation_value,
        generalization_gap=gap,
    )


def default_seed(study: TuningStudy) -> int:
    """The seed of a study that sets none: stable for the study's lifetime (its uid), so a
    rebuilt study continues exactly as before even without a seed."""
    identity = study.metadata.uid or f"{study.metadata.namespace}/{study.metadata.name}"
    return int(hashlib.sha256(identity.encode()).hexdigest()[:8], 16)


def study_seed(study: TuningStudy) -> int:
    """The seed trial seeds derive from: spec.algorithm.seed, or the default one."""
    seed = study.spec.algorithm.seed
    return default_seed(study) if seed is None else seed

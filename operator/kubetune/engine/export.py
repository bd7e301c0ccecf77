"""A TuningStudy's records as Optuna objects, for people and tools that read Optuna studies
(optuna-dashboard, optuna.visualization, `trials_dataframe`).

Pure: spec and TuningTrial records in, FrozenTrials and an in-memory `optuna.Study` out.

The Optuna study's trials are the search trials, numbered as Kubetune numbers them (a deleted
record becomes a failed trial with user attribute `deleted`, so numbers stay aligned), so that
`best_trial` is `status.bestTrial`. Re-evaluation runs are not trials of the Optuna study: as
separate trials they would compete for best trial and skew importances with configurations the
sampler never asked. Each run is attached to the trial it re-ran, as one entry of that trial's
`reevaluations` user attribute (repeat, seed, state, values, metrics, pod).

Warm-start results and imported trials are not trials of this study and are left out, as they
are from `status.bestTrial`. Fixed parameters are not searched and, like in the engine, are not
Optuna params; they are in the `fixed_params` user attribute.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.storages import InMemoryStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from kubetune.spec.objective import Direction
from kubetune.spec.search_space import ParameterType
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.trial import TuningTrial, is_search_trial

from . import space
from .study import recorded_outcome

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""datetime_start of a record that has none yet: Optuna requires one for a non-waiting trial."""


def optuna_directions(spec: TuningStudySpec) -> list[StudyDirection]:
    """The study's directions, one per objective metric."""
    return [
        StudyDirection.MAXIMIZE if m.direction is Direction.MAXIMIZE else StudyDirection.MINIMIZE
        for m in spec.objective.metrics
    ]


def frozen_trials(
    spec: TuningStudySpec, trials: Sequence[TuningTrial], first_id: int = 0
) -> list[FrozenTrial]:
    """One FrozenTrial per search trial number from 0 to the highest, in number order.

    Trial ids are `first_id + number`. A record whose params no longer fit the search space
    becomes a failed trial whose `error` user attribute says why, instead of failing the export.
    """
    search_space = space.SearchSpace(spec.search_space)
    n_objectives = len(spec.objective.metrics)
    objective_names = {m.name for m in spec.objective.metrics}
    fixed = {p.name: p.value for p in spec.search_space if p.type is ParameterType.FIXED}
    by_number = {t.spec.number: t for t in trials if is_search_trial(t)}
    reruns: dict[int, list[dict[str, Any]]] = {}
    for run in sorted(
        (t for t in trials if not is_search_trial(t)),
        key=lambda t: (t.spec.number, t.spec.reevaluation.repeat if t.spec.reevaluation else 0),
    ):
        reruns.setdefault(run.spec.number, []).append(_rerun_attrs(run))

    out: list[FrozenTrial] = []
    for number in range(max(by_number, default=-1) + 1):
        record = by_number.get(number)
        trial_id = first_id + number
        if record is None:
            out.append(_failed(number, trial_id, {"deleted": True}))
            continue
        try:
            frozen = _frozen(record, search_space, n_objectives, objective_names, trial_id)
        except ValueError as error:
            out.append(_failed(number, trial_id, {"error": str(error)}))
            continue
        if fixed:
            frozen.user_attrs["fixed_params"] = dict(fixed)
        if number in reruns:
            frozen.user_attrs["reevaluations"] = reruns[number]
        out.append(frozen)
    return out


def optuna_study(spec: TuningStudySpec, name: str, trials: Sequence[TuningTrial]) -> optuna.Study:
    """An in-memory Optuna study holding the study's search trials (see the module docstring)."""
    study = optuna.create_study(
        storage=InMemoryStorage(), study_name=name, directions=optuna_directions(spec)
    )
    # add_trials renumbers and re-ids the trials in order, which frozen_trials' numbering matches.
    study.add_trials(frozen_trials(spec, trials))
    with warnings.catch_warnings():
        # Experimental in Optuna since 3.2 and stable in use; the warning would reach users.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([m.name for m in spec.objective.metrics])
    return study


def _frozen(
    record: TuningTrial,
    search_space: space.SearchSpace,
    n_objectives: int,
    objective_names: set[str],
    trial_id: int,
) -> FrozenTrial:
    number = record.spec.number
    params = search_space.coerce_params(record.spec.params, f"trial {number}: spec.params")
    kept, dists = search_space.searched(params)
    status = record.status
    state, values, intermediate = recorded_outcome(status, n_objectives)
    start = status.start_time or record.metadata.creation_timestamp or _EPOCH
    complete = (status.completion_time or start) if state.is_finished() else None
    user_attrs: dict[str, Any] = {
        name: value for name, value in status.metrics.items() if name not in objective_names
    }
    user_attrs["kubetune_state"] = str(status.state)
    for key, value in (
        ("pod", status.pod_name),
        ("reason", status.reason),
        ("message", status.message),
        ("seed", record.spec.seed),
    ):
        if value is not None:
            user_attrs[key] = value
    return FrozenTrial(
        number=number,
        state=state,
        value=None,
        values=values,
        datetime_start=start,
        datetime_complete=complete,
        params=kept,
        distributions=dists,
        user_attrs=user_attrs,
        system_attrs=dict(status.system_attrs),
        intermediate_values=intermediate,
        trial_id=trial_id,
    )


def _failed(number: int, trial_id: int, user_attrs: dict[str, Any]) -> FrozenTrial:
    return FrozenTrial(
        number=number,
        state=OptunaState.FAIL,
        value=None,
        datetime_start=_EPOCH,
        datetime_complete=_EPOCH,
        params={},
        distributions={},
        user_attrs=user_attrs,
        system_attrs={},
        intermediate_values={},
        trial_id=trial_id,
    )


def _rerun_attrs(run: TuningTrial) -> dict[str, Any]:
    status = run.status
    assert run.spec.reevaluation is not None
    return {
        "repeat": run.spec.reevaluation.repeat,
        "seed": run.spec.seed,
        "state": str(status.state),
        "values": status.values,
        "metrics": dict(status.metrics),
        "pod": status.pod_name,
    }

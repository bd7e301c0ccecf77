"""The Optuna study behind a TuningStudy: ask, report, should_prune and tell, and rebuild.

An `Engine` holds an in-memory Optuna study that mirrors the study's TuningTrial records. The
records are the source of truth: after an operator restart `Engine.rebuild` recreates the Optuna
study from them (`optuna.trial.create_trial` + `Study.add_trial`), and the rebuilt engine makes
exactly the suggestions the old one would have made. That rests on three rules:

- Every ask is a pure function of (spec, seed, trial number, stored trials): the sampler is built
  per trial number (kubetune.engine.samplers explains the seed rule), and pruners' in-memory
  estimates are pinned in storage (kubetune.engine.pruners).
- Everything a sampler or pruner stores is persisted: `system_attrs(number)` returns the trial's
  system attributes, and the study-level attributes a sampler writes while asking a trial (QMC's
  sequence counter, NSGA's parent populations) are copied into that trial's attributes under
  `STUDY_ATTR_PREFIX` and replayed, in trial order, on rebuild.
- Trial numbers stay aligned: warm-start results, then the trials imported from other studies
  (`ImportedTrial`, in the order given), come first in the Optuna study (Kubetune's trial
  numbers are offset by their count and start at 0), a deleted record becomes a failed
  placeholder, and only the warm-start configurations not yet used are enqueued again.

Rebuilt intermediate values are the records' ones; a trial that reported more than
MAX_INTERMEDIATE_VALUES steps was thinned, so pruning decisions after a rebuild may then differ.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.importance import get_param_importances
from optuna.pruners import NopPruner
from optuna.samplers import RandomSampler
from optuna.storages import InMemoryStorage
from optuna.study import StudyDirection
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from kubetune.spec.algorithm import AlgorithmName
from kubetune.spec.bounds import ParameterValue
from kubetune.spec.objective import Direction
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.trial import TrialState, TuningTrial, TuningTrialStatus

from . import pruners, samplers, space

STUDY_ATTR_PREFIX = "kubetune:study:"
"""Trial system attribute prefix of study system attributes written while handling the trial."""

MIN_TRIALS_FOR_IMPORTANCES = 4
"""Completed trials below which importances are not computed (they would be noise)."""

_STATES: dict[TrialState, OptunaState] = {
    TrialState.PENDING: OptunaState.RUNNING,
    TrialState.RUNNING: OptunaState.RUNNING,
    TrialState.SUCCEEDED: OptunaState.COMPLETE,
    TrialState.PRUNED: OptunaState.PRUNED,
    TrialState.FAILED: OptunaState.FAIL,
    TrialState.TIMED_OUT: OptunaState.FAIL,
    TrialState.METRICS_UNAVAILABLE: OptunaState.FAIL,
    TrialState.STOPPED: OptunaState.FAIL,
}


@dataclass(frozen=True)
class Suggestion:
    """The parameters of a new trial, and what to persist in its TuningTrial status."""

    number: int
    """Kubetune's trial number (0 for the study's first trial)."""
    params: dict[str, ParameterValue]
    """Every parameter the trial receives, in searchSpace order (fixed ones included)."""
    system_attrs: dict[str, Any] = field(default_factory=dict)
    """Optuna's state for this trial, for TuningTrial.status.systemAttrs."""


@dataclass(frozen=True)
class ImportedTrial:
    """A succeeded trial of another study (spec.warmStart.fromStudies), given to the engine like
    a warm-start result: its params as that study stored them, and its objective values."""

    study: str
    number: int
    params: Mapping[str, ParameterValue]
    values: tuple[float, ...]


@dataclass(frozen=True)
class ImportCount:
    """What became of one source study's trials: imported, or skipped because a value is one
    this study's parameters cannot take or none of its parameters is searched here."""

    imported: int = 0
    skipped: int = 0


def optuna_state(
    state: TrialState, values: Sequence[float] | None, n_objectives: int
) -> OptunaState:
    """The Optuna state a Kubetune trial state becomes.

    A Succeeded trial without a full set of non-NaN values counts as failed: Optuna cannot store
    it as complete, and the engine must map a record and a tell the same way.
    """
    mapped = _STATES[state]
    if mapped is OptunaState.COMPLETE and not _complete_values(values, n_objectives):
        return OptunaState.FAIL
    return mapped


class RecordedOutcome(NamedTuple):
    """What Optuna stores of a trial's end: its state, values and intermediate values."""

    state: OptunaState
    values: list[float] | None
    intermediate: dict[int, float]


def recorded_outcome(status: TuningTrialStatus, n_objectives: int) -> RecordedOutcome:
    """A trial record's outcome as `Study.tell` would have stored it.

    Optuna keeps intermediate values of single-objective trials only, and stores a pruned
    trial with its last intermediate value (when it is a number).
    """
    state = optuna_state(status.state, status.values, n_objectives)
    intermediate = (
        {iv.step: iv.value for iv in status.intermediate_values} if n_objectives == 1 else {}
    )
    values: list[float] | None = None
    if state is OptunaState.COMPLETE:
        assert status.values is not None
        values = [float(v) for v in status.values]
    elif state is OptunaState.PRUNED and intermediate:
        last = intermediate[max(intermediate)]
        if not math.isnan(last):
            values = [last]
    return RecordedOutcome(state, values, intermediate)


def _complete_values(values: Sequence[float] | None, n_objectives: int) -> bool:
    return (
        values is not None
        and len(values) == n_objectives
        and not any(math.isnan(float(v)) for v in values)
    )


def _jsonable(value: Any) -> Any:
    """Optuna's attributes as the API server will store them: a fresh copy of JSON types only.

    The usual values (str keys, plain numbers and strings, lists, dicts) are copied directly, and
    anything else (numpy scalars and arrays, non-string keys) takes a JSON round trip; the result
    equals a JSON round trip of the whole, at a fraction of its cost (it ran on every ask).
    """
    kind = type(value)
    if kind is str or kind is float or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        if all(type(key) is str for key in value):
            return {key: _jsonable(item) for key, item in value.items()}
    elif kind is list or kind is tuple:
        return [_jsonable(item) for item in value]
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


class _Storage(InMemoryStorage):
    """In-memory storage that notes which study system attributes are written, and to what.

    Comparing the attributes before and after an ask would deep-copy them twice per ask, and
    NSGA-II's parent populations grow with the study.
    """

    def __init__(self) -> None:
        super().__init__()
        self.study_attrs_written: dict[str, Any] = {}

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        super().set_study_system_attr(study_id, key, value)
        self.study_attrs_written[key] = value


class Engine:
    """The Optuna side of one TuningStudy. Not thread-safe: one reconcile at a time."""

    def __init__(
        self,
        spec: TuningStudySpec,
        study_name: str,
        default_seed: int,
        imported: Sequence[ImportedTrial] = (),
    ) -> None:
        self._setup(spec, study_name, default_seed, (), imported)

    @classmethod
    def rebuild(
        cls,
        spec: TuningStudySpec,
        study_name: str,
        default_seed: int,
        trials: Sequence[TuningTrial],
        imported: Sequence[ImportedTrial] = (),
    ) -> Engine:
        """The engine as it was when the last of these records was written (with the same
        imported trials)."""
        engine = cls.__new__(cls)
        engine._setup(spec, study_name, default_seed, trials, imported)
        return engine

    # --- construction ------------------------------------------------------------------------

    def _setup(
        self,
        spec: TuningStudySpec,
        study_name: str,
        default_seed: int,
        records: Sequence[TuningTrial],
        imported: Sequence[ImportedTrial],
    ) -> None:
        self._spec = spec
        self._seed = spec.algorithm.seed if spec.algorithm.seed is not None else default_seed
        self._n_objectives = len(spec.objective.metrics)
        self._space = space.SearchSpace(spec.search_space)
        self._samplers = samplers.Samplers(
            spec.algorithm, spec.objective, spec.search_space, self._seed
        )
        directions = [
            StudyDirection.MAXIMIZE
            if m.direction is Direction.MAXIMIZE
            else StudyDirection.MINIMIZE
            for m in spec.objective.metrics
        ]
        self._storage = _Storage()
        self._study = optuna.create_study(
            storage=self._storage,
            sampler=RandomSampler(seed=self._seed),  # replaced before every ask and tell
            pruner=NopPruner(),
            study_name=study_name,
            directions=directions,
        )
        self._study_id = self._study._study_id
        # What the engine knows of each Kubetune trial: params and Optuna state.
        self._known: dict[int, tuple[dict[str, ParameterValue], OptunaState]] = {}
        self._trial_ids: dict[int, int] = {}

        warm_start = spec.warm_start
        results = warm_start.results if warm_start else []
        for index, result in enumerate(results):
            where = f"spec.warmStart.results[{index}]"
            if not _complete_values(result.values, self._n_objectives):
                raise ValueError(
                    f"{where}.values: give {self._n_objectives} value(s), one per objective"
                    " metric, none of them NaN"
                )
            params = self._space.coerce_params(result.params, f"{where}.params")
            kept, dists = self._space.searched(params)
            self._study.add_trial(
                optuna.trial.create_trial(
                    state=OptunaState.COMPLETE,
                    values=result.values,
                    params=kept,
                    distributions=dists,
                )
            )
        self._offset = len(results) + self._import(imported)

        by_number: dict[int, TuningTrial] = {}
        for given in records:
            if given.spec.number in by_number:
                raise ValueError(f"trial {given.spec.number} appears twice in the trial records")
            by_number[given.spec.number] = given
        self._next_number = max(by_number, default=-1) + 1
        rebuilt: list[FrozenTrial] = []
        for number in range(self._next_number):
            record = by_number.get(number)
            if record is None:
                rebuilt.append(self._placeholder())
            else:
                frozen, params = self._frozen(record)
                rebuilt.append(frozen)
                self._known[number] = (params, frozen.state)
            self._trial_ids[number] = number + self._offset
        # Added in one go, the storage's copies of the trials lie together in memory; samplers
        # that scan every trial on each ask (NSGA-II, CMA-ES, QMC) ran measurably slower over
        # copies interleaved with the records' parsed params.
        self._study.add_trials(rebuilt)
        # Replay, in trial order, what samplers and pruners wrote to the study's attributes.
        for number in sorted(by_number):
            for key, value in by_number[number].status.system_attrs.items():
                if key.startswith(STUDY_ATTR_PREFIX):
                    self._storage.set_study_system_attr(
                        self._study_id, key[len(STUDY_ATTR_PREFIX) :], value
                    )

        configurations = warm_start.configurations if warm_start else []
        for index in range(self._next_number, len(configurations)):
            where = f"spec.warmStart.configurations[{index}]"
            params = self._space.coerce_params(configurations[index], where)
            kept, _ = self._space.searched(params)
            if spec.algorithm.name is AlgorithmName.GRID:
                missing = [
                    n
                    for n in space.active_searched_names(spec.search_space, params)
                    if n not in kept
                ]
                if missing:
                    raise ValueError(
                        f"{where}: grid search needs every parameter in a configuration;"
                        f" add {missing}"
                    )
            self._study.enqueue_trial(kept)

        self._study.pruner = pruners.create_pruner(spec.pruner, self._resolved_resources())
        pruners.initialize(self._study.pruner, self._study)

    def _import(self, imported: Sequence[ImportedTrial]) -> int:
        """Add the trials of other studies that fit this one as completed trials; how many."""
        self._import_counts: dict[str, ImportCount] = {}
        frozen: list[FrozenTrial] = []
        for item in imported:
            count = self._import_counts.get(item.study, ImportCount())
            try:
                params = self._space.imported_params(item.params)
                kept, dists = self._space.searched(params)
                if not kept or not _complete_values(item.values, self._n_objectives):
                    raise ValueError("nothing to learn from")
                # create_trial refuses a value outside its distribution (range, step).
                frozen.append(
                    optuna.trial.create_trial(
                        state=OptunaState.COMPLETE,
                        values=list(item.values),
                        params=kept,
                        distributions=dists,
                    )
                )
            except ValueError:
                count = ImportCount(count.imported, count.skipped + 1)
            else:
                count = ImportCount(count.imported + 1, count.skipped)
            self._import_counts[item.study] = count
        self._study.add_trials(frozen)
        return len(frozen)

    @property
    def import_counts(self) -> dict[str, ImportCount]:
        """Per source study, in the order first given: trials imported and skipped."""
        return dict(self._import_counts)

    def _frozen(self, record: TuningTrial) -> tuple[FrozenTrial, dict[str, ParameterValue]]:
        """The Optuna trial a record becomes, and the record's params in searchSpace types."""
        number = record.spec.number
        params = self._space.coerce_params(record.spec.params, f"trial {number}: spec.params")
        kept, dists = self._space.searched(params)
        status = record.status
        outcome = recorded_outcome(status, self._n_objectives)
        frozen = optuna.trial.create_trial(
            state=outcome.state,
            values=outcome.values,
            params=kept,
            distributions=dists,
            system_attrs=dict(status.system_attrs),
            intermediate_values=outcome.intermediate,
        )
        return frozen, params

    @staticmethod
    def _placeholder() -> FrozenTrial:
        # A record a user deleted: a failed trial keeps the trial numbers aligned.
        return optuna.trial.create_trial(state=OptunaState.FAIL)

    def _resolved_resources(self) -> dict[str, Any]:
        attrs = self._storage.get_study_system_attrs(self._study_id)
        prefix = pruners.RESOLVED_PREFIX
        return {k[len(prefix) :]: v for k, v in attrs.items() if k.startswith(prefix)}

    # --- the trial lifecycle -----------------------------------------------------------------

    @property
    def is_multi_objective(self) -> bool:
        return self._n_objectives > 1

    @property
    def next_number(self) -> int:
        """The number the next ask() returns (the count of trials asked so far)."""
        return self._next_number

    def ask(self) -> Suggestion:
        """Suggest the next trial (a warm-start configuration first, while any is left)."""
        number = self._next_number
        self._study.sampler = self._samplers.for_trial(number)
        self._storage.study_attrs_written.clear()
        trial = self._study.ask()
        if trial.number != number + self._offset:
            raise RuntimeError(
                f"the Optuna study handed out trial {trial.number - self._offset}, not {number};"
                " rebuild the engine from the trial records"
            )
        params = self._space.suggest(trial)
        self._record_study_attrs(trial._trial_id)
        self._next_number = number + 1
        self._trial_ids[number] = trial._trial_id
        self._known[number] = (params, OptunaState.RUNNING)
        return Suggestion(number=number, params=params, system_attrs=self.system_attrs(number))

    def report(self, number: int, step: int, value: float) -> None:
        """Record an intermediate objective value of a running trial.

        Ignored for several objectives (Optuna cannot prune them), for a step already reported
        (as Optuna does) and once the trial is finished.
        """
        if self.is_multi_objective:
            return
        trial_id = self._trial_id(number)
        frozen = self._storage.get_trial(trial_id)
        if frozen.state.is_finished() or step in frozen.intermediate_values:
            return
        self._storage.set_trial_intermediate_value(trial_id, step, float(value))

    def should_prune(self, number: int) -> bool:
        """Whether the pruner stops this running trial now, from the values reported so far."""
        if self.is_multi_objective or isinstance(self._study.pruner, NopPruner):
            return False
        trial_id = self._trial_id(number)
        frozen = self._storage.get_trial(trial_id)
        if frozen.state is not OptunaState.RUNNING:
            return False
        self._storage.study_attrs_written.clear()
        prune = bool(self._study.pruner.prune(self._study, frozen))
        estimated = pruners.resolved_resources(self._study.pruner)
        pinned = self._resolved_resources() if estimated else {}
        for key, value in estimated.items():
            if key not in pinned:
                self._storage.set_study_system_attr(
                    self._study_id, pruners.RESOLVED_PREFIX + key, value
                )
        self._record_study_attrs(trial_id)
        return prune

    def tell(self, number: int, state: TrialState, values: Sequence[float] | None = None) -> None:
        """Finish a trial. Telling a finished trial again does nothing."""
        if not state.is_active:
            mapped = optuna_state(state, values, self._n_objectives)
        else:
            raise ValueError(f"trial {number}: cannot tell {state}, it is not a final state")
        trial_id = self._trial_id(number)
        # after_trial draws no random numbers in Optuna 5.0.0, so the sampler is not reseeded.
        self._study.sampler = self._samplers.sampler
        final = [float(v) for v in values] if mapped is OptunaState.COMPLETE and values else None
        try:
            # What Study.tell does, less the deep copy of the told trial it returns: that copy,
            # which the engine never needs, cost more than the rest of a random ask+tell.
            stored, _, _ = _tell_with_warning(
                self._study, trial_id, final, state=mapped, skip_if_finished=True
            )
        except RuntimeError:
            # GridSampler.after_trial calls Study.stop once the grid is exhausted, which raises
            # outside Study.optimize; the trial has been stored by then.
            stored = self._storage.get_trial(trial_id).state
            if not stored.is_finished():
                raise
        params = self._known[number][0] if number in self._known else {}
        self._known[number] = (params, stored)

    def system_attrs(self, number: int) -> dict[str, Any]:
        """What to persist in TuningTrial.status.systemAttrs (after ask, should_prune, tell)."""
        attrs: dict[str, Any] = _jsonable(
            self._storage.get_trial_system_attrs(self._trial_id(number))
        )
        return attrs

    def _trial_id(self, number: int) -> int:
        trial_id = self._trial_ids.get(number)
        if trial_id is None:
            raise KeyError(f"trial {number} is not known to the engine; it has {self._next_number}")
        return trial_id

    def _record_study_attrs(self, trial_id: int) -> None:
        written = self._storage.study_attrs_written
        for key, value in written.items():
            self._storage.set_trial_system_attr(trial_id, STUDY_ATTR_PREFIX + key, _jsonable(value))
        written.clear()

    # --- what the study knows ----------------------------------------------------------------

    @property
    def search_space_exhausted(self) -> bool:
        """Grid search: every grid point has been asked. Always False for other algorithms."""
        size = self._samplers.grid_size
        if size is None:
            return False
        asked = {
            t.system_attrs["grid_id"]
            for t in self._storage.get_all_trials(self._study_id, deepcopy=False)
            if "grid_id" in t.system_attrs
        }
        return len(asked) >= size

    def is_in_sync_with(self, trials: Sequence[TuningTrial]) -> bool:
        """Whether the engine knows exactly these trials: numbers, params and final states."""
        if len(trials) != len(self._known):
            return False
        for record in trials:
            known = self._known.get(record.spec.number)
            if known is None:
                return False
            params, state = known
            status = record.status
            if state is not optuna_state(status.state, status.values, self._n_objectives):
                return False
            if record.spec.params.keys() != params.keys() or not all(
                space.same_value(v, params[k]) or _same_number(v, params[k])
                for k, v in record.spec.params.items()
            ):
                return False
        return True

    def _kubetune_trials(self, states: tuple[OptunaState, ...]) -> list[FrozenTrial]:
        trials = self._storage.get_all_trials(self._study_id, deepcopy=False, states=states)
        return [t for t in trials if t.number >= self._offset]

    def best_numbers(self) -> list[int]:
        """The best trial's number, or the Pareto front's (ascending); [] before any completes.

        Ties in a single objective go to the lower trial number. The status orders the front
        itself (kubetune.controller.best.front_order: best first in the first objective).
        Warm-start results and imported trials are not trials of this study and are never best.
        """
        completed = self._kubetune_trials((OptunaState.COMPLETE,))
        if not completed:
            return []
        directions = self._study.directions
        if len(directions) == 1:
            sign = -1.0 if directions[0] is StudyDirection.MAXIMIZE else 1.0
            best = min(completed, key=lambda t: (sign * t.values[0], t.number))
            return [best.number - self._offset]
        front = _get_pareto_front_trials_by_trials(completed, directions)
        return sorted(t.number - self._offset for t in front)

    def importances(self) -> dict[str, float] | None:
        """Parameter importances (Optuna's default evaluator, PED-ANOVA), most important first.

        With several objectives the first one is the target. None with fewer than
        MIN_TRIALS_FOR_IMPORTANCES completed trials or when the evaluator cannot compute them.
        """
        completed = self._storage.get_all_trials(
            self._study_id, deepcopy=False, states=(OptunaState.COMPLETE,)
        )
        if len(completed) < MIN_TRIALS_FOR_IMPORTANCES:
            return None
        target = None
        if self.is_multi_objective:
            # PED-ANOVA explains low target values: negate a maximized first objective.
            sign = -1.0 if self._study.directions[0] is StudyDirection.MAXIMIZE else 1.0
            target = lambda t: sign * t.values[0]  # noqa: E731
        try:
            with warnings.catch_warnings():
                # "Target and region quantiles select the same set of trials": equal
                # importances, which is what the result then says.
                warnings.simplefilter("ignore", UserWarning)
                result = get_param_importances(self._study, target=target)
        except (ValueError, RuntimeError, ArithmeticError):
            return None
        return {name: float(v) for name, v in result.items()}


def _same_number(a: object, b: object) -> bool:
    # JSON may store 1.0 as 1: a float parameter's record can come back as an int.
    return (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and float(a) == float(b)
    )

"""A read-only Optuna storage serving snapshots of TuningStudies, for optuna-dashboard.

Each study's snapshot (directions, user attributes, FrozenTrials) is replaced whole, under a
lock, when the cluster changes, so a request sees a study either before or after an update.
Study ids are given in order of first sight and kept for the life of the process, also across a
study's deletion and re-creation; trial ids are `study_id * TRIAL_ID_STRIDE + number`, so they
are unique across studies and stable across updates.

Every write raises ReadOnlyStorageError, an HTTP 403 that optuna-dashboard's JSON views turn
into a response with the reason (notes, deletions, renames, tells are refused; the server goes on).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from bottle import HTTPError
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from kubetune.engine.export import frozen_trials, optuna_directions
from kubetune.spec.bounds import MAX_COUNT
from kubetune.spec.study import TuningStudy
from kubetune.spec.study_status import TuningStudyStatus
from kubetune.spec.trial import TuningTrial

TRIAL_ID_STRIDE = MAX_COUNT + 1
"""Trial ids of study `s` are `s * TRIAL_ID_STRIDE + number`; trial numbers stay below it."""


METRIC_NAMES_ATTR = "study:metric_names"
"""optuna.study.study._SYSTEM_ATTR_METRIC_NAMES (private in Optuna, so named again here)."""


class ReadOnlyStorageError(HTTPError):  # type: ignore[misc]  # bottle is untyped
    """A write through the dashboard: Kubetune's records are written by the operator only."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            403,
            f"{operation} refused: this dashboard shows Kubetune's studies read-only; change a"
            " study with kubectl (kubectl edit/delete tuningstudy)",
        )


@dataclass(frozen=True)
class StudySnapshot:
    """What the dashboard shows of one TuningStudy at one moment."""

    name: str
    """namespace/name."""
    directions: tuple[StudyDirection, ...]
    user_attrs: dict[str, Any]
    trials: tuple[FrozenTrial, ...]
    metric_names: tuple[str, ...] = ()
    """The objective metrics' names, which the dashboard shows instead of "Objective 0"."""


def snapshot_of(study: TuningStudy, trials: Sequence[TuningTrial], study_id: int) -> StudySnapshot:
    """The snapshot of a TuningStudy and its TuningTrial records, trial ids from `study_id`."""
    meta = study.metadata
    status = study.status or TuningStudyStatus()
    user_attrs: dict[str, Any] = {"phase": str(status.phase)}
    if status.message:
        user_attrs["message"] = status.message
    if status.importances is not None:
        user_attrs["importances"] = status.importances
    if status.recommendation is not None:
        user_attrs["recommendation"] = status.recommendation.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    return StudySnapshot(
        name=f"{meta.namespace}/{meta.name}",
        directions=tuple(optuna_directions(study.spec)),
        user_attrs=user_attrs,
        trials=tuple(frozen_trials(study.spec, trials, study_id * TRIAL_ID_STRIDE)),
        metric_names=tuple(m.name for m in study.spec.objective.metrics),
    )


class SnapshotStorage(BaseStorage):
    """Reads from the latest snapshots; every write raises ReadOnlyStorageError."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._snapshots: dict[int, StudySnapshot] = {}

    # --- fed by kubetune.dashboard.feed ----------------------------------------------------

    def study_id(self, name: str) -> int:
        """The id of study `name` (namespace/name), given on first sight and then kept."""
        with self._lock:
            return self._ids.setdefault(name, len(self._ids))

    def replace(self, snapshot: StudySnapshot) -> None:
        """Show this snapshot of its study from now on (its trial ids from study_id)."""
        study_id = self.study_id(snapshot.name)
        with self._lock:
            self._snapshots[study_id] = snapshot

    def remove(self, name: str) -> None:
        """Stop showing study `name` (deleted from the cluster)."""
        with self._lock:
            study_id = self._ids.get(name)
            if study_id is not None:
                self._snapshots.pop(study_id, None)

    def names(self) -> list[str]:
        with self._lock:
            return [s.name for s in self._snapshots.values()]

    # --- reads -----------------------------------------------------------------------------

    def _snapshot(self, study_id: int) -> StudySnapshot:
        with self._lock:
            snapshot = self._snapshots.get(study_id)
        if snapshot is None:
            raise KeyError(f"no study with id {study_id}")
        return snapshot

    def get_study_id_from_name(self, study_name: str) -> int:
        with self._lock:
            study_id = self._ids.get(study_name)
            if study_id is None or study_id not in self._snapshots:
                raise KeyError(f"no study named {study_name!r}")
            return study_id

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._snapshot(study_id).name

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return list(self._snapshot(study_id).directions)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return copy.deepcopy(self._snapshot(study_id).user_attrs)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return _system_attrs(self._snapshot(study_id))

    def get_all_studies(self) -> list[FrozenStudy]:
        with self._lock:
            snapshots = sorted(self._snapshots.items())
        return [
            FrozenStudy(
                study_name=s.name,
                direction=None,
                directions=list(s.directions),
                user_attrs=copy.deepcopy(s.user_attrs),
                system_attrs=_system_attrs(s),
                study_id=study_id,
            )
            for study_id, s in snapshots
        ]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        study_id, number = divmod(trial_id, TRIAL_ID_STRIDE)
        try:
            trials = self._snapshot(study_id).trials
        except KeyError:
            raise KeyError(f"no trial with id {trial_id}") from None
        if number >= len(trials):
            raise KeyError(f"no trial with id {trial_id}")
        return copy.deepcopy(trials[number])

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        trials = [t for t in self._snapshot(study_id).trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    # --- writes: refused -------------------------------------------------------------------

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> NoReturn:
        raise ReadOnlyStorageError("creating a study")

    def delete_study(self, study_id: int) -> NoReturn:
        raise ReadOnlyStorageError("deleting a study")

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> NoReturn:
        raise ReadOnlyStorageError("setting a study attribute")

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> NoReturn:
        # optuna-dashboard keeps notes, preferences and custom plots in system attributes.
        raise ReadOnlyStorageError("writing a note or a study setting")

    def create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> NoReturn:
        raise ReadOnlyStorageError("creating a trial")

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> NoReturn:
        raise ReadOnlyStorageError("setting a trial parameter")

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> NoReturn:
        raise ReadOnlyStorageError("telling a trial's result")

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> NoReturn:
        raise ReadOnlyStorageError("reporting an intermediate value")

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> NoReturn:
        raise ReadOnlyStorageError("setting a trial attribute")

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> NoReturn:
        raise ReadOnlyStorageError("writing a trial note")


def _system_attrs(snapshot: StudySnapshot) -> dict[str, Any]:
    # Where Study.set_metric_names keeps the names, which optuna-dashboard reads.
    return {METRIC_NAMES_ATTR: list(snapshot.metric_names)} if snapshot.metric_names else {}

"""spec.warmStart.fromStudies: which trials of other studies inform a study, and whether it may
start yet.

Pure, like the rest of the controller: the operator's handlers read the source studies (an
index of `study_essentials`, and their TuningTrials from the trial index) and pass them to
`StudyController.reconcile` as `SourceStudy`s.

Before the study starts, each source must exist, optimize the same objective metrics in the same
order and directions, and search a parameter this study searches too; otherwise the study is
Invalid, and the problem names the fromStudies entry. A source whose search has not ended yet
(a phase other than Completed, Failed or Reevaluating, or search trials of it still active)
makes the study wait, Pending, until a change of the source wakes it. A source that has not
started and names this study among its own sources would wait for it in turn: Invalid.

Once the study has started, its sources neither hold it back nor refuse it: a source deleted,
or replaced by an incompatible study of the same name, informs nothing more, and the WarmStart
condition says so. A running study is never abandoned because another study changed.

What is imported: each source's search trials (never a re-evaluation run: its held-out metric
must not steer the search) that Succeeded with values, in fromStudies order and then by trial
number, as `ImportedTrial`s; the engine maps them onto this study's search space. They are a
function of the sources as read, so an engine rebuilt after a restart makes the same
suggestions, and the controller rebuilds its engine when they change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubetune.engine import ImportCount, ImportedTrial
from kubetune.spec.problems import Problem
from kubetune.spec.search_space import ParameterType
from kubetune.spec.study import TuningStudy
from kubetune.spec.study_status import StudyPhase
from kubetune.spec.trial import TrialState, TuningTrial, is_search_trial

SEARCH_ENDED_PHASES = frozenset({StudyPhase.COMPLETED, StudyPhase.FAILED, StudyPhase.REEVALUATING})
"""Phases of a source whose search trials are final: a re-evaluation runs other trials."""


@dataclass(frozen=True)
class SourceStudy:
    """A study named in spec.warmStart.fromStudies, as the operator read it."""

    name: str
    document: Mapping[str, Any] | None
    """The study (its `study_essentials` suffice); None when there is no such study."""
    trials: Sequence[TuningTrial] = ()
    """Its TuningTrial records."""


@dataclass(frozen=True)
class WarmStartVerdict:
    """What the sources allow: refuse the study, let it wait, or start with these imports."""

    refused: str | None = None
    """Why the study is Invalid (its problems, each naming its fromStudies entry)."""
    waiting: str | None = None
    """What the study waits for, for its status."""
    imported: tuple[ImportedTrial, ...] = ()
    left_out: tuple[tuple[str, str], ...] = ()
    """Sources that inform nothing any more (the study had started): (name, why)."""


def source_names(document: Mapping[str, Any]) -> list[str]:
    """The names in spec.warmStart.fromStudies of a manifest as read from the API, before it is
    parsed: the studies the operator gathers for reconcile (anything else is left out)."""
    spec = document.get("spec")
    warm_start = spec.get("warmStart") if isinstance(spec, Mapping) else None
    names = warm_start.get("fromStudies") if isinstance(warm_start, Mapping) else None
    if not isinstance(names, list):
        return []
    return [name for name in names if isinstance(name, str)]


def study_essentials(body: Mapping[str, Any]) -> dict[str, Any]:
    """What `resolve` reads of a source study, for the operator's index of studies (a study's
    trial template and status can be large, and every study is indexed)."""
    metadata, spec, status = (_mapping(body.get(key)) for key in ("metadata", "spec", "status"))
    return {
        "metadata": {key: metadata.get(key) for key in ("name", "namespace", "uid")},
        "spec": {
            "objective": spec.get("objective"),
            "searchSpace": spec.get("searchSpace"),
            "warmStart": {"fromStudies": source_names(body)},
        },
        "status": {key: status.get(key) for key in ("phase", "progress")},
    }


class ImportCache:
    """The imports of each source, kept while its records are the same objects (the operator
    parses each trial version once: kubetune.k8s.cache), so that a source of thousands of
    trials is not gone through again at each reconcile (20 sources of 500 trials each took
    30 to 50 ms a reconcile, under 1 ms with this)."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple[TuningTrial, ...], tuple[ImportedTrial, ...]]] = {}

    def imports(self, source: SourceStudy) -> tuple[ImportedTrial, ...]:
        trials = tuple(source.trials)
        kept = self._kept.get(source.name)
        if (
            kept is not None
            and len(kept[0]) == len(trials)
            and all(a is b for a, b in zip(kept[0], trials, strict=True))
        ):
            return kept[1]
        imported = tuple(_succeeded(source))
        self._kept[source.name] = (trials, imported)
        return imported


def resolve(
    study: TuningStudy,
    started: bool,
    sources: Mapping[str, SourceStudy],
    cache: ImportCache | None = None,
) -> WarmStartVerdict:
    """The verdict on the study's fromStudies, given the sources by name (a name missing from
    `sources` is a study that does not exist). `started`: the study has started trials."""
    names = study.spec.warm_start.from_studies if study.spec.warm_start else []
    problems: list[Problem] = []
    waits: list[str] = []
    left_out: list[tuple[str, str]] = []
    imported: list[ImportedTrial] = []
    for index, name in enumerate(names):
        source = sources.get(name) or SourceStudy(name, None)
        problem = _incompatibility(study, index, source)
        if problem is not None:
            if started:
                left_out.append((name, problem.message))
            else:
                problems.append(problem)
            continue
        if not started:
            waiting = _search_running(source)
            if waiting is not None and _waits_for(source, study):
                problems.append(
                    Problem(
                        f"spec.warmStart.fromStudies[{index}]",
                        f"study {name} has not started and warm-starts from this study, so each "
                        "would wait for the other",
                        "create one of the two anew without the other in fromStudies",
                    )
                )
                continue
            if waiting is not None:
                waits.append(waiting)
                continue
        imported.extend(cache.imports(source) if cache is not None else _succeeded(source))
    if problems:
        return WarmStartVerdict(refused="; ".join(str(problem) for problem in problems))
    if waits:
        their = "its" if len(waits) == 1 else "their"
        return WarmStartVerdict(
            waiting=f"waiting for the search of {_join(waits)} to end: {their} trials "
            "warm-start this study (spec.warmStart.fromStudies)"
        )
    return WarmStartVerdict(imported=tuple(imported), left_out=tuple(left_out))


def imports_message(
    names: Sequence[str], counts: Mapping[str, ImportCount], left_out: Sequence[tuple[str, str]]
) -> str:
    """The WarmStart condition's message: what each source gave, in fromStudies order."""
    left = {name for name, _ in left_out}
    parts = []
    total = 0
    for name in names:
        if name in left:
            continue
        count = counts.get(name, ImportCount())
        total += count.imported
        skipped = (
            f" ({count.skipped} skipped: a value this study's search space cannot take, or "
            "no parameter it searches)"
            if count.skipped
            else ""
        )
        parts.append(f"{count.imported} of {name}{skipped}")
    text = f"{total} trials imported" + (f": {', '.join(parts)}" if parts else "")
    if left_out:
        reasons = ", ".join(f"{name} ({why})" for name, why in left_out)
        text += f"; informing nothing: {reasons}"
    return text


def _incompatibility(study: TuningStudy, index: int, source: SourceStudy) -> Problem | None:
    path = f"spec.warmStart.fromStudies[{index}]"
    name = source.name
    if source.document is None:
        return Problem(
            path,
            f"there is no TuningStudy {name} in namespace {study.metadata.namespace}",
            "create it (this study waits for its search to end), or create this study anew "
            "without it: warmStart cannot change",
        )
    spec = _mapping(source.document.get("spec"))
    theirs = _objectives(spec)
    ours = [(m.name, m.direction.value) for m in study.spec.objective.metrics]
    if theirs != ours:
        return Problem(
            path,
            f"study {name} optimizes {_describe(theirs)}; this study {_describe(ours)}",
            "warm-start only from a study with the same objective metrics, in the same order "
            "and directions",
        )
    searched = [p.name for p in study.spec.search_space if p.type is not ParameterType.FIXED]
    their_parameters = [
        str(p.get("name")) for p in _list(spec.get("searchSpace")) if isinstance(p, Mapping)
    ]
    if not set(searched) & set(their_parameters):
        return Problem(
            path,
            f"study {name} has none of the parameters this study searches (it has "
            f"{', '.join(their_parameters) or 'none'}; this study searches {', '.join(searched)})",
            "name a parameter alike in both studies, or warm-start from another study",
        )
    return None


def _search_running(source: SourceStudy) -> str | None:
    """What is still running of the source's search, for people; None when it has ended."""
    status = _mapping((source.document or {}).get("status"))
    phase = status.get("phase") or StudyPhase.PENDING.value
    active = sum(1 for t in source.trials if is_search_trial(t) and t.status.state.is_active)
    if phase in SEARCH_ENDED_PHASES and not active:
        return None
    if phase in SEARCH_ENDED_PHASES:
        # The study's status arrived before its trials' last changes (separate watches).
        return f"{source.name} ({phase}, {active} of its trials not recorded as ended yet)"
    progress = status.get("progress")
    return f"{source.name} ({phase}" + (f", {progress} trials)" if progress else ")")


def _waits_for(source: SourceStudy, study: TuningStudy) -> bool:
    """The source has not started and names this study among its own sources."""
    document = source.document or {}
    phase = _mapping(document.get("status")).get("phase") or StudyPhase.PENDING.value
    return phase == StudyPhase.PENDING.value and study.metadata.name in source_names(document)


def _succeeded(source: SourceStudy) -> list[ImportedTrial]:
    return [
        ImportedTrial(source.name, t.spec.number, t.spec.params, tuple(t.status.values))
        for t in sorted(source.trials, key=lambda t: t.spec.number)
        if is_search_trial(t) and t.status.state is TrialState.SUCCEEDED and t.status.values
    ]


def _objectives(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    metrics = _list(_mapping(spec.get("objective")).get("metrics"))
    return [
        (str(m.get("name")), str(m.get("direction") or "minimize"))
        for m in metrics
        if isinstance(m, Mapping)
    ]


def _describe(objectives: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{name} ({direction})" for name, direction in objectives) or "nothing"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []

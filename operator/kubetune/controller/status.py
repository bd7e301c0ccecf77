"""The study's status as the controller writes it: its conditions (each transition time kept
while its status holds), trial counts and importances, the ends of the search and of the study
read back from the conditions, resuming a study whose budget was raised, and the plans of a study
held back (Invalid, or waiting for the studies it warm-starts from)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from kubetune.budget import BudgetDecision, StudyEnd, assess
from kubetune.controller.best import best_and_front
from kubetune.controller.outcomes import past_retention
from kubetune.controller.plan import Event, Plan, TrialUpdate, Work
from kubetune.controller.warm_start import WarmStartVerdict, imports_message
from kubetune.engine import Engine
from kubetune.spec.study import TuningStudy
from kubetune.spec.study_status import (
    BudgetUsage,
    Condition,
    ConditionType,
    Recommendation,
    ReevaluationStatus,
    StudyConditionReason,
    StudyPhase,
    TrialCounts,
    TuningStudyStatus,
)
from kubetune.spec.trial import TrialState, TuningTrial

USAGE_REFRESH_SECONDS = 30.0
"""How old the budget usage in a study's status may get while nothing else in it changes."""
_CLOCK_FIELDS = {"gpu_hours", "money", "elapsed_seconds"}
"""The usage fields that move with the clock while trials run."""

# Importances are recomputed as trials complete, less often as a study grows (they cost
# O(trials) and change little from one trial to the next).
_IMPORTANCES_MIN_TRIALS = 5


def count_trials(trials: Sequence[TuningTrial]) -> TrialCounts:
    """The trials by state (status.trials)."""
    by_state = {state: 0 for state in TrialState}
    for trial in trials:
        by_state[trial.status.state] += 1
    return TrialCounts(
        total=len(trials),
        pending=by_state[TrialState.PENDING],
        running=by_state[TrialState.RUNNING],
        succeeded=by_state[TrialState.SUCCEEDED],
        pruned=by_state[TrialState.PRUNED],
        failed=by_state[TrialState.FAILED],
        metrics_unavailable=by_state[TrialState.METRICS_UNAVAILABLE],
        timed_out=by_state[TrialState.TIMED_OUT],
        stopped=by_state[TrialState.STOPPED],
    )


def importance_updates(
    engine: Engine, status: TuningStudyStatus, counts: TrialCounts
) -> dict[str, Any]:
    """status.importances, when they are due again (nothing otherwise)."""
    done = counts.succeeded
    last = status.importances_trials or 0
    due = (
        done >= _IMPORTANCES_MIN_TRIALS
        and done != last
        and (done < 50 or done - last >= done // 10)
    )
    if not due:
        return {}
    importances = engine.importances()
    if importances is None:
        return {}
    return {"importances": importances, "importances_trials": done}


def shown_usage(old: TuningStudyStatus, new: TuningStudyStatus) -> BudgetUsage:
    """The budget usage the new status shows. GPU time, money and elapsed seconds grow at
    every reconcile while trials run, and writing them each time was most of a study's
    status writes (and each write is a watch event for every client of the study). So while
    a study runs and nothing else in its status changes, the usage shown stays the last one
    written until it is USAGE_REFRESH_SECONDS old (`usage_due_in` wakes the study for it);
    any other change writes the usage as measured, and so does every reconcile of a study
    that has ended (its clock is stopped: the age of a measurement cannot be told). Budgets
    are enforced on the measured usage either way (`budget.assess`), never on this one."""
    shown, measured = old.budget, new.budget
    if new.phase not in (StudyPhase.RUNNING, StudyPhase.REEVALUATING):
        return measured
    if new.model_dump(exclude={"budget"}) != old.model_dump(exclude={"budget"}):
        return measured
    if measured.model_dump(exclude=_CLOCK_FIELDS) != shown.model_dump(exclude=_CLOCK_FIELDS):
        return measured
    age = measured.elapsed_seconds - shown.elapsed_seconds
    return shown if 0 <= age < USAGE_REFRESH_SECONDS else measured


def usage_due_in(shown: BudgetUsage, measured: BudgetUsage) -> float | None:
    """Seconds until a usage shown in place of the measured one is due to be refreshed
    (None when the measured one is shown)."""
    if shown == measured:
        return None
    return max(0.0, USAGE_REFRESH_SECONDS - (measured.elapsed_seconds - shown.elapsed_seconds))


def source_condition(
    conditions: Sequence[Condition], work: Work, now: datetime, generation: int | None
) -> list[Condition]:
    """The MetricsSource condition: False with the latest error, True once a read works."""
    if work.source_error is not None:
        kind, message = work.source_error
        reason = StudyConditionReason(kind.value)
        return set_condition(
            conditions, ConditionType.METRICS_SOURCE, "False", reason, message, now, generation
        )
    return set_condition(
        conditions,
        ConditionType.METRICS_SOURCE,
        "True",
        StudyConditionReason.METRICS_SOURCE_READY,
        "",
        now,
        generation,
    )


def set_condition(
    conditions: Sequence[Condition],
    kind: ConditionType,
    value: Literal["True", "False", "Unknown"],
    reason: StudyConditionReason,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Conditions with one set; its transition time changes only when its status does."""
    old = next((c for c in conditions if c.type == kind.value), None)
    since = old.last_transition_time if old is not None and old.status == value else now
    new = Condition(
        type=kind.value,
        status=value,
        reason=reason.value,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return [new if c.type == kind.value else c for c in conditions] if old else [*conditions, new]


# A study completed by a budget resumes when a spec update raises that budget, as a Katib
# experiment does when maxTrialCount is raised. Goal reached, an exhausted search space and a
# failed study are final.
RESUMABLE_REASONS = frozenset(
    {
        StudyConditionReason.MAX_TRIALS_REACHED,
        StudyConditionReason.MAX_DURATION_REACHED,
        StudyConditionReason.GPU_HOURS_EXHAUSTED,
        StudyConditionReason.MONEY_EXHAUSTED,
        StudyConditionReason.PATIENCE_EXHAUSTED,
    }
)


def may_resume(
    study: TuningStudy,
    status: TuningStudyStatus,
    end: StudyEnd,
    trials: Sequence[TuningTrial],
    now: datetime,
) -> bool:
    """Whether a completed study resumes: its budget was updated after it completed, and the
    new budget lets a trial start."""
    if status.phase is not StudyPhase.COMPLETED or end.reason not in RESUMABLE_REASONS:
        return False
    completed = next((c for c in status.conditions if c.type == ConditionType.COMPLETED), None)
    if completed is None or completed.observed_generation == study.metadata.generation:
        return False
    decision = assess(study.spec, trials, status.start_time, now)
    return decision.end is None and decision.may_start > 0


def resumed(status: TuningStudyStatus) -> TuningStudyStatus:
    """The status of a study that runs again: no completion, no Completed condition."""
    ended = (ConditionType.COMPLETED, ConditionType.SEARCH_ENDED)
    return status.model_copy(
        update={
            "phase": StudyPhase.RUNNING,
            "completion_time": None,
            "message": "",
            "conditions": [c for c in status.conditions if c.type not in ended],
            "reevaluation": None,
            "recommendation": None,
        }
    )


def search_end_of(status: TuningStudyStatus) -> StudyEnd | None:
    """Why the search ended, when it has and the re-evaluation runs (or ran)."""
    for condition in status.conditions:
        if condition.type == ConditionType.SEARCH_ENDED and condition.status == "True":
            return StudyEnd(StudyConditionReason(condition.reason), condition.message)
    return None


def search_ended(
    status: TuningStudyStatus, end: StudyEnd, now: datetime, generation: int | None
) -> TuningStudyStatus:
    """The status of a study whose search is over: the SearchEnded condition says why."""
    conditions = set_condition(
        status.conditions,
        ConditionType.SEARCH_ENDED,
        "True",
        end.reason,
        end.message,
        now,
        generation,
    )
    return status.model_copy(update={"conditions": conditions})


def recommendation_text(recommendation: Recommendation | None, progress: ReevaluationStatus) -> str:
    """The re-evaluation's outcome in one sentence (the study's message and an event)."""
    runs = (
        f"{progress.finished} re-evaluation runs of {len(progress.configurations)} configurations"
    )
    if recommendation is None:
        if progress.configurations and len(progress.configurations[0].scores) > 1:
            return f"{runs}: the means per objective are in status.reevaluation"
        return f"{runs}, and none reported its metric: no recommendation"
    text = (
        f"{runs}: trial {recommendation.trial}'s configuration is recommended, "
        f"{recommendation.metric} {recommendation.mean:.4g} ± {recommendation.std:.2g} over "
        f"{len(recommendation.values)} seeds"
    )
    if (
        recommendation.validation_value is not None
        and recommendation.generalization_gap is not None
    ):
        text += (
            f" (search value {recommendation.validation_value:.4g}, generalization gap "
            f"{recommendation.generalization_gap:+.4g})"
        )
    return text


def end_of(status: TuningStudyStatus) -> StudyEnd:
    """Why a finished study finished, read back from its conditions."""
    for condition in status.conditions:
        if (
            condition.type in (ConditionType.COMPLETED, ConditionType.FAILED)
            and condition.status == "True"
        ):
            return StudyEnd(StudyConditionReason(condition.reason), condition.message)
    return StudyEnd(StudyConditionReason.MAX_TRIALS_REACHED, status.message)


def invalid_plan(
    previous: TuningStudyStatus, document: Mapping[str, Any], message: str, now: datetime
) -> Plan:
    """The plan for a spec that cannot be run: say why, and touch no trial."""
    generation = (document.get("metadata") or {}).get("generation")
    events: tuple[Event, ...] = ()
    if previous.phase is not StudyPhase.INVALID or previous.message != message:
        events = (Event("Warning", "SpecInvalid", message),)
    conditions = set_condition(
        previous.conditions,
        ConditionType.VALID,
        "False",
        StudyConditionReason.INVALID,
        message,
        now,
        generation,
    )
    return held_plan(previous, StudyPhase.INVALID, message, generation, conditions, events)


def held_plan(
    previous: TuningStudyStatus,
    phase: StudyPhase,
    message: str,
    generation: int | None,
    conditions: list[Condition],
    events: tuple[Event, ...],
) -> Plan:
    """The plan of a study that may not run now (Invalid, or waiting): its phase, why, and
    nothing else touched."""
    status = previous.model_copy(
        update={
            "phase": phase,
            "message": message,
            "observed_generation": generation,
            "conditions": conditions,
        }
    )
    return Plan(study_status=status, events=events)


def waiting_plan(
    previous: TuningStudyStatus, document: Mapping[str, Any], message: str, now: datetime
) -> Plan:
    """The plan for a study that waits for the studies it warm-starts from: Pending, saying
    for what, and nothing started (a change of a source wakes it: kubetune.handlers)."""
    generation = (document.get("metadata") or {}).get("generation")
    old = next((c for c in previous.conditions if c.type == ConditionType.WARM_START), None)
    events: tuple[Event, ...] = ()
    if old is None or old.reason != StudyConditionReason.WAITING_FOR_STUDIES:
        # Once: the message follows the sources' progress, the event need not.
        events = (Event("Normal", "WaitingForStudies", message),)
    conditions = set_condition(
        previous.conditions,
        ConditionType.VALID,
        "True",
        StudyConditionReason.VALID,
        "",
        now,
        generation,
    )
    conditions = set_condition(
        conditions,
        ConditionType.WARM_START,
        "False",
        StudyConditionReason.WAITING_FOR_STUDIES,
        message,
        now,
        generation,
    )
    return held_plan(previous, StudyPhase.PENDING, message, generation, conditions, events)


def imports_recorded(
    study: TuningStudy,
    engine: Engine,
    warm: WarmStartVerdict,
    work: Work,
    status: TuningStudyStatus,
    now: datetime,
) -> TuningStudyStatus:
    """The WarmStart condition: what the engine imported of each source (an event when that
    changes). Nothing for a study without fromStudies."""
    names = study.spec.warm_start.from_studies if study.spec.warm_start else []
    if not names:
        return status
    message = imports_message(names, engine.import_counts, warm.left_out)
    old = next((c for c in status.conditions if c.type == ConditionType.WARM_START), None)
    if old is None or old.message != message:
        kind: Literal["Normal", "Warning"] = "Warning" if warm.left_out else "Normal"
        work.events.append(Event(kind, "WarmStartImported", message))
    conditions = set_condition(
        status.conditions,
        ConditionType.WARM_START,
        "True",
        StudyConditionReason.TRIALS_IMPORTED,
        message,
        now,
        study.metadata.generation,
    )
    return status.model_copy(update={"conditions": conditions})


BUDGET_REASONS = frozenset(
    {
        StudyConditionReason.MAX_TRIALS_REACHED,
        StudyConditionReason.MAX_DURATION_REACHED,
        StudyConditionReason.GPU_HOURS_EXHAUSTED,
        StudyConditionReason.MONEY_EXHAUSTED,
    }
)
"""Endings that mean a budget of spec.budget ran out (a BudgetExhausted event says which)."""


def build_plan(
    study: TuningStudy,
    engine: Engine | None,
    work: Work,
    status: TuningStudyStatus,
    now: datetime,
    decision: BudgetDecision | None,
    reevaluating: str | None = None,
) -> Plan:
    """The plan, with the study's status. `reevaluating`: the search is over and the
    re-evaluation runs (what to say about it)."""
    trials = sorted(work.trials.values(), key=lambda t: t.spec.number)
    counts = count_trials(trials)
    finished = counts.total - counts.pending - counts.running
    limit = study.spec.budget.max_trials
    previous_best = status.best_trial
    best, front, front_size = previous_best, status.pareto_front, status.pareto_front_size
    if engine is not None:
        best, front, front_size = best_and_front(study.spec, engine, work.trials)
    kept = {t.name for t in front} | ({best.name} if best is not None else set())
    ended = [*trials, *work.reruns.values()]
    work.delete_workloads.extend(past_retention(study, ended, work.pod_names, kept))
    events = list(work.events)
    if (
        best is not None
        and best.value is not None
        and (previous_best is None or previous_best.number != best.number)
    ):
        events.append(
            Event(
                "Normal",
                "NewBest",
                f"trial {best.number} is the new best with {best.value:.6g}",
                best.name,
            )
        )
    if front_size != status.pareto_front_size:
        events.append(Event("Normal", "ParetoFront", f"{front_size} trials on the Pareto front"))

    updates: dict[str, Any] = {
        "trials": counts,
        "progress": f"{finished}/{limit}" if limit else str(finished),
        "best_trial": best,
        "pareto_front": front,
        "pareto_front_size": front_size,
        "observed_generation": study.metadata.generation,
        "message": "",
    }
    if decision is not None:
        updates["budget"] = decision.usage
        if engine is not None:
            updates.update(importance_updates(engine, status, counts))
        conditions = set_condition(
            status.conditions,
            ConditionType.VALID,
            "True",
            StudyConditionReason.VALID,
            "",
            now,
            study.metadata.generation,
        )
        end = decision.end
        if end is not None:
            phase = StudyPhase.FAILED if end.failed else StudyPhase.COMPLETED
            kind = ConditionType.FAILED if end.failed else ConditionType.COMPLETED
            conditions = set_condition(
                conditions,
                kind,
                "True",
                end.reason,
                end.message,
                now,
                study.metadata.generation,
            )
            conditions = set_condition(
                conditions,
                ConditionType.RUNNING,
                "False",
                end.reason,
                end.message,
                now,
                study.metadata.generation,
            )
            updates.update(phase=phase, completion_time=now, message=end.message)
            if end.reason in BUDGET_REASONS:
                events.append(Event("Normal", "BudgetExhausted", end.message))
            events.append(
                Event(
                    "Warning" if end.failed else "Normal",
                    "StudyFailed" if end.failed else "StudySucceeded",
                    f"{end.reason.value}: {end.message}",
                )
            )
        else:
            if reevaluating is not None:
                phase, message = StudyPhase.REEVALUATING, reevaluating
                reason = StudyConditionReason.REEVALUATING
            else:
                running = counts.pending + counts.running > 0
                phase = StudyPhase.RUNNING if running or counts.total else StudyPhase.PENDING
                drain = decision.draining
                message = f"{drain.message}; waiting for active trials to finish" if drain else ""
                reason = drain.reason if drain else StudyConditionReason.TRIALS_RUNNING
            conditions = set_condition(
                conditions,
                ConditionType.RUNNING,
                "True",
                reason,
                message,
                now,
                study.metadata.generation,
            )
            updates.update(phase=phase, message=message)
        updates["conditions"] = conditions
    if work.source_error is not None or work.source_read:
        updates["conditions"] = source_condition(
            updates.get("conditions", status.conditions), work, now, study.metadata.generation
        )
    new_status = status.model_copy(update=updates)
    measured = new_status.budget
    new_status = new_status.model_copy(update={"budget": shown_usage(status, new_status)})
    requeue = usage_due_in(new_status.budget, measured)
    if decision is not None and decision.next_deadline is not None:
        until = max(0.0, (decision.next_deadline - now).total_seconds())
        requeue = until if requeue is None else min(requeue, until)
    for wake in [*work.wake_at, *([work.next_read] if work.next_read else [])]:
        until = max(0.0, (wake - now).total_seconds())
        requeue = until if requeue is None else min(requeue, until)
    if work.source_reads is not None:
        requeue = 0.0  # their readings are the next reconcile's input
    return Plan(
        study_status=new_status,
        trial_updates=tuple(TrialUpdate(name, s) for name, s in work.updates.items()),
        workload_kind="Job" if study.spec.trial_template.job is not None else "Pod",
        stop_workloads=tuple(
            p for p in dict.fromkeys(work.stop_workloads) if p not in work.delete_workloads
        ),
        delete_workloads=tuple(dict.fromkeys(work.delete_workloads)),
        create_trials=tuple(work.create_trials),
        new_trial_workloads=work.new_trial_workloads,
        create_workloads=tuple(work.create_workloads),
        events=tuple(events),
        requeue_after=requeue,
        source_reads=work.source_reads,
        ask_seconds=tuple(work.ask_seconds),
        measured_usage=measured,
    )

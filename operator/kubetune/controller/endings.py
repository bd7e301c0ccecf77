"""How trials end: finished with an outcome (told to the engine, cost recorded), stopped
(their pods told to end, or deleted when pending), stopped pods followed until they have
terminated, and the budget's verdict enforced on the active trials."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Literal

from kubetune.budget import (
    BudgetDecision,
)
from kubetune.controller import reevaluation
from kubetune.controller.observation import (
    PodObservation,
)
from kubetune.controller.outcomes import pod_ended, with_cost
from kubetune.controller.plan import Event, Work
from kubetune.controller.trial_job import render_trial_workload
from kubetune.controller.trial_pod import study_owner_reference
from kubetune.engine import Engine
from kubetune.spec import api
from kubetune.spec.study import ObjectMeta, TuningStudy
from kubetune.spec.trial import (
    TrialState,
    TuningTrial,
    TuningTrialSpec,
    TuningTrialStatus,
    is_search_trial,
    trial_name,
)
from kubetune.spec.values import format_params

# A stopped pod that has not terminated this long after its grace period ran out (its node does
# not answer, say) is deleted: its slot must come free some time.
STOP_ESCALATION_SECONDS = 30.0


def finish_trial(
    engine: Engine,
    work: Work,
    trial: TuningTrial,
    state: TrialState,
    reason: str,
    message: str,
    ended: datetime,
    values: list[float] | None = None,
) -> None:
    """Record how a trial ended and tell Optuna (a search trial's)."""
    updates: dict[str, Any] = {
        "state": state,
        "reason": reason,
        "message": message or None,
        "completion_time": ended,
        "values": values,
    }
    if is_search_trial(trial):
        engine.tell(trial.spec.number, state, values)
        updates["system_attrs"] = engine.system_attrs(trial.spec.number)
    status = trial.status.model_copy(update=updates)
    work.update(trial, with_cost(status, work.cost, ended))
    event_type: Literal["Normal", "Warning"] = "Warning" if state.is_failure else "Normal"
    text = f"trial {trial.spec.number} {state.value}"
    if values is not None:
        text += " with " + ", ".join(f"{v:.6g}" for v in values)
    if message:
        text += f": {message}"
    work.events.append(Event(event_type, f"Trial{state.value}", text, trial.metadata.name))


def stop_trial(
    work: Work,
    trial: TuningTrial,
    state: TrialState,
    reason: str,
    message: str,
    now: datetime,
    engine: Engine | None = None,
) -> None:
    """Stop an active trial and record why. A started pod is stopped where it is (its logs
    stay), a pending one is deleted; until the pod has terminated the trial holds its
    GPUs (pod_terminating)."""
    name = trial.metadata.name or ""
    work.create_workloads = [p for p in work.create_workloads if p["metadata"]["name"] != name]
    if engine is None:
        trial = work.update(
            trial,
            trial.status.model_copy(
                update={
                    "state": state,
                    "reason": reason,
                    "message": message,
                    "completion_time": now,
                }
            ),
        )
    else:
        finish_trial(engine, work, trial, state, reason, message, now)
        trial = work.current(trial)
    if trial.status.pod_name is None:
        return
    if trial.status.start_time is None:
        work.delete_workloads.append(trial.status.pod_name)
    else:
        work.stop_workloads.append(trial.status.pod_name)
    work.update(
        trial,
        trial.status.model_copy(update={"pod_terminating": True, "pod_end_time": None}),
    )


def follow_stopped_pod(
    work: Work, trial: TuningTrial, pod: PodObservation | None, now: datetime
) -> None:
    """A stopped trial whose pod may still run: once it has terminated (or is gone), its
    GPU time ends; a pod that outlives its grace period by far is deleted."""
    status = trial.status
    if pod is not None and status.start_time is None and pod.started_at is not None:
        status = status.model_copy(update={"start_time": pod.started_at})  # it did start
    if pod is None or pod.terminated:
        ended = (pod.terminated_at if pod is not None else None) or now
        work.update(trial, pod_ended(status, work.cost, ended))
        return
    if status is not trial.status:
        trial = work.update(trial, status)
    give_up = (status.completion_time or now) + timedelta(
        seconds=work.cost.grace_seconds + STOP_ESCALATION_SECONDS
    )
    if now >= give_up:
        work.delete_workloads.append(status.pod_name or trial.metadata.name or "")
    else:
        work.wake_at.append(give_up)


def enforce(
    study: TuningStudy,
    engine: Engine,
    work: Work,
    decision: BudgetDecision,
    now: datetime,
) -> None:
    """Apply the budget's verdict: stop what must stop, start what may start."""
    for stop in decision.trial_stops:
        trial = next(t for t in work.all() if t.metadata.name == stop.name)
        stop_trial(work, trial, stop.state, stop.reason, stop.message, now, engine)
    if decision.end is not None and decision.end.stops_running_trials:
        for trial in work.all():
            if trial.status.state.is_active:
                stop_trial(
                    work,
                    trial,
                    TrialState.STOPPED,
                    decision.end.reason.value,
                    decision.end.message,
                    now,
                    engine,
                )
    for _ in range(decision.may_start):
        if engine.search_space_exhausted:
            break
        asked = time.perf_counter()
        suggestion = engine.ask()
        work.ask_seconds.append(time.perf_counter() - asked)
        name = trial_name(study.metadata.name or "", suggestion.number)
        trial = TuningTrial(
            metadata=ObjectMeta(
                name=name,
                namespace=study.metadata.namespace,
                labels={
                    api.STUDY_LABEL: study.metadata.name or "",
                    api.TRIAL_NUMBER_LABEL: str(suggestion.number),
                },
                owner_references=[study_owner_reference(study)],
            ),
            spec=TuningTrialSpec(
                study=study.metadata.name or "",
                number=suggestion.number,
                params=suggestion.params,
                seed=reevaluation.trial_seed(reevaluation.study_seed(study), suggestion.number),
            ),
            status=TuningTrialStatus(gpus=work.cost.gpus, system_attrs=suggestion.system_attrs),
        )
        work.trials[suggestion.number] = trial
        work.create_trials.append(trial)
        work.new_trial_workloads[name] = render_trial_workload(study, trial)
        work.events.append(
            Event(
                "Normal",
                "TrialStarted",
                f"trial {suggestion.number} created with {format_params(suggestion.params)}",
                name,
            )
        )

"""The re-evaluation once the search has ended (spec.reevaluation): its runs started in
turn, and the study's plan while they go and once they are done."""

from __future__ import annotations

from datetime import datetime

from kubetune.budget import (
    BudgetDecision,
    StudyEnd,
    assess_reevaluation,
)
from kubetune.controller import reevaluation
from kubetune.controller.endings import stop_trial
from kubetune.controller.plan import Event, Plan, Work
from kubetune.controller.status import (
    build_plan,
    recommendation_text,
)
from kubetune.controller.trial_job import render_trial_workload
from kubetune.controller.trial_pod import study_owner_reference
from kubetune.engine import Engine
from kubetune.spec import api
from kubetune.spec.study import ObjectMeta, TuningStudy
from kubetune.spec.study_status import TuningStudyStatus
from kubetune.spec.trial import (
    TrialState,
    TuningTrial,
    TuningTrialSpec,
    TuningTrialStatus,
)


def reevaluate(
    study: TuningStudy,
    engine: Engine,
    work: Work,
    status: TuningStudyStatus,
    search_end: StudyEnd,
    now: datetime,
) -> Plan:
    """The search is over: re-run the best configurations with new seeds, within the
    budget, and once every re-run has ended (or none more fits) complete the study with
    the recommendation."""
    spec = study.spec
    chosen = reevaluation.candidates(spec, work.trials.values(), engine.best_numbers())
    planned = reevaluation.planned_runs(
        study.metadata.name or "", reevaluation.study_seed(study), spec, chosen
    )
    missing = [run for run in planned if run.name not in work.reruns]
    decision = assess_reevaluation(spec, work.all(), status.start_time, now, len(missing))
    for stop in decision.trial_stops:
        trial = work.reruns[stop.name]
        stop_trial(work, trial, stop.state, stop.reason, stop.message, now, engine)
    if decision.end is not None:
        for trial in list(work.reruns.values()):
            if trial.status.state.is_active:
                end = decision.end
                stop_trial(work, trial, TrialState.STOPPED, end.reason.value, end.message, now)
    for run in missing[: decision.may_start]:
        start_rerun(study, work, run)
    progress, recommendation = reevaluation.summarize(spec, chosen, work.reruns.values())
    status = status.model_copy(update={"reevaluation": progress, "recommendation": recommendation})
    not_run = len(missing) - decision.may_start
    finished = not any(t.status.holds_pod for t in work.all()) and (
        not_run == 0 or decision.end is not None or decision.draining is not None
    )
    if not finished:
        message = (
            f"the search ended ({search_end.reason.value}); re-evaluating the best "
            f"{len(chosen)} configurations: {progress.finished} of {progress.runs} runs done"
        )
        ongoing = BudgetDecision(decision.usage, 0, (), None, None, decision.next_deadline)
        return build_plan(study, engine, work, status, now, ongoing, message)
    stopped = decision.end or decision.draining
    why = f"; the re-evaluation stopped: {stopped.message}" if stopped else ""
    outcome = recommendation_text(recommendation, progress)
    work.events.append(
        Event("Normal" if recommendation else "Warning", "Recommendation", outcome + why)
    )
    end = StudyEnd(search_end.reason, f"{search_end.message}; {outcome}{why}")
    final = BudgetDecision(decision.usage, 0, (), end, None, None)
    return build_plan(study, engine, work, status, now, final)


def start_rerun(study: TuningStudy, work: Work, run: reevaluation.PlannedRun) -> None:
    """Create a re-evaluation run: a TuningTrial of the candidate's parameters with a new
    seed, and its pod."""
    number = run.candidate.spec.number
    trial = TuningTrial(
        metadata=ObjectMeta(
            name=run.name,
            namespace=study.metadata.namespace,
            labels={
                api.STUDY_LABEL: study.metadata.name or "",
                api.TRIAL_NUMBER_LABEL: str(number),
                api.REEVALUATION_LABEL: str(number),
            },
            owner_references=[study_owner_reference(study)],
        ),
        spec=TuningTrialSpec(
            study=study.metadata.name or "",
            number=number,
            params=dict(run.params),
            seed=run.seed,
            reevaluation=run.run,
        ),
        status=TuningTrialStatus(gpus=work.cost.gpus),
    )
    work.add(trial)
    work.create_trials.append(trial)
    work.new_trial_workloads[run.name] = render_trial_workload(study, trial)
    work.events.append(
        Event(
            "Normal",
            "ReevaluationRunStarted",
            f"run {run.run.repeat + 1} of trial {number}'s configuration, seed {run.seed}",
            run.name,
        )
    )

"""Budget accounting: given the study spec, its trials and the time now, what may still start,
which running trials must stop, and whether the study is over and why.

Pure: no Kubernetes, no Optuna, no clock (callers pass `now`).

The rule for GPU-hours and money (documented in docs/study-spec.md): a trial's worst case is
    gpus x trialTimeout            GPU-seconds, and
    gpus x trialTimeout x price    money,
because its pod is stopped at trialTimeout (activeDeadlineSeconds, and the controller). A trial
starts only when
    used by finished trials + worst case of every active trial + worst case of the new trial
is within the limit. So a trial is never started that the budget cannot pay for, even if every
running trial runs to its timeout. Active trials reserve their worst case; finished trials count
what they actually used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from kubetune.spec.duration import parse_duration
from kubetune.spec.study import (
    Budget,
    BudgetUsage,
    Direction,
    Objective,
    StudyConditionReason,
    TuningStudySpec,
)
from kubetune.spec.trial import TrialState, TuningTrial

# Budgets are floats: tolerate rounding when comparing what is used with a limit.
_EPSILON = 1e-9

# Reasons that end a study at once and stop its running trials.
STOPPING_REASONS = frozenset(
    {
        StudyConditionReason.GOAL_REACHED,
        StudyConditionReason.MAX_DURATION_REACHED,
        StudyConditionReason.GPU_HOURS_EXHAUSTED,
        StudyConditionReason.MONEY_EXHAUSTED,
        StudyConditionReason.PATIENCE_EXHAUSTED,
        StudyConditionReason.TOO_MANY_FAILURES,
    }
)


@dataclass(frozen=True)
class TrialCost:
    """What one running hour of a trial costs, from the (immutable) trial template."""

    gpus: int
    money_per_hour: float

    @classmethod
    def of(cls, spec: TuningStudySpec) -> TrialCost:
        prices = spec.budget.money.price_per_gpu_hour if spec.budget.money else {}
        resources = spec.trial_template.gpu_resources(prices)
        money = sum(count * prices.get(name, 0.0) for name, count in resources.items())
        return cls(gpus=sum(resources.values()), money_per_hour=money)


def running_seconds(trial: TuningTrial, now: datetime) -> float:
    """How long the trial's pod has run (until it finished, or until now)."""
    started = trial.status.start_time
    if started is None:
        return 0.0
    ended = trial.status.completion_time or now
    return max(0.0, (ended - started).total_seconds())


@dataclass(frozen=True)
class TrialStop:
    """A trial that must stop, and how it is to be recorded."""

    name: str
    state: TrialState
    reason: str
    message: str


@dataclass(frozen=True)
class StudyEnd:
    """Why the study is over. Failed studies fail; every other reason completes the study."""

    reason: StudyConditionReason
    message: str

    @property
    def failed(self) -> bool:
        return self.reason is StudyConditionReason.TOO_MANY_FAILURES

    @property
    def stops_running_trials(self) -> bool:
        return self.reason in STOPPING_REASONS


@dataclass(frozen=True)
class BudgetDecision:
    """The budget's verdict for one reconcile."""

    usage: BudgetUsage
    may_start: int
    """Trials that may start now (zero once the study is ending)."""
    trial_stops: tuple[TrialStop, ...]
    """Active trials over their own limits (trialTimeout, pendingTimeout, metricsTimeout)."""
    end: StudyEnd | None
    """Set when the study is over now: for a stopping reason its active trials are to be
    stopped; for a draining reason (maxTrials, ...) there are none left."""
    draining: StudyEnd | None
    """Set when no more trials may start but active ones are still allowed to finish."""
    next_deadline: datetime | None
    """The earliest time a limit can be hit with nothing else happening (to wake up then)."""


def _seconds(duration: str | None) -> float | None:
    return None if duration is None else parse_duration(duration)


def _is_better(a: float, b: float, direction: Direction) -> bool:
    return a < b if direction is Direction.MINIMIZE else a > b


def _dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[Direction]) -> bool:
    not_worse = all(
        not _is_better(y, x, direction) for x, y, direction in zip(a, b, directions, strict=True)
    )
    better = any(
        _is_better(x, y, direction) for x, y, direction in zip(a, b, directions, strict=True)
    )
    return not_worse and better


def completed_in_order(trials: Iterable[TuningTrial]) -> list[TuningTrial]:
    """Succeeded trials with values, in the order they completed."""
    done = [t for t in trials if t.status.state is TrialState.SUCCEEDED and t.status.values]
    return sorted(done, key=lambda t: (t.status.completion_time or datetime.min, t.spec.number))


def _improves(
    values: Sequence[float], seen: Sequence[Sequence[float]], objective: Objective
) -> bool:
    """A new best value (one objective), or a point no earlier one dominates (several)."""
    directions = [metric.direction for metric in objective.metrics]
    if len(directions) == 1:
        return all(_is_better(values[0], old[0], directions[0]) for old in seen)
    return not any(old == values or _dominates(old, values, directions) for old in seen)


def trials_since_improvement(objective: Objective, completed: Sequence[TuningTrial]) -> int:
    """Completed trials in a row, at the end, that did not improve on all earlier ones."""
    since = 0
    seen: list[list[float]] = []
    for trial in completed:
        values = list(trial.status.values or [])
        since = 0 if _improves(values, seen, objective) else since + 1
        seen.append(values)
    return since


def goal_reached(objective: Objective, completed: Iterable[TuningTrial]) -> TuningTrial | None:
    """The first completed trial that reaches every goal set, if any goal is set."""
    goals = [
        (i, m.goal, m.direction) for i, m in enumerate(objective.metrics) if m.goal is not None
    ]
    if not goals:
        return None
    for trial in completed:
        values = trial.status.values or []
        if all(
            values[i] == goal or _is_better(values[i], goal, direction)
            for i, goal, direction in goals
        ):
            return trial
    return None


def _limit_stops(
    budget: Budget, active: Iterable[TuningTrial], now: datetime
) -> tuple[list[TrialStop], list[float]]:
    """Per-trial limits; also the seconds until each limit that is not yet hit."""
    stops: list[TrialStop] = []
    remaining: list[float] = []
    trial_timeout = _seconds(budget.trial_timeout)
    pending_timeout = _seconds(budget.pending_timeout)
    metrics_timeout = _seconds(budget.metrics_timeout)
    for trial in active:
        name = trial.metadata.name or ""
        status = trial.status
        if status.state is TrialState.PENDING:
            created = trial.metadata.creation_timestamp
            if pending_timeout is not None and created is not None:
                waited = (now - created).total_seconds()
                if waited >= pending_timeout:
                    stops.append(
                        TrialStop(
                            name,
                            TrialState.FAILED,
                            "PendingTimeout",
                            f"pod did not start within pendingTimeout ({budget.pending_timeout})"
                            + (f": {status.message}" if status.message else ""),
                        )
                    )
                    continue
                remaining.append(pending_timeout - waited)
            continue
        if status.start_time is None:
            continue
        ran = running_seconds(trial, now)
        if trial_timeout is not None:
            if ran >= trial_timeout:
                stops.append(
                    TrialStop(
                        name,
                        TrialState.TIMED_OUT,
                        "TrialTimeout",
                        f"ran longer than trialTimeout ({budget.trial_timeout})",
                    )
                )
                continue
            remaining.append(trial_timeout - ran)
        if metrics_timeout is not None:
            last = status.last_report_time or status.start_time
            silent = (now - last).total_seconds()
            if silent >= metrics_timeout:
                stops.append(
                    TrialStop(
                        name,
                        TrialState.FAILED,
                        "MetricsTimeout",
                        f"reported no metrics for metricsTimeout ({budget.metrics_timeout})",
                    )
                )
                continue
            remaining.append(metrics_timeout - silent)
    return stops, remaining


def assess(
    spec: TuningStudySpec,
    trials: Sequence[TuningTrial],
    study_start: datetime | None,
    now: datetime,
    search_space_exhausted: bool = False,
) -> BudgetDecision:
    """The budget's verdict: what may start, what must stop, whether the study is over.

    `trials` are the study's records with their states as of now (the controller has already
    applied what the pods showed). Checked in this order, the first that holds wins: too many
    failures, goal reached, patience, max duration, GPU-hours, money (stopping reasons); then
    maxTrials, a GPU-hour or money budget that cannot cover one more trial, an exhausted
    search space (draining reasons: running trials finish first).
    """
    budget = spec.budget
    cost = TrialCost.of(spec)
    active = [t for t in trials if t.status.state.is_active]
    finished = [t for t in trials if not t.status.state.is_active]
    failures = sum(1 for t in trials if t.status.state.is_failure)
    completed = completed_in_order(trials)

    running_hours = sum(running_seconds(t, now) for t in trials) / 3600.0
    elapsed = (now - study_start).total_seconds() if study_start else 0.0
    max_duration = _seconds(budget.max_duration)
    trial_timeout = _seconds(budget.trial_timeout)
    usage = BudgetUsage(
        trials=len(trials),
        max_trials=budget.max_trials,
        gpu_hours=running_hours * cost.gpus,
        max_gpu_hours=budget.max_gpu_hours,
        money=running_hours * cost.money_per_hour,
        money_limit=budget.money.limit if budget.money else None,
        currency=budget.money.currency if budget.money else None,
        elapsed_seconds=elapsed,
        max_duration_seconds=max_duration,
    )

    end = _stopping_end(spec, usage, failures, completed, max_duration)
    trial_stops, remaining = _limit_stops(budget, active, now)
    if max_duration is not None and study_start is not None and end is None:
        remaining.append(max_duration - elapsed)
    next_deadline = None
    if remaining and end is None:
        next_deadline = now + timedelta(seconds=max(0.0, min(remaining)))
    if end is not None:
        return BudgetDecision(usage, 0, (), end, None, None)

    # How many more trials the budget can pay for, each at its worst case.
    stopping = {stop.name for stop in trial_stops}
    still_active = [t for t in active if (t.metadata.name or "") not in stopping]
    slots = [budget.parallelism - len(still_active)]
    draining: StudyEnd | None = None
    if budget.max_trials is not None:
        slots.append(budget.max_trials - len(trials))
        if len(trials) >= budget.max_trials:
            draining = StudyEnd(
                StudyConditionReason.MAX_TRIALS_REACHED,
                f"maxTrials ({budget.max_trials}) trials were started",
            )
    # Hours committed: what finished trials used, plus the worst case of every active one.
    worst_hours = (trial_timeout or 0.0) / 3600.0
    committed_hours = (
        sum(running_seconds(t, now) for t in finished) / 3600.0 + len(still_active) * worst_hours
    )
    for limit, per_hour, reason, what in (
        (
            budget.max_gpu_hours,
            float(cost.gpus),
            StudyConditionReason.GPU_HOURS_EXHAUSTED,
            f"maxGpuHours ({budget.max_gpu_hours})",
        ),
        (
            budget.money.limit if budget.money else None,
            cost.money_per_hour,
            StudyConditionReason.MONEY_EXHAUSTED,
            f"the money budget ({budget.money.limit:g} {budget.money.currency})"
            if budget.money
            else "",
        ),
    ):
        if limit is None or per_hour == 0 or worst_hours == 0:
            continue
        affordable = math.floor(
            (limit - committed_hours * per_hour) / (worst_hours * per_hour) + _EPSILON
        )
        slots.append(affordable)
        if affordable <= 0 and draining is None:
            draining = StudyEnd(
                reason,
                f"{what} cannot cover another trial's worst case "
                f"({worst_hours * per_hour:.3g} at trialTimeout)",
            )
    if draining is None and search_space_exhausted:
        draining = StudyEnd(
            StudyConditionReason.SEARCH_SPACE_EXHAUSTED, "every point of the search space was tried"
        )
    may_start = 0 if draining else max(0, min(slots))
    if draining is not None and not still_active:
        return BudgetDecision(usage, 0, tuple(trial_stops), draining, None, None)
    return BudgetDecision(usage, may_start, tuple(trial_stops), None, draining, next_deadline)


def _stopping_end(
    spec: TuningStudySpec,
    usage: BudgetUsage,
    failures: int,
    completed: Sequence[TuningTrial],
    max_duration: float | None,
) -> StudyEnd | None:
    budget = spec.budget
    if budget.max_failed_trials is not None and failures > budget.max_failed_trials:
        return StudyEnd(
            StudyConditionReason.TOO_MANY_FAILURES,
            f"{failures} trials failed, more than maxFailedTrials ({budget.max_failed_trials})",
        )
    reached = goal_reached(spec.objective, completed)
    if reached is not None:
        return StudyEnd(
            StudyConditionReason.GOAL_REACHED,
            f"trial {reached.spec.number} reached the goal with {reached.status.values}",
        )
    if budget.patience is not None:
        since = trials_since_improvement(spec.objective, completed)
        if since >= budget.patience:
            return StudyEnd(
                StudyConditionReason.PATIENCE_EXHAUSTED,
                f"{since} completed trials in a row without improvement (patience "
                f"{budget.patience})",
            )
    if max_duration is not None and usage.elapsed_seconds >= max_duration:
        return StudyEnd(
            StudyConditionReason.MAX_DURATION_REACHED,
            f"the study ran for maxDuration ({budget.max_duration})",
        )
    if budget.max_gpu_hours is not None and usage.gpu_hours >= budget.max_gpu_hours - _EPSILON:
        return StudyEnd(
            StudyConditionReason.GPU_HOURS_EXHAUSTED,
            f"{usage.gpu_hours:.3g} GPU-hours used of maxGpuHours ({budget.max_gpu_hours})",
        )
    if budget.money is not None and usage.money >= budget.money.limit - _EPSILON:
        return StudyEnd(
            StudyConditionReason.MONEY_EXHAUSTED,
            f"{usage.money:.2f} {budget.money.currency} spent of {budget.money.limit:g}",
        )
    return None

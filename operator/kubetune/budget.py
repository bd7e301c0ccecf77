"""Budget accounting: given the study spec, its trials and the time now, what may still start,
which running trials must stop, and whether the study is over and why.

Pure: no Kubernetes, no Optuna, no clock (callers pass `now`).

The rule for GPU-hours and money (documented in docs/study-spec.md) counts what the pods held:
a trial's GPU time runs from its pod's start until its pod has terminated, which for a stopped
trial is up to its grace period (terminationGracePeriodSeconds) after the stop. Its worst case
is therefore
    gpus x (trialTimeout + grace)                          while it is active,
    gpus x max(ran so far, stopped after + grace)          once stopped, until its pod is gone,
and never less than what it has used so far (times the price per GPU-hour for money). A trial
starts only when
    used by trials whose pods are gone + worst case of every pod still there
        + worst case of the new trial
is within the limit, and only into a parallelism slot that no pod holds, terminating ones
included. So a trial is never started that the budget cannot pay for, even if every pod runs
until it is killed. Should what the pods used reach a limit anyway, every running trial is
stopped, and the reconcile is woken at the moment that happens.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from kubetune.spec.budget_spec import Budget
from kubetune.spec.duration import parse_duration
from kubetune.spec.objective import Direction, Objective
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.study_status import BudgetUsage, StudyConditionReason
from kubetune.spec.trial import TrialState, TuningTrial, TuningTrialStatus, is_search_trial

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
        StudyConditionReason.NO_TRIAL_SUCCEEDED,
    }
)
FAILING_REASONS = frozenset(
    {StudyConditionReason.TOO_MANY_FAILURES, StudyConditionReason.NO_TRIAL_SUCCEEDED}
)

SOURCE_ERROR_REASON = "MetricsSourceError"
"""A trial's reason while (or because) the reads of its study's metrics source fail."""

# Unless maxFailedTrials is set, a study whose first trials all fail stops after this many
# failures (or `parallelism`, if more), before the typo in its command burns the whole budget.
FAIL_FAST_FAILURES = 3


@dataclass(frozen=True)
class TrialCost:
    """What one running hour of a trial costs, and how long its pod may take to stop, from the
    (immutable) trial template."""

    gpus: int
    money_per_hour: float
    grace_seconds: float

    @classmethod
    def of(cls, spec: TuningStudySpec) -> TrialCost:
        prices = spec.budget.money.price_per_gpu_hour if spec.budget.money else {}
        return cls(
            gpus=sum(spec.trial_template.gpu_resources(prices).values()),
            money_per_hour=spec.trial_template.money_per_hour(prices),
            grace_seconds=float(spec.trial_template.spec.stop_seconds),
        )


def running_seconds(status: TuningTrialStatus, now: datetime) -> float:
    """How long a trial's pod has held its GPUs: from its start until it terminated, or until
    now while it may still run (an active trial, or a stopped one whose pod is terminating)."""
    if status.start_time is None:
        return 0.0
    ended = now if status.holds_pod else (status.pod_end_time or status.completion_time or now)
    return max(0.0, (ended - status.start_time).total_seconds())


def worst_case_seconds(
    trial: TuningTrial, cost: TrialCost, trial_timeout: float | None, now: datetime
) -> float | None:
    """The most running time the trial's pod can reach, from its start (None: unbounded, an
    active trial with no trialTimeout). What it has used is a floor: a pod that outlives its
    bound (a node that does not enforce it) counts what it really holds."""
    status = trial.status
    ran = running_seconds(trial.status, now)
    if not status.holds_pod:
        return ran
    if status.state.is_active:
        if trial_timeout is None:
            return None
        return max(ran, trial_timeout + cost.grace_seconds)
    stopped = status.completion_time or now
    stopped_after = (stopped - status.start_time).total_seconds() if status.start_time else 0.0
    return max(ran, max(0.0, stopped_after) + cost.grace_seconds)


def format_amount(value: float) -> str:
    """An amount (GPU-hours, money) to four significant digits, with no exponent and no
    trailing zeros: 0.003333, 36.1, 1234."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, 3 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


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
        return self.reason in FAILING_REASONS

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
        ran = running_seconds(trial.status, now)
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
                stops.append(_metrics_timeout(name, trial, budget))
                continue
            remaining.append(metrics_timeout - silent)
    return stops, remaining


def usage_of(
    spec: TuningStudySpec,
    trials: Sequence[TuningTrial],
    study_start: datetime | None,
    now: datetime,
) -> BudgetUsage:
    """What the study has used as of `now`: pods that may still run count until now."""
    budget = spec.budget
    cost = TrialCost.of(spec)
    running_hours = sum(running_seconds(t.status, now) for t in trials) / 3600.0
    return BudgetUsage(
        trials=sum(1 for t in trials if is_search_trial(t)),
        max_trials=budget.max_trials,
        gpu_hours=running_hours * cost.gpus,
        max_gpu_hours=budget.max_gpu_hours,
        money=running_hours * cost.money_per_hour,
        money_limit=budget.money.limit if budget.money else None,
        currency=budget.money.currency if budget.money else None,
        elapsed_seconds=(now - study_start).total_seconds() if study_start else 0.0,
        max_duration_seconds=_seconds(budget.max_duration),
    )


def _metrics_timeout(name: str, trial: TuningTrial, budget: Budget) -> TrialStop:
    """A trial silent for metricsTimeout; when the metrics source's reads were failing, that
    is its cause and its reason (the source's error, not the trainer's silence)."""
    silent = f"reported no metrics for metricsTimeout ({budget.metrics_timeout})"
    if trial.status.reason == SOURCE_ERROR_REASON:
        message = f"{silent}: the metrics source failed: {trial.status.message}"
        return TrialStop(name, TrialState.FAILED, SOURCE_ERROR_REASON, message)
    return TrialStop(name, TrialState.FAILED, "MetricsTimeout", silent)


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
    search space (draining reasons: the study ends once no pod of it is left running). A study
    that ends without a single succeeded trial fails (NoTrialSucceeded).
    """
    budget = spec.budget
    search = [t for t in trials if is_search_trial(t)]
    usage = usage_of(spec, trials, study_start, now)
    max_duration = _seconds(budget.max_duration)

    end = _stopping_end(spec, usage, search, max_duration)
    if end is not None:
        return BudgetDecision(usage, 0, (), _truthful(end, search), None, None)
    trial_stops, holders, remaining = _running_limits(spec, trials, usage, now)
    if max_duration is not None and study_start is not None:
        remaining.append(max_duration - usage.elapsed_seconds)
    next_deadline = now + timedelta(seconds=max(0.0, min(remaining))) if remaining else None

    slots = [budget.parallelism - len(holders)]
    draining: StudyEnd | None = None
    if budget.max_trials is not None:
        slots.append(budget.max_trials - len(search))
        if len(search) >= budget.max_trials:
            draining = StudyEnd(
                StudyConditionReason.MAX_TRIALS_REACHED,
                f"maxTrials ({budget.max_trials}) trials were started",
            )
    reserved = reevaluation_reserve(spec)
    for affordable, end_if_none in _affordable(spec, trials, holders, now, reserved):
        slots.append(affordable)
        if affordable <= 0 and draining is None:
            draining = end_if_none
    if draining is None and search_space_exhausted:
        draining = StudyEnd(
            StudyConditionReason.SEARCH_SPACE_EXHAUSTED, "every point of the search space was tried"
        )
    may_start = 0 if draining else max(0, min(slots))
    if draining is not None and not holders:
        return BudgetDecision(usage, 0, tuple(trial_stops), _truthful(draining, search), None, None)
    return BudgetDecision(usage, may_start, tuple(trial_stops), None, draining, next_deadline)


def reevaluation_reserve(spec: TuningStudySpec) -> int:
    """The re-evaluation runs the GPU-hour and money budgets hold back during the search: all
    of them (topTrials x repeats). Runs of an earlier re-evaluation (a study resumed by a larger
    budget) count on their own, by what their pods held, and are not subtracted: which
    configurations the next re-evaluation re-runs is not known until the search ends."""
    if spec.reevaluation is None:
        return 0
    return spec.reevaluation.top_trials * spec.reevaluation.repeats


def assess_reevaluation(
    spec: TuningStudySpec,
    trials: Sequence[TuningTrial],
    study_start: datetime | None,
    now: datetime,
    runs_left: int,
) -> BudgetDecision:
    """The budget's verdict while the best configurations are re-run (the search is over):
    how many of the `runs_left` re-runs may start, which re-runs are over their own limits,
    and, in `end`, a GPU-hour or money budget used up by what the pods held (every running
    re-run stops; the study completes with the runs that finished). `draining` says that no
    further re-run fits in the budget. maxTrials, patience, goals and maxDuration bound the
    search only."""
    budget = spec.budget
    usage = usage_of(spec, trials, study_start, now)
    spent = _spent_end(spec, usage)
    if spent is not None:
        return BudgetDecision(usage, 0, (), spent, None, None)
    runs = [t for t in trials if not is_search_trial(t)]
    trial_stops, holders, remaining = _running_limits(spec, runs, usage, now, trials)
    next_deadline = now + timedelta(seconds=max(0.0, min(remaining))) if remaining else None
    slots = [budget.parallelism - len(holders), runs_left]
    draining: StudyEnd | None = None
    for affordable, end_if_none in _affordable(spec, trials, holders, now, 0):
        slots.append(affordable)
        if affordable <= 0 and draining is None and runs_left:
            draining = end_if_none
    may_start = 0 if draining else max(0, min(slots))
    return BudgetDecision(usage, may_start, tuple(trial_stops), None, draining, next_deadline)


def _running_limits(
    spec: TuningStudySpec,
    trials: Sequence[TuningTrial],
    usage: BudgetUsage,
    now: datetime,
    holding: Sequence[TuningTrial] | None = None,
) -> tuple[list[TrialStop], list[TuningTrial], list[float]]:
    """The active `trials` over their own limits; the trials whose pods hold GPUs now, among
    `holding` (by default `trials`), with those stopped in this reconcile as stopped (until
    their pods have terminated they keep their slot and count toward the budget); and the
    seconds until each limit is hit."""
    budget = spec.budget
    active = [t for t in trials if t.status.state.is_active]
    trial_stops, remaining = _limit_stops(budget, active, now)
    stopping = {stop.name for stop in trial_stops}
    holders = [
        _stopped_now(t, now) if (t.metadata.name or "") in stopping else t
        for t in (trials if holding is None else holding)
        if t.status.holds_pod
    ]
    remaining.extend(_seconds_until_spent(budget, TrialCost.of(spec), usage, holders))
    return trial_stops, holders, remaining


def _affordable(
    spec: TuningStudySpec,
    trials: Sequence[TuningTrial],
    holders: Sequence[TuningTrial],
    now: datetime,
    reserved_runs: int,
) -> list[tuple[int, StudyEnd]]:
    """For each budget on GPU time: how many more trials it can cover in the worst case, after
    what gone pods used, the worst case of every pod still there and of `reserved_runs` more
    trials (the re-evaluation's); and the ending to use when it covers none."""
    trial_timeout = _seconds(spec.budget.trial_timeout)
    if trial_timeout is None:
        return []
    cost = TrialCost.of(spec)
    new_worst_hours = (trial_timeout + cost.grace_seconds) / 3600.0
    gone = [t for t in trials if not t.status.holds_pod]
    committed_hours = (
        sum(worst_case_seconds(t, cost, trial_timeout, now) or 0.0 for t in [*holders, *gone])
        / 3600.0
        + reserved_runs * new_worst_hours
    )
    reserve = (
        f", after the {reserved_runs} re-evaluation runs it holds back" if reserved_runs else ""
    )
    result = []
    for limit, per_hour, reason, what in _spend_limits(spec.budget, cost):
        affordable = math.floor(
            (limit - committed_hours * per_hour) / (new_worst_hours * per_hour) + _EPSILON
        )
        message = (
            f"{what} cannot cover another trial's worst case "
            f"({format_amount(new_worst_hours * per_hour)}: trialTimeout and the "
            f"{cost.grace_seconds:g} s grace period){reserve}"
        )
        result.append((affordable, StudyEnd(reason, message)))
    return result


def _spend_limits(
    budget: Budget, cost: TrialCost
) -> list[tuple[float, float, StudyConditionReason, str]]:
    """(limit, its amount per hour of one trial, reason, what) for each budget on GPU time."""
    limits = []
    if budget.max_gpu_hours is not None and cost.gpus:
        what = f"maxGpuHours ({format_amount(budget.max_gpu_hours)})"
        limits.append(
            (budget.max_gpu_hours, float(cost.gpus), StudyConditionReason.GPU_HOURS_EXHAUSTED, what)
        )
    if budget.money is not None and cost.money_per_hour:
        what = f"the money budget ({format_amount(budget.money.limit)} {budget.money.currency})"
        limits.append(
            (budget.money.limit, cost.money_per_hour, StudyConditionReason.MONEY_EXHAUSTED, what)
        )
    return limits


def _seconds_until_spent(
    budget: Budget, cost: TrialCost, usage: BudgetUsage, holders: Sequence[TuningTrial]
) -> list[float]:
    """For each budget on GPU time: the seconds until the pods running now have used it up."""
    running = sum(1 for t in holders if t.status.start_time is not None)
    used = {
        StudyConditionReason.GPU_HOURS_EXHAUSTED: usage.gpu_hours,
        StudyConditionReason.MONEY_EXHAUSTED: usage.money,
    }
    return [
        (limit - used[reason]) * 3600.0 / (per_hour * running)
        for limit, per_hour, reason, _ in _spend_limits(budget, cost)
        if running
    ]


def _stopped_now(trial: TuningTrial, now: datetime) -> TuningTrial:
    """A trial as it is once stopped in this reconcile: ended, its pod terminating."""
    status = trial.status.model_copy(
        update={"state": TrialState.STOPPED, "completion_time": now, "pod_terminating": True}
    )
    return trial.model_copy(update={"status": status})


def _truthful(end: StudyEnd, trials: Sequence[TuningTrial]) -> StudyEnd:
    """A study that ran trials and ends without one that succeeded has failed, whatever ended
    it: it has no result to offer."""
    if end.failed or not trials or any(t.status.state is TrialState.SUCCEEDED for t in trials):
        return end
    return _no_success(trials, f"the study ended: {end.message}")


def _no_success(trials: Sequence[TuningTrial], why: str) -> StudyEnd:
    """NoTrialSucceeded, with the trials' states and the first failure's cause: a wrong command
    or a missing metrics source shows there."""
    counts = Counter(t.status.state.value for t in trials)
    summary = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    failed = sorted((t for t in trials if t.status.state.is_failure), key=lambda t: t.spec.number)
    cause = ""
    if failed:
        first = failed[0].status
        detail = f": {first.message[:300]}" if first.message else ""
        cause = f"; trial {failed[0].spec.number} {first.state.value} ({first.reason}){detail}"
    return StudyEnd(
        StudyConditionReason.NO_TRIAL_SUCCEEDED, f"no trial succeeded ({summary}); {why}{cause}"
    )


def _stopping_end(
    spec: TuningStudySpec,
    usage: BudgetUsage,
    trials: Sequence[TuningTrial],
    max_duration: float | None,
) -> StudyEnd | None:
    budget = spec.budget
    failures = sum(1 for t in trials if t.status.state.is_failure)
    if budget.max_failed_trials is not None and failures > budget.max_failed_trials:
        return StudyEnd(
            StudyConditionReason.TOO_MANY_FAILURES,
            f"{failures} trials failed, more than maxFailedTrials ({budget.max_failed_trials})",
        )
    fail_fast = max(FAIL_FAST_FAILURES, budget.parallelism)
    worked = any(t.status.state in (TrialState.SUCCEEDED, TrialState.PRUNED) for t in trials)
    if budget.max_failed_trials is None and not worked and failures >= fail_fast:
        return _no_success(
            trials,
            f"the first {failures} trials to end all failed (set budget.maxFailedTrials to "
            "allow more failures before a first success)",
        )
    completed = completed_in_order(trials)
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
    return _spent_end(spec, usage)


def _spent_end(spec: TuningStudySpec, usage: BudgetUsage) -> StudyEnd | None:
    """A GPU-hour or money budget that what the pods held has used up."""
    budget = spec.budget
    if budget.max_gpu_hours is not None and usage.gpu_hours >= budget.max_gpu_hours - _EPSILON:
        return StudyEnd(
            StudyConditionReason.GPU_HOURS_EXHAUSTED,
            f"{format_amount(usage.gpu_hours)} GPU-hours used of maxGpuHours "
            f"({format_amount(budget.max_gpu_hours)})",
        )
    if budget.money is not None and usage.money >= budget.money.limit - _EPSILON:
        return StudyEnd(
            StudyConditionReason.MONEY_EXHAUSTED,
            f"{format_amount(usage.money)} {budget.money.currency} spent of "
            f"{format_amount(budget.money.limit)}",
        )
    return None

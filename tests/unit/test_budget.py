"""Budget accounting: starts that the budget can pay for, stops with reasons, study ends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune.budget import assess, trials_since_improvement
from kubetune.spec.study import StudyConditionReason, TrialTemplate
from kubetune.spec.trial import TrialState
from tests.factories import at, study_spec, trial

HOUR = 3600.0


def test_gpu_resources_sum_limits_over_containers_and_price_table_names() -> None:
    template = TrialTemplate.model_validate(
        {
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"limits": {"nvidia.com/gpu": 2, "cpu": "4"}}},
                    {"name": "b", "resources": {"requests": {"example.com/tpu": "1"}}},
                    {"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
                ]
            }
        }
    )
    assert template.gpu_resources() == {"nvidia.com/gpu": 3}
    assert template.gpu_resources({"example.com/tpu": 4.0}) == {
        "nvidia.com/gpu": 3,
        "example.com/tpu": 1,
    }


def test_parallelism_and_max_trials_bound_the_starts() -> None:
    spec = study_spec(budget={"parallelism": 3, "maxTrials": 4})
    assert assess(spec, [], at(0), at(0)).may_start == 3
    running = [trial(0), trial(1)]
    assert assess(spec, running, at(0), at(1)).may_start == 1
    three_done = [trial(n, TrialState.SUCCEEDED, ended=5, values=[1.0 + n]) for n in range(3)]
    assert assess(spec, three_done, at(0), at(10)).may_start == 1


def test_max_trials_drains_then_completes() -> None:
    spec = study_spec(budget={"parallelism": 2, "maxTrials": 2})
    active = [trial(0, TrialState.SUCCEEDED, ended=3, values=[1.0]), trial(1)]
    draining = assess(spec, active, at(0), at(4))
    assert draining.may_start == 0
    assert draining.end is None
    assert draining.draining is not None
    assert draining.draining.reason is StudyConditionReason.MAX_TRIALS_REACHED
    done = [active[0], trial(1, TrialState.FAILED, ended=6)]
    decision = assess(spec, done, at(0), at(7))
    assert decision.end is not None
    assert decision.end.reason is StudyConditionReason.MAX_TRIALS_REACHED
    assert not decision.end.stops_running_trials


def test_gpu_hours_reserve_the_worst_case_of_running_trials() -> None:
    # 2 GPU-hours, 1 GPU per trial, 1 h timeout: two trials fit at the start, never three.
    spec = study_spec(budget={"parallelism": 5, "maxGpuHours": 2, "trialTimeout": "1h"}, gpus=1)
    assert assess(spec, [], at(0), at(0)).may_start == 2
    # One finished after 30 min, one running: 0.5 used + 1 reserved = 1.5, a third needs 1.
    trials = [trial(0, TrialState.SUCCEEDED, ended=1800, values=[1.0], gpus=1), trial(1, gpus=1)]
    decision = assess(spec, trials, at(0), at(1900))
    assert decision.may_start == 0
    assert decision.draining is not None
    assert decision.draining.reason is StudyConditionReason.GPU_HOURS_EXHAUSTED
    # The running one finishes after 12 minutes: 0.5 + 0.2 used, one more trial fits.
    trials[1] = trial(1, TrialState.SUCCEEDED, started=1800, ended=2520, values=[2.0], gpus=1)
    assert assess(spec, trials, at(0), at(2600)).may_start == 1
    assert assess(spec, trials, at(0), at(2600)).usage.gpu_hours == pytest.approx(0.7)


def test_money_budget_uses_the_price_table() -> None:
    # 2 GPUs at 2.5/GPU-hour and a 1 h timeout: a trial's worst case is 5.0; the limit is 12.
    spec = study_spec(
        budget={
            "parallelism": 10,
            "trialTimeout": "1h",
            "money": {"limit": 12, "currency": "EUR", "pricePerGpuHour": {"nvidia.com/gpu": 2.5}},
        },
        gpus=2,
    )
    decision = assess(spec, [], at(0), at(0))
    assert decision.may_start == 2
    ran_half_an_hour = [trial(0, TrialState.SUCCEEDED, ended=1800, values=[1.0], gpus=2)]
    usage = assess(spec, ran_half_an_hour, at(0), at(1800)).usage
    assert usage.money == pytest.approx(2.5)
    assert usage.currency == "EUR"


def test_used_up_gpu_hours_stop_running_trials() -> None:
    spec = study_spec(budget={"maxGpuHours": 1, "trialTimeout": "2h", "parallelism": 2}, gpus=1)
    decision = assess(spec, [trial(0, gpus=1), trial(1, gpus=1)], at(0), at(1800))
    assert decision.end is not None
    assert decision.end.reason is StudyConditionReason.GPU_HOURS_EXHAUSTED
    assert decision.end.stops_running_trials
    assert decision.may_start == 0


def test_max_duration_ends_the_study() -> None:
    spec = study_spec(budget={"maxDuration": "1h", "parallelism": 2})
    before = assess(spec, [trial(0)], at(0), at(HOUR - 10))
    assert before.end is None
    assert before.next_deadline == at(HOUR)
    after = assess(spec, [trial(0)], at(0), at(HOUR))
    assert after.end is not None
    assert after.end.reason is StudyConditionReason.MAX_DURATION_REACHED


def test_more_failures_than_allowed_fail_the_study() -> None:
    spec = study_spec(budget={"maxFailedTrials": 1, "parallelism": 3})
    one = [trial(0, TrialState.FAILED, ended=1), trial(1)]
    assert assess(spec, one, at(0), at(2)).end is None
    two = [trial(0, TrialState.FAILED, ended=1), trial(1, TrialState.TIMED_OUT, ended=2)]
    decision = assess(spec, two, at(0), at(3))
    assert decision.end is not None
    assert decision.end.failed
    assert decision.end.reason is StudyConditionReason.TOO_MANY_FAILURES


@pytest.mark.parametrize(
    ("direction", "goal", "values", "reached"),
    [
        ("minimize", 0.1, [0.5, 0.1], True),
        ("minimize", 0.1, [0.5, 0.11], False),
        ("maximize", 0.9, [0.5, 0.95], True),
        ("maximize", 0.9, [0.5, 0.85], False),
    ],
)
def test_goal_reached_follows_the_direction(
    direction: str, goal: float, values: list[float], reached: bool
) -> None:
    spec = study_spec(objective={"metrics": [{"name": "m", "direction": direction, "goal": goal}]})
    trials = [trial(n, TrialState.SUCCEEDED, ended=n + 1, values=[v]) for n, v in enumerate(values)]
    end = assess(spec, trials, at(0), at(10)).end
    assert (end is not None and end.reason is StudyConditionReason.GOAL_REACHED) is reached


def test_several_goals_must_all_be_met_by_one_trial() -> None:
    spec = study_spec(
        objective={
            "metrics": [
                {"name": "a", "direction": "maximize", "goal": 0.9},
                {"name": "b", "direction": "minimize", "goal": 10},
            ]
        }
    )
    apart = [
        trial(0, TrialState.SUCCEEDED, ended=1, values=[0.95, 20]),
        trial(1, TrialState.SUCCEEDED, ended=2, values=[0.5, 5]),
    ]
    assert assess(spec, apart, at(0), at(3)).end is None
    both = [*apart, trial(2, TrialState.SUCCEEDED, ended=3, values=[0.91, 9])]
    end = assess(spec, both, at(0), at(4)).end
    assert end is not None
    assert end.reason is StudyConditionReason.GOAL_REACHED


def test_patience_counts_completed_trials_without_a_new_best() -> None:
    spec = study_spec(budget={"patience": 3, "parallelism": 1})
    values = [5.0, 3.0, 4.0, 3.0, 6.0]  # best 3.0 at trial 1; then 3 without improvement
    trials = [trial(n, TrialState.SUCCEEDED, ended=n + 1, values=[v]) for n, v in enumerate(values)]
    assert trials_since_improvement(spec.objective, trials) == 3
    end = assess(spec, trials, at(0), at(10)).end
    assert end is not None
    assert end.reason is StudyConditionReason.PATIENCE_EXHAUSTED
    assert assess(spec, trials[:4], at(0), at(10)).end is None


def test_patience_with_several_objectives_counts_dominated_trials() -> None:
    spec = study_spec(
        objective={
            "metrics": [
                {"name": "a", "direction": "minimize"},
                {"name": "b", "direction": "minimize"},
            ]
        }
    )
    trials = [
        trial(0, TrialState.SUCCEEDED, ended=1, values=[1.0, 5.0]),
        trial(1, TrialState.SUCCEEDED, ended=2, values=[5.0, 1.0]),  # a new trade-off: improves
        trial(2, TrialState.SUCCEEDED, ended=3, values=[6.0, 6.0]),  # dominated
    ]
    assert trials_since_improvement(spec.objective, trials) == 1


def test_trial_limits_stop_single_trials_with_reasons() -> None:
    spec = study_spec(
        budget={
            "parallelism": 4,
            "trialTimeout": "10m",
            "pendingTimeout": "5m",
            "metricsTimeout": "2m",
        }
    )
    trials = [
        trial(0, started=0, last_report=590),  # ran 10 min: timed out
        trial(1, TrialState.PENDING, started=None, created=200),  # pending 6m40s
        trial(2, started=300, last_report=420),  # silent for 3 min
        trial(3, started=500, last_report=560),  # fine
    ]
    decision = assess(spec, trials, at(0), at(600))
    stops = {stop.name: (stop.state, stop.reason) for stop in decision.trial_stops}
    assert stops == {
        "demo-0": (TrialState.TIMED_OUT, "TrialTimeout"),
        "demo-1": (TrialState.FAILED, "PendingTimeout"),
        "demo-2": (TrialState.FAILED, "MetricsTimeout"),
    }
    # Stopped trials free their slots; the fine one holds one.
    assert decision.may_start == 3
    # The next deadline is trial 3's metrics timeout: last report at 560 + 120 s.
    assert decision.next_deadline == at(680)


def test_exhausted_search_space_drains() -> None:
    spec = study_spec(budget={"parallelism": 2})
    decision = assess(spec, [trial(0)], at(0), at(1), search_space_exhausted=True)
    assert decision.may_start == 0
    assert decision.draining is not None
    assert decision.draining.reason is StudyConditionReason.SEARCH_SPACE_EXHAUSTED


trial_states = st.sampled_from(list(TrialState))


@settings(max_examples=200, deadline=None)
@given(
    parallelism=st.integers(1, 6),
    max_trials=st.integers(1, 12),
    max_gpu_hours=st.floats(0.5, 8),
    timeout_minutes=st.integers(10, 120),
    gpus=st.integers(1, 4),
    history=st.lists(
        st.tuples(trial_states, st.integers(0, 7200), st.integers(0, 7200)), max_size=12
    ),
    now=st.integers(0, 20000),
)
def test_no_start_exceeds_what_the_budget_can_cover(
    parallelism: int,
    max_trials: int,
    max_gpu_hours: float,
    timeout_minutes: int,
    gpus: int,
    history: list[tuple[TrialState, int, int]],
    now: int,
) -> None:
    spec = study_spec(
        budget={
            "parallelism": parallelism,
            "maxTrials": max_trials,
            "maxGpuHours": max_gpu_hours,
            "trialTimeout": f"{timeout_minutes}m",
        },
        gpus=gpus,
    )
    timeout = timeout_minutes * 60
    trials = []
    for number, (state, start, length) in enumerate(history):
        start = min(start, now)
        # A record never runs past its timeout; a finished one has an end before now.
        ended = None if state.is_active else min(start + length % timeout, now)
        started = None if state is TrialState.PENDING else start
        values = [1.0] if state is TrialState.SUCCEEDED else None
        trials.append(trial(number, state, started=started, ended=ended, values=values, gpus=gpus))
    decision = assess(spec, trials, at(0), at(now))
    stopped = {stop.name for stop in decision.trial_stops}
    active = [t for t in trials if t.status.state.is_active and t.metadata.name not in stopped]
    finished_hours = (
        sum(
            (t.status.completion_time - t.status.start_time).total_seconds()
            for t in trials
            if not t.status.state.is_active and t.status.start_time and t.status.completion_time
        )
        / HOUR
    )
    if decision.end is not None:
        assert decision.may_start == 0
    assert len(active) + decision.may_start <= max(parallelism, len(active))
    assert len(trials) + decision.may_start <= max(max_trials, len(trials))
    worst = (len(active) + decision.may_start) * gpus * timeout / HOUR
    if decision.may_start:
        assert finished_hours * gpus + worst <= max_gpu_hours + 1e-6

"""Budget accounting: starts that the budget can pay for, stops with reasons, study ends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune.budget import assess, format_amount, trials_since_improvement
from kubetune.spec.study_status import StudyConditionReason
from kubetune.spec.trial import TrialState, TuningTrial
from kubetune.spec.trial_template import TrialTemplate
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
    # 1 GPU per trial, 1 h timeout, no grace period (the kubelet still gives 2 s): a budget of
    # two worst cases fits two trials at the start, never three.
    spec = study_spec(
        budget={"parallelism": 5, "maxGpuHours": 2 * (HOUR + 2) / HOUR, "trialTimeout": "1h"},
        gpus=1,
        grace=0,
    )
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
        grace=0,
    )
    decision = assess(spec, [], at(0), at(0))
    assert decision.may_start == 2
    ran_half_an_hour = [trial(0, TrialState.SUCCEEDED, ended=1800, values=[1.0], gpus=2)]
    usage = assess(spec, ran_half_an_hour, at(0), at(1800)).usage
    assert usage.money == pytest.approx(2.5)
    assert usage.currency == "EUR"


def test_used_up_gpu_hours_stop_running_trials() -> None:
    spec = study_spec(budget={"maxGpuHours": 1, "trialTimeout": "2h", "parallelism": 3}, gpus=1)
    done = trial(0, TrialState.SUCCEEDED, ended=60, values=[1.0], gpus=1)
    decision = assess(spec, [done, trial(1, gpus=1), trial(2, gpus=1)], at(0), at(1800))
    assert decision.end is not None
    assert decision.end.reason is StudyConditionReason.GPU_HOURS_EXHAUSTED
    assert decision.end.stops_running_trials
    assert decision.may_start == 0


def test_max_duration_ends_the_study() -> None:
    spec = study_spec(budget={"maxDuration": "1h", "parallelism": 2})
    trials = [trial(0, TrialState.SUCCEEDED, ended=60, values=[1.0]), trial(1)]
    before = assess(spec, trials, at(0), at(HOUR - 10))
    assert before.end is None
    assert before.next_deadline == at(HOUR)
    after = assess(spec, trials, at(0), at(HOUR))
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
    # Stopped trials keep their slots until their pods have terminated.
    assert decision.may_start == 0
    # The next deadline is trial 3's metrics timeout: last report at 560 + 120 s.
    assert decision.next_deadline == at(680)


def test_exhausted_search_space_drains() -> None:
    spec = study_spec(budget={"parallelism": 2})
    decision = assess(spec, [trial(0)], at(0), at(1), search_space_exhausted=True)
    assert decision.may_start == 0
    assert decision.draining is not None
    assert decision.draining.reason is StudyConditionReason.SEARCH_SPACE_EXHAUSTED


trial_states = st.sampled_from(list(TrialState))


@settings(max_examples=300, deadline=None)
@given(
    parallelism=st.integers(1, 6),
    max_trials=st.integers(1, 12),
    max_gpu_hours=st.floats(0.5, 8),
    timeout_minutes=st.integers(10, 120),
    grace=st.integers(0, 600),
    gpus=st.integers(1, 4),
    history=st.lists(
        st.tuples(
            trial_states, st.integers(0, 7200), st.integers(0, 7200), st.booleans(), st.booleans()
        ),
        max_size=12,
    ),
    now=st.integers(0, 20000),
)
def test_no_start_exceeds_what_the_budget_can_cover(
    parallelism: int,
    max_trials: int,
    max_gpu_hours: float,
    timeout_minutes: int,
    grace: int,
    gpus: int,
    history: list[tuple[TrialState, int, int, bool, bool]],
    now: int,
) -> None:
    """Histories with trials running, ended, stopped with their pods still terminating, pods
    that outlived their stop, and trials reaching their timeout in this very reconcile."""
    spec = study_spec(
        budget={
            "parallelism": parallelism,
            "maxTrials": max_trials,
            "maxGpuHours": max_gpu_hours,
            "trialTimeout": f"{timeout_minutes}m",
        },
        gpus=gpus,
        grace=grace,
    )
    timeout = timeout_minutes * 60
    trials = []
    for number, (state, start, length, terminating, outlived) in enumerate(history):
        start = min(start, now)
        started = None if state is TrialState.PENDING else start
        if state.is_active:
            # A running trial may be past its timeout: it is stopped in this reconcile.
            trials.append(trial(number, state, started=started, gpus=gpus))
            continue
        ended = min(start + length % timeout, now)
        # A pod ends within its grace period after the stop, or (a node that does not enforce
        # it) later; a terminating one has not ended yet.
        pod_end = ended + (length % (grace + 1)) + (length if outlived else 0)
        values = [1.0] if state is TrialState.SUCCEEDED else None
        trials.append(
            trial(
                number,
                state,
                started=started,
                ended=ended,
                values=values,
                gpus=gpus,
                terminating=terminating,
                pod_ended=None if terminating else min(pod_end, now),
            )
        )
    decision = assess(spec, trials, at(0), at(now))

    def held_seconds(t: TuningTrial) -> float:
        status = t.status
        if status.start_time is None:
            return 0.0
        end = at(now) if status.state.is_active or status.pod_terminating else status.pod_end_time
        assert end is not None
        return (end - status.start_time).total_seconds()

    def worst_seconds(t: TuningTrial) -> float:
        """What a pod may still come to hold: until its timeout or stop, plus its grace."""
        status = t.status
        start = status.start_time or at(now)
        if status.state.is_active:
            return max(held_seconds(t), timeout + grace)
        if status.pod_terminating:
            assert status.completion_time is not None
            return max(held_seconds(t), (status.completion_time - start).total_seconds() + grace)
        return held_seconds(t)

    holding = [t for t in trials if t.status.state.is_active or t.status.pod_terminating]
    if decision.end is not None:
        assert decision.may_start == 0
    assert len(holding) + decision.may_start <= max(parallelism, len(holding))
    assert len(trials) + decision.may_start <= max(max_trials, len(trials))
    if decision.may_start:
        committed = sum(worst_seconds(t) for t in trials) * gpus
        new = decision.may_start * (timeout + grace) * gpus
        assert committed + new <= max_gpu_hours * HOUR + 1e-6
    assert decision.usage.gpu_hours * HOUR == pytest.approx(
        sum(held_seconds(t) for t in trials) * gpus
    )


def with_reason(record: TuningTrial, reason: str, message: str) -> TuningTrial:
    status = record.status.model_copy(update={"reason": reason, "message": message})
    return record.model_copy(update={"status": status})


def test_a_stopped_trial_holds_its_slot_and_gpus_until_its_pod_has_terminated() -> None:
    spec = study_spec(budget={"parallelism": 2, "maxGpuHours": 1, "trialTimeout": "10m"}, gpus=2)
    # Trial 0 was pruned at 100 s; its trainer ignores SIGTERM and still runs at 125 s.
    pruned = trial(0, TrialState.PRUNED, started=0, ended=100, gpus=2, terminating=True)
    trials = [pruned, trial(1, started=50, gpus=2)]
    decision = assess(spec, trials, at(0), at(125))
    assert decision.may_start == 0
    assert decision.usage.gpu_hours == pytest.approx(2 * (125 + 75) / HOUR)
    # Its pod terminated at 110 s (SIGKILL after a 10 s grace period): 110 s are counted.
    ended = trial(0, TrialState.PRUNED, started=0, ended=100, gpus=2, pod_ended=110)
    decision = assess(spec, [ended, trials[1]], at(0), at(125))
    assert decision.may_start == 1
    assert decision.usage.gpu_hours == pytest.approx(2 * (110 + 75) / HOUR)


def test_the_worst_case_of_a_trial_includes_its_grace_period() -> None:
    # Five worst cases of a 3 s trialTimeout with the default 10 s grace period, parallelism 2.
    limit = 5 * 13 / HOUR
    spec = study_spec(budget={"parallelism": 2, "maxGpuHours": limit, "trialTimeout": "3s"}, gpus=1)
    assert assess(spec, [], at(0), at(0)).may_start == 2
    # Two ran 3 s and were stopped; their pods ignore SIGTERM: each may hold 13 s. Three
    # worst cases are left, and the two slots are taken until the pods are gone.
    stopped = [
        trial(n, TrialState.TIMED_OUT, started=0, ended=3, gpus=1, terminating=True)
        for n in range(2)
    ]
    assert assess(spec, stopped, at(0), at(5)).may_start == 0
    gone = [
        trial(n, TrialState.TIMED_OUT, started=0, ended=3, gpus=1, pod_ended=13) for n in (0, 1)
    ]
    assert assess(spec, gone, at(0), at(13)).may_start == 2
    # A longer grace period in the template is a larger worst case.
    slow = study_spec(
        budget={"parallelism": 2, "maxGpuHours": limit, "trialTimeout": "3s"}, gpus=1, grace=30
    )
    assert assess(slow, [], at(0), at(0)).may_start == 1


def test_a_trial_stopped_in_this_reconcile_still_counts() -> None:
    # Budget for exactly two worst cases (3 s + 10 s grace); trial 0 reaches its timeout now.
    spec = study_spec(
        budget={"parallelism": 3, "maxGpuHours": 2 * 13 / HOUR, "trialTimeout": "3s"}, gpus=1
    )
    decision = assess(spec, [trial(0, gpus=1)], at(0), at(3))
    assert [stop.reason for stop in decision.trial_stops] == ["TrialTimeout"]
    assert decision.may_start == 1  # trial 0's pod may hold 3 s + its grace period: one more fits
    tighter = spec.model_copy(
        update={"budget": spec.budget.model_copy(update={"max_gpu_hours": 2 * 13 / HOUR - 1e-4})}
    )
    assert assess(tighter, [trial(0, gpus=1)], at(0), at(3)).may_start == 0


def test_the_reconcile_wakes_when_running_pods_use_up_the_budget() -> None:
    # Two running 1-GPU pods have used 1200 GPU-seconds of 3600: the limit falls at 1800 s,
    # before either trial's 2 h timeout.
    spec = study_spec(budget={"parallelism": 2, "maxGpuHours": 1, "trialTimeout": "2h"}, gpus=1)
    decision = assess(spec, [trial(0, gpus=1), trial(1, gpus=1)], at(0), at(600))
    assert decision.next_deadline == at(1800)
    money = study_spec(
        budget={
            "parallelism": 2,
            "trialTimeout": "2h",
            "money": {"limit": 1, "pricePerGpuHour": {"nvidia.com/gpu": 2.0}},
        },
        gpus=1,
    )
    # 2 pods at 2.0 per hour each: 1.0 is spent at 900 s.
    assert assess(money, [trial(0, gpus=1), trial(1, gpus=1)], at(0), at(0)).next_deadline == at(
        900
    )


def test_a_study_whose_first_trials_all_fail_fails_at_once() -> None:
    spec = study_spec(budget={"parallelism": 1, "maxTrials": 20})
    failed = [trial(n, TrialState.FAILED, ended=n + 1) for n in range(3)]
    assert assess(spec, failed[:2], at(0), at(5)).end is None
    decision = assess(spec, failed, at(0), at(5))
    assert decision.end is not None
    assert decision.end.failed
    assert decision.end.reason is StudyConditionReason.NO_TRIAL_SUCCEEDED
    assert "3 Failed" in decision.end.message
    assert "maxFailedTrials" in decision.end.message
    # A trial that worked (succeeded or pruned) shows the setup is sound: failures go on.
    pruned = trial(3, TrialState.PRUNED, ended=4)
    assert assess(spec, [*failed, pruned], at(0), at(5)).end is None
    # With more trials running at once, that many must fail.
    wide = study_spec(budget={"parallelism": 5, "maxTrials": 20})
    assert assess(wide, failed, at(0), at(5)).end is None
    # An explicit maxFailedTrials replaces the rule.
    allowing = study_spec(budget={"parallelism": 1, "maxFailedTrials": 10})
    assert assess(allowing, failed, at(0), at(5)).end is None


def test_a_study_that_ends_without_a_succeeded_trial_fails() -> None:
    spec = study_spec(budget={"parallelism": 2, "maxTrials": 2, "maxFailedTrials": 5})
    trials = [
        trial(0, TrialState.FAILED, ended=3),
        trial(1, TrialState.METRICS_UNAVAILABLE, ended=4),
    ]
    trials[0] = with_reason(trials[0], "Error", "exit code 127")
    decision = assess(spec, trials, at(0), at(5))
    assert decision.end is not None
    assert decision.end.reason is StudyConditionReason.NO_TRIAL_SUCCEEDED
    assert decision.end.failed
    assert "trial 0 Failed (Error): exit code 127" in decision.end.message
    assert "maxTrials (2)" in decision.end.message
    # The same ending with one success completes.
    trials[1] = trial(1, TrialState.SUCCEEDED, ended=4, values=[1.0])
    decision = assess(spec, trials, at(0), at(5))
    assert decision.end is not None
    assert decision.end.reason is StudyConditionReason.MAX_TRIALS_REACHED


def test_draining_waits_for_terminating_pods() -> None:
    spec = study_spec(budget={"maxTrials": 2, "parallelism": 2})
    done = trial(0, TrialState.SUCCEEDED, ended=3, values=[1.0])
    pruned = trial(1, TrialState.PRUNED, ended=4, terminating=True)
    decision = assess(spec, [done, pruned], at(0), at(5))
    assert decision.end is None
    assert decision.draining is not None
    gone = trial(1, TrialState.PRUNED, ended=4, pod_ended=6)
    decision = assess(spec, [done, gone], at(0), at(7))
    assert decision.end is not None
    assert decision.end.reason is StudyConditionReason.MAX_TRIALS_REACHED


def test_a_metrics_timeout_caused_by_the_source_says_so() -> None:
    spec = study_spec(budget={"metricsTimeout": "1m", "maxFailedTrials": 5})
    silent = with_reason(
        trial(0, started=0),
        "MetricsSourceError",
        "MetricsSourceUnreachable: Secret prometheus-token not found",
    )
    (stop,) = assess(spec, [silent], at(0), at(60)).trial_stops
    assert (stop.state, stop.reason) == (TrialState.FAILED, "MetricsSourceError")
    assert "Secret prometheus-token not found" in stop.message
    (plain,) = assess(spec, [trial(0, started=0)], at(0), at(60)).trial_stops
    assert plain.reason == "MetricsTimeout"


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (0.00333333, "0.003333"),
        (0.0100417, "0.01004"),
        (36.1, "36.1"),
        (1234.5, "1234"),
        (98765.4, "98765"),
        (0.0, "0"),
        (2.5, "2.5"),
    ],
)
def test_amounts_are_shown_with_four_significant_digits(amount: float, shown: str) -> None:
    assert format_amount(amount) == shown

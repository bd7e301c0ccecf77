"""The controller's decisions, driven through a simulated cluster (tests/simulation.py)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune.controller import PodObservation, PodPhase, StudyController, with_owner_uid
from kubetune.controller.status import USAGE_REFRESH_SECONDS
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.study_status import StudyConditionReason, StudyPhase
from kubetune.spec.trial import TrialState, TuningTrial
from tests.factories import study_spec
from tests.simulation import PodScript, SimulatedCluster


def quadratic(trial: TuningTrial) -> PodScript:
    """A trainer whose loss is x^2 + y, reported at three steps and in its final message."""
    x, y = float(trial.spec.params["x"]), float(trial.spec.params["y"])  # type: ignore[arg-type]
    loss = x * x + y
    return PodScript(
        reports=((2, 0, loss + 20), (4, 1, loss + 10), (6, 2, loss + 1)),
        end_after=8,
        final={"loss": loss},
    )


def states(cluster: SimulatedCluster) -> dict[int, TrialState]:
    return {t.spec.number: t.status.state for t in cluster.trials.values()}


def test_a_study_runs_to_max_trials_and_reports_the_best_trial() -> None:
    cluster = SimulatedCluster.of(study_spec(budget={"parallelism": 3, "maxTrials": 7}), quadratic)
    status = cluster.run()
    assert status.phase is StudyPhase.COMPLETED
    assert status.trials.succeeded == 7
    assert status.progress == "7/7"
    completed = {c.type: c for c in status.conditions}["Completed"]
    assert completed.reason == StudyConditionReason.MAX_TRIALS_REACHED
    losses = {t.spec.number: t.status.values[0] for t in cluster.trials.values()}  # type: ignore[index]
    best_number = min(losses, key=lambda n: losses[n])
    assert status.best_trial is not None
    assert status.best_trial.number == best_number
    assert status.best_trial.value == losses[best_number]
    assert sorted(t.spec.number for t in cluster.trials.values()) == list(range(7))
    reasons = [e.reason for plan in cluster.plans for e in plan.events]
    assert reasons.count("TrialStarted") == 7
    assert reasons.count("TrialSucceeded") == 7
    assert "NewBest" in reasons
    assert reasons[-2:] == ["BudgetExhausted", "StudySucceeded"]
    [exhausted] = [
        e for plan in cluster.plans for e in plan.events if e.reason == "BudgetExhausted"
    ]
    assert "7" in exhausted.message  # names the budget that ran out


def test_a_new_trial_comes_with_its_pod_owned_by_the_created_trial() -> None:
    cluster = SimulatedCluster.of(study_spec(budget={"parallelism": 2}), quadratic)
    first = cluster.reconcile()
    assert [t.metadata.name for t in first.create_trials] == ["demo-0", "demo-1"]
    assert set(first.new_trial_workloads) == {"demo-0", "demo-1"}
    assert first.create_workloads == ()
    # Not created yet, so no uid: whoever creates the trial fills it in.
    (pending_pod,) = first.new_trial_workloads["demo-0"]
    assert pending_pod["metadata"]["ownerReferences"][0]["uid"] is None
    pod = with_owner_uid(pending_pod, "uid-0")
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("TuningTrial", "demo-0", "uid-0")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert json.loads(env["KUBETUNE_PARAMS"]) == cluster.trials["demo-0"].spec.params
    second = cluster.reconcile()
    assert (second.create_trials, second.create_workloads) == ((), ())


def test_a_trial_left_without_its_pod_gets_it_on_the_next_reconcile() -> None:
    """The operator died between creating the trial and creating its pod."""
    cluster = SimulatedCluster.of(study_spec(budget={"parallelism": 2}), quadratic)
    cluster.apply(dataclasses.replace(cluster.decide(), new_trial_workloads={}))
    assert cluster.pods == {}
    second = cluster.reconcile()
    assert second.create_trials == ()
    pods = {pod["metadata"]["name"]: pod for pod in second.create_workloads}
    assert set(pods) == {"demo-0", "demo-1"}
    owner = pods["demo-0"]["metadata"]["ownerReferences"][0]
    assert owner["uid"] == cluster.trials["demo-0"].metadata.uid
    assert set(cluster.pods) == {"demo-0", "demo-1"}


def test_a_plan_that_was_not_applied_is_made_again_identically() -> None:
    """A crash after deciding but before writing: the next reconcile neither skips nor
    duplicates a trial number, and suggests the same parameters."""
    spec = study_spec(
        budget={"parallelism": 2, "maxTrials": 8}, algorithm={"name": "tpe", "seed": 3}
    )
    cluster = SimulatedCluster.of(spec, quadratic)
    checked = 0
    for _ in range(200):
        plan = cluster.decide()
        if plan.create_trials or plan.create_workloads:
            # The same controller (whose engine already asked) and a restarted one agree.
            for again in (cluster.decide(), cluster.decide(StudyController())):
                assert again.create_trials == plan.create_trials
                assert again.create_workloads == plan.create_workloads
                assert again.new_trial_workloads == plan.new_trial_workloads
            checked += 1
        cluster.apply(plan)
        if cluster.study_status.phase is StudyPhase.COMPLETED:
            break
        cluster.now += timedelta(seconds=1)
    # 8 trials, at most 2 at a time: at least 4 plans created some.
    assert checked >= 4
    assert sorted(t.spec.number for t in cluster.trials.values()) == list(range(8))


def test_an_operator_restart_continues_exactly_as_without_it() -> None:
    spec = study_spec(
        budget={"parallelism": 3, "maxTrials": 12}, algorithm={"name": "tpe", "seed": 5}
    )
    steady = SimulatedCluster.of(spec, quadratic)
    steady.run()
    restarted = SimulatedCluster.of(spec, quadratic)
    for tick in range(400):
        if tick % 7 == 0:
            restarted.controller = StudyController()  # a new process: only the cluster remains
        restarted.reconcile()
        if restarted.study_status.phase is StudyPhase.COMPLETED:
            break
        restarted.now += timedelta(seconds=1)
    assert {t.spec.number: t.spec.params for t in restarted.trials.values()} == {
        t.spec.number: t.spec.params for t in steady.trials.values()
    }
    assert restarted.study_status.best_trial == steady.study_status.best_trial


def test_the_pruner_stops_hopeless_trials() -> None:
    spec = study_spec(
        budget={"parallelism": 1, "maxTrials": 12},
        pruner={"name": "median", "startupTrials": 3, "warmupSteps": 0},
    )

    def script(trial: TuningTrial) -> PodScript:
        # Odd trials are far worse at every step.
        bad = trial.spec.number % 2 == 1
        base = 100.0 if bad else 1.0
        reports = tuple((2.0 + step, step, base - step * 0.1) for step in range(5))
        return PodScript(reports=reports, end_after=8, final={"loss": base - 0.5})

    cluster = SimulatedCluster.of(spec, script)
    status = cluster.run()
    assert status.trials.pruned >= 3
    pruned = [t for t in cluster.trials.values() if t.status.state is TrialState.PRUNED]
    assert all(t.spec.number % 2 == 1 for t in pruned)
    assert all(t.status.reason == "Pruned" and "step" in (t.status.message or "") for t in pruned)
    # Stopped where they run (activeDeadlineSeconds lowered), not deleted: their logs stay.
    stopped = {pod for plan in cluster.plans for pod in plan.stop_workloads}
    deleted = {pod for plan in cluster.plans for pod in plan.delete_workloads}
    assert {t.metadata.name for t in pruned} <= stopped - deleted
    assert {t.metadata.name for t in pruned} <= set(cluster.pods)
    assert not any(t.status.pod_terminating for t in pruned)


def test_each_way_a_trial_can_end_is_recorded_with_its_reason() -> None:
    outcomes = {
        0: PodScript(end_after=5, final={"loss": 1.5}),
        1: PodScript(end_after=5, succeeds=False, reason="OOMKilled"),
        2: PodScript(end_after=5, succeeds=False, reason="DeadlineExceeded"),
        3: PodScript(end_after=5, final={"other": 1.0}),
        4: PodScript(end_after=5, final={"loss": "NaN"}),
        5: PodScript(end_after=5, final={"loss": math.inf}),
    }
    spec = study_spec(budget={"parallelism": 6, "maxTrials": 6})
    cluster = SimulatedCluster.of(spec, lambda t: outcomes[t.spec.number])
    status = cluster.run()
    by_number = {t.spec.number: t.status for t in cluster.trials.values()}
    assert by_number[0].state is TrialState.SUCCEEDED
    assert by_number[0].values == [1.5]
    assert (by_number[1].state, by_number[1].reason) == (TrialState.FAILED, "OOMKilled")
    assert by_number[2].state is TrialState.TIMED_OUT
    assert by_number[3].state is TrialState.METRICS_UNAVAILABLE
    assert "loss" in (by_number[3].message or "")
    assert (by_number[4].state, by_number[4].reason) == (TrialState.FAILED, "InvalidMetrics")
    assert "'NaN'" in (by_number[4].message or "")
    assert by_number[5].state is TrialState.FAILED
    # Garbage fails those trials only; the study completes with the good one as best.
    assert status.phase is StudyPhase.COMPLETED
    assert status.best_trial is not None
    assert status.best_trial.number == 0


def test_a_pod_deleted_by_someone_else_fails_its_trial() -> None:
    cluster = SimulatedCluster.of(
        study_spec(budget={"maxTrials": 1}), lambda t: PodScript(end_after=None)
    )
    for _ in range(3):
        cluster.reconcile()
        cluster.now += timedelta(seconds=2)
    assert states(cluster) == {0: TrialState.RUNNING}
    cluster.pods.clear()
    cluster.reconcile()
    trial = cluster.trials["demo-0"]
    assert trial.status.state is TrialState.FAILED
    assert trial.status.reason == "PodDeleted"


def test_max_duration_stops_running_trials_and_nothing_starts_after() -> None:
    spec = study_spec(budget={"parallelism": 2, "maxDuration": "30s"})
    # Trial 0 succeeds at once; every later one would run forever.
    cluster = SimulatedCluster.of(
        spec,
        lambda t: PodScript(end_after=2 if t.spec.number == 0 else None, final={"loss": 1.0}),
    )
    status = cluster.run(tick=5)
    assert status.phase is StudyPhase.COMPLETED
    completed = {c.type: c for c in status.conditions}["Completed"]
    assert completed.reason == StudyConditionReason.MAX_DURATION_REACHED
    stopped = [t for t in cluster.trials.values() if t.spec.number > 0]
    assert {t.status.state for t in stopped} == {TrialState.STOPPED}
    assert all(t.status.reason == "MaxDurationReached" for t in stopped)
    # Their pods are stopped where they ran and end; the objects stay for their logs.
    cluster.now += timedelta(seconds=5)
    cluster.reconcile()
    pods = [cluster.observe(t.metadata.name or "") for t in stopped]
    assert all(pod is not None and pod.terminated for pod in pods)
    cluster.now += timedelta(hours=1)
    later = cluster.reconcile()
    assert later.create_trials == ()
    assert later.create_workloads == ()


def test_raising_max_trials_resumes_a_completed_study() -> None:
    spec = study_spec(budget={"parallelism": 2, "maxTrials": 3})
    cluster = SimulatedCluster.of(spec, quadratic)
    status = cluster.run()
    assert status.phase is StudyPhase.COMPLETED
    # Unchanged spec: still nothing starts, however often it is reconciled.
    cluster.now += timedelta(minutes=5)
    assert cluster.reconcile().create_trials == ()
    raised = spec.model_copy(update={"budget": spec.budget.model_copy(update={"max_trials": 5})})
    metadata = cluster.study.metadata.model_copy(update={"generation": 2})
    cluster.study = cluster.study.model_copy(update={"spec": raised, "metadata": metadata})
    plan = cluster.reconcile()
    assert [t.spec.number for t in plan.create_trials] == [3, 4]
    assert "StudyResumed" in [e.reason for e in plan.events]
    assert plan.study_status.phase is StudyPhase.RUNNING
    status = cluster.run()
    assert status.phase is StudyPhase.COMPLETED
    assert status.trials.succeeded == 5


def test_a_study_that_reached_its_goal_stays_completed_when_the_budget_grows() -> None:
    spec = study_spec(
        objective={"metrics": [{"name": "loss", "goal": 1000.0}]},
        budget={"parallelism": 1, "maxTrials": 3},
    )
    cluster = SimulatedCluster.of(spec, quadratic)
    assert cluster.run().phase is StudyPhase.COMPLETED
    reasons = [e.reason for plan in cluster.plans for e in plan.events]
    assert "BudgetExhausted" not in reasons  # the goal ended it, not a budget
    raised = spec.model_copy(update={"budget": spec.budget.model_copy(update={"max_trials": 9})})
    metadata = cluster.study.metadata.model_copy(update={"generation": 2})
    cluster.study = cluster.study.model_copy(update={"spec": raised, "metadata": metadata})
    assert cluster.reconcile().create_trials == ()


def test_lowering_parallelism_stops_nothing_and_raising_it_starts_at_once() -> None:
    spec = study_spec(budget={"parallelism": 4})
    cluster = SimulatedCluster.of(spec, lambda t: PodScript(end_after=None))
    cluster.reconcile()
    cluster.reconcile()
    assert len(cluster.pods) == 4
    lower = spec.model_copy(update={"budget": spec.budget.model_copy(update={"parallelism": 1})})
    cluster.study = cluster.study.model_copy(update={"spec": lower})
    plan = cluster.reconcile()
    assert plan.delete_workloads == ()
    assert plan.create_trials == ()
    assert len(cluster.pods) == 4
    higher = spec.model_copy(update={"budget": spec.budget.model_copy(update={"parallelism": 6})})
    cluster.study = cluster.study.model_copy(update={"spec": higher})
    plan = cluster.reconcile()
    assert len(plan.create_trials) == 2
    assert plan.requeue_after is None  # no timers needed: nothing can time out


def test_an_invalid_spec_is_marked_invalid_with_the_field_and_starts_nothing() -> None:
    cluster = SimulatedCluster.of(study_spec(), quadratic)
    document = cluster.document()
    document["spec"]["searchSpace"][0]["low"] = 50.0  # above high
    plan = StudyController().reconcile(document, [], {}, cluster.now)
    assert plan.study_status.phase is StudyPhase.INVALID
    assert "spec.searchSpace[0]" in plan.study_status.message
    assert plan.create_trials == ()
    assert [e.reason for e in plan.events] == ["SpecInvalid"]


def test_changing_the_search_space_of_a_running_study_is_refused() -> None:
    cluster = SimulatedCluster.of(study_spec(budget={"parallelism": 1}), quadratic)
    cluster.reconcile()
    document = cluster.document()
    document["spec"]["searchSpace"][0]["high"] = 20.0
    plan = cluster.controller.reconcile(document, list(cluster.trials.values()), {}, cluster.now)
    assert plan.study_status.phase is StudyPhase.INVALID
    assert "spec.searchSpace" in plan.study_status.message
    assert plan.create_trials == ()
    assert plan.delete_workloads == ()


def test_goal_reached_completes_the_study_and_stops_the_others() -> None:
    spec = study_spec(
        objective={"metrics": [{"name": "loss", "goal": 1000.0}]}, budget={"parallelism": 2}
    )
    scripts = {0: PodScript(end_after=3, final={"loss": 5.0}), 1: PodScript(end_after=None)}
    cluster = SimulatedCluster.of(
        spec, lambda t: scripts.get(t.spec.number, PodScript(end_after=None))
    )
    status = cluster.run()
    completed = {c.type: c for c in status.conditions}["Completed"]
    assert completed.reason == StudyConditionReason.GOAL_REACHED
    assert cluster.trials["demo-1"].status.state is TrialState.STOPPED


def test_several_objectives_give_a_bounded_pareto_front() -> None:
    spec = study_spec(
        objective={
            "metrics": [
                {"name": "loss", "direction": "minimize"},
                {"name": "size", "direction": "minimize"},
            ]
        },
        algorithm={"name": "nsga2", "seed": 2, "populationSize": 4},
        budget={"parallelism": 4, "maxTrials": 40},
    )

    def script(trial: TuningTrial) -> PodScript:
        x = float(trial.spec.params["x"])  # type: ignore[arg-type]
        return PodScript(end_after=2, final={"loss": x, "size": -x})  # every trial is optimal

    cluster = SimulatedCluster.of(spec, script)
    status = cluster.run()
    assert status.pareto_front_size == 40
    assert len(status.pareto_front) == 40  # all of it: under MAX_PARETO_FRONT_IN_STATUS
    assert status.best_trial is not None
    assert status.best_trial.values is not None


def test_status_size_does_not_grow_with_trials() -> None:
    spec = study_spec(budget={"parallelism": 20, "maxTrials": 200})
    cluster = SimulatedCluster.of(
        spec, lambda t: PodScript(start_after=0, end_after=1, final={"loss": 1.0})
    )
    cluster.run()
    sizes = [len(json.dumps(plan.study_status.model_dump(mode="json"))) for plan in cluster.plans]
    assert max(sizes) < 4000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parallelism=st.integers(1, 4),
    max_trials=st.integers(1, 10),
    worst_cases=st.floats(0.5, 6.0),
    gpus=st.integers(1, 4),
    grace=st.integers(0, 90),
    failed_allowed=st.integers(0, 3),
    outcomes=st.lists(
        st.tuples(
            st.sampled_from(["ok", "fail", "hang", "garbage", "silent", "ignores-sigterm"]),
            st.integers(1, 60),
        ),
        min_size=10,
        max_size=10,
    ),
    ticks=st.lists(st.integers(1, 30), min_size=40, max_size=40),
    raise_at=st.integers(0, 60),
    raise_by=st.tuples(st.integers(0, 3), st.floats(1.0, 3.0)),
)
def test_what_the_pods_held_never_passes_the_budget(
    parallelism: int,
    max_trials: int,
    worst_cases: float,
    gpus: int,
    grace: int,
    failed_allowed: int,
    outcomes: list[tuple[str, int]],
    ticks: list[int],
    raise_at: int,
    raise_by: tuple[int, float],
) -> None:
    """Whatever the pods do (fail, hang, report garbage, outlive their stop by their whole
    grace period), and with the budget raised while the study runs, the GPU time the pods
    really held never passes maxGpuHours, and the usage measured never says less than they held."""
    # A budget of a few trials' worst cases (2 min trialTimeout and the grace period).
    gpu_hours = worst_cases * gpus * (120 + grace) / 3600
    budget: dict[str, Any] = {
        "parallelism": parallelism,
        "maxTrials": max_trials,
        "maxGpuHours": gpu_hours,
        "trialTimeout": "2m",
        "maxFailedTrials": failed_allowed,
    }
    spec: TuningStudySpec = study_spec(budget=budget, gpus=gpus, grace=grace)

    def script(trial: TuningTrial) -> PodScript:
        kind, length = outcomes[trial.spec.number % len(outcomes)]
        final: dict[str, Mapping[str, object] | None] = {
            "ok": {"loss": float(length)},
            "garbage": {"loss": "?"},
            "silent": None,
        }
        return PodScript(
            end_after=None if kind in ("hang", "ignores-sigterm") else float(length),
            succeeds=kind != "fail",
            final=final.get(kind, {"loss": 1.0}),
            exits_after_sigterm=math.inf if kind == "ignores-sigterm" else length / 10,
            reports=((1.0, 0, float(length)),),
        )

    cluster = SimulatedCluster.of(spec, script)
    finished_at: int | None = None
    for index, tick in enumerate([*ticks, *[30] * 40]):  # then long enough for pods to end
        if index == raise_at:  # a live budget patch: more parallelism, a larger GPU budget
            budget["parallelism"] += raise_by[0]
            budget["maxGpuHours"] *= raise_by[1]
            patched = study_spec(budget=budget, gpus=gpus, grace=grace)
            metadata = cluster.study.metadata.model_copy(update={"generation": 2})
            cluster.study = cluster.study.model_copy(update={"spec": patched, "metadata": metadata})
            finished_at = None  # a study that completed by its budget resumes
        plan = cluster.reconcile()
        trials = list(cluster.trials.values())
        holding = [t for t in trials if t.status.holds_pod]
        assert len(holding) <= budget["parallelism"]
        assert len(trials) <= max_trials
        held = cluster.gpu_seconds_held()
        assert held <= budget["maxGpuHours"] * 3600 + 1e-6
        assert plan.measured_usage is not None
        assert plan.measured_usage.gpu_hours * 3600 >= held - 1e-6
        # The status may show an older measurement, never one over USAGE_REFRESH_SECONDS old.
        # and wakes the study by the time the measurement is due.
        shown = cluster.study_status.budget
        assert shown == plan.measured_usage or (
            plan.measured_usage.elapsed_seconds - shown.elapsed_seconds < USAGE_REFRESH_SECONDS
            and plan.requeue_after is not None
            and plan.requeue_after <= USAGE_REFRESH_SECONDS
        )
        for update in plan.trial_updates:
            if not update.status.state.is_active:
                assert update.status.reason
        if finished_at is not None:
            assert plan.create_trials == ()
            assert plan.create_workloads == ()
        if cluster.study_status.phase in (StudyPhase.COMPLETED, StudyPhase.FAILED):
            finished_at = finished_at if finished_at is not None else index
        cluster.now += timedelta(seconds=tick)
    numbers = sorted(t.spec.number for t in cluster.trials.values())
    assert numbers == list(range(len(numbers)))
    if finished_at is not None:  # every pod has ended, and the books say what they held
        assert not any(t.status.holds_pod for t in cluster.trials.values())
        books = sum(t.status.gpu_seconds for t in cluster.trials.values())
        assert books == pytest.approx(cluster.gpu_seconds_held(), abs=30 * gpus * len(numbers))
        assert books >= cluster.gpu_seconds_held() - 1e-6


def test_pending_pods_show_why_they_wait() -> None:
    controller = StudyController()
    cluster = SimulatedCluster.of(study_spec(budget={"pendingTimeout": "1m"}), quadratic)
    cluster.controller = controller
    cluster.reconcile()
    cluster.reconcile()
    waiting = PodObservation(PodPhase.PENDING, reason="Unschedulable", message="0/3 nodes")
    plan = controller.reconcile(
        cluster.document(), list(cluster.trials.values()), {"demo-0": waiting}, cluster.now
    )
    assert plan.trial_updates[0].status.message == "Unschedulable: 0/3 nodes"
    cluster.apply(plan)
    late = cluster.now + timedelta(minutes=2)
    plan = controller.reconcile(
        cluster.document(), list(cluster.trials.values()), {"demo-0": waiting}, late
    )
    update = plan.trial_updates[0]
    assert (update.status.state, update.status.reason) == (TrialState.FAILED, "PendingTimeout")
    assert "Unschedulable" in (update.status.message or "")


def test_pod_retention_keeps_the_latest_pods_of_each_kind_and_the_best() -> None:
    spec = study_spec(budget={"parallelism": 1, "maxTrials": 12, "maxFailedTrials": 12})
    spec = spec.model_copy(
        update={
            "pod_retention": spec.pod_retention.model_copy(update={"succeeded": 2, "failed": 1})
        }
    )

    def script(trial: TuningTrial) -> PodScript:
        number = trial.spec.number
        if number % 3 == 2:  # every third trial fails
            return PodScript(end_after=1, succeeds=False, reason="Error")
        return PodScript(end_after=1, final={"loss": 1.0 if number == 0 else 2.0 + number})

    cluster = SimulatedCluster.of(spec, script)
    status = cluster.run()
    assert status.best_trial is not None
    assert status.best_trial.number == 0
    deleted = [pod for plan in cluster.plans for pod in plan.delete_workloads]
    assert len(deleted) == len(set(deleted))
    kept = {t.status.pod_name for t in cluster.trials.values()} - set(deleted)
    # The best trial (0), the 2 latest other succeeded ones (10, 9), the latest failed one (11).
    assert kept == {"demo-0", "demo-10", "demo-9", "demo-11"}
    # The trial records all stay, with the pod names they had.
    assert len(cluster.trials) == 12
    assert all(t.status.pod_name for t in cluster.trials.values())

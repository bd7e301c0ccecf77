"""Re-evaluation (spec.reevaluation): once the search ends, the best configurations run again
with new seeds, and the study recommends the one best on average. Driven through the simulated
cluster (tests/simulation.py), whose pods report what a seeded trainer would."""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune.controller import StudyController
from kubetune.controller.reevaluation import rerun_seeds, trial_seed
from kubetune.controller.trial_pod import render_trial_pod
from kubetune.spec.rules import check_study_spec
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.study_status import StudyConditionReason, StudyPhase
from kubetune.spec.trial import TrialState, TuningTrial, is_search_trial
from tests.factories import study, study_spec
from tests.simulation import PodScript, SimulatedCluster


def noise(seed: int | None) -> float:
    """A trainer's seed-dependent noise in [-0.5, 0.5): the same seed, the same noise."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    return digest[0] / 256 - 0.5


def seeded_trainer(trial: TuningTrial) -> PodScript:
    """Validation loss x^2 + y plus the seed's noise; the held-out loss is the same plus a
    penalty for large |x| (a configuration that overfits the validation set)."""
    x, y = float(trial.spec.params["x"]), float(trial.spec.params["y"])  # type: ignore[arg-type]
    loss = x * x + y + noise(trial.spec.seed)
    held_out = loss + abs(x) + noise((trial.spec.seed or 0) + 1)
    return PodScript(end_after=5, final={"loss": loss, "test_loss": held_out})


def reevaluated_spec(**overrides: Any) -> TuningStudySpec:
    reevaluation = {"topTrials": 3, "repeats": 3, "metric": "test_loss"}
    reevaluation.update(overrides.pop("reevaluation", {}))
    return study_spec(
        budget=overrides.pop("budget", {"parallelism": 2, "maxTrials": 8}),
        objective={
            "metrics": [{"name": "loss", "direction": "minimize"}],
            "additionalMetrics": ["test_loss"],
        },
        algorithm={"name": "random", "seed": 11},
        reevaluation=reevaluation,
        **overrides,
    )


def reruns(cluster: SimulatedCluster) -> list[TuningTrial]:
    return [t for t in cluster.trials.values() if not is_search_trial(t)]


def events(cluster: SimulatedCluster) -> list[str]:
    return [e.reason for plan in cluster.plans for e in plan.events]


def test_the_best_configurations_run_again_and_the_best_mean_is_recommended() -> None:
    cluster = SimulatedCluster.of(reevaluated_spec(), seeded_trainer)
    status = cluster.run()

    assert status.phase is StudyPhase.COMPLETED
    completed = {c.type: c for c in status.conditions}["Completed"]
    assert completed.reason == StudyConditionReason.MAX_TRIALS_REACHED  # the search's reason
    search = sorted(
        (t for t in cluster.trials.values() if is_search_trial(t)), key=lambda t: t.spec.number
    )
    assert [t.spec.number for t in search] == list(range(8))  # maxTrials counts the search
    assert status.trials.total == 8
    assert status.progress == "8/8"
    top = sorted(search, key=lambda t: ((t.status.values or [0])[0], t.spec.number))[:3]
    runs = reruns(cluster)
    assert sorted((r.spec.reevaluation.trial, r.spec.reevaluation.repeat) for r in runs) == sorted(  # type: ignore[union-attr]
        (t.spec.number, repeat) for t in top for repeat in range(3)
    )
    for run in runs:
        assert run.metadata.name == f"demo-{run.spec.number}-r{run.spec.reevaluation.repeat}"  # type: ignore[union-attr]
        assert run.spec.params == cluster.trials[f"demo-{run.spec.number}"].spec.params
        assert run.status.state is TrialState.SUCCEEDED

    recommendation = status.recommendation
    assert recommendation is not None
    means = {
        t.spec.number: statistics.fmean(
            r.status.metrics["test_loss"] for r in runs if r.spec.number == t.spec.number
        )
        for t in top
    }
    assert recommendation.trial == min(means, key=lambda n: means[n])
    assert recommendation.metric == "test_loss"
    mine = sorted(
        (r for r in runs if r.spec.number == recommendation.trial),
        key=lambda r: r.spec.reevaluation.repeat,  # type: ignore[union-attr]
    )
    assert recommendation.values == [r.status.metrics["test_loss"] for r in mine]
    assert recommendation.seeds == [r.spec.seed for r in mine]
    assert len(set(recommendation.seeds)) == 3  # one seed per repeat
    assert recommendation.mean == pytest.approx(statistics.fmean(recommendation.values))
    assert recommendation.std == pytest.approx(statistics.stdev(recommendation.values))
    winner = cluster.trials[f"demo-{recommendation.trial}"]
    assert recommendation.params == winner.spec.params
    assert recommendation.validation_value == winner.status.values[0]  # type: ignore[index]
    assert recommendation.generalization_gap == pytest.approx(
        recommendation.mean - recommendation.validation_value
    )
    assert status.reevaluation is not None
    assert (status.reevaluation.runs, status.reevaluation.finished) == (9, 9)
    assert [c.scores[0].mean for c in status.reevaluation.configurations] == sorted(means.values())
    reasons = events(cluster)
    assert reasons.count("ReevaluationStarted") == 1
    assert reasons.count("ReevaluationRunStarted") == 9
    assert reasons[-1] == "StudySucceeded"
    assert "Recommendation" in reasons


def test_the_study_is_reevaluating_between_the_search_and_its_end() -> None:
    cluster = SimulatedCluster.of(reevaluated_spec(), seeded_trainer)
    phases = []
    while cluster.study_status.phase not in (StudyPhase.COMPLETED, StudyPhase.FAILED):
        cluster.reconcile()
        phases.append(cluster.study_status.phase)
        if cluster.study_status.phase is StudyPhase.REEVALUATING:
            status = cluster.study_status
            ended = {c.type: c for c in status.conditions}["SearchEnded"]
            assert ended.reason == StudyConditionReason.MAX_TRIALS_REACHED
            assert "re-evaluating the best 3 configurations" in status.message
            assert not any(
                t.status.holds_pod for t in cluster.trials.values() if is_search_trial(t)
            )
        cluster.now += timedelta(seconds=1)
    assert StudyPhase.REEVALUATING in phases
    first = phases.index(StudyPhase.REEVALUATING)
    assert all(p is StudyPhase.REEVALUATING for p in phases[first:-1])


def test_every_trial_gets_a_stable_seed_and_each_rerun_a_new_one() -> None:
    cluster = SimulatedCluster.of(reevaluated_spec(), seeded_trainer)
    cluster.run()
    for trial in cluster.trials.values():
        pod = render_trial_pod(cluster.study, trial)
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["KUBETUNE_SEED"] == str(trial.spec.seed)
        if is_search_trial(trial):
            assert trial.spec.seed == trial_seed(11, trial.spec.number)  # algorithm.seed 11
    for number in {r.spec.number for r in reruns(cluster)}:
        seeds = [r.spec.seed for r in reruns(cluster) if r.spec.number == number]
        search_seed = cluster.trials[f"demo-{number}"].spec.seed
        assert len(set(seeds)) == len(seeds)
        assert search_seed not in seeds
    # A seed in 2**31 collides rarely; the rule still holds when one does.
    assert len(set(rerun_seeds(11, 0, 20))) == 20


def test_the_seed_placeholder_is_replaced_in_command_and_args() -> None:
    spec = reevaluated_spec()
    container = spec.trial_template.spec.containers[0].model_copy(
        update={"args": ["--seed=${trial.seed}", "--x=${params.x}"]}
    )
    template = spec.trial_template.model_copy(
        update={"spec": spec.trial_template.spec.model_copy(update={"containers": [container]})}
    )
    spec = spec.model_copy(update={"trial_template": template})
    cluster = SimulatedCluster.of(spec, seeded_trainer)
    cluster.reconcile()
    [first, *_] = cluster.plans[0].create_trials
    (pod,) = cluster.plans[0].new_trial_workloads[first.metadata.name or ""]
    assert pod["spec"]["containers"][0]["args"][0] == f"--seed={first.spec.seed}"


def test_the_same_seeded_manifest_gives_the_same_recommendation() -> None:
    first = SimulatedCluster.of(reevaluated_spec(), seeded_trainer).run()
    again = SimulatedCluster.of(reevaluated_spec(), seeded_trainer)
    # Another study object (another uid): algorithm.seed alone decides every seed.
    again.study = again.study.model_copy(
        update={"metadata": again.study.metadata.model_copy(update={"uid": "another-uid"})}
    )
    assert again.run().recommendation == first.recommendation
    assert first.recommendation is not None


def test_reruns_never_reach_the_search() -> None:
    """A re-run that reports a far better objective does not become the best trial, and a
    rebuilt engine (a restart) sees only the search's trials."""

    def lucky_reruns(trial: TuningTrial) -> PodScript:
        script = seeded_trainer(trial)
        if is_search_trial(trial):
            return script
        return PodScript(end_after=5, final={"loss": -1000.0, "test_loss": 1.0})

    cluster = SimulatedCluster.of(reevaluated_spec(), lucky_reruns)
    status = cluster.run()
    assert status.best_trial is not None
    assert status.best_trial.value is not None
    assert status.best_trial.value > -1000
    assert status.best_trial.name == f"demo-{status.best_trial.number}"
    assert status.trials.succeeded == 8
    restarted = StudyController()
    plan = cluster.decide(restarted)
    assert plan.study_status.best_trial == status.best_trial
    assert plan.create_trials == ()


def test_a_restart_during_the_reevaluation_loses_and_repeats_nothing() -> None:
    steady = SimulatedCluster.of(reevaluated_spec(), seeded_trainer)
    steady.run()
    restarted = SimulatedCluster.of(reevaluated_spec(), seeded_trainer)
    restarts = 0
    for _ in range(400):
        if restarted.study_status.phase is StudyPhase.REEVALUATING:
            restarted.controller = StudyController()  # every reconcile from a new process
            restarts += 1
        restarted.reconcile()  # a trial created twice fails the simulation
        if restarted.study_status.phase is StudyPhase.COMPLETED:
            break
        restarted.now += timedelta(seconds=1)
    assert restarts > 3
    assert restarted.study_status.recommendation == steady.study_status.recommendation
    assert sorted(restarted.trials) == sorted(steady.trials)


def test_a_failed_study_is_not_reevaluated() -> None:
    cluster = SimulatedCluster.of(
        reevaluated_spec(), lambda _: PodScript(end_after=2, succeeds=False, reason="Error")
    )
    status = cluster.run()
    assert status.phase is StudyPhase.FAILED
    assert reruns(cluster) == []
    assert status.recommendation is None


def test_a_goal_reached_ends_the_search_and_the_reevaluation_follows() -> None:
    spec = study_spec(
        budget={"parallelism": 2, "maxTrials": 50},
        objective={"metrics": [{"name": "loss", "goal": 1e9}]},  # the first trial reaches it
        reevaluation={"topTrials": 1, "repeats": 2},
    )
    cluster = SimulatedCluster.of(spec, seeded_trainer)
    status = cluster.run()
    completed = {c.type: c for c in status.conditions}["Completed"]
    assert completed.reason == StudyConditionReason.GOAL_REACHED
    assert status.recommendation is not None
    assert status.recommendation.metric == "loss"  # by default the objective
    assert len(reruns(cluster)) == 2


def test_reruns_that_fail_count_as_failed_runs_and_add_no_value() -> None:
    def flaky_reruns(trial: TuningTrial) -> PodScript:
        reevaluation = trial.spec.reevaluation
        if reevaluation is not None and reevaluation.repeat == 1:
            return PodScript(end_after=2, succeeds=False, reason="OOMKilled")
        return seeded_trainer(trial)

    cluster = SimulatedCluster.of(reevaluated_spec(), flaky_reruns)
    status = cluster.run()
    assert status.phase is StudyPhase.COMPLETED
    assert status.reevaluation is not None
    for configuration in status.reevaluation.configurations:
        assert configuration.failed_runs == 1
        assert len(configuration.scores[0].values) == len(configuration.seeds) == 2
    assert status.recommendation is not None
    assert len(status.recommendation.values) == 2


def test_reruns_are_not_pruned() -> None:
    def reports_badly_when_rerun(trial: TuningTrial) -> PodScript:
        script = seeded_trainer(trial)
        bad = 0.0 if is_search_trial(trial) else 1e6
        return PodScript(
            reports=((1, 0, 1.0 + bad), (2, 1, 1.0 + bad), (3, 2, 1.0 + bad)),
            end_after=5,
            final=script.final,
        )

    spec = reevaluated_spec(pruner={"name": "median", "startupTrials": 1})
    cluster = SimulatedCluster.of(spec, reports_badly_when_rerun)
    cluster.run()
    assert {r.status.state for r in reruns(cluster)} == {TrialState.SUCCEEDED}


def test_several_objectives_reevaluate_the_pareto_front_with_a_mean_per_objective() -> None:
    def two_objectives(trial: TuningTrial) -> PodScript:
        x = float(trial.spec.params["x"])  # type: ignore[arg-type]
        n = noise(trial.spec.seed)
        return PodScript(end_after=4, final={"loss": x * x + n, "size": (x - 2) ** 2 + n})

    spec = study_spec(
        budget={"parallelism": 2, "maxTrials": 10},
        objective={"metrics": [{"name": "loss"}, {"name": "size"}]},
        reevaluation={"topTrials": 2, "repeats": 2},
    )
    cluster = SimulatedCluster.of(spec, two_objectives)
    status = cluster.run()
    assert status.phase is StudyPhase.COMPLETED
    assert status.recommendation is None  # no single winner
    assert status.reevaluation is not None
    front = {p.number for p in status.pareto_front}
    configurations = status.reevaluation.configurations
    assert len(configurations) == min(2, len(front))
    for configuration in configurations:
        assert configuration.trial in front
        assert [s.metric for s in configuration.scores] == ["loss", "size"]
        for i, score in enumerate(configuration.scores):
            runs = [r for r in reruns(cluster) if r.spec.number == configuration.trial]
            assert score.values == [
                r.status.values[i]  # type: ignore[index]
                for r in sorted(runs, key=lambda r: r.spec.reevaluation.repeat)  # type: ignore[union-attr]
            ]
            assert score.mean == pytest.approx(statistics.fmean(score.values))
            trial = cluster.trials[f"demo-{configuration.trial}"]
            assert score.validation_value == trial.status.values[i]  # type: ignore[index]


def test_max_trials_and_parallelism_hold_during_the_reevaluation() -> None:
    cluster = SimulatedCluster.of(reevaluated_spec(), seeded_trainer)
    while cluster.study_status.phase is not StudyPhase.COMPLETED:
        cluster.reconcile()
        holding = [t for t in cluster.trials.values() if t.status.holds_pod]
        assert len(holding) <= 2
        cluster.now += timedelta(seconds=1)
    assert sum(1 for t in cluster.trials.values() if is_search_trial(t)) == 8


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parallelism=st.integers(1, 3),
    worst_cases=st.floats(7.0, 14.0),
    top=st.integers(1, 3),
    repeats=st.integers(1, 3),
    lengths=st.lists(st.integers(40, 110), min_size=1, max_size=6),
    ignores_sigterm=st.booleans(),
)
def test_the_budget_covers_the_search_and_the_reevaluation(
    parallelism: int,
    worst_cases: float,
    top: int,
    repeats: int,
    lengths: list[int],
    ignores_sigterm: bool,
) -> None:
    """The GPU time the pods really held, re-runs included, never passes maxGpuHours; the search
    leaves room for every re-run whose configuration it found, even with trainers that outlive
    their stop by the whole grace period."""
    grace, timeout = 5, 120
    runs = top * repeats
    hours = (runs + worst_cases) * (timeout + grace) / 3600
    spec = study_spec(
        budget={"parallelism": parallelism, "maxGpuHours": hours, "trialTimeout": "2m"},
        gpus=1,
        grace=grace,
        reevaluation={"topTrials": top, "repeats": repeats},
    )
    assert check_study_spec(spec) == []

    def script(trial: TuningTrial) -> PodScript:
        length = lengths[trial.spec.number % len(lengths)]
        return PodScript(
            end_after=float(length),
            final={"loss": float(length) + noise(trial.spec.seed)},
            exits_after_sigterm=math.inf if ignores_sigterm else 1.0,
        )

    cluster = SimulatedCluster.of(spec, script)
    for _ in range(3000):
        cluster.reconcile()
        assert cluster.gpu_seconds_held() <= hours * 3600 + 1e-6
        if cluster.study_status.phase in (StudyPhase.COMPLETED, StudyPhase.FAILED):
            break
        cluster.now += timedelta(seconds=7)
    status = cluster.study_status
    assert status.phase is StudyPhase.COMPLETED
    succeeded = sum(
        1
        for t in cluster.trials.values()
        if is_search_trial(t) and t.status.state is TrialState.SUCCEEDED
    )
    assert status.reevaluation is not None
    assert status.reevaluation.finished == min(top, succeeded) * repeats  # every re-run fit
    assert status.recommendation is not None


def test_validation_names_reevaluation_mistakes() -> None:
    def problems(**fields: Any) -> list[str]:
        spec = study_spec(**fields)
        return [f"{p.path}: {p.message}" for p in check_study_spec(spec)]

    [unrecorded] = problems(reevaluation={"metric": "test_accuracy"})
    assert unrecorded.startswith("spec.reevaluation.metric:")
    assert "additionalMetrics" in str(check_study_spec(study_spec(reevaluation={"metric": "z"})))
    [multi] = problems(
        objective={"metrics": [{"name": "a"}, {"name": "b"}]}, reevaluation={"metric": "a"}
    )
    assert multi.startswith("spec.reevaluation.metric:")
    [direction] = problems(reevaluation={"direction": "maximize"})
    assert direction.startswith("spec.reevaluation.direction:")
    [contrary] = problems(reevaluation={"metric": "loss", "direction": "maximize"})
    assert "minimized" in contrary
    # 9 re-runs of 2 min + 10 s grace leave no room for a search trial in 0.3 GPU-hours.
    [budget] = problems(
        budget={"maxGpuHours": 0.3, "trialTimeout": "2m"},
        gpus=1,
        reevaluation={"topTrials": 3, "repeats": 3},
    )
    assert budget.startswith("spec.budget.maxGpuHours:")
    assert "9 runs" in budget
    assert (
        problems(
            budget={"maxGpuHours": 0.4, "trialTimeout": "2m"},
            gpus=1,
            reevaluation={"topTrials": 3, "repeats": 3},
        )
        == []
    )


def test_reevaluation_is_immutable_once_the_study_exists() -> None:
    from kubetune.spec.immutability import immutable_changes, spec_fingerprints

    before = spec_fingerprints(reevaluated_spec())
    changed = immutable_changes(before, reevaluated_spec(reevaluation={"repeats": 5}))
    assert [p.path for p in changed] == ["spec.reevaluation"]
    assert study(reevaluated_spec()).spec.reevaluation is not None


def test_raising_max_trials_after_the_reevaluation_searches_on_and_reevaluates_again() -> None:
    spec = reevaluated_spec(budget={"parallelism": 2, "maxTrials": 4})
    cluster = SimulatedCluster.of(spec, seeded_trainer)
    first = cluster.run().recommendation
    assert first is not None
    raised = spec.model_copy(update={"budget": spec.budget.model_copy(update={"max_trials": 10})})
    metadata = cluster.study.metadata.model_copy(update={"generation": 2})
    cluster.study = cluster.study.model_copy(update={"spec": raised, "metadata": metadata})
    plan = cluster.reconcile()
    assert [t.spec.number for t in plan.create_trials] == [4, 5]  # search numbers go on
    assert plan.study_status.phase is StudyPhase.RUNNING
    assert plan.study_status.recommendation is None  # the old one no longer holds
    status = cluster.run()
    assert status.phase is StudyPhase.COMPLETED
    assert status.trials.total == 10
    search = [t for t in cluster.trials.values() if is_search_trial(t)]
    top = sorted(search, key=lambda t: ((t.status.values or [0])[0], t.spec.number))[:3]
    assert status.reevaluation is not None
    assert {c.trial for c in status.reevaluation.configurations} == {t.spec.number for t in top}
    assert status.reevaluation.finished == 9
    assert status.recommendation is not None
    assert status.recommendation.trial in {t.spec.number for t in top}


def test_reruns_over_the_trial_timeout_are_stopped_and_count_as_failed_runs() -> None:
    """trialTimeout bounds each re-run as it bounds a search trial (maxDuration, like
    maxTrials, bounds the search only): a re-run that runs past it is stopped as TimedOut, adds
    no value and counts as a failed run of its configuration; the study still completes."""
    spec = reevaluated_spec(
        budget={"parallelism": 2, "maxTrials": 4, "trialTimeout": "60s"},
        reevaluation={"topTrials": 2, "repeats": 2},
    )

    def slow_reruns(trial: TuningTrial) -> PodScript:
        script = seeded_trainer(trial)
        return script if is_search_trial(trial) else replace(script, end_after=600)

    cluster = SimulatedCluster.of(spec, slow_reruns)
    status = cluster.run()

    assert status.phase is StudyPhase.COMPLETED
    runs = reruns(cluster)
    assert len(runs) == 4
    assert {(r.status.state, r.status.reason) for r in runs} == {
        (TrialState.TIMED_OUT, "TrialTimeout")
    }
    assert status.reevaluation is not None
    assert [c.failed_runs for c in status.reevaluation.configurations] == [2, 2]
    assert status.recommendation is None  # no re-run gave a value

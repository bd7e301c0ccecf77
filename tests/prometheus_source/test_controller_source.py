"""The controller with a Prometheus metrics source, with no I/O: it names the reads that are
due, takes the readings as the trials' reports (polled values feed the pruner, the final read
completes the trial), and shows failed reads without ever taking them as values."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from kubetune.controller import StudyController
from kubetune.controller.metrics_source import PrometheusPolicy, trial_read
from kubetune.controller.observation import SourceErrorKind, SourceReading
from kubetune.spec.study import TuningStudySpec
from tests.factories import study_spec
from tests.simulation import PodScript, SimulatedCluster

SOURCE = {
    "url": "http://prometheus:9090",
    "query": 'kubetune_trial_metric{pod="${trial.pod}", metric="${metric}"}',
    "pollInterval": "2s",
    "finalDelay": "3s",
}


ALLOWED = PrometheusPolicy.of(["http://prometheus:9090"])


def cluster_of(spec: TuningStudySpec, script: Any) -> SimulatedCluster:
    """The simulated cluster with an operator that allows the source's Prometheus."""
    cluster = SimulatedCluster.of(spec, script)
    cluster.controller = StudyController(ALLOWED)
    return cluster


def spec(**budget: Any) -> TuningStudySpec:
    base = study_spec(
        budget={"parallelism": 2, "maxTrials": 2, **budget},
        pruner={"name": "threshold", "upper": 10},
    )
    return TuningStudySpec.model_validate(
        {
            **base.model_dump(by_alias=True, exclude_none=True),
            "metricsSource": {"prometheus": SOURCE},
        }
    )


def run(cluster: SimulatedCluster, prometheus: Any, ticks: int) -> list[Any]:
    """Reconcile each second as the operator does: a plan's reads (Plan.source_reads) are its
    last effect, and a reconcile right after, at the same time, decides on their readings."""
    plans = []
    for _ in range(ticks):
        readings: dict[str, SourceReading] = {}
        for _ in range(3):  # the reads, then their readings; never reads again at once
            observations = {n: o for n in cluster.pods if (o := cluster.observe(n)) is not None}
            trials = list(cluster.trials.values())
            plan = cluster.controller.reconcile(
                cluster.document(), trials, observations, cluster.now, readings=readings
            )
            cluster.apply(plan)
            plans.append(plan)
            if plan.source_reads is None:
                break
            readings = {read.trial: prometheus(read) for read in plan.source_reads.reads}
        else:
            raise AssertionError("reads asked for again right after their readings")
        cluster.now += timedelta(seconds=1)
    return plans


def trainer(trial: Any) -> PodScript:
    # Reports through the annotation too: with a metrics source they must be ignored.
    return PodScript(start_after=0, end_after=8, reports=((1, 1, 99.0),), final={"loss": 99.0})


def exported(read: Any) -> SourceReading:
    """What Prometheus holds: trial 0 exports 1.5 then 0.5 at the end; trial 1 exports 50."""
    number = int(read.trial.rsplit("-", 1)[1])
    value = (0.5 if read.final else 1.5) if number == 0 else 50.0
    return SourceReading(read.at, read.final, values={"loss": value}, step=read.step)


def test_polled_values_feed_the_pruner_and_the_final_read_completes_the_trial() -> None:
    cluster = cluster_of(spec(), trainer)
    plans = run(cluster, exported, 16)
    trials = {t.spec.number: t.status for t in cluster.trials.values()}
    assert trials[0].state == "Succeeded"
    assert trials[0].values == [0.5]  # the final read, not the annotation's 99
    assert [v.value for v in trials[0].intermediate_values] == [1.5] * len(
        trials[0].intermediate_values
    )
    assert trials[1].state == "Pruned"
    assert trials[1].intermediate_values[0].value == 50.0
    # The pod ended at 8 s; the trial stayed Running until finalDelay (3 s) had passed.
    assert trials[0].completion_time == cluster.trials["demo-0"].status.start_time + timedelta(
        seconds=8
    )
    running = [p for p in plans if p.study_status.trials.running]
    assert all(p.requeue_after is not None and p.requeue_after <= 3 for p in running)
    condition = {c.type: c for c in cluster.study_status.conditions}["MetricsSource"]
    assert (condition.status, condition.reason) == ("True", "MetricsSourceReady")


def test_reads_are_due_every_poll_interval_and_the_final_one_after_the_final_delay() -> None:
    cluster = cluster_of(spec(maxTrials=1, parallelism=1), trainer)
    times: list[tuple[float, bool]] = []

    def timed(read: Any) -> SourceReading:
        created = cluster.trials["demo-0"].metadata.creation_timestamp
        assert created is not None
        times.append(((cluster.now - created).total_seconds(), read.final))
        return exported(read)

    run(cluster, timed, 14)
    polls = [t for t, final in times if not final]
    assert polls == [1.0, 3.0, 5.0, 7.0]  # every pollInterval once the pod is seen running
    assert [t for t, final in times if final] == [11]  # ended at 8 s, finalDelay 3 s


def failing(kind: SourceErrorKind, final_too: bool) -> Any:
    def read(read: Any) -> SourceReading:
        if read.final and not final_too:
            return exported(read)
        return SourceReading(read.at, read.final, error="no answer", error_kind=kind)

    return read


def test_a_failed_poll_shows_on_the_trial_and_study_and_the_trial_runs_on() -> None:
    cluster = cluster_of(spec(maxTrials=1, parallelism=1), trainer)
    plans = run(cluster, failing(SourceErrorKind.UNREACHABLE, final_too=False), 5)
    status = cluster.trials["demo-0"].status
    assert status.state == "Running"
    assert status.reason == "MetricsSourceError"
    assert status.message == "MetricsSourceUnreachable: no answer"
    assert status.intermediate_values == []
    condition = {c.type: c for c in cluster.study_status.conditions}["MetricsSource"]
    assert (condition.status, condition.reason) == ("False", "MetricsSourceUnreachable")
    warnings = [e for p in plans for e in p.events if e.reason == "MetricsSourceError"]
    assert len(warnings) == 1  # once per distinct error, not once per poll
    # Prometheus answers again: the error clears, the final read completes the trial.
    run(cluster, exported, 10)
    status = cluster.trials["demo-0"].status
    assert (status.state, status.values, status.reason) == ("Succeeded", [0.5], "Completed")
    condition = {c.type: c for c in cluster.study_status.conditions}["MetricsSource"]
    assert condition.status == "True"


def test_a_failed_final_read_fails_the_trial_and_is_never_a_value() -> None:
    cluster = cluster_of(spec(maxTrials=1, parallelism=1), trainer)
    run(cluster, failing(SourceErrorKind.QUERY_INVALID, final_too=True), 14)
    status = cluster.trials["demo-0"].status
    assert status.state == "Failed"
    assert status.reason == "MetricsSourceError"
    assert status.message == "the final read failed: MetricsQueryInvalid: no answer"
    assert status.values is None
    assert cluster.study_status.best_trial is None


def test_an_empty_final_read_makes_the_trial_metrics_unavailable() -> None:
    cluster = cluster_of(spec(maxTrials=1, parallelism=1), trainer)
    run(cluster, lambda read: SourceReading(read.at, read.final, step=read.step), 14)
    status = cluster.trials["demo-0"].status
    assert status.state == "MetricsUnavailable"
    assert status.message == "Prometheus gave no series for loss"


def test_the_final_query_looks_back_past_the_staleness_of_an_ended_trainer() -> None:
    cluster = cluster_of(spec(maxTrials=1, parallelism=1), trainer)
    run(cluster, exported, 1)
    trial = cluster.trials["demo-0"]
    read = trial_read(
        cluster.study,
        cluster.study.spec.metrics_source.prometheus,  # type: ignore[union-attr]
        trial,
        'demo-0"} or vector(1)',
        final=True,
        at=cluster.now,
        started=None,
    )
    assert read.queries == {
        "loss": 'last_over_time((kubetune_trial_metric{pod="demo-0\\"} or vector(1)", '
        'metric="loss"})[63s:1s])'
    }

"""GPU-hour and money budgets against what the pods really held, end to end: trainers that run
past their timeout or ignore SIGTERM, on a node with four fake GPUs, with the operator running
as its own process. What the pods held is read from their own container timestamps (startedAt,
finishedAt), not from the operator's books; the books must agree.

The cases are the ones a first user measured overspent (docs/study-spec.md, "the exact rule"):
five worst cases of a 3 s trialTimeout at parallelism 2, and trainers that keep their GPUs
until SIGKILL at the end of the grace period.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Operator
from tests.e2e.test_demo import KUBETUNE
from tests.e2e.test_endings import (
    GPU,
    WRITE_LOSS,
    X,
    apply,
    condition,
    finish,
    moment,
    pods_of,
    study,
    trainer,
    trials_of,
)
from tests.localcluster.conftest import PLANES, Kube, local_kube


@pytest.fixture(scope="module", params=PLANES)
def gpu_kube(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kube]:
    folder = tmp_path_factory.mktemp(f"held-{request.param}")
    with local_kube(folder, crds=True, capacity={GPU: "4"}, plane=request.param) as kube:
        yield kube


@pytest.fixture(scope="module")
def kube(gpu_kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    operator = Operator(gpu_kube, tmp_path_factory.mktemp("operator") / "operator.log")
    operator.start()
    yield gpu_kube
    operator.stop()
    print(operator.log.read_bytes()[-20000:].decode(errors="replace"))


def wait_until_every_pod_ended(kube: Kube, name: str) -> list[dict[str, Any]]:
    """The study's trials once no pod of theirs is left terminating (the books are final)."""
    kube.wait_for(
        "tuningtrials",
        "-l",
        f"kubetune.io/study={name}",
        condition="jsonpath={.status.podTerminating}=false",
        timeout=60,
    )
    return trials_of(kube, name)


def held_gpu_seconds(pods: list[dict[str, Any]]) -> float:
    """GPUs times the time each pod's trainer ran, from its own container timestamps."""
    total = 0.0
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        gpus = int(container["resources"]["limits"][GPU])
        (state,) = (s["state"]["terminated"] for s in pod["status"]["containerStatuses"])
        ran = (moment(state["finishedAt"]) - moment(state["startedAt"])).total_seconds()
        total += gpus * ran
    return total


OVERRUNS = """\
    import json, os, time
    print("training", flush=True)
    time.sleep(60)
    loss = 1.0
"""

IGNORES_SIGTERM = """\
    import json, os, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGTERM", flush=True)
    time.sleep(60)
    loss = 1.0
"""


def test_trials_past_their_timeout_never_overspend_the_gpu_hours(kube: Kube) -> None:
    # Five worst cases of a 3 s trialTimeout with the default 10 s grace period; parallelism 2.
    # Before, 6 trials started and the pods held 0.00501 GPU-hours against 0.0041667.
    limit = 5 * (3 + 10) / 3600
    budget = {
        "maxTrials": 40,
        "maxFailedTrials": 40,  # every trial times out: no fail-fast here
        "parallelism": 2,
        "trialTimeout": "3s",
        "maxGpuHours": limit,
    }
    apply(kube, study("overrun", trainer(OVERRUNS, WRITE_LOSS), [X], budget, gpus=1))
    document = finish(kube, "overrun", timeout=120)
    trials = wait_until_every_pod_ended(kube, "overrun")

    assert {t["status"]["state"] for t in trials} == {"TimedOut"}
    # No trial could succeed: the study failed, once the budget could not cover another one.
    failed = condition(document, "Failed")
    assert failed["reason"] == "NoTrialSucceeded"
    assert "cannot cover another trial's worst case" in failed["message"]
    held = held_gpu_seconds(pods_of(kube, "overrun"))
    assert held <= limit * 3600
    # The books count what the pods held, from the same timestamps.
    final = kube.get_json("tuningstudy", "overrun")["status"]["budget"]
    assert final["gpuHours"] * 3600 == pytest.approx(held, abs=1e-6)
    assert sum(t["status"]["gpuSeconds"] for t in trials) == pytest.approx(held, abs=1e-6)
    # A trial's slot was free only once its pod had terminated: never more than 2 at once.
    spans = [
        (moment(t["metadata"]["creationTimestamp"]), moment(t["status"]["podEndTime"]))
        for t in trials
    ]
    for created, _ in spans:
        holding = [1 for start, end in spans if start <= created < end]
        assert len(holding) <= 2


def test_trainers_that_ignore_sigterm_are_paid_until_sigkill(
    kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Two GPUs per pod, a 3 s grace period, parallelism 2: a trial may cost 2 x (2 + 3) GPU-s.
    # Three worst cases of money at 36 EUR per GPU-hour (0.01 EUR per GPU-second).
    price = 36.0
    worst = 2 * (2 + 3) * price / 3600
    limit = 3 * worst
    budget = {
        "maxTrials": 20,
        "maxFailedTrials": 20,
        "parallelism": 2,
        "trialTimeout": "2s",
        "money": {"limit": limit, "currency": "EUR", "pricePerGpuHour": {GPU: price}},
    }
    document = study("stubborn", trainer(IGNORES_SIGTERM, WRITE_LOSS), [X], budget, gpus=2)
    document["spec"]["trialTemplate"]["spec"]["terminationGracePeriodSeconds"] = 3
    apply(kube, document)
    finish(kube, "stubborn", timeout=120)
    trials = wait_until_every_pod_ended(kube, "stubborn")

    pods = pods_of(kube, "stubborn")
    spent = held_gpu_seconds(pods) * price / 3600
    assert spent <= limit + 1e-9
    final = kube.get_json("tuningstudy", "stubborn")["status"]["budget"]
    assert final["money"] == pytest.approx(spent, abs=1e-9)
    # Each pod ran past its deadline for its whole grace period: SIGTERM did not end it.
    for trial in trials:
        ran = (
            moment(trial["status"]["podEndTime"]) - moment(trial["status"]["startTime"])
        ).total_seconds()
        assert ran >= 2 + 3 - 1  # whole-second timestamps
    # Stopped where they ran: the pods stay, Failed by their deadline, with their logs.
    assert len(pods) == len(trials)
    assert {p["status"]["reason"] for p in pods} == {"DeadlineExceeded"}
    # `kubetune logs` reads a timed-out trial's log after its study has ended.
    result = subprocess.run(
        [KUBETUNE, "logs", "stubborn", "0", "--kubeconfig", str(kube.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert trials[0]["status"]["state"] == "TimedOut"
    assert "ignoring SIGTERM" in result.stdout

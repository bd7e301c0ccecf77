"""spec.reevaluation end to end: once the search ends, the best configurations run again as
TuningTrials of their own with new seeds, and the study completes with status.recommendation.

On both control planes, with a tiny synthetic trainer whose losses depend on its parameter and
its seed: what kubectl shows of the re-runs and their pods, the recommendation's arithmetic, the
events, and an operator killed while the study is Reevaluating. On the embedded plane, the digits
example with its real trainer, run twice: the same manifest and seed recommend the same thing.
"""

from __future__ import annotations

import statistics
import sys
import textwrap
from typing import Any

import kubernetes
import pytest

from kubetune.spec import api
from tests.e2e.conftest import Operator
from tests.e2e.test_endings import (
    X,
    apply,
    condition,
    finish,
    pods_of,
    study,
    trainer,
    trials_of,
    wait_for_events,
)
from tests.e2e.test_operator import example
from tests.localcluster.conftest import Kube

# The losses of configuration x with seed s, defined once: the trainer runs this code and the
# tests recompute what a pod should have reported from its trial's spec.seed. The held-out
# test_loss adds a penalty that grows with |x - 2|, as a configuration fitted to the validation
# set would show.
LOSSES = """
    def losses(x, seed):
        noise = (seed % 1000) / 1000 - 0.5
        held_out_noise = (seed // 1000 % 1000) / 1000 - 0.5
        loss = (x - 2) ** 2 + 0.1 * noise
        return loss, loss + 0.5 * abs(x - 2) + 0.1 * held_out_noise
"""
REPORT_LOSSES = """
    import json, os, re, time
    seed = int(os.environ["KUBETUNE_SEED"])
    loss, test_loss = losses(float(os.environ["KUBETUNE_PARAM_X"]), seed)
    if re.search(r"-r[0-9]+$", os.environ["KUBETUNE_TRIAL"]):
        time.sleep(float(os.environ.get("RERUN_SECONDS", "0")))
    with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as log:
        json.dump({"loss": loss, "test_loss": test_loss}, log)
"""


def losses(x: float, seed: int) -> tuple[float, float]:
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(LOSSES), namespace)  # the trainer's own code, not a copy of it
    result: tuple[float, float] = namespace["losses"](x, seed)
    return result


def reevaluated_study(
    name: str, budget: dict[str, Any], rerun_seconds: float = 0.0
) -> dict[str, Any]:
    """A study minimizing loss whose 2 best configurations run twice more each, ranked by the
    held-out test_loss; the seed also reaches the trainer's args through ${trial.seed}."""
    document = study(
        name,
        trainer(LOSSES, REPORT_LOSSES),
        [X],
        budget,
        container={
            "args": ["--seed=${trial.seed}"],
            "env": [{"name": "RERUN_SECONDS", "value": str(rerun_seconds)}],
        },
    )
    document["spec"]["objective"]["additionalMetrics"] = ["test_loss"]
    document["spec"]["reevaluation"] = {"topTrials": 2, "repeats": 2, "metric": "test_loss"}
    return document


def reruns_of(kube: Kube, name: str) -> list[dict[str, Any]]:
    """The study's re-evaluation runs, by trial number and repeat."""
    selector = f"{api.STUDY_LABEL}={name},{api.REEVALUATION_LABEL}"
    items = kube.get_json("tuningtrials", "-l", selector)["items"]
    return sorted(items, key=lambda t: (t["spec"]["number"], t["spec"]["reevaluation"]["repeat"]))


def search_trials_of(kube: Kube, name: str) -> list[dict[str, Any]]:
    return [t for t in trials_of(kube, name) if "reevaluation" not in t["spec"]]


def best_search_trials(trials: list[dict[str, Any]], count: int) -> list[int]:
    """The numbers of the `count` succeeded search trials with the lowest loss (ties: lower
    number first), the configurations re-evaluation must re-run."""
    succeeded = [t for t in trials if t["status"]["state"] == "Succeeded"]
    ranked = sorted(succeeded, key=lambda t: (t["status"]["values"][0], t["spec"]["number"]))
    return [t["spec"]["number"] for t in ranked[:count]]


def assert_recommendation_from(
    recommendation: dict[str, Any],
    search: list[dict[str, Any]],
    reruns: list[dict[str, Any]],
    metric: str,
    maximize: bool,
) -> None:
    """The recommendation is the re-evaluated configuration with the best mean of `metric`
    over its re-runs (ties: the smaller std, then the lower trial number), with those runs'
    values and seeds, and its search value beside it."""
    values_of: dict[int, list[float]] = {}
    seeds_of: dict[int, list[int]] = {}
    for run in sorted(reruns, key=lambda r: r["spec"]["reevaluation"]["repeat"]):
        number = run["spec"]["reevaluation"]["trial"]
        values_of.setdefault(number, []).append(run["status"]["metrics"][metric])
        seeds_of.setdefault(number, []).append(run["spec"]["seed"])

    def rank(number: int) -> tuple[float, float, int]:
        mean = statistics.fmean(values_of[number])
        return (-mean if maximize else mean, statistics.stdev(values_of[number]), number)

    best = min(values_of, key=rank)
    values = values_of[best]
    searched = next(t for t in search if t["spec"]["number"] == best)
    assert recommendation["trial"] == best
    assert recommendation["params"] == searched["spec"]["params"]
    assert recommendation["metric"] == metric
    assert recommendation["values"] == values
    assert recommendation["seeds"] == seeds_of[best]
    assert recommendation["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
    assert recommendation["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    validation = searched["status"]["values"][0]
    assert recommendation["validationValue"] == validation
    # Positive when the held-out mean is worse than the search's value, in either direction.
    gap = validation - recommendation["mean"] if maximize else recommendation["mean"] - validation
    assert recommendation["generalizationGap"] == pytest.approx(gap, abs=1e-12)


def test_the_best_configurations_run_again_with_new_seeds(operator: Operator) -> None:
    kube = operator.kube
    apply(kube, reevaluated_study("reevaluated", {"maxTrials": 4, "parallelism": 2}))
    document = finish(kube, "reevaluated")

    status = document["status"]
    assert status["phase"] == "Completed", status
    assert condition(document, "Completed")["reason"] == "MaxTrialsReached"
    assert condition(document, "SearchEnded")["reason"] == "MaxTrialsReached"
    search = search_trials_of(kube, "reevaluated")
    assert [t["spec"]["number"] for t in search] == [0, 1, 2, 3]  # re-runs are not counted
    chosen = best_search_trials(search, 2)
    reruns = reruns_of(kube, "reevaluated")
    assert [t["metadata"]["name"] for t in reruns] == [
        f"reevaluated-{number}-r{repeat}" for number in sorted(chosen) for repeat in (0, 1)
    ]
    seeds = [t["spec"]["seed"] for t in reruns]
    # A new seed for every run: none repeats another, nor any search trial's.
    assert len(set(seeds)) == 4
    assert not set(seeds) & {t["spec"]["seed"] for t in search}
    pods = {pod["metadata"]["name"]: pod for pod in pods_of(kube, "reevaluated")}
    for run in reruns:
        number, seed = run["spec"]["number"], run["spec"]["seed"]
        assert run["metadata"]["labels"][api.REEVALUATION_LABEL] == str(number)
        assert run["spec"]["reevaluation"]["trial"] == number
        searched = next(t for t in search if t["spec"]["number"] == number)
        assert run["spec"]["params"] == searched["spec"]["params"]
        assert run["status"]["state"] == "Succeeded"
        (container,) = pods[run["metadata"]["name"]]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[api.SEED_ENV] == str(seed)
        assert container["args"] == [f"--seed={seed}"]
        # What the trainer reported is its formula at this seed: the seed reached the process.
        loss, test_loss = losses(float(run["spec"]["params"]["x"]), seed)
        assert run["status"]["values"] == [pytest.approx(loss, abs=1e-12)]
        assert run["status"]["metrics"]["test_loss"] == pytest.approx(test_loss, abs=1e-12)
    # kubectl lists the re-runs with their repeat and, wide, their seed.
    table = kube.kubectl("get", "tuningtrials", "-o", "wide", "-l", api.REEVALUATION_LABEL)
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    for run in reruns:
        row = rows[run["metadata"]["name"]]
        assert str(run["spec"]["reevaluation"]["repeat"]) in row
        assert str(run["spec"]["seed"]) in row

    assert_recommendation_from(status["recommendation"], search, reruns, "test_loss", False)
    progress = status["reevaluation"]
    assert (progress["runs"], progress["finished"]) == (4, 4)
    assert {c["trial"] for c in progress["configurations"]} == set(chosen)
    client = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
    try:
        events = wait_for_events(
            client,
            "reevaluated",
            {"ReevaluationStarted", "ReevaluationRunStarted", "Recommendation"},
        )
    finally:
        client.close()
    started = [e["message"] for e in events if e["reason"] == "ReevaluationRunStarted"]
    assert len(started) == 4
    assert {f"seed {seed}" for seed in seeds} == {m.rsplit(", ", 1)[1] for m in started}
    [recommended] = [e for e in events if e["reason"] == "Recommendation"]
    assert f"trial {status['recommendation']['trial']}" in recommended["message"]


def test_an_operator_killed_while_reevaluating_creates_nothing_twice(operator: Operator) -> None:
    kube, name = operator.kube, "reevaluation-restart"
    # Each re-run takes a second, two at a time: the kill lands before the second repeats.
    apply(kube, reevaluated_study(name, {"maxTrials": 3, "parallelism": 2}, rerun_seconds=1.0))
    client = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
    try:
        wait_for_events(client, name, {"ReevaluationStarted", "ReevaluationRunStarted"})
        operator.kill()
        before = {t["metadata"]["name"]: t["metadata"]["uid"] for t in reruns_of(kube, name)}
        caught = kube.get_json("tuningstudy", name)["status"]
        assert caught["phase"] == "Reevaluating", caught
        assert 0 < len(before) < 4, f"{sorted(before)}: the kill missed the re-evaluation"

        operator.start()
        document = finish(kube, name)
        events = wait_for_events(client, name, {"Recommendation"})
    finally:
        client.close()

    status = document["status"]
    assert status["phase"] == "Completed", status
    search = search_trials_of(kube, name)
    assert [t["spec"]["number"] for t in search] == [0, 1, 2]
    reruns = reruns_of(kube, name)
    chosen = sorted(best_search_trials(search, 2))
    # Every planned run exists once; those made before the kill are the same objects.
    assert [t["metadata"]["name"] for t in reruns] == [
        f"{name}-{number}-r{repeat}" for number in chosen for repeat in (0, 1)
    ]
    assert {t["metadata"]["name"]: t["metadata"]["uid"] for t in reruns}.items() >= before.items()
    assert {t["status"]["state"] for t in reruns} == {"Succeeded"}
    assert len({t["spec"]["seed"] for t in reruns}) == 4
    # One pod per trial, each owned by its trial.
    owners = sorted(p["metadata"]["ownerReferences"][0]["name"] for p in pods_of(kube, name))
    assert owners == sorted(t["metadata"]["name"] for t in [*search, *reruns])
    reasons = [e["reason"] for e in events]
    assert reasons.count("ReevaluationStarted") == 1
    assert reasons.count("Recommendation") == 1
    # No run announced twice, and each started after the restart announced. (One started
    # before it may have lost its event: the killed operator posts them after its writes.)
    started = [e["message"] for e in events if e["reason"] == "ReevaluationRunStarted"]
    assert len(started) == len(set(started))
    announced = {message.rsplit("seed ", 1)[1] for message in started}
    assert {str(t["spec"]["seed"]) for t in reruns if t["metadata"]["name"] not in before} <= (
        announced
    )
    assert (status["reevaluation"]["runs"], status["reevaluation"]["finished"]) == (4, 4)
    assert_recommendation_from(status["recommendation"], search, reruns, "test_loss", False)


def shrunken_digits(name: str) -> dict[str, Any]:
    """The digits example, small enough for a test: 4 search trials of 2 epochs, the 2 best
    run twice more. Its seeds, split and algorithm stay those of the example."""
    document = example("digits-classifier.yaml", maxTrials=4, parallelism=2)
    document["metadata"]["name"] = name
    spec = document["spec"]
    # Both would make the outcome depend on timing: which trial an ASHA rung compares with,
    # and how many trials were running when one reached the goal.
    spec["pruner"] = {"name": "none"}
    del spec["objective"]["metrics"][0]["goal"]
    (epochs,) = [p for p in spec["searchSpace"] if p["name"] == "epochs"]
    epochs["value"] = 2
    spec["reevaluation"].update(topTrials=2, repeats=2)
    (container,) = spec["trialTemplate"]["spec"]["containers"]
    # This Python (torch and the trainers installed); no GPU on the test node, and requests
    # small enough for both studies' pods at once.
    container["command"][0] = sys.executable
    container["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    # Without GPUs they would count nothing, which validation refuses.
    for gpu_budget in ("maxGpuHours", "money"):
        del spec["budget"][gpu_budget]
    return document


# The real trainer needs torch; one plane is enough to show it is reproducible.
@pytest.mark.parametrize("kube", ["embedded"], indirect=True)
def test_the_digits_example_recommends_the_same_configuration_twice(operator: Operator) -> None:
    kube = operator.kube
    names = ("digits-first", "digits-second")
    for name in names:
        apply(kube, shrunken_digits(name))
    recommendations = []
    for name in names:
        document = finish(kube, name, timeout=240)
        status = document["status"]
        assert status["phase"] == "Completed", status
        assert status["reevaluation"]["finished"] == 4
        search, reruns = search_trials_of(kube, name), reruns_of(kube, name)
        assert len(reruns) == 4
        assert {t["status"]["state"] for t in [*search, *reruns]} == {"Succeeded"}
        assert_recommendation_from(status["recommendation"], search, reruns, "test_accuracy", True)
        recommendations.append(status["recommendation"])
    first, second = recommendations
    # Same manifest, same algorithm.seed: the same configurations, seeds and held-out values.
    for field in ("trial", "params", "values", "seeds", "mean", "std", "validationValue"):
        assert first[field] == second[field], field

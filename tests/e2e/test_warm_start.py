"""spec.warmStart.fromStudies end to end, on both control planes: a study applied before the
study it learns from is Invalid, waits once that study exists, and starts from its succeeded
trials once its search has ended."""

from __future__ import annotations

import kubernetes

from tests.e2e.conftest import Operator
from tests.e2e.test_endings import (
    WRITE_LOSS,
    X,
    apply,
    condition,
    finish,
    study,
    trainer,
    trials_of,
    wait_for_events,
)

LOSS = """
    import json, os
    loss = (float(os.environ["KUBETUNE_PARAM_X"]) - 2) ** 2
"""


def test_a_study_starts_from_the_trials_of_a_finished_one(operator: Operator) -> None:
    kube = operator.kube
    small = study("warm-small", trainer(LOSS, WRITE_LOSS), [X], {"maxTrials": 4, "parallelism": 2})
    large = study("warm-large", trainer(LOSS, WRITE_LOSS), [X], {"maxTrials": 3, "parallelism": 1})
    large["spec"]["warmStart"] = {"fromStudies": ["warm-small"]}

    apply(kube, large)
    kube.wait_for(
        "tuningstudy/warm-large", condition="jsonpath={.status.phase}=Invalid", timeout=30
    )
    refused = kube.get_json("tuningstudy", "warm-large")["status"]["message"]
    assert refused.startswith("spec.warmStart.fromStudies[0]: there is no TuningStudy warm-small")

    apply(kube, small)  # wakes warm-large, which waits for its search to end
    finish(kube, "warm-small")
    document = finish(kube, "warm-large")

    assert document["status"]["phase"] == "Completed"
    assert document["status"]["progress"] == "3/3"  # imports do not count toward maxTrials
    assert [t["spec"]["number"] for t in trials_of(kube, "warm-large")] == [0, 1, 2]
    succeeded = [t for t in trials_of(kube, "warm-small") if t["status"]["state"] == "Succeeded"]
    warm_start = condition(document, "WarmStart")
    assert warm_start["reason"] == "TrialsImported"
    assert warm_start["message"] == (
        f"{len(succeeded)} trials imported: {len(succeeded)} of warm-small"
    )
    client = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
    try:
        events = wait_for_events(
            client, "warm-large", {"SpecInvalid", "WaitingForStudies", "WarmStartImported"}
        )
    finally:
        client.close()
    [waiting] = [e for e in events if e["reason"] == "WaitingForStudies"]
    assert waiting["message"].startswith("waiting for the search of warm-small (")

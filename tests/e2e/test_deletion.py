"""Deleting a study never hangs on the operator's finalizer (issue 13): when stopping its pods
fails for good (the API server refuses the label selector of a study name past 63
characters, a 400), the delete handler posts a DeleteFailed event and lets the deletion go
ahead; owner references remove the trials and pods."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Operator
from tests.e2e.test_ha import wait_for_trials
from tests.e2e.test_operator import example, get_json

LONG_NAME = "a-study-whose-name-is-longer-than-a-label-value-may-be-" + "x" * 15


# Embedded only: its selectors refuse values past 63 characters as a real server does, and it
# accepts the long label on the trials, so the study runs until it is deleted.
@pytest.mark.parametrize("kube", ["embedded"], indirect=True)
def test_a_study_whose_pods_cannot_be_selected_is_still_deleted(operator: Operator) -> None:
    kube = operator.kube
    study = example("synthetic-quadratic.yaml", maxTrials=2, parallelism=1)
    study["metadata"]["name"] = LONG_NAME
    applied = kube.kubectl("apply", "-f", "-", stdin=json.dumps(study), check=False)
    if applied.returncode != 0:
        pytest.skip(f"the API server refuses the long name at apply: {applied.stderr.strip()}")
    wait_for_trials(kube, LONG_NAME, 1)
    [trial, *_] = get_json(kube, "tuningtrials")["items"]
    label = trial["metadata"]["labels"]["kubetune.io/study"]
    kube.kubectl("delete", "tuningstudy", LONG_NAME, "--wait=true", "--timeout=60s", timeout=70)
    assert "NotFound" in kube.kubectl("get", "tuningstudy", LONG_NAME, check=False).stderr
    events = json.loads(kube.kubectl("get", "events", "-o", "json").stdout)["items"]
    failed = [e for e in events if e["reason"] == "DeleteFailed"]
    if len(label) > 63:  # no selector can name it: stopping the pods failed for good
        assert failed, "the delete handler did not say why it could not stop the pods"
        assert "the deletion goes ahead" in failed[0]["message"]

"""Deleting a study never hangs on the operator's finalizer (issue 13): when stopping its pods
fails for good (the API server refuses the label selector of a study name past 63
characters, a 400), the delete handler posts a DeleteFailed event and lets the deletion go
ahead; owner references remove the trials and pods. The CRD now refuses such names at apply;
a study created under an earlier CRD can still have one: the operator marks it Invalid, and
deleting it is the case tested here."""

from __future__ import annotations

import json

import pytest
import yaml

from kubetune.spec.crd import NAME_RULE
from tests.e2e.conftest import ROOT, Operator
from tests.e2e.test_operator import example
from tests.localcluster.conftest import Kube

LONG_NAME = "a-study-whose-name-is-longer-than-a-label-value-may-be-" + "x" * 15


def install_crd_without_the_name_rule(kube: Kube) -> None:
    """The TuningStudy CRD as it was before it limited names to 63 characters."""
    crd = yaml.safe_load((ROOT / "crds" / "tuningstudies.kubetune.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["x-kubernetes-validations"].remove(NAME_RULE.to_schema())
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(crd))


# Embedded only: one plane shows the handler's behaviour; the real server refuses the selector
# the same way (a 400 for a label value past 63 characters).
@pytest.mark.parametrize("kube", ["embedded"], indirect=True)
def test_a_study_whose_pods_cannot_be_selected_is_still_deleted(operator: Operator) -> None:
    kube = operator.kube
    install_crd_without_the_name_rule(kube)
    study = example("synthetic-quadratic.yaml", maxTrials=2, parallelism=1)
    study["metadata"]["name"] = LONG_NAME
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(study))
    # The operator itself refuses the name, as the CRD now does: no trial is created.
    kube.wait_for(
        f"tuningstudy/{LONG_NAME}", condition="jsonpath={.status.phase}=Invalid", timeout=120
    )
    status = kube.get_json("tuningstudy", LONG_NAME)["status"]
    assert "metadata.name" in status["message"]
    kube.kubectl("delete", "tuningstudy", LONG_NAME, "--wait=true", "--timeout=60s", timeout=70)
    assert "NotFound" in kube.kubectl("get", "tuningstudy", LONG_NAME, check=False).stderr
    events = kube.get_json("events")["items"]
    failed = [e for e in events if e["reason"] == "DeleteFailed"]
    assert failed, "the delete handler did not say why it could not stop the pods"
    assert "the deletion goes ahead" in failed[0]["message"]

"""The TuningStudy CRD on both control planes: the API server itself refuses a study name too long
for the label its trials and pods carry, and lists and numbers past the CRD's bounds, each time
naming the field and the reason; the longest name it admits yields trials and pods that a real
server accepts."""

from __future__ import annotations

import json
from typing import Any

import yaml

from kubetune.controller.trial_pod import render_trial_pod, with_owner_uid
from kubetune.spec import api
from kubetune.spec.study import TuningStudy
from kubetune.spec.trial import TuningTrial, TuningTrialSpec, trial_name
from tests.localcluster.conftest import REPO, Kube, install_crds
from tests.planes import kube_on_both_planes  # noqa: F401 (the fixture `kube`, both planes)

EXAMPLE = REPO / "examples" / "synthetic-quadratic.yaml"


def study(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"] = {"name": name, "namespace": "default"}
    return document


def apply(kube: Kube, document: dict[str, Any]) -> Any:
    # JSON on stdin: PyYAML would leave the parameter name y unquoted (a YAML 1.1 boolean).
    return kube.kubectl("apply", "-f", "-", stdin=json.dumps(document), check=False)


def test_a_study_name_past_63_characters_is_refused_with_the_reason(kube: Kube) -> None:
    install_crds(kube)
    refused = apply(kube, study("s" * 64))
    assert refused.returncode == 1
    assert "metadata.name" in refused.stderr
    assert "at most 63 characters" in refused.stderr
    assert "label values are limited to 63" in refused.stderr


def test_the_longest_name_runs_trials_whose_names_and_labels_the_server_accepts(
    kube: Kube,
) -> None:
    install_crds(kube)
    name = "a" * api.MAX_STUDY_NAME_LENGTH
    document = study(name)
    assert apply(kube, document).returncode == 0
    parsed = TuningStudy.model_validate(document)
    for number in (0, 12345):
        trial = TuningTrial(
            metadata={"name": trial_name(name, number), "namespace": "default"},
            spec=TuningTrialSpec(
                study=name, number=number, params={"x": 1.0, "y": 2.0, "steps": 10}
            ),
        )
        manifest = trial.model_dump(mode="json", by_alias=True, exclude_none=True)
        created = kube.kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(manifest))
        uid = json.loads(created.stdout)["metadata"]["uid"]
        pod = with_owner_uid(render_trial_pod(parsed, trial), uid)
        kube.kubectl("create", "-f", "-", stdin=json.dumps(pod))
        listed = kube.kubectl(
            "get", "pods", "-l", f"{api.STUDY_LABEL}={name}", "-o", "name"
        ).stdout.split()
        assert f"pod/{trial_name(name, number)}" in listed


def test_lists_and_numbers_past_the_crds_bounds_are_refused_naming_the_field(kube: Kube) -> None:
    install_crds(kube)
    many = study("many-choices")
    many["spec"]["searchSpace"].append(
        {"name": "c", "type": "categorical", "choices": [f"c{i}" for i in range(1001)]}
    )
    refused = apply(kube, many)
    assert refused.returncode == 1
    assert "spec.searchSpace[5].choices: Too many: 1001: must have at most 1000 items" in (
        refused.stderr
    )

    huge = study("huge-range")
    huge["spec"]["searchSpace"][0].update(low=-1e308, high=1e308)
    refused = apply(kube, huge)
    assert refused.returncode == 1
    assert "spec.searchSpace[0].low: Invalid value" in refused.stderr
    assert "spec.searchSpace[0].high: Invalid value" in refused.stderr

    forever = study("forever")
    forever["spec"]["budget"]["trialTimeout"] = "99999999999999999999999999999999h"
    refused = apply(kube, forever)
    assert refused.returncode == 1
    assert "spec.budget.trialTimeout: Too long" in refused.stderr


def test_an_integer_past_int64_is_refused_as_invalid_not_a_server_error(kube: Kube) -> None:
    # Go's JSON decoder reads it as a float64; the schema's type and maximum then refuse it
    # with 422 (the emulator used to overflow converting it for CEL and answer 500).
    install_crds(kube)
    document = study("past-int64")
    document["spec"]["budget"]["maxTrials"] = 2**70
    refused = apply(kube, document)
    assert refused.returncode == 1
    assert 'The TuningStudy "past-int64" is invalid' in refused.stderr
    assert "spec.budget.maxTrials" in refused.stderr
    assert "InternalError" not in refused.stderr

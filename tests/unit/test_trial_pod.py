"""Rendering a trial's pod: the sending half of the trial contract."""

from __future__ import annotations

import json
from typing import Any

from kubetune.controller.trial_pod import render_trial_pod
from kubetune.spec.study import ObjectMeta, TuningStudy, TuningStudySpec
from kubetune.spec.trial import TuningTrial, TuningTrialSpec


def render(
    template: dict[str, Any], params: dict[str, Any], budget: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec = TuningStudySpec.model_validate(
        {
            "objective": {"metrics": [{"name": "loss"}]},
            "searchSpace": [
                {"name": name, "type": "fixed", "value": value} for name, value in params.items()
            ],
            "budget": budget or {},
            "trialTemplate": template,
        }
    )
    study = TuningStudy(metadata=ObjectMeta(name="s", namespace="ml", uid="u1"), spec=spec)
    trial = TuningTrial(
        metadata=ObjectMeta(name="s-3", namespace="ml", uid="trial-uid"),
        spec=TuningTrialSpec(study="s", number=3, params=params),
    )
    return render_trial_pod(study, trial)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


TEMPLATE = {
    "metadata": {"labels": {"team": "vision"}, "annotations": {"note": "x"}},
    "spec": {
        "containers": [
            {
                "name": "trainer",
                "image": "t:1",
                "command": ["python", "-m", "train"],
                "args": ["--lr=${params.lr}", "--opt", "${params.optimizer}", "${params.nope}"],
                "env": [{"name": "USER_SETTING", "value": "1"}],
                "resources": {"limits": {"nvidia.com/gpu": 1}},
                "terminationMessagePath": "/tmp/done",
            },
            {"name": "sidecar", "image": "s:1", "args": ["${params.layers}"]},
        ],
        "nodeSelector": {"gpu": "h100"},
    },
}
PARAMS = {"lr": 0.001, "optimizer": "adam", "layers": 3, "augment": True}


def test_every_container_receives_every_parameter_as_env() -> None:
    pod = render(TEMPLATE, PARAMS)
    for container in pod["spec"]["containers"]:
        env = env_of(container)
        assert json.loads(env["KUBETUNE_PARAMS"]) == PARAMS
        assert env["KUBETUNE_PARAM_LR"] == "0.001"
        assert env["KUBETUNE_PARAM_OPTIMIZER"] == "adam"
        assert env["KUBETUNE_PARAM_LAYERS"] == "3"
        assert env["KUBETUNE_PARAM_AUGMENT"] == "true"
        assert env["KUBETUNE_STUDY"] == "s"
        assert env["KUBETUNE_TRIAL"] == "s-3"
        assert env["KUBETUNE_TRIAL_NUMBER"] == "3"
        assert env["KUBETUNE_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    trainer, sidecar = (env_of(c) for c in pod["spec"]["containers"])
    assert trainer["USER_SETTING"] == "1"  # the template's own env is kept
    assert trainer["KUBETUNE_TERMINATION_LOG"] == "/tmp/done"
    assert sidecar["KUBETUNE_TERMINATION_LOG"] == "/dev/termination-log"


def test_placeholders_are_replaced_in_command_and_args() -> None:
    trainer, sidecar = render(TEMPLATE, PARAMS)["spec"]["containers"]
    assert trainer["command"] == ["python", "-m", "train"]
    # An unknown name is left as written (kubetune validate reports it before a study starts).
    assert trainer["args"] == ["--lr=0.001", "--opt", "adam", "${params.nope}"]
    assert sidecar["args"] == ["3"]


def test_pod_is_named_labelled_and_owned_by_its_trial() -> None:
    pod = render(TEMPLATE, PARAMS)
    metadata = pod["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("s-3", "ml")
    assert metadata["labels"] == {
        "team": "vision",
        "kubetune.io/study": "s",
        "kubetune.io/trial": "s-3",
        "kubetune.io/trial-number": "3",
    }
    assert metadata["annotations"] == {"note": "x"}
    (owner,) = metadata["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "TuningTrial",
        "s-3",
        "trial-uid",
        True,
    )


def test_pod_spec_keeps_unmodelled_fields_and_gets_trial_defaults() -> None:
    spec = render(TEMPLATE, PARAMS, budget={"trialTimeout": "1h30m"})["spec"]
    assert spec["nodeSelector"] == {"gpu": "h100"}
    # Quantities as strings, as the API serves them (the kubernetes client refuses numbers).
    assert spec["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 5400
    without_timeout = render(TEMPLATE, PARAMS)["spec"]
    assert "activeDeadlineSeconds" not in without_timeout
    on_failure = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "restartPolicy": "OnFailure"}}
    assert render(on_failure, PARAMS)["spec"]["restartPolicy"] == "OnFailure"
    # A stopped trainer's grace period is part of every worst case: 10 s unless the template
    # says otherwise.
    assert spec["terminationGracePeriodSeconds"] == 10
    patient = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "terminationGracePeriodSeconds": 120}}
    assert render(patient, PARAMS)["spec"]["terminationGracePeriodSeconds"] == 120


def test_rendering_does_not_change_the_study() -> None:
    spec = TuningStudySpec.model_validate(
        {
            "objective": {"metrics": [{"name": "loss"}]},
            "searchSpace": [{"name": "lr", "type": "float", "low": 0.0001, "high": 0.1}],
            "trialTemplate": TEMPLATE,
        }
    )
    study = TuningStudy(metadata=ObjectMeta(name="s", namespace="ml"), spec=spec)
    trials = [
        TuningTrial(
            metadata=ObjectMeta(name=f"s-{n}", namespace="ml", uid=f"u{n}"),
            spec=TuningTrialSpec(study="s", number=n, params={"lr": lr}),
        )
        for n, lr in enumerate([0.01, 0.02])
    ]
    first, second = (render_trial_pod(study, trial) for trial in trials)
    assert first["spec"]["containers"][0]["args"][0] == "--lr=0.01"
    assert second["spec"]["containers"][0]["args"][0] == "--lr=0.02"
    container = study.spec.trial_template.spec.containers[0]
    assert container.args is not None
    assert container.args[0] == "--lr=${params.lr}"
    assert container.env is not None
    assert [e.name for e in container.env] == ["USER_SETTING"]

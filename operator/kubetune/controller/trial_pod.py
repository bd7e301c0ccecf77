"""Rendering a trial's pod from the study's template and the trial's hyperparameters.

This is the trial contract's sending half (docs/trial-contract.md): every container of the pod
receives
- KUBETUNE_PARAMS: all parameters as one JSON object,
- KUBETUNE_PARAM_<NAME>: one variable per parameter, the name upper-cased,
- KUBETUNE_STUDY, KUBETUNE_TRIAL, KUBETUNE_TRIAL_NUMBER, and the pod's own name and namespace
  (downward API) for the reporting helper,
- KUBETUNE_SEED: the trial's seed (stable per search trial, new per re-evaluation run),
- KUBETUNE_TERMINATION_LOG: the file for its final metrics (its terminationMessagePath),
and `${params.<name>}` (and `${trial.seed}`) in command and args is replaced by the value.
Nothing else is injected: any image works.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from kubetune.spec import api
from kubetune.spec.bounds import ParameterValue
from kubetune.spec.duration import parse_duration
from kubetune.spec.study import TuningStudy
from kubetune.spec.trial import TuningTrial

PLACEHOLDER = re.compile(api.PARAM_PLACEHOLDER)
STOP_DEADLINE_SECONDS = 1
"""The activeDeadlineSeconds a running trial pod is given to stop it where it is: Kubernetes lets
a pod's deadline be lowered (never raised), the kubelet then ends it as at a timeout, and the pod
object and its logs stay."""


def format_value(value: ParameterValue) -> str:
    """A parameter value as text: strings as they are, numbers and booleans as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def substitute(text: str, params: Mapping[str, ParameterValue], seed: int | None = None) -> str:
    """Replace ${params.<name>} with the value and ${trial.seed} with the seed; unknown names
    are left as they are (the validator reports them before a study starts)."""
    if seed is not None:
        text = text.replace(api.SEED_PLACEHOLDER, str(seed))
    return PLACEHOLDER.sub(
        lambda match: format_value(params[match[1]]) if match[1] in params else match[0],
        text,
    )


def quantities_as_strings(resources: Mapping[str, Any]) -> dict[str, Any]:
    """A container's resources with every amount as a string, the form in which the API
    serves a Quantity. A manifest's `nvidia.com/gpu: 1` arrives as a number, which the
    kubernetes client's V1Pod model refuses (it types quantities as strict strings)."""
    return {
        kind: (
            {name: format_value(amount) for name, amount in amounts.items()}
            if kind in ("requests", "limits") and isinstance(amounts, Mapping)
            else amounts
        )
        for kind, amounts in resources.items()
    }


def param_env(params: Mapping[str, ParameterValue]) -> list[dict[str, Any]]:
    """The environment variables carrying the parameters."""
    env: list[dict[str, Any]] = [{"name": api.PARAMS_ENV, "value": json.dumps(dict(params))}]
    env.extend(
        {"name": api.PARAM_ENV_PREFIX + name.upper(), "value": format_value(value)}
        for name, value in params.items()
    )
    return env


def with_owner_uid(pod: Mapping[str, Any], uid: str) -> dict[str, Any]:
    """The pod with its owner reference's uid set: the uid of its trial, once created."""
    metadata = dict(pod["metadata"])
    metadata["ownerReferences"] = [{**ref, "uid": uid} for ref in metadata["ownerReferences"]]
    return {**pod, "metadata": metadata}


def render_trial_pod(study: TuningStudy, trial: TuningTrial) -> dict[str, Any]:
    """The pod manifest of a trial, owned by its TuningTrial: a trial not yet created has no
    uid, and its pod's owner reference gets it with `with_owner_uid`."""
    template = study.spec.trial_template
    params = trial.spec.params
    seed = trial.spec.seed
    name = trial.metadata.name or ""
    labels = {
        **(template.metadata.labels if template.metadata and template.metadata.labels else {}),
        api.STUDY_LABEL: trial.spec.study,
        api.TRIAL_LABEL: name,
        api.TRIAL_NUMBER_LABEL: str(trial.spec.number),
    }
    if trial.spec.reevaluation is not None:
        labels[api.REEVALUATION_LABEL] = str(trial.spec.reevaluation.trial)
    annotations = dict(
        template.metadata.annotations if template.metadata and template.metadata.annotations else {}
    )
    identity_env: list[dict[str, Any]] = [
        {"name": api.STUDY_ENV, "value": trial.spec.study},
        {"name": api.TRIAL_ENV, "value": name},
        {"name": api.TRIAL_NUMBER_ENV, "value": str(trial.spec.number)},
        *([{"name": api.SEED_ENV, "value": str(seed)}] if seed is not None else []),
        {"name": api.POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": api.POD_NAMESPACE_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
    ]
    pod_spec = template.spec.to_manifest()
    pod_spec.setdefault("restartPolicy", "Never")
    pod_spec["terminationGracePeriodSeconds"] = template.spec.grace_seconds
    if study.spec.budget.trial_timeout is not None:
        pod_spec["activeDeadlineSeconds"] = max(
            1, round(parse_duration(study.spec.budget.trial_timeout))
        )
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        if isinstance(container.get("resources"), Mapping):
            container["resources"] = quantities_as_strings(container["resources"])
    for container in pod_spec["containers"]:
        for field in ("command", "args"):
            if field in container:
                container[field] = [substitute(part, params, seed) for part in container[field]]
        log = container.get("terminationMessagePath", api.DEFAULT_TERMINATION_LOG)
        container["env"] = [
            *container.get("env", []),
            *identity_env,
            {"name": api.TERMINATION_LOG_ENV, "value": log},
            *param_env(params),
        ]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": trial.metadata.namespace,
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": api.API_VERSION,
                "kind": api.TRIAL_KIND,
                "name": name,
                "uid": trial.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def study_owner_reference(study: TuningStudy) -> dict[str, Any]:
    """The ownerReference a study's TuningTrials carry: deleting the study deletes them."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.STUDY_KIND,
        "name": study.metadata.name,
        "uid": study.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }

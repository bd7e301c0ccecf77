"""Rendering a trial that is a batch/v1 Job (spec.trialTemplate.job): an Indexed Job of the
trial's pods and, for a distributed run, the headless Service of its rendezvous.

Every pod of the Job is the trial's pod as `render_trial_pod` renders it (the same parameters,
seed and identity), so the trial contract is unchanged; a distributed run adds what
torch.distributed's env:// rendezvous reads:
- MASTER_ADDR: `<trial>-0.<trial>`, the DNS name of the pod of completion index 0 (an Indexed
  Job's pods have the hostname `<job>-<index>`; `subdomain` puts them in the Service),
- MASTER_PORT: job.distributed.port, declared as the container port `rendezvous`,
- WORLD_SIZE: completions, RANK: the pod's completion index (downward API).

The Job is named as its trial and owned by it. Its pods' own activeDeadlineSeconds is the
trial's trialTimeout, as for a pod trial: the kubelet ends a pod that overruns, and its logs
stay. The Job's activeDeadlineSeconds only backs it up (pendingTimeout + trialTimeout + the
grace period and a margin, when both are set): at its deadline the job controller deletes the
pods, and their logs with them. `podReplacementPolicy: Failed` keeps a retried pod from
starting before the one it replaces has ended, so no more than `parallelism` pods of a trial
ever hold GPUs.
"""

from __future__ import annotations

from typing import Any

from kubetune.controller.trial_pod import render_trial_pod
from kubetune.spec import api
from kubetune.spec.duration import parse_duration
from kubetune.spec.study import TuningStudy
from kubetune.spec.trial import TuningTrial
from kubetune.spec.trial_template import JobTemplate

JOB_DEADLINE_MARGIN_SECONDS = 30
"""How long after a pod's own deadline (and grace period) could have ended it the Job's
deadline falls: the kubelet, not the job controller, should be what ends a trial."""


def render_trial_workload(study: TuningStudy, trial: TuningTrial) -> tuple[dict[str, Any], ...]:
    """The objects that run a trial: its pod, or its Job (and the Service of a distributed
    run), each owned by the TuningTrial (see `with_owner_uid` for a trial not yet created)."""
    pod = render_trial_pod(study, trial)
    job = study.spec.trial_template.job
    if job is None:
        return (pod,)
    rendered = [render_job(study, job, pod)]
    if job.distributed is not None:
        rendered.append(render_rendezvous_service(pod, job.distributed.port))
    return tuple(rendered)


def render_job(study: TuningStudy, job: JobTemplate, pod: dict[str, Any]) -> dict[str, Any]:
    """The trial's Indexed Job, whose pod template is the trial's pod."""
    metadata = pod["metadata"]
    name = metadata["name"]
    pod_spec = dict(pod["spec"])
    containers = [dict(container) for container in pod_spec["containers"]]
    primary = _primary_index(study, containers)
    if job.distributed is not None:
        pod_spec["subdomain"] = name
        index = f"metadata.annotations['{api.JOB_COMPLETION_INDEX_ANNOTATION}']"
        distributed_env = [
            {"name": api.MASTER_ADDR_ENV, "value": f"{name}-0.{name}"},
            {"name": api.MASTER_PORT_ENV, "value": str(job.distributed.port)},
            {"name": api.WORLD_SIZE_ENV, "value": str(job.completions)},
            {
                "name": api.RANK_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": index}},
            },
        ]
        for container in containers:
            container["env"] = [*container.get("env", []), *distributed_env]
        port = {"name": api.RENDEZVOUS_PORT_NAME, "containerPort": job.distributed.port}
        ports = containers[primary].get("ports", [])
        if all(p.get("containerPort") != job.distributed.port for p in ports):
            containers[primary]["ports"] = [*ports, port]
    pod_spec["containers"] = containers
    template_metadata = {k: v for k, v in metadata.items() if k in ("labels", "annotations")}
    spec: dict[str, Any] = {
        "completions": job.completions,
        "parallelism": job.pods_at_once,
        "completionMode": "Indexed",
        "backoffLimit": job.backoff_limit,
        "podReplacementPolicy": "Failed",
        "template": {"metadata": template_metadata, "spec": pod_spec},
    }
    budget = study.spec.budget
    if budget.trial_timeout is not None and budget.pending_timeout is not None:
        spec["activeDeadlineSeconds"] = round(
            parse_duration(budget.pending_timeout)
            + parse_duration(budget.trial_timeout)
            + study.spec.trial_template.spec.stop_seconds
            + JOB_DEADLINE_MARGIN_SECONDS
        )
    job_metadata = {k: v for k, v in metadata.items() if k != "annotations"}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_metadata, "spec": spec}


def render_rendezvous_service(pod: dict[str, Any], port: int) -> dict[str, Any]:
    """The headless Service that gives a distributed trial's pods their DNS names
    (`<hostname>.<trial>`); it publishes them before they are ready, as a rendezvous needs."""
    metadata = pod["metadata"]
    name = metadata["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {k: v for k, v in metadata.items() if k != "annotations"},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {api.TRIAL_LABEL: name},
            "ports": [{"name": api.RENDEZVOUS_PORT_NAME, "port": port, "targetPort": port}],
        },
    }


def _primary_index(study: TuningStudy, containers: list[dict[str, Any]]) -> int:
    """The index of the primary container (spec.trialTemplate.primaryContainer, else 0)."""
    wanted = study.spec.trial_template.primary_container
    for index, container in enumerate(containers):
        if container.get("name") == wanted:
            return index
    return 0

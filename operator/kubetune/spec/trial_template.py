"""What each trial runs (spec.trialTemplate): a pod, or a batch/v1 Job of such pods
(`job`, for distributed training); the part of a core/v1 PodSpec the operator reads
(containers, resources, restart policy, grace period); and the GPUs a trial asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field

from kubetune.spec.base import ApiModel, OpenModel

Quantity = int | str


class ResourceRequirements(OpenModel):
    limits: dict[str, Quantity] | None = None
    """Resource limits, for example {"nvidia.com/gpu": 1}."""
    requests: dict[str, Quantity] | None = None
    """Resource requests."""


class EnvVar(OpenModel):
    name: str
    """Environment variable name."""
    value: str | None = None
    """Its value."""


class Container(OpenModel):
    name: Annotated[str, Field(min_length=1)]
    """Container name."""
    image: str | None = None
    """Container image of the trainer."""
    command: list[str] | None = None
    """Entrypoint; ${params.<name>} is replaced by the trial's value."""
    args: list[str] | None = None
    """Arguments; ${params.<name>} is replaced by the trial's value."""
    env: list[EnvVar] | None = None
    """Environment; Kubetune adds KUBETUNE_PARAMS and KUBETUNE_PARAM_<NAME>."""
    resources: ResourceRequirements | None = None
    """Resources; GPUs requested here are what GPU-hour and money budgets count."""


DEFAULT_TRIAL_GRACE_SECONDS = 10
"""terminationGracePeriodSeconds of a trial pod whose template sets none (Kubernetes' own default
is 30): a stopped trainer's GPUs count until its pod has terminated, so the grace period is
part of every trial's worst case."""


KUBELET_MINIMUM_GRACE_SECONDS = 2
"""The kubelet gives a container at least this long between SIGTERM and SIGKILL, whatever the
pod's grace period says (kuberuntime's minimumGracePeriodInSeconds)."""


class PodSpec(OpenModel):
    containers: Annotated[list[Container], Field(min_length=1)]
    """The containers of a trial pod; the first one is the trainer."""
    restart_policy: Literal["Never", "OnFailure"] | None = None
    """Never (default) or OnFailure; Always would keep a trial from ever finishing."""
    termination_grace_period_seconds: Annotated[int, Field(ge=0)] | None = None
    """Seconds a stopped trainer gets between SIGTERM and SIGKILL; 10 when not set. Counted in
    each trial's worst case for GPU-hour and money budgets."""

    @property
    def grace_seconds(self) -> int:
        """The grace period trial pods get."""
        if self.termination_grace_period_seconds is None:
            return DEFAULT_TRIAL_GRACE_SECONDS
        return self.termination_grace_period_seconds

    @property
    def stop_seconds(self) -> int:
        """The longest a stopped trial pod may still run: its grace period, and never less
        than the kubelet's minimum."""
        return max(self.grace_seconds, KUBELET_MINIMUM_GRACE_SECONDS)


MAX_JOB_PODS = 1000
"""Completions of a trial's Job: its pods' hostnames are `<trial>-<index>`, DNS labels of at most
63 characters (docs/study-spec.md, "Trials as Jobs")."""
MAX_JOB_STUDY_NAME_LENGTH = 44
"""The longest name of a study whose trials are Jobs: a trial's name (`<study>-<number>`, with
`-r<repeat>` for a re-evaluation run) and `-<index>` must fit the 63 characters of the hostname
of the Job's pods and of the name of its headless Service."""
DEFAULT_RENDEZVOUS_PORT = 29500
"""torch.distributed's customary MASTER_PORT."""


class Distributed(ApiModel):
    port: Annotated[int, Field(ge=1, le=65535)] = DEFAULT_RENDEZVOUS_PORT
    """The rendezvous port (MASTER_PORT) the pod of completion index 0 listens on."""


class JobTemplate(ApiModel):
    completions: Annotated[int, Field(ge=1, le=MAX_JOB_PODS)] = 1
    """Pods of one trial: an Indexed Job's completion indexes 0 .. completions - 1. The pod of
    index 0 is the trial's primary pod: its metrics are the trial's."""
    parallelism: Annotated[int, Field(ge=1, le=MAX_JOB_PODS)] | None = None
    """Pods that run at once; completions when not set. GPU-hour and money budgets count this
    many pods of a trial."""
    backoff_limit: Annotated[int, Field(ge=0, le=MAX_JOB_PODS)] = 0
    """Pod failures a trial survives (the Job's backoffLimit); 0 when not set: a distributed run
    cannot go on without one of its ranks, so one failed pod fails the trial."""
    distributed: Distributed | None = None
    """Set for torch.distributed (and any framework that reads the same variables): every pod
    gets MASTER_ADDR (the index-0 pod's name in the trial's headless Service), MASTER_PORT,
    WORLD_SIZE (completions) and RANK (its completion index). Needs parallelism = completions."""

    @property
    def pods_at_once(self) -> int:
        """The most pods of one trial that run at the same time."""
        return self.parallelism or self.completions


class TemplateMetadata(ApiModel):
    labels: dict[str, str] | None = None
    """Labels for each trial pod (Kubetune adds its own)."""
    annotations: dict[str, str] | None = None
    """Annotations for each trial pod."""


class TrialTemplate(ApiModel):
    metadata: TemplateMetadata | None = None
    """Labels and annotations of each trial pod."""
    spec: PodSpec
    """The pod spec of one training run (core/v1 PodSpec); of each pod of it, for a Job."""
    job: JobTemplate | None = None
    """Run each trial as a batch/v1 Indexed Job of `completions` such pods (multi-node and
    distributed training) rather than as one pod. Needs the cluster's job controller."""
    primary_container: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """The container whose termination message holds the trial's final metrics, and whose state
    is the trial's; the first container when not set."""

    @property
    def pods_at_once(self) -> int:
        """The most pods of one trial that run at the same time: 1, or the Job's parallelism."""
        return self.job.pods_at_once if self.job is not None else 1

    def gpu_resources(self, price_table: Mapping[str, float] | None = None) -> dict[str, int]:
        """GPUs a trial asks for, by extended resource name: summed over a pod's containers,
        times the pods that run at once (a Job's parallelism).

        A resource counts as a GPU when the price table names it or its name ends in "/gpu"
        (nvidia.com/gpu, amd.com/gpu). Extended resources are whole numbers and their requests
        equal their limits, so the limit is read, or the request when no limit is given.
        Raises ValueError for an amount that is not a whole number.
        """
        prices = price_table or {}
        gpus: dict[str, int] = {}
        for container in self.spec.containers:
            resources = container.resources
            if resources is None:
                continue
            amounts = {**(resources.requests or {}), **(resources.limits or {})}
            for name, amount in amounts.items():
                if name in prices or name.endswith("/gpu"):
                    if not str(amount).isdigit():
                        raise ValueError(f"{name}: {amount!r} is not a whole number of devices")
                    gpus[name] = gpus.get(name, 0) + int(str(amount)) * self.pods_at_once
        return gpus

    def money_per_hour(self, price_table: Mapping[str, float]) -> float:
        """What one running hour of a trial costs at these prices per GPU-hour. Raises
        ValueError as gpu_resources does."""
        gpus = self.gpu_resources(price_table)
        return sum(count * price_table.get(name, 0.0) for name, count in gpus.items())

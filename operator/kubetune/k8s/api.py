"""The operator's Kubernetes calls, in one place: carry out a Plan, stop a deleted study's pods.

Thin on purpose: no decision is made here (kubetune.controller makes them all). The
`kubernetes` client is synchronous, so each call runs in a thread of the API's own pool (never
the default executor: the studies' decisions must not be able to fill it); objects are read as
the API returns them (plain dicts, camelCase), not as the client's models.

Every decisive write is conditional on what its plan read, so that a replica with a stale view
(one that was paused, or lost its lease) can only fail, never overwrite: a status patch carries
the resourceVersion the plan was based on (a 409 if the object changed since), and a trial
whose create finds it already there is someone else's (its status is not written). Either
raises StaleViewError: stop the plan, re-read, decide again. Before each write the `fence`
(kubetune.k8s.leader's, with --leader-elect) is checked in the calling thread, so a replica
that no longer holds the lease writes nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import kubernetes

from kubetune.controller import STOP_DEADLINE_SECONDS, Plan, TrialUpdate, with_owner_uid
from kubetune.kubeconfig import connect
from kubetune.spec import api
from kubetune.spec.study_status import TuningStudyStatus
from kubetune.spec.trial import TuningTrial

# Objects already gone are not errors; one already there is a stale view (StaleViewError),
# except a pod (its trial's create decided who owns it).
_ALREADY_EXISTS = 409
_CONFLICT = 409
_NOT_FOUND = 404
_STOPPING: Final = {"spec": {"activeDeadlineSeconds": STOP_DEADLINE_SECONDS}}
API_THREADS: Final = 16
"""Threads for the client's calls: requests in flight at once, for all studies together."""


class StaleViewError(Exception):
    """A conditional write was refused (409): the plan was based on an old view of its
    objects. Nothing of it was overwritten; re-read and decide again."""


class JobsNotServedError(Exception):
    """A trial's Job could not be created: the API serves no batch/v1 Jobs (the embedded
    plane). The study shows it (ReconcileFailed) until it runs where Jobs are served."""


def _no_fence() -> None:
    """Without leader election every write may go ahead."""


def merge_patch_to(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: keys that `new` no longer
    has are set to null. A plain merge patch with `new` would keep them (the params of an
    earlier best trial, say)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch = {key: None for key in old if key not in new}
    for key, value in new.items():
        patch[key] = merge_patch_to(old.get(key), value)
    return patch


def study_status_patch(
    stored: Mapping[str, Any] | None, status: TuningStudyStatus
) -> dict[str, Any] | None:
    """The merge patch that makes a study's stored status `status`, or None when it already
    is. The stored status has no nulls (a merge patch removes the keys it nulls), so neither
    may the new one: compared with its nulls, every status differed and each reconcile sent
    a patch that changed nothing (half of a busy study's status writes). kopf's own key
    ("kopf") is kopf's to write."""
    new = status.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"kopf"})
    current = {k: v for k, v in (stored or {}).items() if k != "kopf"}
    return None if new == current else merge_patch_to(current, new)


async def _all_of(calls: Iterable[Awaitable[None]]) -> None:
    """One step of a plan: its calls at once, each to its end (what they wrote is recorded
    even when one fails), then the first error, if any."""
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


@dataclass
class Written:
    """The objects as the API server returned them after a plan's writes: what the operator
    knows before its watches deliver it (see kubetune.k8s.cache)."""

    trials: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    study: dict[str, Any] | None = None

    def add_workload(self, created: dict[str, Any] | None) -> None:
        """An object a trial's workload create returned (a Service is not kept)."""
        if created is None:
            return
        if created.get("kind") == "Job":
            self.jobs.append(created)
        elif created.get("kind", "Pod") == "Pod":
            self.pods.append(created)

    def add_trial(self, trial: dict[str, Any] | None) -> None:
        """A trial as a write returned it, in place of what an earlier write of this plan
        returned for it (its create, before its status)."""
        if trial is None:
            return
        name = trial["metadata"]["name"]
        self.trials = [t for t in self.trials if t["metadata"]["name"] != name]
        self.trials.append(trial)


class KubeApi:
    """The calls the operator makes, through one `kubernetes` ApiClient."""

    def __init__(
        self, client: kubernetes.client.ApiClient, fence: Callable[[], None] = _no_fence
    ) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)
        self.batch = kubernetes.client.BatchV1Api(client)
        self.fence = fence
        self._threads = ThreadPoolExecutor(API_THREADS, thread_name_prefix="kubetune-api")

    @classmethod
    def from_environment(cls, fence: Callable[[], None] = _no_fence) -> KubeApi:
        """$KUBECONFIG, else in a pod the service account, else ~/.kube/config."""
        return cls(connect(connections=API_THREADS).api_client, fence)

    async def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A write: the fence is checked in the API thread, just before the request."""

        def fenced() -> Any:
            self.fence()
            return function(*args, **kwargs)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, fenced)

    async def _read(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, partial(function, *args, **kwargs))

    async def _quietly(
        self, ignored: int, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        try:
            await self._call(function, *args, **kwargs)
        except kubernetes.client.ApiException as error:
            if error.status != ignored:
                raise

    # --- carrying out a plan -----------------------------------------------------------------

    async def _patch_status(
        self,
        namespace: str,
        plural: str,
        name: str,
        status: dict[str, Any],
        based_on: str | None = None,
    ) -> dict[str, Any] | None:
        """A merge patch of an object's status subresource: the object as patched, or None
        when it is gone (no error). With `based_on` (the resourceVersion the decision read)
        the patch is refused with StaleViewError if the object changed since."""
        body: dict[str, Any] = {"status": status}
        if based_on is not None:
            body["metadata"] = {"resourceVersion": based_on}
        try:
            patched: dict[str, Any] = await self._call(
                self.custom.patch_namespaced_custom_object_status,
                api.GROUP,
                api.VERSION,
                namespace,
                plural,
                name,
                body,
            )
        except kubernetes.client.ApiException as error:
            if error.status == _CONFLICT and based_on is not None:
                raise StaleViewError(
                    f"{plural} {namespace}/{name} changed since version {based_on}"
                ) from error
            if error.status != _NOT_FOUND:
                raise
            return None
        return patched

    async def patch_study_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A merge patch of a study's status (the operator's own mark of a failing reconcile):
        the study as patched, or None when it is gone."""
        return await self._patch_status(namespace, api.STUDY_PLURAL, name, status)

    async def apply(
        self,
        plan: Plan,
        study: Mapping[str, Any],
        trial_versions: Mapping[str, str],
        written: Written | None = None,
    ) -> Written:
        """The plan's steps in its order: trial statuses, pods stopped, pod deletions, new
        trials (each with its pod), pods of older trials, then the study status (only when it
        changed). The calls of one step are independent of each other and run concurrently.
        `study` and `trial_versions` (resourceVersion by trial name) are what the plan was
        decided on: the status writes are conditional on them (StaleViewError).

        Each write is recorded in `written` as it returns, and a step's calls all run to their
        end before its first error is raised: a plan stopped by a refused write still tells
        the caller what it wrote (forgotten, a study's next plan, decided before the watches
        deliver them, would create its new trials again or write on their old versions)."""
        namespace = study["metadata"]["namespace"]
        written = Written() if written is None else written

        async def update_trial(update: TrialUpdate) -> None:
            status = update.status.model_dump(mode="json", by_alias=True)
            based_on = trial_versions.get(update.name)
            written.add_trial(
                await self._patch_status(
                    namespace, api.TRIAL_PLURAL, update.name, status, based_on=based_on
                )
            )

        async def create_workload(manifest: Mapping[str, Any]) -> None:
            written.add_workload(await self._create_workload(namespace, manifest))

        await _all_of(update_trial(update) for update in plan.trial_updates)
        job = plan.workload_kind == "Job"
        stop = self._stop_job if job else self._stop_pod
        await _all_of(stop(namespace, name) for name in plan.stop_workloads)
        delete = self._delete_job if job else self._delete_pod
        await _all_of(delete(namespace, name) for name in plan.delete_workloads)
        await _all_of(
            self._create_trial(
                namespace,
                trial,
                plan.new_trial_workloads.get(trial.metadata.name or "", ()),
                written,
            )
            for trial in plan.create_trials
        )
        await _all_of(create_workload(manifest) for manifest in plan.create_workloads)
        patch = study_status_patch(study.get("status"), plan.study_status)
        if patch is not None:
            written.study = await self._patch_status(
                namespace,
                api.STUDY_PLURAL,
                study["metadata"]["name"],
                patch,
                based_on=study["metadata"].get("resourceVersion"),
            )
        return written

    async def _create_trial(
        self,
        namespace: str,
        trial: TuningTrial,
        workload: tuple[Mapping[str, Any], ...],
        written: Written,
    ) -> None:
        """Create a TuningTrial, then its workload (owned through the uid the create returned),
        then write its status, recording each in `written`. The status names the pod (podName)
        once it exists: written before, it would claim a pod that a crash or a refused create
        left missing, and the trial would fail PodDeleted instead of getting its pod; written
        without it, the next reconcile would write the trial again just to name the pod it
        sees."""
        name = trial.metadata.name or ""
        body = trial.model_dump(mode="json", by_alias=True, exclude_none=True)
        try:
            created = await self._call(
                self.custom.create_namespaced_custom_object,
                api.GROUP,
                api.VERSION,
                namespace,
                api.TRIAL_PLURAL,
                body,
            )
        except kubernetes.client.ApiException as error:
            if error.status != _ALREADY_EXISTS:
                raise
            # Created by an earlier plan or another replica: its status is not ours to write.
            raise StaleViewError(f"trial {namespace}/{name} already exists") from error
        written.add_trial(created)
        uid = created["metadata"]["uid"]
        status = trial.status

        async def create_owned(manifest: Mapping[str, Any]) -> None:
            owned = with_owner_uid(manifest, uid)
            written.add_workload(await self._create_workload(namespace, owned))

        try:
            await _all_of(create_owned(manifest) for manifest in workload)
            if workload:
                status = status.model_copy(update={"pod_name": name})
        finally:
            # The API server drops status on create (status subresource): write it after, on
            # the version just created, the workload's create refused or not.
            written.add_trial(
                await self._patch_status(
                    namespace,
                    api.TRIAL_PLURAL,
                    name,
                    status.model_dump(mode="json", by_alias=True),
                    based_on=created["metadata"]["resourceVersion"],
                )
            )

    async def _create_workload(
        self, namespace: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Create a trial's pod, Job or Service: the object as created, or None when it
        already existed."""
        client, method = {
            "Pod": (self.core, "create_namespaced_pod"),
            "Job": (self.batch, "create_namespaced_job"),
            "Service": (self.core, "create_namespaced_service"),
        }[manifest["kind"]]
        create = getattr(client, method)
        try:
            response = await self._call(create, namespace, manifest, _preload_content=False)
        except kubernetes.client.ApiException as error:
            if error.status == _NOT_FOUND and manifest["kind"] == "Job":
                raise JobsNotServedError(
                    "this cluster serves no batch/v1 Jobs, which the study's trials are "
                    "(spec.trialTemplate.job): run it where a job controller runs (locally: "
                    "`kubetune up --binaries DIR`), or remove job"
                ) from error
            if error.status != _ALREADY_EXISTS:
                raise
            return None
        created: dict[str, Any] = json.loads(response.data)
        return created

    async def _stop_pod(self, namespace: str, name: str) -> None:
        """Stop a trial's pod where it is: the kubelet ends it at its lowered deadline."""
        await self._quietly(_NOT_FOUND, self.core.patch_namespaced_pod, name, namespace, _STOPPING)

    async def _delete_pod(self, namespace: str, name: str) -> None:
        await self._quietly(_NOT_FOUND, self.core.delete_namespaced_pod, name, namespace)

    async def _stop_job(self, namespace: str, name: str) -> None:
        """Stop a trial's Job where it is, keeping its pods and their logs: the Job is deleted
        with its pods orphaned (the job controller would delete them, or start new ones), and
        each pod is given to the trial (an owner reference, so it goes with the trial), its
        started ones stopped as a pod trial's, its waiting ones deleted."""
        try:
            response = await self._read(
                self.batch.read_namespaced_job, name, namespace, _preload_content=False
            )
        except kubernetes.client.ApiException as error:
            if error.status != _NOT_FOUND:
                raise
            job: dict[str, Any] = {}
        else:
            job = json.loads(response.data)
            orphan = kubernetes.client.V1DeleteOptions(
                propagation_policy="Orphan",
                preconditions=kubernetes.client.V1Preconditions(uid=job["metadata"]["uid"]),
            )
            await self._quietly(
                _NOT_FOUND, self.batch.delete_namespaced_job, name, namespace, body=orphan
            )
        owners = [
            {**ref, "controller": False}
            for ref in job.get("metadata", {}).get("ownerReferences", [])
            if ref.get("kind") == api.TRIAL_KIND
        ]
        response = await self._read(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=f"{api.TRIAL_LABEL}={name}",
            _preload_content=False,
        )
        pods = json.loads(response.data).get("items", [])
        await asyncio.gather(*(self._stop_job_pod(namespace, pod, owners) for pod in pods))

    async def _stop_job_pod(
        self, namespace: str, pod: Mapping[str, Any], owners: list[dict[str, Any]]
    ) -> None:
        name = pod["metadata"]["name"]
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Pending":
            await self._delete_pod(namespace, name)
            return
        patch: dict[str, Any] = {}
        if owners:
            patch["metadata"] = {"ownerReferences": owners}
        if phase not in ("Succeeded", "Failed"):
            patch["spec"] = _STOPPING["spec"]
        if patch:
            await self._quietly(
                _NOT_FOUND,
                self.core.patch_namespaced_pod,
                name,
                namespace,
                patch,
                _content_type="application/strategic-merge-patch+json",
            )

    async def _delete_job(self, namespace: str, name: str) -> None:
        """Delete a trial's Job with its pods (also those a stop orphaned) and its Service."""
        background = kubernetes.client.V1DeleteOptions(propagation_policy="Background")
        await asyncio.gather(
            self._quietly(
                _NOT_FOUND, self.batch.delete_namespaced_job, name, namespace, body=background
            ),
            self._call(
                self.core.delete_collection_namespaced_pod,
                namespace,
                label_selector=f"{api.TRIAL_LABEL}={name}",
            ),
            self._quietly(_NOT_FOUND, self.core.delete_namespaced_service, name, namespace),
        )

    async def read_object(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        """A Secret ("secrets") or ConfigMap ("configmaps"), as the API returns it; None when
        it does not exist (a study's Prometheus token or CA)."""
        read = {
            "secrets": self.core.read_namespaced_secret,
            "configmaps": self.core.read_namespaced_config_map,
        }[plural]
        try:
            response = await self._read(read, name, namespace, _preload_content=False)
        except kubernetes.client.ApiException as error:
            if error.status == _NOT_FOUND:
                return None
            raise
        obj: dict[str, Any] = json.loads(response.data)
        return obj

    async def delete_study_pods(self, namespace: str, study: str, jobs: bool = False) -> None:
        """Stop every pod of a study (on its deletion): their trials go with the study. With
        `jobs` (its trials are Jobs) its Jobs go first, with their pods, so that no job
        controller starts them again."""
        if jobs:
            await self._quietly(
                _NOT_FOUND,
                self.batch.delete_collection_namespaced_job,
                namespace,
                label_selector=f"{api.STUDY_LABEL}={study}",
                propagation_policy="Background",
            )
        await self._call(
            self.core.delete_collection_namespaced_pod,
            namespace,
            label_selector=f"{api.STUDY_LABEL}={study}",
        )

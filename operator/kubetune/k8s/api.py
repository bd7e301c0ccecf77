"""The operator's Kubernetes calls, in one place: read a study's objects, carry out a Plan.

Thin on purpose: no decision is made here (kubetune.controller makes them all). The
`kubernetes` client is synchronous, so each call runs in a worker thread; objects are read as
the API returns them (plain dicts, camelCase), not as the client's models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes

from kubetune.controller import Plan, with_owner_uid
from kubetune.spec import api

# Objects that are already there (a repeated plan) or already gone are not errors: every
# step of a plan is idempotent by name.
_ALREADY_EXISTS = 409
_NOT_FOUND = 404


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


def _raw(response: Any) -> Any:
    """The JSON body of a call made with _preload_content=False."""
    return json.loads(response.data)


class KubeApi:
    """The calls the operator makes, through one `kubernetes` ApiClient."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)

    @classmethod
    def from_environment(cls) -> KubeApi:
        """In a pod, the service account; elsewhere $KUBECONFIG or ~/.kube/config."""
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return cls(kubernetes.client.ApiClient())

    async def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(function, *args, **kwargs)

    async def _quietly(
        self, ignored: int, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        try:
            await self._call(function, *args, **kwargs)
        except kubernetes.client.ApiException as error:
            if error.status != ignored:
                raise

    # --- reading -----------------------------------------------------------------------------

    async def get_study(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            study: dict[str, Any] = await self._call(
                self.custom.get_namespaced_custom_object,
                api.GROUP,
                api.VERSION,
                namespace,
                api.STUDY_PLURAL,
                name,
            )
        except kubernetes.client.ApiException as error:
            if error.status == _NOT_FOUND:
                return None
            raise
        return study

    async def list_study_trials(self, namespace: str, study: str) -> list[dict[str, Any]]:
        listing = await self._call(
            self.custom.list_namespaced_custom_object,
            api.GROUP,
            api.VERSION,
            namespace,
            api.TRIAL_PLURAL,
            label_selector=f"{api.STUDY_LABEL}={study}",
        )
        return list(listing["items"])

    async def list_study_pods(self, namespace: str, study: str) -> list[dict[str, Any]]:
        response = await self._call(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=f"{api.STUDY_LABEL}={study}",
            _preload_content=False,
        )
        return list(_raw(response)["items"])

    # --- carrying out a plan -----------------------------------------------------------------

    async def _patch_status(
        self, namespace: str, plural: str, name: str, status: dict[str, Any]
    ) -> None:
        """A merge patch of an object's status subresource; an object gone is no error."""
        await self._quietly(
            _NOT_FOUND,
            self.custom.patch_namespaced_custom_object_status,
            api.GROUP,
            api.VERSION,
            namespace,
            plural,
            name,
            {"status": status},
        )

    async def apply(self, plan: Plan, study: Mapping[str, Any]) -> None:
        """The plan's steps in its order: trial statuses, pod deletions, new trials (each with
        its pod), pods of older trials, then the study status (only when it changed)."""
        namespace = study["metadata"]["namespace"]
        for update in plan.trial_updates:
            trial_status = update.status.model_dump(mode="json", by_alias=True)
            await self._patch_status(namespace, api.TRIAL_PLURAL, update.name, trial_status)
        for pod_name in plan.delete_pods:
            await self._quietly(_NOT_FOUND, self.core.delete_namespaced_pod, pod_name, namespace)
        for trial in plan.create_trials:
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
                created = None  # a repeated plan: the next reconcile sees the trial as it is
            # The API server drops status on create (status subresource): write it after.
            await self._patch_status(
                namespace,
                api.TRIAL_PLURAL,
                name,
                trial.status.model_dump(mode="json", by_alias=True),
            )
            pod = plan.new_trial_pods.get(name)
            if created is not None and pod is not None:
                await self._create_pod(namespace, with_owner_uid(pod, created["metadata"]["uid"]))
        for pod in plan.create_pods:
            await self._create_pod(namespace, pod)
        status = plan.study_status.model_dump(mode="json", by_alias=True, exclude={"kopf"})
        current = dict(study.get("status") or {})
        current.pop("kopf", None)
        if status != {k: current.get(k) for k in status}:
            await self._patch_status(
                namespace,
                api.STUDY_PLURAL,
                study["metadata"]["name"],
                merge_patch_to(current, status),
            )

    async def _create_pod(self, namespace: str, pod: Mapping[str, Any]) -> None:
        await self._quietly(
            _ALREADY_EXISTS,
            self.core.create_namespaced_pod,
            namespace,
            pod,
            _preload_content=False,
        )

    async def delete_study_pods(self, namespace: str, study: str) -> None:
        """Stop every pod of a study (on its deletion): their trials go with the study."""
        await self._call(
            self.core.delete_collection_namespaced_pod,
            namespace,
            label_selector=f"{api.STUDY_LABEL}={study}",
        )

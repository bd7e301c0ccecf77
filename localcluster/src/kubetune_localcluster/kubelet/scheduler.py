"""The scheduler of the embedded plane's one node, and the books of what its pods hold of the
node's capacity (which the kubelet's admission reads on either plane).

Pods are tried in creation order; a pod whose requests do not fit stays Pending with
PodScheduled=False, reason Unschedulable and the scheduler's message, and is bound when
resources free up. nodeSelector, affinity, taints and tolerations are not considered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from kubetune_localcluster import times
from kubetune_localcluster.kubelet.client import ApiClient, ApiRequestError, Json, pod_path
from kubetune_localcluster.kubelet.events import PodEvents
from kubetune_localcluster.quantities import (
    Resources,
    add_resources,
    insufficient,
    pod_requests,
    unschedulable_message,
)
from kubetune_localcluster.times import timestamp

logger = logging.getLogger(__name__)


class Scheduler:
    """Binds the pending pods that fit onto this node and hands each bound one to `admit`."""

    def __init__(
        self,
        client: ApiClient,
        node_name: str,
        capacity: Resources,
        events: PodEvents,
        admit: Callable[[Json], None],
    ) -> None:
        self._client = client
        self._node_name = node_name
        self._capacity = capacity
        self._events = events
        self._admit = admit
        self.pending: dict[str, Json] = {}  # by uid: waiting to be scheduled
        self.allocated: Resources = {}
        self._unschedulable: dict[str, str] = {}  # uid -> message last written
        self._wanted = asyncio.Event()

    def queue(self, uid: str, obj: Json) -> None:
        """A pod without a node: try to schedule it."""
        self.pending[uid] = obj
        self._wanted.set()

    def forget(self, uid: str) -> None:
        self.pending.pop(uid, None)
        self._unschedulable.pop(uid, None)

    def release(self, requests: Resources) -> None:
        """A pod's resources are free again: the pods waiting for them are tried."""
        add_resources(self.allocated, requests, -1)
        self._wanted.set()

    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self._schedule()

    async def _schedule(self) -> None:
        """Bind the pending pods that fit, in creation order; mark the others Unschedulable."""
        queue = sorted(
            self.pending.values(),
            key=lambda obj: str(obj["metadata"].get("creationTimestamp", "")),
        )
        for obj in queue:
            metadata = obj["metadata"]
            uid = str(metadata["uid"])
            if uid not in self.pending:
                continue
            namespace, name = metadata.get("namespace", "default"), metadata["name"]
            if metadata.get("deletionTimestamp"):
                # An unscheduled pod has no process to stop: it is removed at once.
                del self.pending[uid]
                await self._client.delete_pod_now(namespace, name, uid)
                continue
            try:
                requests = pod_requests(obj.get("spec") or {})
            except ValueError as error:
                await self._mark_unschedulable(obj, f"invalid resource request: {error}")
                continue
            missing = insufficient(requests, self._capacity, self.allocated)
            if missing:
                await self._mark_unschedulable(obj, unschedulable_message(missing))
                continue
            try:
                bound = await self._bind(obj)
            except ApiRequestError as error:
                if error.status != 404:
                    logger.warning("kubelet: binding %s/%s failed: %s", namespace, name, error)
                continue
            self._events.record(
                obj,
                "Normal",
                "Scheduled",
                f"Successfully assigned {namespace}/{name} to {self._node_name}",
                "default-scheduler",
            )
            if uid in self.pending:  # else the watch has already seen it bound
                del self.pending[uid]
                self._unschedulable.pop(uid, None)
                self._admit(bound)

    async def _bind(self, obj: Json) -> Json:
        """Bind a pod to this node as the scheduler does (POST pods/NAME/binding); a server
        without the binding subresource gets a merge patch of spec.nodeName instead."""
        metadata = obj["metadata"]
        namespace, name = metadata.get("namespace", "default"), metadata["name"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": metadata["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self._node_name},
        }
        try:
            await self._client.request("POST", pod_path(namespace, name, "binding"), body=binding)
        except ApiRequestError as error:
            if error.status not in (404, 405):
                raise
            return await self._client.request(
                "PATCH",
                pod_path(namespace, name),
                body={"spec": {"nodeName": self._node_name}},
                content_type="application/merge-patch+json",
            )
        return {**obj, "spec": {**(obj.get("spec") or {}), "nodeName": self._node_name}}

    async def _mark_unschedulable(self, obj: Json, message: str) -> None:
        uid = str(obj["metadata"]["uid"])
        current = next(
            (
                condition
                for condition in (obj.get("status") or {}).get("conditions") or []
                if condition.get("type") == "PodScheduled"
            ),
            None,
        )
        if self._unschedulable.get(uid) == message or (
            current is not None and current.get("message") == message
        ):
            return
        status = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": timestamp(times.now()),
                }
            ],
        }
        metadata = obj["metadata"]
        with contextlib.suppress(ApiRequestError):
            await self._client.request(
                "PATCH",
                pod_path(metadata.get("namespace", "default"), metadata["name"], "status"),
                body={"status": status},
                content_type="application/merge-patch+json",
            )
            self._unschedulable[uid] = message
            self._events.record(obj, "Warning", "FailedScheduling", message, "default-scheduler")

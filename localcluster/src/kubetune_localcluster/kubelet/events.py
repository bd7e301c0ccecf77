"""The core/v1 Events the kubelet records about pods (kubectl describe shows them), and those
it records as the scheduler on the embedded plane."""

from __future__ import annotations

import contextlib
import uuid

from kubetune_localcluster import times
from kubetune_localcluster.kubelet.background import BackgroundTasks
from kubetune_localcluster.kubelet.client import ApiClient, ApiRequestError, Json
from kubetune_localcluster.times import timestamp


class PodEvents:
    def __init__(self, client: ApiClient, node_name: str, background: BackgroundTasks) -> None:
        self._client = client
        self._node_name = node_name
        self._background = background

    def record(
        self, obj: Json, kind: str, reason: str, message: str, component: str = "kubelet"
    ) -> None:
        """Record an Event about a pod in the background: an event that cannot be written is
        dropped, as a real component does."""
        metadata = obj["metadata"]
        namespace = metadata.get("namespace", "default")
        moment = timestamp(times.now())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{metadata['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "namespace": namespace,
                "uid": metadata.get("uid", ""),
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": component, "host": self._node_name},
            "reportingComponent": component,
            "reportingInstance": self._node_name,
            "firstTimestamp": moment,
            "lastTimestamp": moment,
            "count": 1,
        }

        async def post() -> None:
            with contextlib.suppress(ApiRequestError):
                path = f"/api/v1/namespaces/{namespace}/events"
                await self._client.request("POST", path, body=event, attempts=1)

        if not self._client.closing:
            self._background.spawn(post())

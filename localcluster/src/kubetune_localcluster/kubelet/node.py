"""The kubelet's Node: its registration with its capacity and addresses (kubectl get nodes;
the scheduler's view of it) and, where a node lifecycle controller watches, its Lease."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from kubetune_localcluster import times
from kubetune_localcluster.environment import NODE_IP
from kubetune_localcluster.kubelet.client import (
    KUBELET_USER_AGENT,
    ApiClient,
    ApiRequestError,
    Json,
)
from kubetune_localcluster.quantities import Resources, format_quantity
from kubetune_localcluster.times import micro_timestamp, timestamp

logger = logging.getLogger(__name__)
DEFAULT_NODE_NAME: Final = "kubetune-local"
KUBELET_VERSION: Final = "v0.0.0-kubetune-local"
LEASE_DURATION_SECONDS: Final = 40
LEASE_RENEW_SECONDS: Final = 10.0


async def register_node(
    client: ApiClient,
    node_name: str,
    capacity: Resources,
    *,
    endpoint_port: int | None,
    schedules: bool,
) -> None:
    """Create the Node object (kubectl get nodes; the scheduler's view of this node), or
    bring an existing one's status up to date."""
    now = timestamp(times.now())
    conditions = [
        {
            "type": kind,
            "status": "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        for kind, reason, message in (
            ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID"),
        )
    ]
    node: Json = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node_name,
            "labels": {
                "kubernetes.io/hostname": node_name,
                "kubernetes.io/os": "linux",
            },
        },
        "status": {
            "capacity": {k: format_quantity(v) for k, v in capacity.items()},
            "allocatable": {k: format_quantity(v) for k, v in capacity.items()},
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": node_name},
            ],
            "conditions": [
                *conditions,
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                },
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": KUBELET_VERSION,
                "containerRuntimeVersion": "process://local",
            },
        },
    }
    if endpoint_port is not None:
        node["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": endpoint_port}}
    try:
        await client.request("POST", "/api/v1/nodes", body=node, attempts=1)
    except ApiRequestError as error:
        if error.status != 409 or schedules:
            return  # the emulator keeps the node it has
        await client.request(
            "PATCH",
            f"/api/v1/nodes/{node_name}/status",
            body={"status": node["status"]},
            content_type="application/strategic-merge-patch+json",
        )


async def renew_lease(client: ApiClient, node_name: str) -> None:
    """Renew this node's Lease in kube-node-lease, as a kubelet does: the node lifecycle
    controller marks a node whose lease runs out NotReady and evicts its pods."""
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node_name}"
    while not client.closing:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node_name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": node_name,
                "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                "renewTime": micro_timestamp(times.now()),
            },
        }
        try:
            await client.request(
                "PATCH",
                path,
                body=lease,
                content_type="application/apply-patch+yaml",
                params={"fieldManager": KUBELET_USER_AGENT, "force": "true"},
            )
        except ApiRequestError as error:
            logger.warning("kubelet: renewing the node lease failed: %s", error)
        await asyncio.sleep(LEASE_RENEW_SECONDS)  # the lease's renew interval

"""A local kubelet for both control planes: it runs pods as processes.

It talks to the API server only over HTTP, as a real node does: it lists and watches pods,
runs their containers, PATCHes pods/status and GETs the secrets and config maps the env refers
to. On the embedded plane it is also the scheduler (it binds the pods that fit onto its one
node). On the real plane (`schedules=False`, `tls=`) kube-scheduler binds, and the kubelet
watches only its node's pods, renews its Lease, authenticates as system:node:<name>, serves
logs on its own HTTPS endpoint (node_endpoint.py), makes volumes with service-account tokens
(volumes.py) and runs the project's images by their entrypoints (images.py). The pure rules
it applies live beside it: requests, capacity and QoS in quantities.py, a container's env,
ports and termination file in environment.py, the pod's phase, conditions and container
statuses in pod_status.py. docs/local-kubelet.md says where it differs from a real kubelet.

What it emulates, and how it differs from a real node:
- Scheduling: one node with a capacity (cpu, memory, pods, any extended resource such as
  nvidia.com/gpu). Pods are tried in creation order; a pod whose requests do not fit stays
  Pending with PodScheduled=False, reason Unschedulable and the scheduler's message
  ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu."), and is bound when resources
  free up. nodeSelector, affinity, taints and tolerations are not considered. A pod created
  already bound to this node is admitted, or rejected (phase Failed, reason OutOf<resource>)
  when it does not fit, as the kubelet's admission does.
- Containers: the image is not pulled; each container's `command` + `args` run as a local
  process, init containers one after the other, then all containers at once. Each runs under
  an init of its own (processes.py, podinit.py), a subreaper that stands in for the
  container's PID namespace: what the command starts stays below it, children that setsid or
  double-fork included, and when the command's process ends the rest are killed; the
  containerID is process://<the init's pid>. A container without `command` cannot fall back
  to an image's entrypoint: the pod fails, the container terminated with exit code 128 and
  reason CommandRequired. An executable that cannot be started gives reason StartError, exit
  code 128, as containerd does. `workingDir`, volumes, probes, resource limits and sidecar
  init containers are not emulated: a container is ready once its process runs.
- Files: each pod gets a folder under the workdir holding per-container logs
  (`<container>.<restartCount>.log`, stdout and stderr combined), the termination-message
  files and a kubeconfig.
- Env: the process inherits the kubelet's environment (PATH, a virtualenv), then gets
  KUBERNETES_SERVICE_HOST/PORT pointing at the API server, HOSTNAME (the pod name),
  KUBECONFIG (a kubeconfig in the pod folder for the API server's URL: plain HTTP, and the
  kubelet's `token`) and then the spec's envFrom and env: value with $(VAR) expansion, fieldRef
  (metadata.name, namespace, uid, labels, annotations, labels['k'], annotations['k'],
  spec.nodeName, spec.serviceAccountName, status.podIP, status.hostIP: 127.0.0.1),
  secretKeyRef and configMapKeyRef (optional honoured). A missing secret or config map keeps
  the container waiting with reason CreateContainerConfigError and is retried, as Kubernetes
  does. On the embedded plane no token file is written: in-cluster clients use KUBECONFIG
  (with the emulator's token). On the real plane a pod gets no KUBECONFIG: its projected
  service-account volume carries a bound token, as in a cluster.
- Termination message: a process cannot write /dev/termination-log on a shared host, so each
  container's terminationMessagePath is mapped to a file in the pod folder, and any env value
  equal to the terminationMessagePath is rewritten to the mapped file's path. The file's last
  4096 bytes become the terminated state's message; with FallbackToLogsOnError an empty file
  and a failed container give the log's tail (80 lines, 2048 bytes) instead.
- Status: phase Pending -> Running -> Succeeded/Failed, the conditions PodScheduled,
  Initialized, ContainersReady and Ready, container statuses, startTime, podIP and hostIP
  127.0.0.1. restartPolicy OnFailure and Always restart containers with a back-off starting at
  1 s (Kubernetes starts at 10 s) and doubling up to 5 minutes, counting restartCount.
  activeDeadlineSeconds counts from startTime: the processes are stopped (SIGTERM, then
  SIGKILL after the spec's terminationGracePeriodSeconds, at least 1 s as a kubelet gives) and
  the pod fails with reason DeadlineExceeded, its object and logs kept. A running pod's
  deadline may be lowered (the API refuses raising or removing it): the kubelet re-arms it
  from startTime, or stops the pod at once when the new deadline is already past. As the
  kubelet's status manager does, the phase stays Running until every process has ended;
  Failed and the reason come together.
- Deletion: once a pod has a deletionTimestamp every process of it gets SIGTERM, then SIGKILL
  after deletionGracePeriodSeconds (else terminationGracePeriodSeconds, else 30), as the
  kubelet does; the final status is written and the pod object deleted with
  gracePeriodSeconds=0. A pod that disappears outright is killed at once. `stop()` ends every
  process (SIGTERM, then SIGKILL after at most STOP_GRACE_SECONDS): none outlives it, nor a
  kubelet that is SIGKILLed (the inits' parent-death signal).
- Ports and Prometheus: every process shares the host's network, so each declared
  containerPort is given a free loopback port of its own (`host_ports`), and an env var whose
  name ends in PORT and whose value is that containerPort is rewritten to it (as the
  terminationMessagePath is mapped). With a `service_discovery_dir`, the metrics endpoints of
  running pods (ports named `metrics`, or the port of annotation prometheus.io/port) are
  published for Prometheus's file-based service discovery: one `<namespace>_<pod>.json` per
  pod, targets `127.0.0.1:<port>` labelled namespace, pod, container and the pod's labels
  (names sanitized: kubetune.io/study becomes kubetune_io_study), removed when the pod ends.
- Resilience: a watch that ends is re-established from the last resourceVersion; 410 Gone
  relists; failed requests and status conflicts are retried.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import ssl
import sys
import tempfile
import uuid
from collections.abc import Coroutine, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from kubetune_localcluster import processes, times
from kubetune_localcluster.environment import (
    NODE_IP,
    ContainerConfigError,
    container_env,
    env_references,
    expand,
    field_value,
    free_port,
    map_ports,
    map_termination_path,
    scrape_targets,
    secret_values,
)
from kubetune_localcluster.images import Image, container_argv
from kubetune_localcluster.node_endpoint import serve_node_endpoint
from kubetune_localcluster.pod_status import (
    DEFAULT_GRACE_SECONDS,
    AdmittedPod,
    PodContainer,
    exit_code_of,
    termination_message,
)
from kubetune_localcluster.processes import CANNOT_START_EXIT_CODE, end_processes
from kubetune_localcluster.quantities import (
    Resources,
    add_resources,
    format_quantity,
    insufficient,
    node_capacity,
    pod_requests,
    unschedulable_message,
)
from kubetune_localcluster.times import micro_timestamp, timestamp
from kubetune_localcluster.volumes import (
    VolumeError,
    container_mounts,
    hiding,
    in_mount_namespace,
    prepare_targets,
    volume_files,
    write_volume,
)

logger = logging.getLogger(__name__)
KUBELET_USER_AGENT = "kubetune-local-kubelet"
KUBELET_VERSION: Final = "v0.0.0-kubetune-local"
LEASE_DURATION_SECONDS: Final = 40
LEASE_RENEW_SECONDS: Final = 10.0

DEFAULT_NODE_NAME: Final = "kubetune-local"
STOP_GRACE_SECONDS: Final = 5.0
"""At stop(), the most a process gets between SIGTERM and SIGKILL."""
CRASH_BACKOFF_SECONDS: Final = 1.0
CRASH_BACKOFF_MAX_SECONDS: Final = 300.0
CONFIG_RETRY_SECONDS: Final = 1.0
"""How often a container waiting on a missing secret or config map is retried."""
REQUEST_TIMEOUT_SECONDS: Final = 30.0
WATCH_TIMEOUT_SECONDS: Final = 300
WATCH_RETRY_SECONDS: Final = 0.5
DEADLINE_MESSAGE: Final = "Pod was active on the node longer than the specified deadline"

Json = dict[str, Any]


def _grace_seconds(pod: Mapping[str, Any]) -> float:
    """How long a deleted pod's processes get between SIGTERM and SIGKILL: the delete's
    deletionGracePeriodSeconds, else the spec's terminationGracePeriodSeconds, else 30."""
    deletion = (pod.get("metadata") or {}).get("deletionGracePeriodSeconds")
    if deletion is not None:
        return float(deletion)
    spec_grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return float(spec_grace) if spec_grace is not None else DEFAULT_GRACE_SECONDS


class ApiRequestError(Exception):
    """A request of the kubelet's to the API server failed with this HTTP status (0: no
    answer). Not the emulator's `errors.ApiError`, which the server answers with."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class Kubelet:
    """Schedules pods onto one local node and runs their containers as processes.

    `async with Kubelet(url) as kubelet:` or start()/stop(). `logs` is the pod-log provider
    for the API server (`server.set_pod_log_provider(kubelet.logs)`)."""

    def __init__(
        self,
        api_url: str,
        *,
        node_name: str = DEFAULT_NODE_NAME,
        capacity: dict[str, str] | None = None,
        workdir: Path | None = None,
        service_discovery_dir: Path | None = None,
        schedules: bool = True,
        tls: ssl.SSLContext | None = None,
        serving: tuple[ssl.SSLContext, int] | None = None,
        images: Mapping[str, Image] | None = None,
        token: str | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        """The bearer token of the embedded API server, sent with every request and written
        into each pod's kubeconfig."""
        self.schedules = schedules
        """False where a real kube-scheduler binds pods: this node then only runs the pods
        bound to it, as a real kubelet does."""
        self.tls = tls
        """The client TLS context (CA and this node's certificate) of a real API server; with
        it, pods get service-account tokens instead of a kubeconfig."""
        self.serving = serving
        """The TLS context and port of this node's own endpoint (logs for the API server)."""
        self.images = dict(images or {})
        self.service_discovery_dir = service_discovery_dir
        """Where the metrics endpoints of running pods are published for Prometheus
        (file_sd_configs); None: not published."""
        self.node_name = node_name
        self.capacity = node_capacity(capacity)
        self._own_workdir = workdir is None
        # Without a workdir, a temporary folder is made at start() and removed at stop().
        self.workdir = workdir if workdir is not None else Path(tempfile.gettempdir())
        self._session: aiohttp.ClientSession | None = None
        self._pods: dict[str, AdmittedPod] = {}  # by uid: admitted to this node, until deleted
        self._pending: dict[str, Json] = {}  # by uid: waiting to be scheduled
        self._by_name: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid, for logs
        self._finished: set[str] = set()  # uids seen terminal on this node, not run here
        self._allocated: Resources = {}
        self._unschedulable: dict[str, str] = {}  # uid -> message last written
        self._schedule_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._resource_version = ""
        self._endpoint: web.AppRunner | None = None

    async def __aenter__(self) -> Kubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect to the API server and begin watching pods; returns once the first list is
        handled."""
        if self._own_workdir:
            self.workdir = Path(tempfile.mkdtemp(prefix="kubetune-kubelet-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.tls) if self.tls is not None else None,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            # So that request hooks (RBAC recordings, benchmarks) can tell the kubelet apart.
            headers={
                "User-Agent": KUBELET_USER_AGENT,
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )
        try:
            await self._register_node()
            await self._list_pods()
        except ApiRequestError as error:
            await self.stop()
            raise RuntimeError(
                f"the kubelet could not list pods from {self.api_url}: {error}"
            ) from None
        self._tasks = [asyncio.create_task(self._watch_pods(), name="kubelet-watch")]
        if self.schedules:
            self._tasks.append(asyncio.create_task(self._schedule_loop(), name="kubelet-scheduler"))
        else:
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="kubelet-lease"))
        if self.serving is not None:
            context, port = self.serving
            self._endpoint = await serve_node_endpoint(
                self.logs, self.container_running, context, port
            )

    async def stop(self) -> None:
        """End every process (SIGTERM, then SIGKILL after at most STOP_GRACE_SECONDS) and stop
        watching. No status is written: the API server may already be gone."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        background = list(self._background)
        await asyncio.gather(*background, return_exceptions=True)
        pods = list(self._pods.values())
        await asyncio.gather(
            *(self._end(pod, min(_grace_seconds(pod.obj), STOP_GRACE_SECONDS)) for pod in pods)
        )
        runners = [pod.task for pod in pods if pod.task is not None and not pod.task.done()]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        for pod in pods:
            if pod.deadline is not None:
                pod.deadline.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._endpoint is not None:
            await self._endpoint.cleanup()
            self._endpoint = None
        if self._own_workdir and self.workdir.name.startswith("kubetune-kubelet-"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self, namespace: str, name: str, container: str | None) -> str | None:
        """A container's stdout and stderr so far (the current run of it); None when this node
        has no such pod or container. Without a container name: the pod's default container
        (annotation kubectl.kubernetes.io/default-container), else its first."""
        uid = self._by_name.get((namespace, name))
        pod = self._pods.get(uid) if uid is not None else None
        if pod is None:
            return None
        if container is None:
            annotations = pod.obj["metadata"].get("annotations") or {}
            container = annotations.get("kubectl.kubernetes.io/default-container")
            if container is None and pod.main_containers:
                container = pod.main_containers[0].name
        for candidate in pod.containers:
            if candidate.name == container:
                path = candidate.log_file
                return path.read_bytes().decode("utf-8", "replace") if path.exists() else ""
        return None

    def container_running(self, namespace: str, name: str, container: str | None) -> bool:
        uid = self._by_name.get((namespace, name))
        pod = self._pods.get(uid) if uid is not None else None
        if pod is None:
            return False
        return any(c.running for c in pod.containers if container in (None, c.name))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Json | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        attempts: int = 5,
    ) -> Json:
        """One API call, retried on connection errors, conflicts and server errors; 404 and
        other client errors raise ApiRequestError at once."""
        assert self._session is not None
        delay = 0.05
        for attempt in range(attempts):
            try:
                async with self._session.request(
                    method,
                    self.api_url + path,
                    data=None if body is None else json.dumps(body),
                    headers={"Content-Type": content_type, "Accept": "application/json"},
                    params=params,
                ) as response:
                    text = await response.text()
                    if response.status < 300:
                        result: Json = json.loads(text) if text else {}
                        return result
                    error = ApiRequestError(response.status, text)
                    retry = response.status in (409, 429) or response.status >= 500
                    if not retry:
                        raise error
            except (aiohttp.ClientError, TimeoutError) as failure:
                error = ApiRequestError(0, str(failure))
            if attempt + 1 < attempts and not self._closing:
                await asyncio.sleep(delay)  # back off before retrying the request
                delay = min(delay * 2, 1.0)
        raise error

    @staticmethod
    def _pod_path(namespace: str, name: str, subresource: str = "") -> str:
        suffix = f"/{subresource}" if subresource else ""
        return f"/api/v1/namespaces/{namespace}/pods/{name}{suffix}"

    async def _register_node(self) -> None:
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
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                },
            },
            "status": {
                "capacity": {k: format_quantity(v) for k, v in self.capacity.items()},
                "allocatable": {k: format_quantity(v) for k, v in self.capacity.items()},
                "addresses": [
                    {"type": "InternalIP", "address": NODE_IP},
                    {"type": "Hostname", "address": self.node_name},
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
        if self.serving is not None:
            node["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": self.serving[1]}}
        try:
            await self._request("POST", "/api/v1/nodes", body=node, attempts=1)
        except ApiRequestError as error:
            if error.status != 409 or self.schedules:
                return  # the emulator keeps the node it has
            await self._request(
                "PATCH",
                f"/api/v1/nodes/{self.node_name}/status",
                body={"status": node["status"]},
                content_type="application/strategic-merge-patch+json",
            )

    async def _heartbeat(self) -> None:
        """Renew this node's Lease in kube-node-lease, as a kubelet does: the node lifecycle
        controller marks a node whose lease runs out NotReady and evicts its pods."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        while not self._closing:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": self.node_name,
                    "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                    "renewTime": micro_timestamp(times.now()),
                },
            }
            try:
                await self._request(
                    "PATCH",
                    path,
                    body=lease,
                    content_type="application/apply-patch+yaml",
                    params={"fieldManager": KUBELET_USER_AGENT, "force": "true"},
                )
            except ApiRequestError as error:
                logger.warning("kubelet: renewing the node lease failed: %s", error)
            await asyncio.sleep(LEASE_RENEW_SECONDS)  # the lease's renew interval

    def _pod_selector(self) -> dict[str, str]:
        """Only the pods bound to this node, where a scheduler other than this kubelet binds."""
        return {} if self.schedules else {"fieldSelector": f"spec.nodeName={self.node_name}"}

    async def _list_pods(self) -> None:
        listed = await self._request("GET", "/api/v1/pods", params=self._pod_selector())
        self._relist(listed.get("items") or [])
        self._resource_version = str((listed.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch_pods(self) -> None:
        """Watch from the last resourceVersion seen; re-watch when a watch ends, relist on
        410 Gone or errors."""
        must_list = False
        while not self._closing:
            try:
                if must_list:
                    await self._list_pods()
                    must_list = False
                must_list = await self._watch_once()
            except (ApiRequestError, aiohttp.ClientError, TimeoutError, ValueError) as error:
                logger.debug("kubelet: pod watch failed, relisting: %s", error)
                must_list = True
                await asyncio.sleep(WATCH_RETRY_SECONDS)  # the server may be restarting

    async def _watch_once(self) -> bool:
        """One watch request; True when the pods must be listed again (410 Gone)."""
        assert self._session is not None
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS),
            **self._pod_selector(),
        }
        if self._resource_version:
            params["resourceVersion"] = self._resource_version
        async with self._session.get(
            self.api_url + "/api/v1/pods",
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT_SECONDS),
        ) as response:
            if response.status == 410:
                return True
            if response.status >= 300:
                raise ApiRequestError(response.status, await response.text())
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip() and self._on_watch_event(json.loads(line)):
                        return True
        return False

    def _on_watch_event(self, event: Json) -> bool:
        """Handle one watch event; True when it says the resourceVersion is too old."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                return True
            raise ApiRequestError(int(obj.get("code") or 500), json.dumps(obj))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._resource_version = str(version)
        if kind == "BOOKMARK":
            return False
        if kind == "DELETED":
            self._forget(str(obj["metadata"]["uid"]))
        else:
            self._observe(obj)
        return False

    def _relist(self, items: list[Json]) -> None:
        present = {str(item["metadata"]["uid"]) for item in items}
        for uid in [*self._pods, *self._pending]:
            if uid not in present:
                self._forget(uid)
        for item in items:
            self._observe(item)

    def _observe(self, obj: Json) -> None:
        """A pod as the server has it now: schedule it, admit it, or notice its deletion."""
        metadata = obj.get("metadata") or {}
        uid = str(metadata.get("uid"))
        node = (obj.get("spec") or {}).get("nodeName")
        pod = self._pods.get(uid)
        if pod is not None:
            pod.obj = obj
            self._deadline_changed(pod)
            if metadata.get("deletionTimestamp") and (
                not pod.deleting or _grace_seconds(obj) < pod.grace
            ):
                self._begin_deletion(pod)  # a second delete may shorten the grace period
            return
        if not node:
            self._pending[uid] = obj
            self._schedule_wanted.set()
            return
        self._pending.pop(uid, None)
        if node != self.node_name:
            return
        phase = (obj.get("status") or {}).get("phase")
        if uid in self._finished or phase in ("Succeeded", "Failed"):
            self._finished.add(uid)
            if metadata.get("deletionTimestamp"):
                self._spawn(
                    self._delete_now(metadata.get("namespace", "default"), metadata["name"], uid)
                )
            return
        self._admit(obj)

    def _forget(self, uid: str) -> None:
        """The pod object is gone: kill its processes at once, free its resources."""
        self._pending.pop(uid, None)
        self._unschedulable.pop(uid, None)
        self._finished.discard(uid)
        pod = self._pods.get(uid)
        if pod is None:
            return
        pod.gone = True
        if self._by_name.get((pod.namespace, pod.name)) == uid:
            del self._by_name[(pod.namespace, pod.name)]
        if not pod.done:
            self._spawn(self._end(pod, 0))
        else:
            self._pods.pop(uid, None)

    def _event(
        self, obj: Json, kind: str, reason: str, message: str, component: str = "kubelet"
    ) -> None:
        """Record a core/v1 Event about a pod (kubectl describe shows them), in the background:
        an event that cannot be written is dropped, as a real component does."""
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
            "source": {"component": component, "host": self.node_name},
            "reportingComponent": component,
            "reportingInstance": self.node_name,
            "firstTimestamp": moment,
            "lastTimestamp": moment,
            "count": 1,
        }

        async def post() -> None:
            with contextlib.suppress(ApiRequestError):
                path = f"/api/v1/namespaces/{namespace}/events"
                await self._request("POST", path, body=event, attempts=1)

        if not self._closing:
            self._spawn(post())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    async def _schedule_loop(self) -> None:
        while True:
            await self._schedule_wanted.wait()
            self._schedule_wanted.clear()
            await self._schedule()

    async def _schedule(self) -> None:
        """Bind the pending pods that fit, in creation order; mark the others Unschedulable."""
        queue = sorted(
            self._pending.values(),
            key=lambda obj: str(obj["metadata"].get("creationTimestamp", "")),
        )
        for obj in queue:
            metadata = obj["metadata"]
            uid = str(metadata["uid"])
            if uid not in self._pending:
                continue
            namespace, name = metadata.get("namespace", "default"), metadata["name"]
            if metadata.get("deletionTimestamp"):
                # An unscheduled pod has no process to stop: it is removed at once.
                del self._pending[uid]
                await self._delete_now(namespace, name, uid)
                continue
            try:
                requests = pod_requests(obj.get("spec") or {})
            except ValueError as error:
                await self._mark_unschedulable(obj, f"invalid resource request: {error}")
                continue
            missing = insufficient(requests, self.capacity, self._allocated)
            if missing:
                await self._mark_unschedulable(obj, unschedulable_message(missing))
                continue
            try:
                bound = await self._bind(obj)
            except ApiRequestError as error:
                if error.status != 404:
                    logger.warning("kubelet: binding %s/%s failed: %s", namespace, name, error)
                continue
            self._event(
                obj,
                "Normal",
                "Scheduled",
                f"Successfully assigned {namespace}/{name} to {self.node_name}",
                "default-scheduler",
            )
            if uid in self._pending:  # else the watch has already seen it bound
                del self._pending[uid]
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
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            await self._request("POST", self._pod_path(namespace, name, "binding"), body=binding)
        except ApiRequestError as error:
            if error.status not in (404, 405):
                raise
            return await self._request(
                "PATCH",
                self._pod_path(namespace, name),
                body={"spec": {"nodeName": self.node_name}},
                content_type="application/merge-patch+json",
            )
        return {**obj, "spec": {**(obj.get("spec") or {}), "nodeName": self.node_name}}

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
            await self._request(
                "PATCH",
                self._pod_path(metadata.get("namespace", "default"), metadata["name"], "status"),
                body={"status": status},
                content_type="application/merge-patch+json",
            )
            self._unschedulable[uid] = message
            self._event(obj, "Warning", "FailedScheduling", message, "default-scheduler")

    def _admit(self, obj: Json) -> None:
        """Take a pod bound to this node: reserve its resources and run it."""
        metadata = obj["metadata"]
        uid = str(metadata["uid"])
        if uid in self._pods:
            self._pods[uid].obj = obj
            self._deadline_changed(self._pods[uid])
            return
        spec = obj.get("spec") or {}
        folder = (
            self.workdir / metadata.get("namespace", "default") / f"{metadata['name']}-{uid[:8]}"
        )
        containers = [
            PodContainer(dict(c), init=True, folder=folder)
            for c in spec.get("initContainers") or []
        ] + [PodContainer(dict(c), init=False, folder=folder) for c in spec.get("containers") or []]
        try:
            requests = pod_requests(spec)
        except ValueError:
            requests = {"pods": Fraction(1)}
        pod = AdmittedPod(obj=obj, folder=folder, requests=requests, containers=containers)
        self._pods[uid] = pod
        self._by_name[(pod.namespace, pod.name)] = uid
        missing = insufficient(requests, self.capacity, self._allocated)
        if not missing:
            add_resources(self._allocated, requests)
        pod.task = asyncio.create_task(
            self._run(pod, missing), name=f"pod-{pod.namespace}-{pod.name}"
        )
        pod.task.add_done_callback(_log_failure)

    def _release(self, pod: AdmittedPod) -> None:
        if pod.requests:
            add_resources(self._allocated, pod.requests, -1)
            pod.requests = {}
            self._schedule_wanted.set()

    async def _run(self, pod: AdmittedPod, missing: list[str]) -> None:
        now = times.now()
        pod.start_time = now
        pod.set_condition("PodScheduled", True, now)
        pod.folder.mkdir(parents=True, exist_ok=True)
        try:
            if missing:
                # The kubelet's admission: a pod bound here that does not fit is rejected.
                pod.requests = {}
                resource = missing[0]
                pod.reason = f"OutOf{resource}"
                pod.message = f"Pod was rejected: Node didn't have enough resource: {resource}"
            else:
                self._arm_deadline(pod)
                await self._run_containers(pod)
        finally:
            await self._finish(pod)

    def _arm_deadline(self, pod: AdmittedPod) -> None:
        """Arm (or re-arm) the pod's activeDeadlineSeconds, counted from its startTime as the
        kubelet does: a deadline already past fires at once."""
        if pod.deadline is not None:
            pod.deadline.cancel()
            pod.deadline = None
        deadline = pod.spec.get("activeDeadlineSeconds")
        pod.armed_deadline = deadline if isinstance(deadline, int) else None
        if pod.armed_deadline is None or pod.start_time is None or pod.done:
            return

        def expire() -> None:
            pod.deadline = None
            if not pod.done and not pod.stopping.is_set() and pod.reason is None:
                pod.reason, pod.message = "DeadlineExceeded", DEADLINE_MESSAGE
                self._event(pod.obj, "Normal", "DeadlineExceeded", DEADLINE_MESSAGE)
                # The grace period the spec has now, as the kubelet reads it when it kills,
                # and never under 1 s ("we always supply a grace period of 1").
                grace = max(1.0, _grace_seconds({"spec": pod.spec}))
                self._spawn(self._end(pod, grace))

        elapsed = (times.now() - pod.start_time).total_seconds()
        remaining = max(0.0, pod.armed_deadline - elapsed)
        pod.deadline = asyncio.get_running_loop().call_later(remaining, expire)

    def _deadline_changed(self, pod: AdmittedPod) -> None:
        """The pod's object was updated: a changed activeDeadlineSeconds (the API allows only
        lowering it, or setting one) re-arms the deadline on a pod that runs. Before the pod
        has started, `_run` arms whatever the spec then says."""
        deadline = pod.spec.get("activeDeadlineSeconds")
        if pod.start_time is None or pod.done or pod.stopping.is_set() or pod.reason is not None:
            return
        if (deadline if isinstance(deadline, int) else None) != pod.armed_deadline:
            self._arm_deadline(pod)

    async def _run_containers(self, pod: AdmittedPod) -> None:
        pod.refresh_conditions(times.now())
        without_command = [c for c in pod.containers if container_argv(c.spec, self.images) is None]
        if without_command:
            for container in without_command:
                container.state = {
                    "terminated": {
                        "exitCode": CANNOT_START_EXIT_CODE,
                        "reason": "CommandRequired",
                        "message": (
                            f"container {container.name!r} has no command: the local kubelet "
                            "runs command and args as a process and cannot run the entrypoint "
                            f"of image {container.spec.get('image')!r}, which it does not "
                            "know; set command in the pod spec"
                        ),
                        "startedAt": None,
                        "finishedAt": timestamp(times.now()),
                    }
                }
            pod.reason = "CommandRequired"
            pod.message = "a container has no command (see its status)"
            return
        await self._sync(pod)
        base = self._base_env(pod)
        envs = await self._resolve_envs(pod, base)
        if envs is None:
            return
        for container in pod.init_containers:
            container.state = {"waiting": {"reason": "PodInitializing"}}
        for container in pod.init_containers:
            if not await self._run_container(pod, container, envs[container.name]):
                return
        await asyncio.gather(
            *(self._run_container(pod, c, envs[c.name]) for c in pod.main_containers)
        )

    def _base_env(self, pod: AdmittedPod) -> dict[str, str]:
        url = urlsplit(self.api_url)
        service = {
            "KUBERNETES_SERVICE_HOST": url.hostname or NODE_IP,
            "KUBERNETES_SERVICE_PORT": str(url.port or 80),
            "HOSTNAME": pod.name,
        }
        if self.tls is not None:
            # A real API server: a pod authenticates with its service-account token (a
            # volume), never with the credentials of whoever started this kubelet.
            inherited = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
            return {**inherited, **service}
        kubeconfig = pod.folder / "kubeconfig"
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubetune-local", "cluster": {"server": self.api_url}}],
            "users": [{"name": "pod", "user": {"token": self.token} if self.token else {}}],
            "contexts": [
                {
                    "name": "kubetune-local",
                    "context": {
                        "cluster": "kubetune-local",
                        "user": "pod",
                        "namespace": pod.namespace,
                    },
                }
            ],
            "current-context": "kubetune-local",
        }
        kubeconfig.write_text(json.dumps(document, indent=2))
        return {**os.environ, **service, "KUBECONFIG": str(kubeconfig)}

    async def _resolve_envs(
        self, pod: AdmittedPod, base: Mapping[str, str]
    ) -> dict[str, dict[str, str]] | None:
        """Each container's env; a missing secret or config map is retried until it exists
        or the pod is stopped (None)."""
        while True:
            try:
                envs = await self._try_envs(pod, base)
                if self.tls is not None:  # the embedded plane runs pods without volumes
                    await self._make_volumes(pod)
                return envs
            except (ContainerConfigError, VolumeError) as error:
                message = str(error)
            for container in pod.containers:
                container.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": message}
                }
            pod.version += 1
            await self._sync(pod)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pod.stopping.wait(), CONFIG_RETRY_SECONDS)
            if pod.stopping.is_set():
                return None

    async def _try_envs(
        self, pod: AdmittedPod, base: Mapping[str, str]
    ) -> dict[str, dict[str, str]]:
        secret_names: set[str] = set()
        config_map_names: set[str] = set()
        for container in pod.containers:
            secrets, config_maps = env_references(container.spec)
            secret_names |= secrets
            config_map_names |= config_maps
        secrets_found = {name: await self._values(pod, "secrets", name) for name in secret_names}
        maps_found = {
            name: await self._values(pod, "configmaps", name) for name in config_map_names
        }
        envs = {}
        for container in pod.containers:
            env = container_env(container.spec, pod.obj, secrets_found, maps_found, base)
            ports = {}
            for port in container.spec.get("ports") or []:
                number = port.get("containerPort")
                if isinstance(number, int):
                    key = (container.name, number)
                    ports[number] = pod.host_ports.setdefault(key, free_port())
            envs[container.name] = map_ports(
                map_termination_path(env, container.message_path, container.termination_file),
                ports,
            )
        for container in pod.containers:
            if container.state.get("waiting", {}).get("reason") == "CreateContainerConfigError":
                container.state = {"waiting": {"reason": "ContainerCreating"}}
        return envs

    async def _make_volumes(self, pod: AdmittedPod) -> None:
        """Make the pod's volumes in its folder and each container's mounts of them."""
        volumes: dict[str, Path] = {}

        async def fetch(plural: str, name: str) -> Json | None:
            try:
                return await self._request(
                    "GET", f"/api/v1/namespaces/{pod.namespace}/{plural}/{name}"
                )
            except ApiRequestError as error:
                if error.status == 404:
                    return None
                raise VolumeError(f"cannot read {plural[:-1]} {name!r}: {error}") from None

        async def request_token(audience: str | None, seconds: int) -> str:
            account = pod.spec.get("serviceAccountName") or "default"
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [audience] if audience else [],
                    "expirationSeconds": seconds,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": pod.name,
                        "uid": pod.uid,
                    },
                },
            }
            path = f"/api/v1/namespaces/{pod.namespace}/serviceaccounts/{account}/token"
            try:
                answer = await self._request("POST", path, body=body, attempts=1)
            except ApiRequestError as error:
                raise VolumeError(f"cannot get a token for {account!r}: {error}") from None
            return str(answer["status"]["token"])

        for volume in pod.spec.get("volumes") or []:
            files = await volume_files(
                volume, fetch, request_token, lambda path: field_value(pod.obj, path)
            )
            if files is not None:
                name = str(volume["name"])
                volumes[name] = write_volume(pod.folder / "volumes" / name, files)
        for container in pod.containers:
            mounts = container_mounts(container.spec, volumes)
            needed = [self.workdir.resolve(), Path(sys.prefix), Path(sys.base_prefix)]
            left_out = hiding(mounts, needed)
            for mount in left_out:
                self._event(
                    pod.obj,
                    "Warning",
                    "MountLeftOut",
                    f"volume mount {mount.target} of container {container.name} would hide "
                    "this machine's installed code or the pod's files: the local kubelet shares "
                    "the host's filesystem, so the container sees the host's folder there",
                )
            container.mounts = [mount for mount in mounts if mount not in left_out]
            prepare_targets(container.mounts)

    async def _values(self, pod: AdmittedPod, plural: str, name: str) -> dict[str, str] | None:
        try:
            obj = await self._request("GET", f"/api/v1/namespaces/{pod.namespace}/{plural}/{name}")
        except ApiRequestError as error:
            if error.status == 404:
                return None
            raise ContainerConfigError(f"cannot read {plural[:-1]} {name!r}: {error}") from None
        if plural == "secrets":
            return secret_values(obj)
        values = {key: str(value) for key, value in (obj.get("data") or {}).items()}
        for key, value in (obj.get("binaryData") or {}).items():
            values[key] = base64.b64decode(value).decode("utf-8", "replace")
        return values

    async def _run_container(
        self, pod: AdmittedPod, container: PodContainer, env: Mapping[str, str]
    ) -> bool:
        """Run a container to its end, restarting it as the restartPolicy says; True when it
        succeeded."""
        policy = pod.spec.get("restartPolicy", "Always")
        backoff = CRASH_BACKOFF_SECONDS
        while True:
            code = await self._run_once(pod, container, env)
            if code is None:
                return False  # stopped before it started
            container.succeeded = code == 0
            if pod.stopping.is_set() or policy == "Never":
                return container.succeeded
            if container.succeeded and (policy == "OnFailure" or container.init):
                return True
            terminated = container.state
            container.last_state = terminated
            container.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": (
                        f"back-off {backoff:g}s restarting failed container={container.name} "
                        f"pod={pod.name}_{pod.namespace}({pod.uid})"
                    ),
                }
            }
            pod.version += 1
            await self._sync(pod)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pod.stopping.wait(), backoff)
            if pod.stopping.is_set():
                container.state = terminated
                return container.succeeded
            container.restart_count += 1
            backoff = min(backoff * 2, CRASH_BACKOFF_MAX_SECONDS)

    async def _run_once(
        self, pod: AdmittedPod, container: PodContainer, env: Mapping[str, str]
    ) -> int | None:
        """Start the container's process and wait for it; its exit code, None when the pod
        was stopped before it could start."""
        if pod.stopping.is_set():
            return None
        argv = in_mount_namespace(
            [expand(part, env) for part in container_argv(container.spec, self.images) or []],
            container.mounts,
        )
        container.termination_file.write_bytes(b"")
        started = times.now()
        try:
            with container.log_file.open("ab") as log:
                process = await processes.start(argv, cwd=pod.folder, env=env, log=log)
        except (OSError, processes.StartError) as error:
            reason = error.strerror if isinstance(error, OSError) else None
            container.state = {
                "terminated": {
                    "exitCode": CANNOT_START_EXIT_CODE,
                    "reason": "StartError",
                    "message": (
                        f"failed to start container process: exec: {argv[0]!r}: {reason or error}"
                    ),
                    "startedAt": None,
                    "finishedAt": timestamp(times.now()),
                }
            }
            pod.version += 1
            await self._sync(pod)
            return CANNOT_START_EXIT_CODE
        container.process = process
        if pod.stopping.is_set():
            # Stopped while this process was being started: it ends with the others.
            await end_processes([process], _grace_seconds(pod.obj))
        container.state = {"running": {"startedAt": timestamp(started)}}
        self._publish_targets(pod)
        pod.refresh_conditions(times.now())
        pod.version += 1
        sync = asyncio.create_task(self._sync(pod))
        returncode = await process.wait()  # its init ends what the container left behind
        await sync
        code = exit_code_of(returncode)
        message = termination_message(
            container.termination_file.read_bytes() if container.termination_file.exists() else b"",
            container.log_file.read_bytes() if container.log_file.exists() else b"",
            container.spec.get("terminationMessagePolicy"),
            code,
        )
        terminated: Json = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": timestamp(started),
            "finishedAt": timestamp(times.now()),
            "containerID": f"process://{process.pid}",
        }
        if returncode < 0:
            terminated["signal"] = -returncode
        if message:
            terminated["message"] = message
        container.state = {"terminated": terminated}
        pod.refresh_conditions(times.now())
        pod.version += 1
        if not container.init and any(
            not other.terminated for other in pod.main_containers if other is not container
        ):
            await self._sync(pod)  # the last one to end is written with the pod's final phase
        return code

    def _begin_deletion(self, pod: AdmittedPod) -> None:
        pod.grace = _grace_seconds(pod.obj)
        if not pod.done and not pod.deleting:
            for container in pod.containers:
                if container.running:
                    self._event(
                        pod.obj, "Normal", "Killing", f"Stopping container {container.name}"
                    )
        pod.deleting = True
        self._spawn(self._end(pod, pod.grace))

    async def _end(self, pod: AdmittedPod, grace: float) -> None:
        """Stop a pod's processes: SIGTERM, then SIGKILL after `grace` seconds."""
        pod.stopping.set()
        if pod.done:
            if pod.deleting and not pod.gone and not self._closing:
                await self._delete_now(pod.namespace, pod.name, pod.uid)
            return
        processes = [c.process for c in pod.containers if c.process is not None]
        await end_processes(processes, grace)

    async def _finish(self, pod: AdmittedPod) -> None:
        """Every process has ended: write the final status, free the resources, and delete the
        pod object if it is being deleted."""
        for container in pod.containers:
            if container.process is not None and container.process.returncode is None:
                await end_processes([container.process], 0)
        if pod.deadline is not None:
            pod.deadline.cancel()
        pod.done = True
        self._unpublish_targets(pod)
        self._release(pod)
        pod.refresh_conditions(times.now())
        pod.version += 1
        if not self._closing:
            await self._sync(pod)
            if pod.deleting and not pod.gone:
                await self._delete_now(pod.namespace, pod.name, pod.uid)
        if pod.gone:
            self._pods.pop(pod.uid, None)

    def _targets_file(self, pod: AdmittedPod) -> Path | None:
        if self.service_discovery_dir is None:
            return None
        return self.service_discovery_dir / f"{pod.namespace}_{pod.name}.json"

    def _publish_targets(self, pod: AdmittedPod) -> None:
        """Write the pod's metrics endpoints for file_sd (atomically: Prometheus watches the
        folder and must never read half a file)."""
        path = self._targets_file(pod)
        groups = scrape_targets(pod.obj, pod.host_ports)
        if path is None or not groups:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(groups, indent=2))
        os.replace(partial, path)

    def _unpublish_targets(self, pod: AdmittedPod) -> None:
        path = self._targets_file(pod)
        if path is not None:
            path.unlink(missing_ok=True)

    async def _sync(self, pod: AdmittedPod) -> None:
        """PATCH pods/status with the pod's current status, unless it was already sent."""
        async with pod.lock:
            if pod.gone or self._closing or pod.sent_version == pod.version:
                return
            version = pod.version
            pod.refresh_conditions(times.now())
            try:
                await self._request(
                    "PATCH",
                    self._pod_path(pod.namespace, pod.name, "status"),
                    body={"status": pod.status()},
                    content_type="application/merge-patch+json",
                )
            except ApiRequestError as error:
                if error.status == 404:
                    pod.gone = True
                else:
                    logger.warning(
                        "kubelet: status of pod %s/%s: %s", pod.namespace, pod.name, error
                    )
                return
            pod.sent_version = max(pod.sent_version, version)

    async def _delete_now(self, namespace: str, name: str, uid: str) -> None:
        """Delete the pod object now that its processes are dead (gracePeriodSeconds=0)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        with contextlib.suppress(ApiRequestError):
            await self._request("DELETE", self._pod_path(namespace, name), body=body)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("kubelet: %s failed", task.get_name(), exc_info=task.exception())


__all__ = ["ApiRequestError", "Kubelet"]

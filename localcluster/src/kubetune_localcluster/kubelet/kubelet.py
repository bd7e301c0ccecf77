"""The `Kubelet`: one node that runs the pods bound to it as processes. It owns its parts (its
client of the API server, its pod watch, its Node, its scheduler, its pod runner) and keeps the
pods admitted to this node, from their admission to their end."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Final

from aiohttp import web

from kubetune_localcluster import times
from kubetune_localcluster.images import Image
from kubetune_localcluster.kubelet.background import BackgroundTasks, log_failure
from kubetune_localcluster.kubelet.client import ApiClient, ApiRequestError, Json
from kubetune_localcluster.kubelet.containers import grace_seconds
from kubetune_localcluster.kubelet.events import PodEvents
from kubetune_localcluster.kubelet.node import DEFAULT_NODE_NAME, register_node, renew_lease
from kubetune_localcluster.kubelet.pod_config import PodConfig
from kubetune_localcluster.kubelet.pod_runner import PodRunner
from kubetune_localcluster.kubelet.pod_watch import PodWatch
from kubetune_localcluster.kubelet.scheduler import Scheduler
from kubetune_localcluster.kubelet.scrape_targets import ScrapeTargetFiles
from kubetune_localcluster.node_endpoint import serve_node_endpoint
from kubetune_localcluster.pod_status import AdmittedPod, PodContainer
from kubetune_localcluster.processes import end_processes
from kubetune_localcluster.quantities import (
    add_resources,
    insufficient,
    node_capacity,
    pod_requests,
)

STOP_GRACE_SECONDS: Final = 5.0
"""At stop(), the most a process gets between SIGTERM and SIGKILL."""


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
        self._client = ApiClient(self.api_url, token=token, tls=tls)
        self._background = BackgroundTasks()
        self._targets = ScrapeTargetFiles(service_discovery_dir)
        self._events = PodEvents(self._client, node_name, self._background)
        self._scheduler = Scheduler(
            self._client, node_name, self.capacity, self._events, self._admit
        )
        self._config = PodConfig(
            self._client, self._events, workdir=self.workdir, token=token, tls=tls
        )
        self._runner = PodRunner(
            self._client,
            self._config,
            self._events,
            self._background,
            images=self.images,
            targets=self._targets,
        )
        # Only the pods bound to this node, where a scheduler other than this kubelet binds.
        selector = {} if schedules else {"fieldSelector": f"spec.nodeName={node_name}"}
        self._watch = PodWatch(
            self._client, selector, relist=self._relist, observe=self._observe, forget=self._forget
        )
        self._pods: dict[str, AdmittedPod] = {}  # by uid: admitted to this node, until deleted
        self._by_name: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid, for logs
        self._finished: set[str] = set()  # uids seen terminal on this node, not run here
        self._tasks: list[asyncio.Task[None]] = []
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
        self._config.workdir = self.workdir  # the folder made just now, if it was
        self._client.open()
        try:
            await register_node(
                self._client,
                self.node_name,
                self.capacity,
                endpoint_port=self.serving[1] if self.serving is not None else None,
                schedules=self.schedules,
            )
            await self._watch.list()
        except ApiRequestError as error:
            await self.stop()
            raise RuntimeError(
                f"the kubelet could not list pods from {self.api_url}: {error}"
            ) from None
        self._tasks = [asyncio.create_task(self._watch.run(), name="kubelet-watch")]
        if self.schedules:
            self._tasks.append(asyncio.create_task(self._scheduler.run(), name="kubelet-scheduler"))
        else:
            self._tasks.append(
                asyncio.create_task(renew_lease(self._client, self.node_name), name="kubelet-lease")
            )
        if self.serving is not None:
            context, port = self.serving
            self._endpoint = await serve_node_endpoint(
                self.logs, self.container_running, context, port
            )

    async def stop(self) -> None:
        """End every process (SIGTERM, then SIGKILL after at most STOP_GRACE_SECONDS) and stop
        watching. No status is written: the API server may already be gone."""
        self._client.closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._background.wait()
        pods = list(self._pods.values())
        await asyncio.gather(
            *(
                self._runner.end(pod, min(grace_seconds(pod.obj), STOP_GRACE_SECONDS))
                for pod in pods
            )
        )
        runners = [pod.task for pod in pods if pod.task is not None and not pod.task.done()]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        for pod in pods:
            if pod.deadline is not None:
                pod.deadline.cancel()
        await self._client.close()
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

    def _relist(self, items: list[Json]) -> None:
        present = {str(item["metadata"]["uid"]) for item in items}
        for uid in [*self._pods, *self._scheduler.pending]:
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
            self._runner.deadline_changed(pod)
            if metadata.get("deletionTimestamp") and (
                not pod.deleting or grace_seconds(obj) < pod.grace
            ):
                self._runner.begin_deletion(pod)  # a second delete may shorten the grace period
            return
        if not node:
            self._scheduler.queue(uid, obj)
            return
        self._scheduler.pending.pop(uid, None)
        if node != self.node_name:
            return
        phase = (obj.get("status") or {}).get("phase")
        if uid in self._finished or phase in ("Succeeded", "Failed"):
            self._finished.add(uid)
            if metadata.get("deletionTimestamp"):
                self._background.spawn(
                    self._client.delete_pod_now(
                        metadata.get("namespace", "default"), metadata["name"], uid
                    )
                )
            return
        self._admit(obj)

    def _forget(self, uid: str) -> None:
        """The pod object is gone: kill its processes at once, free its resources."""
        self._scheduler.forget(uid)
        self._finished.discard(uid)
        pod = self._pods.get(uid)
        if pod is None:
            return
        pod.gone = True
        if self._by_name.get((pod.namespace, pod.name)) == uid:
            del self._by_name[(pod.namespace, pod.name)]
        if not pod.done:
            self._background.spawn(self._runner.end(pod, 0))
        else:
            self._pods.pop(uid, None)

    def _admit(self, obj: Json) -> None:
        """Take a pod bound to this node: reserve its resources and run it."""
        metadata = obj["metadata"]
        uid = str(metadata["uid"])
        if uid in self._pods:
            self._pods[uid].obj = obj
            self._runner.deadline_changed(self._pods[uid])
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
        missing = insufficient(requests, self.capacity, self._scheduler.allocated)
        if not missing:
            add_resources(self._scheduler.allocated, requests)
        pod.task = asyncio.create_task(
            self._run(pod, missing), name=f"pod-{pod.namespace}-{pod.name}"
        )
        pod.task.add_done_callback(log_failure)

    def _release(self, pod: AdmittedPod) -> None:
        if pod.requests:
            self._scheduler.release(pod.requests)
            pod.requests = {}

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
                self._runner.arm_deadline(pod)
                await self._runner.run_containers(pod)
        finally:
            await self._finish(pod)

    async def _finish(self, pod: AdmittedPod) -> None:
        """Every process has ended: write the final status, free the resources, and delete the
        pod object if it is being deleted."""
        for container in pod.containers:
            if container.process is not None and container.process.returncode is None:
                await end_processes([container.process], 0)
        if pod.deadline is not None:
            pod.deadline.cancel()
        pod.done = True
        self._targets.unpublish(pod)
        self._release(pod)
        self._config.release_ports(pod)
        pod.refresh_conditions(times.now())
        pod.version += 1
        if not self._client.closing:
            await self._runner.sync(pod)
            if pod.deleting and not pod.gone:
                await self._client.delete_pod_now(pod.namespace, pod.name, pod.uid)
        if pod.gone:
            self._pods.pop(pod.uid, None)

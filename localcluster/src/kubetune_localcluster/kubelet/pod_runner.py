"""A pod's run on this node: its containers started in order (init containers one after the
other, then all the others at once) once their config is there, its status written as they
change, and its stop at activeDeadlineSeconds or on deletion (SIGTERM, then SIGKILL after the
grace period)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Final

from kubetune_localcluster import times
from kubetune_localcluster.environment import ContainerConfigError
from kubetune_localcluster.images import Image, container_argv
from kubetune_localcluster.kubelet.background import BackgroundTasks
from kubetune_localcluster.kubelet.client import ApiClient, ApiRequestError, pod_path
from kubetune_localcluster.kubelet.containers import ContainerRunner, grace_seconds
from kubetune_localcluster.kubelet.events import PodEvents
from kubetune_localcluster.kubelet.pod_config import PodConfig
from kubetune_localcluster.kubelet.scrape_targets import ScrapeTargetFiles
from kubetune_localcluster.pod_status import AdmittedPod
from kubetune_localcluster.processes import CANNOT_START_EXIT_CODE, end_processes
from kubetune_localcluster.times import timestamp
from kubetune_localcluster.volumes import VolumeError

logger = logging.getLogger(__name__)
CONFIG_RETRY_SECONDS: Final = 1.0
"""How often a container waiting on a missing secret or config map is retried."""
DEADLINE_MESSAGE: Final = "Pod was active on the node longer than the specified deadline"


class PodRunner:
    def __init__(
        self,
        client: ApiClient,
        config: PodConfig,
        events: PodEvents,
        background: BackgroundTasks,
        *,
        images: Mapping[str, Image],
        targets: ScrapeTargetFiles,
    ) -> None:
        self._client = client
        self._config = config
        self._events = events
        self._background = background
        self._images = images
        self._containers = ContainerRunner(images, targets, self.sync)

    async def run_containers(self, pod: AdmittedPod) -> None:
        pod.refresh_conditions(times.now())
        without_command = [
            c for c in pod.containers if container_argv(c.spec, self._images) is None
        ]
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
        await self.sync(pod)
        base = self._config.base_env(pod)
        envs = await self._resolve_envs(pod, base)
        if envs is None:
            return
        for container in pod.init_containers:
            container.state = {"waiting": {"reason": "PodInitializing"}}
        for container in pod.init_containers:
            if not await self._containers.run(pod, container, envs[container.name]):
                return
        await asyncio.gather(
            *(self._containers.run(pod, c, envs[c.name]) for c in pod.main_containers)
        )

    async def _resolve_envs(
        self, pod: AdmittedPod, base: Mapping[str, str]
    ) -> dict[str, dict[str, str]] | None:
        """Each container's env; a missing secret or config map is retried until it exists
        or the pod is stopped (None)."""
        while True:
            try:
                return await self._config.prepare(pod, base)
            except (ContainerConfigError, VolumeError) as error:
                message = str(error)
            for container in pod.containers:
                container.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": message}
                }
            pod.version += 1
            await self.sync(pod)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pod.stopping.wait(), CONFIG_RETRY_SECONDS)
            if pod.stopping.is_set():
                return None

    def arm_deadline(self, pod: AdmittedPod) -> None:
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
                self._events.record(pod.obj, "Normal", "DeadlineExceeded", DEADLINE_MESSAGE)
                # The grace period the spec has now, as the kubelet reads it when it kills,
                # and never under 1 s ("we always supply a grace period of 1").
                grace = max(1.0, grace_seconds({"spec": pod.spec}))
                self._background.spawn(self.end(pod, grace))

        elapsed = (times.now() - pod.start_time).total_seconds()
        remaining = max(0.0, pod.armed_deadline - elapsed)
        pod.deadline = asyncio.get_running_loop().call_later(remaining, expire)

    def deadline_changed(self, pod: AdmittedPod) -> None:
        """The pod's object was updated: a changed activeDeadlineSeconds (the API allows only
        lowering it, or setting one) re-arms the deadline on a pod that runs. Before the pod
        has started, the kubelet arms whatever the spec then says."""
        deadline = pod.spec.get("activeDeadlineSeconds")
        if pod.start_time is None or pod.done or pod.stopping.is_set() or pod.reason is not None:
            return
        if (deadline if isinstance(deadline, int) else None) != pod.armed_deadline:
            self.arm_deadline(pod)

    def begin_deletion(self, pod: AdmittedPod) -> None:
        pod.grace = grace_seconds(pod.obj)
        if not pod.done and not pod.deleting:
            for container in pod.containers:
                if container.running:
                    self._events.record(
                        pod.obj, "Normal", "Killing", f"Stopping container {container.name}"
                    )
        pod.deleting = True
        self._background.spawn(self.end(pod, pod.grace))

    async def end(self, pod: AdmittedPod, grace: float) -> None:
        """Stop a pod's processes: SIGTERM, then SIGKILL after `grace` seconds."""
        pod.stopping.set()
        if pod.done:
            if pod.deleting and not pod.gone and not self._client.closing:
                await self._client.delete_pod_now(pod.namespace, pod.name, pod.uid)
            return
        processes = [c.process for c in pod.containers if c.process is not None]
        await end_processes(processes, grace)

    async def sync(self, pod: AdmittedPod) -> None:
        """PATCH pods/status with the pod's current status, unless it was already sent."""
        async with pod.lock:
            if pod.gone or self._client.closing or pod.sent_version == pod.version:
                return
            version = pod.version
            pod.refresh_conditions(times.now())
            try:
                await self._client.request(
                    "PATCH",
                    pod_path(pod.namespace, pod.name, "status"),
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

"""One container's runs: its process started under an init of its own, its terminated state
(exit code, signal, termination message), and its restarts with a back-off as the pod's
restartPolicy says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final

from kubetune_localcluster import processes, times
from kubetune_localcluster.environment import expand
from kubetune_localcluster.images import Image, container_argv
from kubetune_localcluster.kubelet.client import Json
from kubetune_localcluster.kubelet.scrape_targets import ScrapeTargetFiles
from kubetune_localcluster.pod_status import (
    DEFAULT_GRACE_SECONDS,
    AdmittedPod,
    PodContainer,
    exit_code_of,
    termination_message,
)
from kubetune_localcluster.processes import CANNOT_START_EXIT_CODE, end_processes
from kubetune_localcluster.times import timestamp
from kubetune_localcluster.volumes import in_mount_namespace

CRASH_BACKOFF_SECONDS: Final = 1.0
CRASH_BACKOFF_MAX_SECONDS: Final = 300.0


def grace_seconds(pod: Mapping[str, Any]) -> float:
    """How long a deleted pod's processes get between SIGTERM and SIGKILL: the delete's
    deletionGracePeriodSeconds, else the spec's terminationGracePeriodSeconds, else 30."""
    deletion = (pod.get("metadata") or {}).get("deletionGracePeriodSeconds")
    if deletion is not None:
        return float(deletion)
    spec_grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return float(spec_grace) if spec_grace is not None else DEFAULT_GRACE_SECONDS


class ContainerRunner:
    def __init__(
        self,
        images: Mapping[str, Image],
        targets: ScrapeTargetFiles,
        sync: Callable[[AdmittedPod], Coroutine[Any, Any, None]],
    ) -> None:
        self._images = images
        self._targets = targets
        self._sync = sync
        """Writes the pod's status, once its containers' states have changed."""

    async def run(self, pod: AdmittedPod, container: PodContainer, env: Mapping[str, str]) -> bool:
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
            [expand(part, env) for part in container_argv(container.spec, self._images) or []],
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
            await end_processes([process], grace_seconds(pod.obj))
        container.state = {"running": {"startedAt": timestamp(started)}}
        self._targets.publish(pod)
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

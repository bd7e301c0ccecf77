"""A pod the local kubelet runs, its containers, and the status it writes for them.

The phase, the conditions (PodScheduled, Initialized, ContainersReady, Ready), the container
states and the termination messages follow the kubelet's rules; docs/local-kubelet.md says
where they differ.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from kubetune_localcluster.environment import NODE_IP
from kubetune_localcluster.quantities import Resources, qos_class
from kubetune_localcluster.times import timestamp
from kubetune_localcluster.volumes import Mount

DEFAULT_TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT: Final = 4096
"""Kubernetes keeps the last 4096 bytes of a termination message."""
FALLBACK_LOG_LINES: Final = 80
FALLBACK_LOG_BYTES: Final = 2048
DEFAULT_GRACE_SECONDS: Final = 30.0

Json = dict[str, Any]


def log_tail(text: bytes, lines: int = FALLBACK_LOG_LINES, limit: int = FALLBACK_LOG_BYTES) -> str:
    """The last `lines` lines of a log, at most `limit` bytes (as FallbackToLogsOnError)."""
    tail = b"".join(text.splitlines(keepends=True)[-lines:])[-limit:]
    return tail.decode("utf-8", "replace")


def termination_message(file_content: bytes, log: bytes, policy: str | None, exit_code: int) -> str:
    """The terminated state's message: the file's last 4096 bytes; with
    FallbackToLogsOnError, the log's tail when the file is empty and the container failed."""
    text = file_content[-TERMINATION_MESSAGE_LIMIT:].decode("utf-8", "replace")
    if not text and exit_code != 0 and policy == "FallbackToLogsOnError":
        return log_tail(log)
    return text


def exit_code_of(returncode: int) -> int:
    """A container's exit code: a process killed by signal N exits with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class PodContainer:
    """One container of a pod being run: its spec, its process, its status."""

    spec: Json
    init: bool
    folder: Path
    state: Json = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Json = field(default_factory=dict)
    restart_count: int = 0
    process: asyncio.subprocess.Process | None = None
    succeeded: bool = False
    mounts: list[Mount] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def message_path(self) -> str:
        return str(self.spec.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH)

    @property
    def termination_file(self) -> Path:
        return self.folder / f"{self.name}.termination-log"

    @property
    def log_file(self) -> Path:
        return self.folder / f"{self.name}.{self.restart_count}.log"

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> bool:
        return "terminated" in self.state

    def status(self) -> Json:
        status: Json = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.running,
            "started": self.running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.process is not None:
            status["containerID"] = f"process://{self.process.pid}"
        return status


@dataclass
class AdmittedPod:
    """A pod admitted to this node: its object as last seen, its containers, its status."""

    obj: Json
    folder: Path
    requests: Resources
    containers: list[PodContainer]
    conditions: dict[str, Json] = field(default_factory=dict)
    start_time: datetime | None = None
    reason: str | None = None
    message: str | None = None
    done: bool = False
    """Every process has ended and the final status is set."""
    gone: bool = False
    """The pod object no longer exists: no more API writes."""
    deleting: bool = False
    grace: float = DEFAULT_GRACE_SECONDS
    """The grace period of the deletion under way."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    version: int = 0
    sent_version: int = -1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    deadline: asyncio.TimerHandle | None = None
    armed_deadline: int | None = None
    """The activeDeadlineSeconds the `deadline` timer was armed for."""
    host_ports: dict[tuple[str, int], int] = field(default_factory=dict)
    """(container, containerPort) -> the loopback port given to it."""

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"]["uid"])

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", "default"))

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def spec(self) -> Json:
        return dict(self.obj.get("spec") or {})

    @property
    def init_containers(self) -> list[PodContainer]:
        return [container for container in self.containers if container.init]

    @property
    def main_containers(self) -> list[PodContainer]:
        return [container for container in self.containers if not container.init]

    def set_condition(
        self,
        kind: str,
        status: bool,
        now: datetime,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """Set a condition; its lastTransitionTime moves only when its status changes."""
        text = "True" if status else "False"
        old = self.conditions.get(kind)
        moved = old is None or old["status"] != text
        condition: Json = {
            "type": kind,
            "status": text,
            "lastProbeTime": None,
            "lastTransitionTime": timestamp(now)
            if moved or old is None
            else old["lastTransitionTime"],
        }
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        self.conditions[kind] = condition

    def phase(self) -> str:
        main = self.main_containers
        if self.done:
            succeeded = self.reason is None and main and all(c.succeeded for c in main)
            return "Succeeded" if succeeded else "Failed"
        # A pod stopped for its deadline stays Running until its processes have ended: the
        # kubelet's status manager never reports a terminal phase while containers may run.
        if any(c.running or c.terminated or c.restart_count for c in main):
            return "Running"
        return "Pending"

    def refresh_conditions(self, now: datetime) -> None:
        """Initialized, ContainersReady and Ready from the containers' states."""
        incomplete = [c.name for c in self.init_containers if not c.succeeded]
        if incomplete:
            self.set_condition(
                "Initialized",
                False,
                now,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(incomplete)}]",
            )
        else:
            self.set_condition("Initialized", True, now)
        unready = [c.name for c in self.main_containers if not c.running]
        phase = self.phase()
        for kind in ("ContainersReady", "Ready"):
            if phase in ("Succeeded", "Failed"):
                self.set_condition(kind, False, now, "PodCompleted")
            elif unready:
                self.set_condition(
                    kind,
                    False,
                    now,
                    "ContainersNotReady",
                    f"containers with unready status: [{' '.join(unready)}]",
                )
            else:
                self.set_condition(kind, True, now)

    def status(self) -> Json:
        status: Json = {
            "phase": self.phase(),
            "conditions": [
                self.conditions[kind]
                for kind in (
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                )
                if kind in self.conditions
            ],
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "podIP": NODE_IP,
            "podIPs": [{"ip": NODE_IP}],
            "containerStatuses": [c.status() for c in self.main_containers],
        }
        # A real API server sets qosClass at creation and refuses to change it.
        if not (self.obj.get("status") or {}).get("qosClass"):
            status["qosClass"] = qos_class(self.spec)
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.start_time is not None:
            status["startTime"] = timestamp(self.start_time)
        if self.reason and self.done:  # with the terminal phase, as the kubelet writes it
            status["reason"] = self.reason
            if self.message:
                status["message"] = self.message
        return status

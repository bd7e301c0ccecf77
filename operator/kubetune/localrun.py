"""Run a TuningStudy on this machine with no cluster: `kubetune run-local study.yaml`.

The controller makes every decision, exactly as in the operator. This module does what the API
server and the kubelet would do: it keeps the TuningTrial records in memory and runs the first
container of each trial pod as a local process, under the kubelet's init
(controlplane/processes.py), so nothing the trainer starts outlives its trial or the run. The
command and args come from the rendered pod, and so does the env, with `valueFrom.fieldRef`
resolved for the pod's name and namespace. The image is not pulled: the command must exist
here.

It is meant for trying a study and its trainer before a cluster is at hand. Only the
termination-message route of the trial contract works here: the process writes its final
metrics to $KUBETUNE_TERMINATION_LOG, which points into the run's work folder. There is no API
server for the annotation route, so intermediate reports, and with them pruning, need the
embedded control plane.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from kubetune.controller import (
    STOP_DEADLINE_SECONDS,
    Event,
    Plan,
    PodObservation,
    PodPhase,
    StudyController,
    with_owner_uid,
)
from kubetune.controller.observation import parse_termination_message
from kubetune.controlplane import processes
from kubetune.spec import api
from kubetune.spec.study import StudyPhase, TuningStudyStatus
from kubetune.spec.trial import TuningTrial

# How long a deleted pod's processes have between SIGTERM and SIGKILL (Kubernetes' default).
GRACE_PERIOD_SECONDS = 30.0


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    started: datetime
    termination_log: Path
    log: IO[bytes]
    deadline: datetime | None
    timed_out: bool = False
    ended: datetime | None = None
    """When the process was first seen ended."""


def _now() -> datetime:
    return datetime.now(UTC)


class LocalRun:
    """One study run to its end on this machine. Use `run()`; `close()` ends every process."""

    def __init__(
        self,
        document: dict[str, Any],
        workdir: Path,
        echo: Callable[[str], None] = print,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.document = dict(document)
        metadata = dict(self.document.get("metadata") or {})
        metadata.setdefault("namespace", "local")
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata.setdefault("generation", 1)
        self.document["metadata"] = metadata
        self.workdir = workdir
        self.echo = echo
        self.clock = clock
        self.controller = StudyController()
        self.trials: dict[str, TuningTrial] = {}
        self.processes: dict[str, _Process] = {}

    @property
    def status(self) -> TuningStudyStatus:
        return TuningStudyStatus.model_validate(self.document.get("status") or {})

    def run(self, poll_seconds: float = 0.05) -> TuningStudyStatus:
        """Reconcile until the study is Completed, Failed or Invalid."""
        try:
            while True:
                now = self.clock()
                observations = {name: self._observe(name, now) for name in self.processes}
                plan = self.controller.reconcile(
                    self.document, list(self.trials.values()), observations, now
                )
                self._apply(plan, now)
                if plan.study_status.phase in (
                    StudyPhase.COMPLETED,
                    StudyPhase.FAILED,
                    StudyPhase.INVALID,
                ):
                    return plan.study_status
                # Polling processes is what a kubelet does too; the plan says when a timer is due.
                wait = poll_seconds if plan.requeue_after is None else plan.requeue_after
                time.sleep(min(poll_seconds, max(wait, 0.0)))
        finally:
            self.close()

    def close(self) -> None:
        """End every process still running: none outlives the run."""
        for name in list(self.processes):
            self._delete_pod(name, grace=1.0)

    # --- the API server's part ---------------------------------------------------------------

    def _apply(self, plan: Plan, now: datetime) -> None:
        for update in plan.trial_updates:
            trial = self.trials[update.name]
            self.trials[update.name] = trial.model_copy(update={"status": update.status})
        for pod_name in plan.stop_pods:
            # Its activeDeadlineSeconds lowered: the process ends as at a timeout, its log stays.
            process = self.processes.get(pod_name)
            if process is not None:
                lowered = process.started + timedelta(seconds=STOP_DEADLINE_SECONDS)
                process.deadline = min(process.deadline or lowered, lowered)
        for pod_name in plan.delete_pods:
            self._delete_pod(pod_name, grace=GRACE_PERIOD_SECONDS)
        for trial in plan.create_trials:
            name = trial.metadata.name or ""
            metadata = trial.metadata.model_copy(
                update={"uid": str(uuid.uuid4()), "creation_timestamp": now}
            )
            self.trials[name] = trial.model_copy(update={"metadata": metadata})
            if name in plan.new_trial_pods:
                self._start_pod(with_owner_uid(plan.new_trial_pods[name], metadata.uid or ""), now)
        for pod in plan.create_pods:
            self._start_pod(pod, now)
        self.document["status"] = plan.study_status.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        for event in plan.events:
            self.echo(_format_event(event))

    # --- the kubelet's part ------------------------------------------------------------------

    def _start_pod(self, pod: dict[str, Any], now: datetime) -> None:
        metadata = pod["metadata"]
        name = metadata["name"]
        container = pod["spec"]["containers"][0]
        argv = [*container.get("command", []), *container.get("args", [])]
        if not container.get("command"):
            raise SystemExit(
                f"pod {name}: container {container['name']!r} has no command; a local run "
                "cannot use the image's entrypoint, so set command in the trial template"
            )
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        termination_log = folder / "termination-log"
        env = dict(os.environ)
        for variable in container.get("env", []):
            value = variable.get("value")
            field = (variable.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
            if field == "metadata.name":
                value = name
            elif field == "metadata.namespace":
                value = metadata["namespace"]
            if value is not None:
                env[variable["name"]] = value
        env[api.TERMINATION_LOG_ENV] = str(termination_log)
        log = (folder / "log").open("wb")
        try:
            popen = processes.start_sync(argv, cwd=folder, env=env, log=log)
        except (OSError, processes.StartError) as error:
            log.close()
            reason = error.strerror if isinstance(error, OSError) else error
            raise SystemExit(
                f"pod {name}: container {container['name']!r} cannot run {argv[0]!r}: {reason}; "
                "a local run executes the command on this machine, so install it or fix command "
                "in the trial template"
            ) from None
        deadline_seconds = pod["spec"].get("activeDeadlineSeconds")
        deadline = None if deadline_seconds is None else now + timedelta(seconds=deadline_seconds)
        self.processes[name] = _Process(popen, now, termination_log, log, deadline)

    def _observe(self, name: str, now: datetime) -> PodObservation:
        process = self.processes[name]
        code = process.popen.poll()
        if code is None and process.deadline is not None and now >= process.deadline:
            process.timed_out = True
            processes.end_sync(process.popen, grace=1.0)
            code = process.popen.returncode
        if code is None:
            return PodObservation(PodPhase.RUNNING, started_at=process.started)
        if process.ended is None:
            process.ended = now
        finished = process.ended
        text = process.termination_log.read_text() if process.termination_log.exists() else ""
        failed = PodObservation(
            PodPhase.FAILED,
            started_at=process.started,
            finished_at=finished,
            terminated=True,
            terminated_at=finished,
        )
        if process.timed_out:
            return replace(
                failed,
                reason="DeadlineExceeded",
                message="Pod was active on the node longer than the specified deadline",
            )
        if code != 0:
            return replace(failed, reason="Error", message=text[-4096:] or None, exit_code=code)
        succeeded = replace(failed, phase=PodPhase.SUCCEEDED)
        if not text.strip():
            return succeeded
        try:
            final = parse_termination_message(text)
        except ValueError as error:
            return replace(succeeded, report_errors=(str(error),))
        return replace(succeeded, final_report=final)

    def _delete_pod(self, name: str, grace: float) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            processes.end_sync(process.popen, grace)
            process.log.close()


def _format_event(event: Event) -> str:
    subject = f" {event.trial}" if event.trial else ""
    return f"{event.type:<7} {event.reason:<18}{subject}: {event.message}"

"""`kubetune up`: the whole of Kubetune on one machine with no cluster, for trying it.

It starts the embedded control plane (API server and local kubelet), installs the CRDs, runs
the operator as its own process (`kubetune operator`: the same code and the same path through
a kubeconfig as in a cluster), applies the studies, shows their progress live and returns
them once every one has ended. Nothing it started outlives it: the operator stops first, then
the kubelet ends every pod process, then the API server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kubetune.controlplane.cluster import DEFAULT_CAPACITY, LocalCluster
from kubetune.controlplane.kubelet import parse_quantity, pod_requests
from kubetune.spec import api
from kubetune.spec.crd import crds
from kubetune.spec.study import StudyPhase
from kubetune.spec.validation import ManifestLoader, parse_study, validate_files

FINAL_PHASES: Final = frozenset({StudyPhase.COMPLETED, StudyPhase.FAILED, StudyPhase.INVALID})
REFRESH_SECONDS: Final = 0.25
"""How often the display reads the studies and their events (it is a display, not control)."""
OPERATOR_STOP_SECONDS: Final = 15.0
"""How long the operator may take to stop on SIGTERM before it is killed."""
QUIET_EVENTS: Final = frozenset({"TrialCreated"})
"""Events not printed as they happen: one line per trial start would drown the others."""

CRD_PATH: Final = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
STUDIES_PATH: Final = f"/apis/{api.GROUP}/{api.VERSION}/{api.STUDY_PLURAL}"


class UpError(Exception):
    """Something the user must fix (a manifest) or know (the operator died), said plainly."""


@dataclass(frozen=True)
class Outcome:
    """How `kubetune up` ended: the studies it applied as the API server last returned them,
    each study's TuningTrial objects, and whether Ctrl-C ended it before the studies did."""

    studies: list[dict[str, Any]]
    trials: dict[tuple[str, str], list[dict[str, Any]]]
    interrupted: bool

    @property
    def exit_code(self) -> int:
        """0 when every study completed, 1 when one failed or was invalid, 130 when cut short."""
        if self.interrupted and not all(phase_of(study) in FINAL_PHASES for study in self.studies):
            return 130
        ok = all(phase_of(study) is StudyPhase.COMPLETED for study in self.studies)
        return 0 if ok else 1


def phase_of(study: Mapping[str, Any]) -> StudyPhase:
    return StudyPhase((study.get("status") or {}).get("phase") or StudyPhase.PENDING)


def key_of(document: Mapping[str, Any]) -> tuple[str, str]:
    metadata = document["metadata"]
    return metadata.get("namespace") or "default", metadata["name"]


# --- manifests -------------------------------------------------------------------------------


def load_studies(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The TuningStudy documents of the files, checked with the operator's own rules first.

    Read as kubectl reads YAML (`1e-5` is a number, an unquoted `y` a boolean), so that what
    is applied means what `kubectl apply -f` would have sent.
    """
    problems = [
        f"{report.source}: {problem}"
        for report in validate_files(paths)
        for problem in report.problems
    ]
    if problems:
        raise UpError("\n".join(problems))
    documents: list[dict[str, Any]] = []
    for path in paths:
        loaded = yaml.load_all(path.read_text(encoding="utf-8"), Loader=ManifestLoader)
        documents.extend(document for document in loaded if document is not None)
    seen: set[tuple[str, str]] = set()
    for document in documents:
        key = key_of(document)
        if key in seen:
            raise UpError(f"two manifests define the study {key[0]}/{key[1]}: rename one")
        seen.add(key)
    return documents


def capacity_for(studies: Sequence[Mapping[str, Any]], gpus: int | None = None) -> dict[str, str]:
    """A node big enough for every study to run `parallelism` trials at once (and at least
    the default cpu and memory); `gpus` sets its nvidia.com/gpu instead, to try scarcity."""
    needed: dict[str, Fraction] = {}
    for document in studies:
        study, _ = parse_study(document)
        assert study is not None  # load_studies checked them
        requests = pod_requests(document["spec"]["trialTemplate"].get("spec") or {})
        requests.pop("pods", None)  # the node's pod count is not the limit here
        for name, amount in requests.items():
            needed[name] = needed.get(name, Fraction(0)) + amount * study.spec.budget.parallelism
    capacity = dict(DEFAULT_CAPACITY)
    for name, amount in needed.items():
        if name not in capacity or parse_quantity(capacity[name]) < amount:
            capacity[name] = _quantity(amount)
    if gpus is not None:
        capacity["nvidia.com/gpu"] = str(gpus)
    return capacity


def _quantity(amount: Fraction) -> str:
    if amount.denominator == 1:
        return str(amount.numerator)
    return f"{math.ceil(amount * 1000)}m"


# --- running ---------------------------------------------------------------------------------


@dataclass
class Up:
    """One `kubetune up`: its manifests, where it writes, and how it shows progress."""

    studies: list[dict[str, Any]]
    kubeconfig: Path
    workdir: Path
    capacity: dict[str, str]
    keep: bool = False
    console: Console = field(default_factory=Console)
    live: bool = True
    """Show the live display (off for --json, whose output must be the JSON alone)."""

    async def run(self) -> Outcome:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            return await self._run(stop)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    async def _run(self, stop: asyncio.Event) -> Outcome:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Pods run as processes with this environment: `python` in a trial's command is this
        # Python, with Kubetune and the trainers installed, as in the trainer image.
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
        cluster = LocalCluster(capacity=self.capacity, workdir=self.workdir / "pods")
        async with cluster:
            cluster.write_kubeconfig(self.kubeconfig)
            async with aiohttp.ClientSession(cluster.url, raise_for_status=False) as http:
                for crd in crds():
                    await _request(http, "POST", CRD_PATH, crd)
                log = self.workdir / "operator.log"
                operator = await start_operator(self.kubeconfig, log)
                try:
                    for document in self.studies:
                        await apply_study(http, document)
                    self._say_where(cluster.url, log)
                    interrupted = await self._follow(http, operator, log, stop)
                    studies = [await _get_study(http, *key_of(d)) for d in self.studies]
                    trials = {key_of(s): await _list_trials(http, *key_of(s)) for s in studies}
                finally:
                    await stop_operator(operator)
        return Outcome(studies, trials, interrupted)

    def _say_where(self, url: str, log: Path) -> None:
        path = self.kubeconfig.resolve()
        namespace, name = key_of(self.studies[0])
        where = "" if namespace == "default" else f" -n {namespace}"
        self.console.print(
            f"API server on {url}; the operator's log is {log}, pod logs are under "
            f"{self.workdir / 'pods'}\nWatch it beside this with kubectl:\n"
            f"  export KUBECONFIG={path}\n"
            "  kubectl get tuningstudies -w\n"
            f"  kubetune trials {name}{where}",
            highlight=False,
            soft_wrap=True,
        )

    async def _follow(
        self,
        http: aiohttp.ClientSession,
        operator: asyncio.subprocess.Process,
        log: Path,
        stop: asyncio.Event,
    ) -> bool:
        """Show progress until every study has ended (and, with --keep, until Ctrl-C).
        Returns whether Ctrl-C ended it."""
        ours = {key_of(document) for document in self.studies}
        seen_events: set[str] = set()
        ended = False
        with self._live() as live:
            while True:
                studies = await _list(http, STUDIES_PATH)
                events = await _list(http, "/api/v1/events")
                for line in new_event_lines(events, seen_events):
                    self.console.print(line, highlight=False)
                finished = {key_of(s) for s in studies if phase_of(s) in FINAL_PHASES}
                if ours <= finished and not ended:
                    ended = True
                    if not self.keep:
                        live.update(progress_table(studies, None))
                        return False
                hint = "Every study has ended; Ctrl-C stops the cluster." if ended else None
                live.update(progress_table(studies, hint))
                if operator.returncode is not None:
                    raise UpError(
                        f"the operator exited with status {operator.returncode}; the end of its "
                        f"log ({log}):\n{_tail(log)}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), REFRESH_SECONDS)
                if stop.is_set():
                    return True

    @contextlib.contextmanager
    def _live(self) -> Iterator[Live]:
        live = Live(progress_table([], None), console=self.console, refresh_per_second=4)
        if not self.live:
            yield live  # updated but never shown
            return
        with live:
            yield live
        if not self.console.is_terminal:
            self.console.line()  # rich ends a live display off a terminal without one


async def start_operator(kubeconfig: Path, log: Path) -> asyncio.subprocess.Process:
    """`kubetune operator` as its own process, reaching the API server through the kubeconfig.

    It gets a session of its own so that Ctrl-C in the terminal reaches only `kubetune up`,
    which then stops the operator before the cluster (not both at once)."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kubetune",
            "operator",
            env={**os.environ, "KUBECONFIG": str(kubeconfig.resolve())},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )


async def stop_operator(operator: asyncio.subprocess.Process) -> None:
    """SIGTERM (kopf stops its daemons cleanly), then SIGKILL if it lingers."""
    if operator.returncode is not None:
        return
    operator.terminate()
    try:
        await asyncio.wait_for(operator.wait(), OPERATOR_STOP_SECONDS)
    except TimeoutError:
        operator.kill()
        await operator.wait()


async def apply_study(http: aiohttp.ClientSession, document: Mapping[str, Any]) -> None:
    """Create the study (and its namespace) as JSON, as `kubectl apply` would send it."""
    namespace, _ = key_of(document)
    if namespace != "default":
        namespace_object = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace},
        }
        await _request(http, "POST", "/api/v1/namespaces", namespace_object, allow=(409,))
    body = {**document, "metadata": {**document["metadata"], "namespace": namespace}}
    path = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{api.STUDY_PLURAL}"
    await _request(http, "POST", path, body)


async def _request(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any = None,
    *,
    allow: tuple[int, ...] = (),
    params: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    async with http.request(method, path, json=body, params=params) as response:
        result: dict[str, Any] = await response.json(content_type=None) or {}
        if response.status >= 400 and response.status not in allow:
            what = f"{body.get('kind', '')} {body['metadata'].get('name', '')}" if body else path
            raise UpError(
                f"the API server refused {what.strip()} ({response.status}): "
                f"{result.get('message', result)}"
            )
        return result


async def _list(http: aiohttp.ClientSession, path: str, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await _request(http, "GET", path, params=params))["items"]
    return items


async def _get_study(http: aiohttp.ClientSession, namespace: str, name: str) -> dict[str, Any]:
    path = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{api.STUDY_PLURAL}/{name}"
    return await _request(http, "GET", path)


async def _list_trials(
    http: aiohttp.ClientSession, namespace: str, study: str
) -> list[dict[str, Any]]:
    path = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{api.TRIAL_PLURAL}"
    return await _list(http, path, labelSelector=f"{api.STUDY_LABEL}={study}")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(cannot read it: {error})"


# --- the display -----------------------------------------------------------------------------


def new_event_lines(events: Sequence[Mapping[str, Any]], seen: set[str]) -> list[Text]:
    """One line per study event not shown before (its uid goes into `seen`), oldest first."""
    lines = []
    for event in sorted(events, key=_event_order):
        uid = event["metadata"].get("uid") or event["metadata"]["name"]
        involved = event.get("involvedObject") or {}
        if uid in seen or involved.get("kind") != api.STUDY_KIND:
            continue
        seen.add(uid)
        reason = event.get("reason") or ""
        if reason in QUIET_EVENTS:
            continue
        style = "yellow" if event.get("type") == "Warning" else "green"
        if reason == "TrialPruned":
            style = "magenta"
        line = Text.assemble(
            (f"{involved.get('name', '')} ", "bold"),
            (f"{reason}: ", style),
            event.get("message") or "",
        )
        lines.append(line)
    return lines


def _event_order(event: Mapping[str, Any]) -> tuple[int, str]:
    version = event["metadata"].get("resourceVersion") or ""
    return (int(version) if version.isdigit() else 0, event["metadata"].get("name", ""))


def progress_table(studies: Sequence[Mapping[str, Any]], hint: str | None) -> Group | Table:
    """Per study: phase, trials by state, best so far, budget used."""
    table = Table(title="Studies", title_justify="left")
    for column in ("study", "phase", "done", "running", "succeeded", "pruned", "failed"):
        table.add_column(column, justify="left" if column in ("study", "phase") else "right")
    table.add_column("best so far")
    table.add_column("budget used")
    for study in studies:
        status = study.get("status") or {}
        trials = status.get("trials") or {}
        failed = sum(trials.get(state, 0) for state in ("failed", "timedOut", "metricsUnavailable"))
        table.add_row(
            study["metadata"]["name"],
            status.get("phase") or "Pending",
            status.get("progress") or "",
            str(trials.get("running", 0) + trials.get("pending", 0)),
            str(trials.get("succeeded", 0)),
            str(trials.get("pruned", 0)),
            str(failed),
            _best(status),
            budget_used(status.get("budget") or {}),
        )
    if hint is None:
        return table
    return Group(table, Text(hint, style="bold"))


def _best(status: Mapping[str, Any]) -> str:
    best = status.get("bestTrial")
    if not best:
        return ""
    value = best.get("value")
    shown = f"{value:.4g}" if value is not None else ", ".join(f"{v:.4g}" for v in best["values"])
    return f"{shown} (trial {best['number']})"


def budget_used(budget: Mapping[str, Any]) -> str:
    """What the study has spent next to its limits, e.g. `0:42 of 8:00:00, 0.05/12 GPU-h`."""
    parts = [_duration(budget.get("elapsedSeconds", 0.0))]
    if budget.get("maxDurationSeconds"):
        parts[0] += f" of {_duration(budget['maxDurationSeconds'])}"
    if budget.get("maxGpuHours") or budget.get("gpuHours"):
        limit = f"/{budget['maxGpuHours']:g}" if budget.get("maxGpuHours") else ""
        parts.append(f"{budget.get('gpuHours', 0.0):.3f}{limit} GPU-h")
    if budget.get("moneyLimit") or budget.get("money"):
        limit = f"/{budget['moneyLimit']:g}" if budget.get("moneyLimit") else ""
        parts.append(f"{budget.get('money', 0.0):.2f}{limit} {budget.get('currency') or ''}")
    return ", ".join(part.strip() for part in parts)


def _duration(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"

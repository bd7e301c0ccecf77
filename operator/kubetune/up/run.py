"""Running `kubetune up`: the local cluster, the operator as its own process, the studies
applied, their progress shown live until every one has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from rich.console import Console
from rich.live import Live

from kubetune.spec import api
from kubetune.spec.crd import crds
from kubetune.spec.study_status import StudyPhase
from kubetune.summaries import new_event_lines, progress_table
from kubetune.up.manifests import UpError, key_of
from kubetune.up.prometheus import (
    OPERATOR_JOB,
    PROMETHEUS_SCRAPE_INTERVAL,
    TRIALS_JOB,
    DemoPrometheus,
    log_tail,
    metrics_source_hints,
    prometheus_config,
)
from kubetune_localcluster.cluster import install_crds, make_cluster
from kubetune_localcluster.environment import free_port

FINAL_PHASES: Final = frozenset({StudyPhase.COMPLETED, StudyPhase.FAILED, StudyPhase.INVALID})
REFRESH_SECONDS: Final = 0.25
"""How often the display reads the studies and their events (it is a display, not control)."""
OPERATOR_STOP_SECONDS: Final = 15.0
"""How long the operator may take to stop on SIGTERM before it is killed."""
STUDIES_PATH: Final = f"/apis/{api.GROUP}/{api.VERSION}/{api.STUDY_PLURAL}"


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
    prometheus: Path | None = None
    """The `prometheus` binary (`find_prometheus()`): start it for the demo; None: no Prometheus."""
    prometheus_port: int | None = None
    """Its port on loopback (None: a free one)."""
    binaries: Path | None = None
    """The real control plane's binaries (scripts/kube-binaries); None: the embedded one."""

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
        # Absolute: pod processes run in folders of their own, and Prometheus reads the paths
        # in its configuration relative to that file.
        self.workdir = self.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Pods run as processes with this environment: `python` in a trial's command is this
        # Python, with Kubetune and the trainers installed, as in the trainer image.
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
        prometheus = None
        if self.prometheus is not None:
            prometheus = DemoPrometheus(
                self.prometheus, self.workdir / "prometheus", self.prometheus_port
            )
        targets = self.workdir / "targets"
        cluster = make_cluster(
            binaries=self.binaries,
            capacity=self.capacity,
            workdir=self.workdir / "pods",
            service_discovery_dir=targets if prometheus is not None else None,
        )
        async with cluster:
            cluster.write_kubeconfig(self.kubeconfig)
            async with cluster.session(raise_for_status=False) as http:
                await install_crds(http, crds())
                log = self.workdir / "operator.log"
                # The operator's default port (8000) may be taken on a laptop: a free one.
                metrics_port = free_port() if prometheus is not None else 0
                try:
                    if prometheus is not None:
                        await prometheus.start(prometheus_config(metrics_port, targets))
                    operator = await start_operator(
                        self.kubeconfig,
                        log,
                        metrics_port,
                        prometheus.allowed_urls if prometheus is not None else (),
                    )
                    try:
                        for document in self.studies:
                            await apply_study(http, document)
                        self._say_where(cluster.url, log, prometheus)
                        interrupted = await self._follow(http, operator, log, stop)
                        studies = [await _get_study(http, *key_of(d)) for d in self.studies]
                        trials = {key_of(s): await _list_trials(http, *key_of(s)) for s in studies}
                    finally:
                        await stop_operator(operator)
                finally:
                    # Stopped after the operator, so it has scraped the operator's last
                    # state, and before the kubelet ends the pods it scrapes.
                    if prometheus is not None:
                        await prometheus.stop()
        return Outcome(studies, trials, interrupted)

    def _say_where(self, url: str, log: Path, prometheus: DemoPrometheus | None) -> None:
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
        if prometheus is not None:
            self.console.print(
                f"Prometheus on {prometheus.url} (its log is {prometheus.log}), scraping the "
                f"operator (job {OPERATOR_JOB}) and the trials' metrics ports (job {TRIALS_JOB})"
                f" each {PROMETHEUS_SCRAPE_INTERVAL}; query kubetune_* series there, e.g.\n"
                f"  {prometheus.url}/graph?g0.expr=kubetune_trials&g0.tab=0",
                highlight=False,
                soft_wrap=True,
            )
        hints = metrics_source_hints(self.studies, prometheus.url if prometheus else None)
        for hint in hints:
            self.console.print(hint, style="yellow", highlight=False, soft_wrap=True)

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
                        f"log ({log}):\n{log_tail(log)}"
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


async def start_operator(
    kubeconfig: Path, log: Path, metrics_port: int = 0, allowed_prometheus: Sequence[str] = ()
) -> asyncio.subprocess.Process:
    """`kubetune operator` as its own process, reaching the API server through the kubeconfig,
    serving /metrics on `metrics_port` (0: not at all), allowing studies to read the
    Prometheus URLs `allowed_prometheus` (--allow-prometheus).

    It gets a session of its own so that Ctrl-C in the terminal reaches only `kubetune up`,
    which then stops the operator before the cluster (not both at once)."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kubetune",
            "operator",
            "--metrics-port",
            str(metrics_port),
            *(arg for url in allowed_prometheus for arg in ("--allow-prometheus", url)),
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
    for path, grant in trial_reporting_grant(namespace):
        await _request(http, "POST", path, grant, allow=(409,))
    body = {**document, "metadata": {**document["metadata"], "namespace": namespace}}
    path = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{api.STUDY_PLURAL}"
    await _request(http, "POST", path, body)


TRIAL_REPORTING_ROLE = "kubetune-trial-reporting"


def trial_reporting_grant(namespace: str) -> list[tuple[str, dict[str, Any]]]:
    """The Role and RoleBinding that let trial pods of the namespace's default ServiceAccount
    report through their pod annotation (`patch` on pods), as the chart's
    trials.annotationReporting does for its trial ServiceAccount: the real control plane
    enforces RBAC, and without it every intermediate report is refused (403)."""
    rbac = "rbac.authorization.k8s.io"
    base = f"/apis/{rbac}/v1/namespaces/{namespace}"
    metadata = {"name": TRIAL_REPORTING_ROLE, "namespace": namespace}
    role = {
        "apiVersion": f"{rbac}/v1",
        "kind": "Role",
        "metadata": metadata,
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}],
    }
    binding = {
        "apiVersion": f"{rbac}/v1",
        "kind": "RoleBinding",
        "metadata": metadata,
        "roleRef": {"apiGroup": rbac, "kind": "Role", "name": TRIAL_REPORTING_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
    }
    return [(f"{base}/roles", role), (f"{base}/rolebindings", binding)]


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

"""`kubetune up`: the whole of Kubetune on one machine with no cluster, for trying it.

It starts the embedded control plane (API server and local kubelet), installs the CRDs, runs
the operator as its own process (`kubetune operator`: the same code and the same path through
a kubeconfig as in a cluster), applies the studies, shows their progress live and returns
them once every one has ended. With `--prometheus` it also runs a real Prometheus (the
`prometheus` binary) scraping the operator's /metrics and every trial pod's `metrics` port, which
the kubelet publishes through file-based service discovery. Nothing it started outlives it: the
operator stops first, then Prometheus, then the kubelet ends every pod process, then the API
server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import yaml
from rich.console import Console
from rich.live import Live

from kubetune.spec import api
from kubetune.spec.crd import crds
from kubetune.spec.manifests import ManifestLoader, parse_study, validate_files
from kubetune.spec.study import StudyPhase
from kubetune.summaries import new_event_lines, progress_table
from kubetune_localcluster.cluster import DEFAULT_CAPACITY, install_crds, make_cluster
from kubetune_localcluster.environment import free_port
from kubetune_localcluster.quantities import parse_quantity, pod_requests

FINAL_PHASES: Final = frozenset({StudyPhase.COMPLETED, StudyPhase.FAILED, StudyPhase.INVALID})
REFRESH_SECONDS: Final = 0.25
"""How often the display reads the studies and their events (it is a display, not control)."""
OPERATOR_STOP_SECONDS: Final = 15.0
"""How long the operator may take to stop on SIGTERM before it is killed."""

PROMETHEUS_BINARY: Final = "prometheus"
PROMETHEUS_INSTALL_HINT: Final = "apt-get install prometheus"
PROMETHEUS_SCRAPE_INTERVAL: Final = "1s"
"""Short, so the demo's trials (seconds long) are scraped several times each."""
PROMETHEUS_READY_SECONDS: Final = 30.0
"""How long Prometheus may take to answer /-/ready (it replays its storage first)."""
PROMETHEUS_STOP_SECONDS: Final = 10.0
OPERATOR_JOB: Final = "kubetune-operator"
TRIALS_JOB: Final = "kubetune-trials"
LOOPBACK: Final = "127.0.0.1"

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


# --- the demo's Prometheus ------------------------------------------------------------------


def find_prometheus() -> Path:
    """The `prometheus` binary on PATH, or an UpError saying how to get it."""
    found = shutil.which(PROMETHEUS_BINARY)
    if found is None:
        raise UpError(
            f"--prometheus needs the `{PROMETHEUS_BINARY}` binary on PATH and there is none; "
            f"fix: install it (Debian/Ubuntu: `{PROMETHEUS_INSTALL_HINT}`; the package does "
            "not start a server by itself) or leave out --prometheus"
        )
    return Path(found)


def prometheus_config(
    operator_metrics_port: int, targets: Path, scrape_interval: str = PROMETHEUS_SCRAPE_INTERVAL
) -> dict[str, Any]:
    """The demo's Prometheus configuration: the operator's /metrics, and every trial pod's
    metrics endpoint that the kubelet publishes as a file_sd JSON file under `targets`.

    The trials' series carry the labels a PodMonitor gives them in a cluster (namespace, pod,
    container, endpoint), and not the pod's own labels, so that the queries of a study's
    `metricsSource.prometheus` work unchanged here and there."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": OPERATOR_JOB,
                "static_configs": [{"targets": [f"{LOOPBACK}:{operator_metrics_port}"]}],
            },
            {
                "job_name": TRIALS_JOB,
                "file_sd_configs": [
                    {"files": [str(targets / "*.json")], "refresh_interval": scrape_interval}
                ],
                "relabel_configs": [
                    # The kubelet also labels a target with the pod's labels (kubetune_io_study,
                    # ...); a PodMonitor does not: keep the internal labels and its four.
                    {"action": "labelkeep", "regex": "__.+|job|namespace|pod|container"},
                    {"target_label": "endpoint", "replacement": "metrics"},
                ],
            },
        ],
    }


@dataclass
class DemoPrometheus:
    """One `prometheus` process of `kubetune up`, its configuration, storage and log in
    `workdir`, listening on loopback only."""

    binary: Path
    workdir: Path
    port: int | None = None
    """None: a free port, chosen at start."""
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def allowed_urls(self) -> tuple[str, ...]:
        """The URLs studies may give for this Prometheus (metrics_source_hints accepts both)."""
        return (self.url, f"http://localhost:{self.port}")

    @property
    def log(self) -> Path:
        return self.workdir / "prometheus.log"

    async def start(self, config: Mapping[str, Any]) -> None:
        """Start it and return once it is ready; an UpError with its log when it cannot."""
        if self.port is None:
            self.port = free_port()
        storage = self.workdir / "data"
        storage.mkdir(parents=True, exist_ok=True)
        for group in config.get("scrape_configs") or []:
            for sd in group.get("file_sd_configs") or []:
                for pattern in sd["files"]:
                    # Watched from the start: a folder created later is seen only on refresh.
                    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        with self.log.open("ab") as out:
            # A session of its own, as the operator: Ctrl-C reaches `kubetune up` alone, which
            # stops Prometheus after the operator.
            self.process = await asyncio.create_subprocess_exec(
                str(self.binary),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        await self._ready()

    async def _ready(self) -> None:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROMETHEUS_READY_SECONDS
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                if self.process.returncode is not None:
                    raise UpError(
                        f"Prometheus exited with status {self.process.returncode} (is port "
                        f"{self.port} free? --prometheus-port picks another); the end of its "
                        f"log ({self.log}):\n{_tail(self.log)}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                if loop.time() > deadline:
                    raise UpError(
                        f"Prometheus was not ready after {PROMETHEUS_READY_SECONDS:g} s; the "
                        f"end of its log ({self.log}):\n{_tail(self.log)}"
                    )
                # Prometheus has no readiness notification but its HTTP endpoint: poll it.
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM (it flushes its storage), then SIGKILL if it lingers."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), PROMETHEUS_STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()


def metrics_source_hints(
    studies: Sequence[Mapping[str, Any]], prometheus_url: str | None
) -> list[str]:
    """What to change so that each study reading its metrics from Prometheus reads the demo's:
    one line per study whose `spec.metricsSource.prometheus.url` is not that Prometheus."""
    hints = []
    for document in studies:
        source = ((document.get("spec") or {}).get("metricsSource") or {}).get("prometheus")
        if not source:
            continue
        name = document["metadata"]["name"]
        url = str(source.get("url", ""))
        if prometheus_url is None:
            hints.append(
                f"study {name} reads its metrics from Prometheus ({url}), which this run does "
                "not start: fix: `kubetune up --prometheus --prometheus-port 9090` with "
                f"spec.metricsSource.prometheus.url http://{LOOPBACK}:9090"
            )
        elif not _same_server(url, prometheus_url):
            hints.append(
                f"study {name} reads its metrics from {url}, not from this run's Prometheus: "
                f"fix: set spec.metricsSource.prometheus.url to {prometheus_url} (choose the "
                "port with --prometheus-port)"
            )
    return hints


def _same_server(url: str, ours: str) -> bool:
    theirs, mine = urlsplit(url), urlsplit(ours)
    loopback = {LOOPBACK, "localhost"}
    return (
        theirs.scheme == mine.scheme
        and theirs.hostname in loopback
        and theirs.port == mine.port
        and theirs.path.strip("/") == ""
    )


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

"""Benchmark: the operator end to end on the embedded control plane, in one run.

The control plane (API server and local kubelet) runs in a background thread of this process
(ClusterThread); the operator is `kubetune operator`, a process of its own, as in a cluster.

1. Scheduling gap: studies of parallelism 4 whose trials finish at once (the trainer writes its
   termination message and exits). A gap runs from the kubelet's status write that shows a
   trial's pod terminated to the creation of the study's next pod, both stamped inside the API
   server as each write is stored (watch time stamps would add the watch delivery, and
   Kubernetes timestamps have one-second resolution). p50 and p99 with 1, 10 and 50 studies.
2. Overhead: a 200-trial study of an objective that takes a fixed time per trial (`sleep`, then
   the termination message), through the operator, against the same command run by a bare
   Optuna loop (threads, the same parallelism, the same sampler). Ratio of wall times.
3. Peak memory: the operator's VmHWM (/proc/PID/status) after 50 studies of 200 trials.
4. Busy GPUs: studies of parallelism 4 whose trials take 5-10 s (a `seconds` parameter the
   trainer sleeps for) and request one GPU each, on a node with a GPU for every slot: the gaps
   as in 1, the share of GPU slot time left idle, the whole run against the same work for one
   study (each study has its own seed; the study that ended last runs again alone, its seed
   asking the same trials), and per trial: operator CPU, the watch events the operator is
   sent, its API requests and its study status writes.

`--base DIR` runs each part twice in one invocation, first with the operator of the checkout
in DIR (a `git worktree` of the base commit), then with this one, and prints the ratios.
`--rounds N` runs each side N times, alternating which goes first, and prints each side's
medians and the median of the rounds' ratios: on two cores the busy gaps of one operator vary
up to 1.75x from run to run, more than between the two sides of one round.
`--binaries DIR` runs on the real control plane (scripts/kube-binaries) instead of the
embedded one: the stamps then come from watches of the benchmark's own (so they include the
delivery time) and the operator's requests from the API server's audit log.

    .venv/bin/python -m bench.operator_cost                 # everything (long: see --help)
    .venv/bin/python -m bench.operator_cost --only gap --gap-studies 1 10
    .venv/bin/python -m bench.operator_cost --only busy --base /tmp/base
    .venv/bin/python -m bench.operator_cost --profile /tmp/prof  # cProfile the operator
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import kubernetes

from kubetune.spec import api
from kubetune.spec.crd import crds
from kubetune_localcluster.access import ApiRequest
from kubetune_localcluster.cluster import ClusterThread
from kubetune_localcluster.real import RealCluster
from kubetune_localcluster.watch import Watch, WatchEvent

PARALLELISM = 4
NAMESPACE = "default"
# The objective is x itself, written as the termination message (sh has no float arithmetic).
TRAINER = 'echo "{\\"loss\\": $KUBETUNE_PARAM_X}" > "$KUBETUNE_TERMINATION_LOG"'


def study_manifest(name: str, trials: int, seconds: float, sampler: str) -> dict[str, Any]:
    command = TRAINER if seconds <= 0 else f"sleep {seconds}; {TRAINER}"
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.STUDY_KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "objective": {"metrics": [{"name": "loss", "direction": "minimize"}]},
            "searchSpace": [{"name": "x", "type": "float", "low": -5, "high": 5}],
            "algorithm": {"name": sampler, "seed": 42},
            "budget": {"maxTrials": trials, "parallelism": PARALLELISM},
            "trialTemplate": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "trainer", "image": "busybox", "command": ["sh", "-c", command]}
                    ],
                }
            },
        },
    }


# --- what the API server stores, stamped as it is stored ------------------------------------

BENCH_USER_AGENT = "kubetune-bench"
"""The benchmark's own client, left out of the operator's requests."""
OPERATOR_USER_AGENTS = ("kopf/", "OpenAPI-Generator/")
"""kopf's watches and patches, and the kubernetes client's requests: the operator's."""
WATCHED = ("pods", api.TRIAL_PLURAL, api.STUDY_PLURAL)
"""What the operator watches (Jobs aside: these studies' trials are pods)."""


class Stamps(Watch):
    """A watcher registered inside the store: `offer` runs synchronously as each write is
    stored, so its clock reading is the write's time, not a delivery time. On the real plane
    `record` is fed by watches instead (`watch_real_plane`)."""

    def __init__(self) -> None:
        super().__init__(None, None, 1)
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.finished: dict[str, float] = {}
        self.waiting: set[str] = set()
        self.all_finished = threading.Event()

    def offer(self, event: WatchEvent) -> None:
        self.record(event.type, event.obj)

    def record(self, type: str, obj: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.events.append((now, type, obj))
        phase = (obj.get("status") or {}).get("phase")
        name = obj["metadata"]["name"]
        if obj.get("kind") == api.STUDY_KIND and phase in ("Completed", "Failed"):
            self.finished.setdefault(name, now)
            if self.waiting and self.waiting <= set(self.finished):
                self.all_finished.set()

    @staticmethod
    def watch_events_of(events: list[tuple[float, str, dict[str, Any]]]) -> Counter[str]:
        """The events the operator's watches were sent, by kind: every stored write of a
        study, a trial or a study's pod."""
        return Counter(
            obj.get("kind", "")
            for _, _, obj in events
            if obj.get("kind") != "Pod" or api.STUDY_LABEL in obj["metadata"].get("labels", {})
        )


def watch_real_plane(
    client: kubernetes.client.ApiClient, stamps: Stamps, stop: threading.Event
) -> list[threading.Thread]:
    """Threads that feed `stamps` from watches of the real plane, as events arrive."""
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    listers: dict[str, Any] = {
        "pods": partial(core.list_namespaced_pod, NAMESPACE, label_selector=api.STUDY_LABEL),
        api.TRIAL_PLURAL: partial(
            custom.list_namespaced_custom_object,
            api.GROUP,
            api.VERSION,
            NAMESPACE,
            api.TRIAL_PLURAL,
        ),
        api.STUDY_PLURAL: partial(
            custom.list_namespaced_custom_object,
            api.GROUP,
            api.VERSION,
            NAMESPACE,
            api.STUDY_PLURAL,
        ),
    }

    def follow(lister: Any) -> None:
        version = lister(_preload_content=False).json()["metadata"]["resourceVersion"]
        watch = kubernetes.watch.Watch()
        while not stop.is_set():
            for event in watch.stream(lister, resource_version=version, timeout_seconds=2):
                obj = event["raw_object"]
                obj.setdefault("kind", "Pod")  # pod lists' items carry no kind
                stamps.record(event["type"], obj)
                version = obj["metadata"]["resourceVersion"]

    threads = [
        threading.Thread(target=follow, args=(lister,), name=f"bench-watch-{kind}", daemon=True)
        for kind, lister in listers.items()
    ]
    for thread in threads:
        thread.start()
    return threads


def audited_requests(audit_log: Path, since: float) -> Counter[str]:
    """The operator's requests in a real API server's audit log, made after `since` (epoch
    seconds), by verb and resource."""
    requests: Counter[str] = Counter()
    for line in audit_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("stage") != "ResponseComplete":
            continue
        if not entry.get("userAgent", "").startswith(OPERATOR_USER_AGENTS):
            continue
        received = datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if received.timestamp() < since:
            continue
        ref = entry.get("objectRef") or {}
        sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
        requests[f"{entry['verb']} {ref.get('resource', '')}{sub}"] += 1
    return requests


@dataclass
class Run:
    """A fresh control plane with Kubetune's CRDs and the operator running on it."""

    running: ClusterThread
    workdir: Path
    operator: subprocess.Popen[bytes]
    custom: Any
    stamps: Stamps = field(default_factory=Stamps)
    requests: Counter[str] = field(default_factory=Counter)
    """The operator's API requests by verb and resource (the kubelet's are left out)."""
    warmed_up_at: float = 0.0
    """Epoch seconds at the end of the warm-up."""

    def apply(self, *studies: dict[str, Any]) -> float:
        """Create the studies; returns when the first create was sent."""
        self.stamps.all_finished.clear()
        self.stamps.waiting = {s["metadata"]["name"] for s in studies}
        started = time.perf_counter()
        for study in studies:
            self.custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, NAMESPACE, api.STUDY_PLURAL, study
            )
        return started

    def wait(self, timeout: float) -> None:
        if not self.stamps.all_finished.wait(timeout):
            done = len(self.stamps.waiting & set(self.stamps.finished))
            raise TimeoutError(f"{done}/{len(self.stamps.waiting)} studies finished in {timeout} s")

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.operator.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def operator_requests(self) -> Counter[str]:
        cluster = self.running.cluster
        if isinstance(cluster, RealCluster):
            return audited_requests(cluster.audit_log, self.warmed_up_at)
        return self.requests


@contextmanager
def operator_run(
    profile: Path | None,
    *,
    operator_from: Path | None = None,
    binaries: Path | None = None,
    gpus: int = 0,
) -> Iterator[Run]:
    """`operator_from`: the checkout whose operator runs (None: this one); `binaries`: the
    real control plane's (None: the embedded plane); `gpus`: the node's nvidia.com/gpu."""
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as folder:
        workdir = Path(folder)
        capacity = {
            "cpu": "1000",
            "memory": "1000Gi",
            "pods": "100000",
            "nvidia.com/gpu": str(gpus),
        }
        options: dict[str, Any] = {"binaries": binaries} if binaries else {}
        with ClusterThread(workdir=workdir / "pods", capacity=capacity, **options) as running:
            kubeconfig = running.cluster.write_kubeconfig(workdir / "kubeconfig")
            client = kubernetes.config.new_client_from_config(str(kubeconfig))
            client.user_agent = BENCH_USER_AGENT
            extensions = kubernetes.client.ApiextensionsV1Api(client)
            for crd in crds():
                extensions.create_custom_resource_definition(crd)
            wait_established(extensions)
            stamps = Stamps()
            stop_watching = threading.Event()
            requests: Counter[str] = Counter()
            if binaries:
                watchers = watch_real_plane(client, stamps, stop_watching)
            else:
                watchers = []

                async def register() -> None:
                    store = running.cluster.server.store
                    for storage in ("/pods", *(f"{api.GROUP}/{p}" for p in WATCHED[1:])):
                        store.collection(storage).watches.add(stamps)

                    async def count(request: ApiRequest) -> None:
                        if request.user_agent.startswith(OPERATOR_USER_AGENTS):
                            sub = f"/{request.subresource}" if request.subresource else ""
                            requests[f"{request.verb} {request.resource}{sub}"] += 1

                    running.cluster.server.request_hooks.append(count)

                running.call(register())
            command = [
                sys.executable,
                "-m",
                "kubetune",
                "operator",
                "--metrics-port",
                "0",
                *os.environ.get("BENCH_OPERATOR_ARGS", "").split(),
            ]
            if profile is not None:
                command[1:1] = ["-m", "cProfile", "-o", str(profile)]
            env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
            if operator_from is not None:
                source = str(operator_from.resolve() / "operator")
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
            with (workdir / "operator.log").open("wb") as log:
                operator = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=workdir)
            run = Run(running, workdir, operator, kubernetes.client.CustomObjectsApi(client))
            run.stamps = stamps
            run.requests = requests
            try:
                # Warm-up: the operator is watching, imports done, one study served.
                run.apply(study_manifest("warmup", 1, 0, "random"))
                run.wait(120)
                stamps.events.clear()
                requests.clear()
                run.warmed_up_at = time.time()
                yield run
            except BaseException:
                print((workdir / "operator.log").read_text()[-5000:], file=sys.stderr)
                raise
            finally:
                operator.terminate()
                try:
                    operator.wait(60)
                except subprocess.TimeoutExpired:
                    operator.kill()
                stop_watching.set()
                for watcher in watchers:
                    watcher.join(10)
                client.close()


def wait_established(extensions: kubernetes.client.ApiextensionsV1Api) -> None:
    """Until the API server serves Kubetune's CRDs (the real one establishes them later)."""
    for crd in crds():
        name = crd["metadata"]["name"]
        for _ in range(300):
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            time.sleep(0.1)


# --- 1. scheduling gap ----------------------------------------------------------------------


def scheduling_gaps(events: list[tuple[float, str, dict[str, Any]]]) -> list[float]:
    """Per study, the i-th pod to terminate paired with the (parallelism + i)-th pod created:
    the one its end made room for. Gaps in seconds."""
    created: dict[str, dict[str, float]] = defaultdict(dict)
    ended: dict[str, dict[str, float]] = defaultdict(dict)
    for moment, kind, obj in events:
        if obj.get("kind") != "Pod":
            continue
        study = obj["metadata"].get("labels", {}).get(api.STUDY_LABEL)
        name = obj["metadata"]["name"]
        if study is None:
            continue
        if kind == "ADDED":
            created[study].setdefault(name, moment)
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            ended[study].setdefault(name, moment)
    gaps = []
    for study, pods in created.items():
        creations = sorted(pods.values())
        ends = sorted(ended[study].values())
        for i, end in enumerate(ends):
            if PARALLELISM + i < len(creations):
                gaps.append(creations[PARALLELISM + i] - end)
    return gaps


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


def bench_gap(studies: int, trials: int, profile: Path | None, **where: Any) -> dict[str, Any]:
    with operator_run(profile, **where) as run:
        started = run.apply(
            *(study_manifest(f"gap-{i}", trials, 0, "random") for i in range(studies))
        )
        run.wait(600)
        wall = max(run.stamps.finished.values()) - started
        gaps = scheduling_gaps(run.stamps.events)
        cpu = operator_cpu(run.operator.pid)
    return {
        "studies": studies,
        "trials": studies * trials,
        "gaps": len(gaps),
        "p50_ms": 1000 * percentile(gaps, 50),
        "p99_ms": 1000 * percentile(gaps, 99),
        "max_ms": 1000 * max(gaps),
        "wall_s": wall,
        "trials_per_s": studies * trials / wall,
        "operator_cpu_s": cpu,
        "requests_per_trial": per_trial(run.operator_requests(), studies * trials),
    }


def per_trial(requests: Counter[str], trials: int) -> dict[str, float]:
    """Requests per trial by verb and resource, the most frequent first, and their total."""
    ranked = {key: round(count / trials, 2) for key, count in requests.most_common()}
    return {"total": round(sum(requests.values()) / trials, 2), **ranked}


def operator_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- 2. overhead against a bare Optuna loop -------------------------------------------------


def bare_optuna(trials: int, seconds: float, sampler: str) -> float:
    """The same trainer command, run by threads around one Optuna study: wall seconds."""
    import optuna

    from kubetune.engine.samplers import create_sampler
    from kubetune.spec.study import TuningStudy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = TuningStudy.model_validate(study_manifest("bare", trials, seconds, sampler)).spec
    study = optuna.create_study(
        direction="minimize",
        sampler=create_sampler(spec.algorithm, spec.objective, spec.search_space, 0, 42),
    )
    command = spec.trial_template.spec.containers[0].command
    lock = threading.Lock()
    remaining = iter(range(trials))

    def worker(folder: Path) -> None:
        while True:
            with lock:
                if next(remaining, None) is None:
                    return
                trial = study.ask()
                x = trial.suggest_float("x", -5, 5)
            message = folder / "termination-log"
            env = {
                **os.environ,
                "KUBETUNE_PARAM_X": repr(x),
                "KUBETUNE_TERMINATION_LOG": str(message),
            }
            subprocess.run(command, env=env, check=True)
            loss = json.loads(message.read_text())["loss"]
            with lock:
                study.tell(trial, loss)

    with tempfile.TemporaryDirectory() as folder:
        folders = [Path(folder) / str(i) for i in range(PARALLELISM)]
        for each in folders:
            each.mkdir()
        started = time.perf_counter()
        with ThreadPoolExecutor(PARALLELISM) as pool:
            list(pool.map(worker, folders))
        return time.perf_counter() - started


def bench_overhead(
    trials: int, seconds: float, sampler: str, profile: Path | None, **where: Any
) -> dict[str, Any]:
    bare = bare_optuna(trials, seconds, sampler)
    with operator_run(profile, **where) as run:
        started = run.apply(study_manifest("overhead", trials, seconds, sampler))
        run.wait(trials * seconds * 5 + 120)
        through_operator = run.stamps.finished["overhead"] - started
    ideal = trials * seconds / PARALLELISM
    return {
        "trials": trials,
        "trial_seconds": seconds,
        "sampler": sampler,
        "ideal_s": ideal,
        "bare_optuna_s": bare,
        "operator_s": through_operator,
        "ratio": through_operator / bare,
    }


# --- 3. peak memory -------------------------------------------------------------------------


def bench_memory(studies: int, trials: int, profile: Path | None, **where: Any) -> dict[str, Any]:
    with operator_run(profile, **where) as run:
        before = run.peak_rss_mib()
        started = run.apply(
            *(study_manifest(f"memory-{i}", trials, 0, "tpe") for i in range(studies))
        )
        run.wait(3600)
        wall = max(run.stamps.finished.values()) - started
        return {
            "studies": studies,
            "trials": studies * trials,
            "peak_rss_after_warmup_mib": before,
            "peak_rss_mib": run.peak_rss_mib(),
            "wall_s": wall,
            "operator_cpu_s": operator_cpu(run.operator.pid),
        }


# --- 4. busy GPUs --------------------------------------------------------------------------

BUSY_TRAINER = f'sleep "$KUBETUNE_PARAM_SECONDS"; {TRAINER}'


def busy_manifest(name: str, trials: int, seed: int) -> dict[str, Any]:
    """A study whose trials sleep 5-10 s (the sampler picks how long, from `seed`) on one GPU
    each, with a GPU-hour budget (its usage fields are what its status shows of GPU time)."""
    manifest = study_manifest(name, trials, 0, "random")
    spec = manifest["spec"]
    spec["algorithm"]["seed"] = seed
    spec["searchSpace"].append({"name": "seconds", "type": "float", "low": 5, "high": 10})
    spec["budget"] |= {"maxGpuHours": 1000, "trialTimeout": "1m"}
    container = spec["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["sh", "-c", BUSY_TRAINER]
    container["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    return manifest


def pod_spans(events: list[tuple[float, str, dict[str, Any]]]) -> dict[str, tuple[float, float]]:
    """Per study, from its first pod's creation to its last pod's end."""
    spans: dict[str, tuple[float, float]] = {}
    for moment, kind, obj in events:
        study = obj["metadata"].get("labels", {}).get(api.STUDY_LABEL)
        if obj.get("kind") != "Pod" or study is None:
            continue
        first, last = spans.get(study, (moment, moment))
        if kind == "ADDED":
            first = min(first, moment)
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            last = max(last, moment)
        spans[study] = (first, last)
    return spans


def bench_busy(studies: int, trials: int, profile: Path | None, **where: Any) -> dict[str, Any]:
    """`studies` studies at once (each with its own seed, so their trials end at different
    times), then the same work for one study: the one that finished last, alone (its seed
    gives the same trials), on the same operator."""
    with operator_run(profile, gpus=studies * PARALLELISM, **where) as run:
        cpu_before = operator_cpu(run.operator.pid)
        started = run.apply(*(busy_manifest(f"busy-{i}", trials, i) for i in range(studies)))
        run.wait(trials * 10 * 5 + 300)
        wall = max(run.stamps.finished.values()) - started
        cpu = operator_cpu(run.operator.pid) - cpu_before
        events = list(run.stamps.events)
        requests = run.operator_requests().copy()
        peak = run.peak_rss_mib()
        run.stamps.events.clear()
        last = max(run.stamps.finished, key=run.stamps.finished.__getitem__)
        alone_started = run.apply(busy_manifest("alone", trials, int(last.split("-")[1])))
        run.wait(trials * 10 * 5 + 120)
        alone_wall = run.stamps.finished["alone"] - alone_started
        alone_gaps = scheduling_gaps(run.stamps.events)
    gaps = scheduling_gaps(events)
    slot_time = PARALLELISM * sum(last - first for first, last in pod_spans(events).values())
    total = studies * trials
    watch_events = Stamps.watch_events_of(events)
    return {
        "studies": studies,
        "trials": total,
        "gaps": len(gaps),
        "p50_ms": 1000 * percentile(gaps, 50),
        "p99_ms": 1000 * percentile(gaps, 99),
        "max_ms": 1000 * max(gaps),
        "idle_percent": 100 * sum(gaps) / slot_time,
        "wall_s": wall,
        "last_study": last,
        "one_study_wall_s": alone_wall,
        "one_study_p50_ms": 1000 * percentile(alone_gaps, 50),
        "wall_vs_one_study": wall / alone_wall,
        "operator_cpu_ms_per_trial": 1000 * cpu / total,
        "watch_events_per_trial": round(sum(watch_events.values()) / total, 2),
        "watch_events_by_kind": {k: round(n / total, 2) for k, n in watch_events.items()},
        "study_status_writes_per_trial": round(
            requests[f"patch {api.STUDY_PLURAL}/status"] / total, 2
        ),
        "requests_per_trial": per_trial(requests, total),
        "peak_rss_mib": peak,
    }


def medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number's median over the rounds' results (one result: itself, whole)."""
    if len(results) == 1:
        return results[0]
    return {
        key: statistics.median(result[key] for result in results)
        for key, value in results[0].items()
        if isinstance(value, int | float)
    }


def ratios(base: dict[str, Any], now: dict[str, Any]) -> dict[str, float]:
    """now / base for each number both results have (below 1: now is lower)."""
    return {
        key: round(now[key] / value, 3)
        for key, value in base.items()
        if isinstance(value, int | float) and isinstance(now.get(key), int | float) and value
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["gap", "overhead", "memory", "busy"], action="append")
    parser.add_argument("--gap-studies", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--gap-trials", type=int, default=12, help="trials per study")
    parser.add_argument("--overhead-trials", type=int, default=200)
    parser.add_argument("--trial-seconds", type=float, default=0.5)
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--memory-studies", type=int, default=50)
    parser.add_argument("--memory-trials", type=int, default=200)
    parser.add_argument("--busy-studies", type=int, default=50)
    parser.add_argument("--busy-trials", type=int, default=12, help="trials per study")
    parser.add_argument("--base", type=Path, help="a checkout whose operator runs first")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs of each side, alternating which goes first; the median of each round's ratios",
    )
    parser.add_argument("--binaries", type=Path, help="run on the real control plane")
    parser.add_argument("--profile", type=Path, help="write the operator's cProfile stats here")
    options = parser.parse_args()
    parts = options.only or ["gap", "overhead", "memory", "busy"]
    sides: list[tuple[str, Path | None]] = [("now", None)]
    if options.base is not None:
        sides.insert(0, ("base", options.base))

    def run(bench: str, measure: Any, *args: Any) -> None:
        results: dict[str, list[dict[str, Any]]] = {side: [] for side, _ in sides}
        for round_number in range(1, options.rounds + 1):
            # Every other round the other side first: the first run of a pair is not favoured.
            for side, source in sides if round_number % 2 else sides[::-1]:
                profile = None
                if options.profile is not None:
                    options.profile.mkdir(parents=True, exist_ok=True)
                    profile = options.profile / f"{bench}-{side}-{round_number}.prof"
                where = {"operator_from": source, "binaries": options.binaries}
                result = measure(*args, profile, **where)
                results[side].append(result)
                line = {"bench": bench, "operator": side, "round": round_number, **result}
                print(json.dumps(line), flush=True)
        if options.rounds > 1:
            for side, side_results in results.items():
                line = {"bench": bench, "operator": side, "median_of_rounds": options.rounds}
                print(json.dumps(line | medians(side_results)), flush=True)
        if len(results) == 2:
            # Each round's pair ran side by side: their ratio cancels the machine's drift
            # between rounds, which the ratio of the two sides' medians would not.
            paired = [ratios(b, n) for b, n in zip(results["base"], results["now"], strict=True)]
            print(json.dumps({"bench": bench, "now/base": medians(paired)}), flush=True)

    if "gap" in parts:
        for studies in options.gap_studies:
            run(f"gap-{studies}", bench_gap, studies, options.gap_trials)
    if "overhead" in parts:
        run(
            "overhead",
            bench_overhead,
            options.overhead_trials,
            options.trial_seconds,
            options.sampler,
        )
    if "memory" in parts:
        run("memory", bench_memory, options.memory_studies, options.memory_trials)
    if "busy" in parts:
        run("busy", bench_busy, options.busy_studies, options.busy_trials)


if __name__ == "__main__":
    main()

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

    .venv/bin/python -m bench.operator_cost                 # everything (long: see --help)
    .venv/bin/python -m bench.operator_cost --only gap --gap-studies 1 10
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
from pathlib import Path
from typing import Any

import kubernetes

from kubetune.spec import api
from kubetune.spec.crd import crds
from kubetune_localcluster.access import ApiRequest
from kubetune_localcluster.cluster import ClusterThread
from kubetune_localcluster.kubelet import KUBELET_USER_AGENT
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


class Stamps(Watch):
    """A watcher registered inside the store: `offer` runs synchronously as each write is
    stored, so its clock reading is the write's time, not a delivery time."""

    def __init__(self) -> None:
        super().__init__(None, None, 1)
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.finished: dict[str, float] = {}
        self.waiting: set[str] = set()
        self.all_finished = threading.Event()

    def offer(self, event: WatchEvent) -> None:
        now = time.perf_counter()
        self.events.append((now, event.type, event.obj))
        phase = (event.obj.get("status") or {}).get("phase")
        name = event.obj["metadata"]["name"]
        if event.obj.get("kind") == api.STUDY_KIND and phase in ("Completed", "Failed"):
            self.finished.setdefault(name, now)
            if self.waiting and self.waiting <= set(self.finished):
                self.all_finished.set()


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


@contextmanager
def operator_run(profile: Path | None) -> Iterator[Run]:
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as folder:
        workdir = Path(folder)
        capacity = {"cpu": "1000", "memory": "1000Gi", "pods": "100000"}
        with ClusterThread(workdir=workdir / "pods", capacity=capacity) as running:
            kubeconfig = running.cluster.write_kubeconfig(workdir / "kubeconfig")
            client = kubernetes.config.new_client_from_config(str(kubeconfig))
            extensions = kubernetes.client.ApiextensionsV1Api(client)
            for crd in crds():
                extensions.create_custom_resource_definition(crd)
            stamps = Stamps()

            async def register() -> None:
                store = running.cluster.server.store
                for storage in ("/pods", f"{api.GROUP}/{api.STUDY_PLURAL}"):
                    store.collection(storage).watches.add(stamps)

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
            with (workdir / "operator.log").open("wb") as log:
                operator = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            run = Run(running, workdir, operator, kubernetes.client.CustomObjectsApi(client))
            run.stamps = stamps

            async def count(request: ApiRequest) -> None:
                if request.user_agent != KUBELET_USER_AGENT:
                    sub = f"/{request.subresource}" if request.subresource else ""
                    run.requests[f"{request.verb} {request.resource}{sub}"] += 1

            running.cluster.server.request_hooks.append(count)
            try:
                # Warm-up: the operator is watching, imports done, one study served.
                run.apply(study_manifest("warmup", 1, 0, "random"))
                run.wait(60)
                stamps.events.clear()
                run.requests.clear()
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
                client.close()


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


def bench_gap(studies: int, trials: int, profile: Path | None) -> dict[str, Any]:
    with operator_run(profile) as run:
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
        "requests_per_trial": per_trial(run.requests, studies * trials),
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
    trials: int, seconds: float, sampler: str, profile: Path | None
) -> dict[str, Any]:
    bare = bare_optuna(trials, seconds, sampler)
    with operator_run(profile) as run:
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


def bench_memory(studies: int, trials: int, profile: Path | None) -> dict[str, Any]:
    with operator_run(profile) as run:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["gap", "overhead", "memory"], action="append")
    parser.add_argument("--gap-studies", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--gap-trials", type=int, default=12, help="trials per study")
    parser.add_argument("--overhead-trials", type=int, default=200)
    parser.add_argument("--trial-seconds", type=float, default=0.5)
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--memory-studies", type=int, default=50)
    parser.add_argument("--memory-trials", type=int, default=200)
    parser.add_argument("--profile", type=Path, help="write the operator's cProfile stats here")
    options = parser.parse_args()
    parts = options.only or ["gap", "overhead", "memory"]

    def profile(name: str) -> Path | None:
        if options.profile is None:
            return None
        options.profile.mkdir(parents=True, exist_ok=True)
        return options.profile / f"{name}.prof"

    if "gap" in parts:
        for studies in options.gap_studies:
            result = bench_gap(studies, options.gap_trials, profile(f"gap-{studies}"))
            print(json.dumps({"bench": "gap", **result}), flush=True)
    if "overhead" in parts:
        result = bench_overhead(
            options.overhead_trials, options.trial_seconds, options.sampler, profile("overhead")
        )
        print(json.dumps({"bench": "overhead", **result}), flush=True)
    if "memory" in parts:
        result = bench_memory(options.memory_studies, options.memory_trials, profile("memory"))
        print(json.dumps({"bench": "memory", **result}), flush=True)


if __name__ == "__main__":
    main()

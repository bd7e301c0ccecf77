"""High availability of `kubetune operator --leader-elect`, on both control planes.

Two replicas compete for a coordination.k8s.io/v1 Lease; only the holder runs kopf. The tests
watch every TuningTrial and pod change while the leader is frozen (SIGSTOP) past the lease and
resumed (SIGCONT), each replica in turn, and while the leader is killed (SIGKILL): never more
active trials than the parallelism, never a trial moved out of a terminal state, never two pods
for one trial, no trial number lost or duplicated. A candidate answers its liveness probe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from kubetune.spec import api
from kubetune.spec.trial import TrialState
from kubetune_localcluster.environment import free_port
from tests.e2e.test_operator import apply, example
from tests.localcluster.conftest import Kube

LEASE = "kubetune-ha"
# Short election times so that a takeover takes seconds (the defaults are 15, 10 and 2 s).
LEASE_DURATION = 3.0
RENEW_DEADLINE = 2.0
RETRY_PERIOD = 0.5
ELECT = [
    "--leader-elect",
    "--leader-elect-resource-name",
    LEASE,
    "--leader-elect-resource-namespace",
    "default",
    "--leader-elect-lease-duration",
    str(LEASE_DURATION),
    "--leader-elect-renew-deadline",
    str(RENEW_DEADLINE),
    "--leader-elect-retry-period",
    str(RETRY_PERIOD),
]
ACQUIRED = "acquired the lease"
TERMINAL = {state.value for state in TrialState if not state.is_active}


class Replica:
    """One `kubetune operator` process whose log lines are read as they come, so that a test
    can wait for a line instead of polling."""

    def __init__(
        self, kube: Kube, log: Path, *options: str, changed: threading.Condition | None = None
    ) -> None:
        self.kube = kube
        self.log = log
        self.options = options
        self.lines: list[str] = []
        self.exited = False
        # Shared by replicas that a test waits on together.
        self._changed = changed or threading.Condition()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        with self._changed:
            self.exited = False
        self.process = subprocess.Popen(
            # No metrics server: two replicas on one machine would compete for its port.
            # --verbose: the test reads which replica handles what from kopf's handler lines.
            [
                sys.executable,
                "-m",
                "kubetune",
                "operator",
                "--metrics-port",
                "0",
                "--verbose",
                *self.options,
            ],
            env=self.kube.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with self.log.open("a") as out:
            for line in process.stdout:
                out.write(line)
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self.exited = True
            self._changed.notify_all()

    def index_of(self, text: str) -> int | None:
        """The number of the first log line containing text, if one has come yet."""
        with self._changed:
            return next((i for i, line in enumerate(self.lines) if text in line), None)

    def wait_for(self, text: str, timeout: float = 30) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self.index_of(text) is not None or self.exited, timeout)
        index = self.index_of(text)
        assert index is not None, f"no log line with {text!r}:\n{''.join(self.lines)}"
        return index

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    def wait_for_count(self, text: str, count: int, timeout: float = 30) -> None:
        """Until `count` log lines contain text (a restarted replica appends to its log)."""
        with self._changed:
            self._changed.wait_for(lambda: self.count(text) >= count, timeout)
        assert self.count(text) >= count, f"not {count} lines with {text!r}:\n{''.join(self.lines)}"

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to hand over politely (no keep-alive withdrawn), as when a node
        dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def replicas(crds: Kube, tmp_path: Path) -> Iterator[list[Replica]]:
    """Replicas a test starts; stopped afterwards, their logs printed for a failure."""
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()
        if replica.log.exists():
            print(f"--- {replica.log.name}\n{replica.log.read_text()[-10000:]}")


class Changes:
    """Every change of a study's TuningTrials and pods, from watches started before the study:
    what the invariants are checked on, event by event."""

    def __init__(self, kube: Kube, study: str, parallelism: int) -> None:
        self.study = study
        self.parallelism = parallelism
        self.client = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
        self.states: dict[str, str] = {}
        self.max_active = 0
        self.violations: list[str] = []
        self.pods_added: Counter[str] = Counter()  # by trial name
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(kind,), daemon=True)
            for kind in ("trials", "pods")
        ]
        for thread in self._threads:
            thread.start()

    def _watch(self, kind: str) -> None:
        selector = f"{api.STUDY_LABEL}={self.study}"
        custom = kubernetes.client.CustomObjectsApi(self.client)
        core = kubernetes.client.CoreV1Api(self.client)
        version = ""
        while not self._stop.is_set():
            if kind == "trials":
                stream = kubernetes.watch.Watch().stream(
                    custom.list_namespaced_custom_object,
                    api.GROUP,
                    api.VERSION,
                    "default",
                    api.TRIAL_PLURAL,
                    label_selector=selector,
                    resource_version=version or None,
                    timeout_seconds=2,
                )
            else:
                stream = kubernetes.watch.Watch().stream(
                    core.list_namespaced_pod,
                    "default",
                    label_selector=selector,
                    resource_version=version or None,
                    timeout_seconds=2,
                )
            for event in stream:
                obj = event["object"]
                if kind == "trials":
                    version = obj["metadata"]["resourceVersion"]
                    self._trial(event["type"], obj)
                else:
                    version = obj.metadata.resource_version
                    if event["type"] == "ADDED":
                        self.pods_added[obj.metadata.owner_references[0].name] += 1

    def _trial(self, kind: str, trial: dict[str, Any]) -> None:
        name = trial["metadata"]["name"]
        if kind == "DELETED":
            return
        state = (trial.get("status") or {}).get("state") or TrialState.PENDING.value
        before = self.states.get(name)
        if before in TERMINAL and state != before:
            self.violations.append(f"{name}: {before} -> {state}")
        self.states[name] = state
        active = sum(s not in TERMINAL for s in self.states.values())
        self.max_active = max(self.max_active, active)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.client.close()

    def check(self) -> None:
        assert self.violations == []
        assert self.max_active <= self.parallelism
        # One pod for each trial, ever (pods past podRetention are deleted by now).
        assert set(self.pods_added) == set(self.states)
        assert set(self.pods_added.values()) == {1}, self.pods_added


def lease_holder(kube: Kube) -> str:
    lease = kube.get_json("lease", LEASE, "-n", "default")
    return str(lease["spec"].get("holderIdentity") or "")


def slow_study(name: str, trials: int, parallelism: int, seconds: float) -> dict[str, Any]:
    study = example("synthetic-quadratic.yaml", maxTrials=trials, parallelism=parallelism)
    study["metadata"]["name"] = name
    container = study["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"][2] = f"import time; time.sleep({seconds})\n" + container["command"][2]
    return study


def check_completed(kube: Kube, study: str, trials: int) -> None:
    selector = f"{api.STUDY_LABEL}={study}"
    found = kube.get_json("tuningtrials", "-l", selector)["items"]
    assert sorted(t["spec"]["number"] for t in found) == list(range(trials))
    assert {t["status"]["state"] for t in found} == {"Succeeded"}


def started_pair(kube: Kube, tmp_path: Path, *options: str) -> list[Replica]:
    """Two replicas with --leader-elect, started together, whose logs one condition signals."""
    changed = threading.Condition()
    pair = [
        Replica(kube, tmp_path / f"replica-{i}.log", *ELECT, *options, changed=changed)
        for i in range(2)
    ]
    for replica in pair:
        replica.start()
    return pair


def leader_of(pair: list[Replica], acquired: list[int], timeout: float = 30) -> int:
    """The replica that acquired the lease next (each logs it), waiting for it; `acquired`
    counts the acquisitions seen so far, per replica. Two new ones at once fail the test."""

    def new() -> list[int]:
        return [i for i, replica in enumerate(pair) if replica.count(ACQUIRED) > acquired[i]]

    with pair[0]._changed:
        pair[0]._changed.wait_for(lambda: bool(new()), timeout)
    found = new()
    assert len(found) == 1, f"acquisitions {found} after {acquired}"
    acquired[found[0]] += 1
    return found[0]


def test_replicas_started_together_one_leads_and_a_frozen_leader_overwrites_nothing(
    crds: Kube, replicas: list[Replica], tmp_path: Path
) -> None:
    kube = crds
    pair = started_pair(kube, tmp_path)
    replicas += pair
    acquired = [0, 0]
    leader = leader_of(pair, acquired)
    name, trials, parallelism = "ha-freeze", 24, 3
    changes = Changes(kube, name, parallelism)
    try:
        apply(kube, slow_study(name, trials, parallelism, seconds=1.5))
        # Each replica in turn: the leader frozen past the lease, the other takes over, the
        # frozen one resumed: it finds the lease gone and exits (status 1), writing nothing.
        for _ in range(2):
            wait_for_trials(kube, name, sum(acquired) * 4)
            frozen = pair[leader]
            frozen.freeze()
            try:
                leader = leader_of(pair, acquired)
                assert pair[leader] is not frozen
            finally:
                frozen.thaw()
            assert frozen.wait_exit(timeout=LEASE_DURATION + 10) == 1
            assert frozen.count("leader election lost") >= 1
            frozen.start()  # as the kubelet restarts the pod: a candidate again
        kube.wait_for(
            f"tuningstudy/{name}", condition="jsonpath={.status.phase}=Completed", timeout=120
        )
    finally:
        changes.close()
    changes.check()
    check_completed(kube, name, trials)


def test_the_standby_takes_over_when_the_leader_is_killed(
    crds: Kube, replicas: list[Replica], tmp_path: Path
) -> None:
    kube = crds
    pair = started_pair(kube, tmp_path)
    replicas += pair
    acquired = [0, 0]
    leader = leader_of(pair, acquired)
    name, trials, parallelism = "ha-kill", 12, 3
    changes = Changes(kube, name, parallelism)
    try:
        apply(kube, slow_study(name, trials, parallelism, seconds=0.4))
        assert wait_for_trials(kube, name, 4) < trials  # most of it is left for the standby
        standby = 1 - leader
        assert standby_idle(pair[standby])
        killed = time.monotonic()
        pair[leader].kill()
        assert leader_of(pair, acquired) == standby
        took_over = time.monotonic() - killed
        # The lease expires LEASE_DURATION after the standby last saw it renewed; it tries
        # every 1 to 2.2 retry periods.
        assert took_over < LEASE_DURATION + 2.2 * RETRY_PERIOD + 2, took_over
        kube.wait_for(
            f"tuningstudy/{name}", condition="jsonpath={.status.phase}=Completed", timeout=60
        )
    finally:
        changes.close()
    changes.check()
    check_completed(kube, name, trials)


def standby_idle(replica: Replica) -> bool:
    """A candidate runs no kopf handler."""
    return replica.index_of("Handler '") is None and replica.count(ACQUIRED) == 0


def test_a_clean_shutdown_releases_the_lease(
    crds: Kube, replicas: list[Replica], tmp_path: Path
) -> None:
    """SIGTERM: the leader gives the lease up, and the standby takes it at its next try
    instead of waiting for the lease to expire."""
    kube = crds
    pair = started_pair(kube, tmp_path, "--leader-elect-lease-duration", "30")
    replicas += pair
    acquired = [0, 0]
    leader = leader_of(pair, acquired)
    stopped = time.monotonic()
    pair[leader].stop()
    assert pair[leader].wait_exit(timeout=1) == 0
    assert pair[leader].count("released the lease") == 1
    assert leader_of(pair, acquired) == 1 - leader
    assert time.monotonic() - stopped < 10  # far less than the 30 s lease
    assert lease_holder(kube) != ""


def wait_for_trials(kube: Kube, study: str, count: int, timeout: int = 60) -> int:
    """The study's trial count, once it is at least `count` (reacting to status changes)."""
    client = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
    custom = kubernetes.client.CustomObjectsApi(client)
    stream = kubernetes.watch.Watch().stream(
        custom.list_namespaced_custom_object,
        "kubetune.io",
        "v1alpha1",
        "default",
        "tuningstudies",
        field_selector=f"metadata.name={study}",
        timeout_seconds=timeout,
    )
    total = 0
    try:
        for event in stream:
            total = (event["object"].get("status") or {}).get("trials", {}).get("total", 0)
            if total >= count:
                break
    finally:
        client.close()
    assert total >= count, total
    return int(total)


def test_the_liveness_endpoint_answers(crds: Kube, replicas: list[Replica], tmp_path: Path) -> None:
    kube = crds
    url = f"http://127.0.0.1:{free_port()}/healthz"
    # --verbose: kopf logs the moment it serves the endpoint at debug level.
    operator = Replica(kube, tmp_path / "operator.log", "--liveness", url, "--verbose")
    replicas.append(operator)
    operator.start()
    operator.wait_for(f"Serving health status at {url}")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        # No probe handlers: kopf answers with the (empty) results of @kopf.on.probe handlers.
        assert json.loads(response.read()) == {}


def test_a_candidate_answers_its_liveness_probe(
    crds: Kube, replicas: list[Replica], tmp_path: Path
) -> None:
    """A standby is alive: its probe must not restart it for waiting."""
    kube = crds
    urls = [f"http://127.0.0.1:{free_port()}/healthz" for _ in range(2)]
    changed = threading.Condition()
    pair = [
        Replica(kube, tmp_path / f"replica-{i}.log", *ELECT, "--liveness", url, changed=changed)
        for i, url in enumerate(urls)
    ]
    replicas += pair
    pair[0].start()
    leader_of(pair, [0, 0])
    pair[1].start()
    pair[1].wait_for("is a candidate for the lease")
    with urllib.request.urlopen(urls[1], timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read()) == {"leader": False}

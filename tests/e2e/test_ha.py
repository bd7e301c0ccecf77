"""High availability and health endpoints of `kubetune operator` on the embedded control plane.

Two replicas peer through kopf's peering object (crds/kopf-peering.yaml): the one with the
higher priority acts, the other waits; when the active one is killed with SIGKILL, the standby
takes over once the dead replica's keep-alive expires, and the study completes with no trial
number lost or duplicated. The liveness endpoint answers as a kubelet's probe expects.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.controlplane.conftest import Kube
from tests.e2e.test_operator import apply, example, get_json, wait_for_phase

PEERING = "kubetune"
# Seconds a replica's keep-alive stays valid: how long the standby waits after a SIGKILL.
LIFETIME = 3


class Replica:
    """One `kubetune operator` process whose log lines are read as they come, so that a test
    can wait for a line instead of polling."""

    def __init__(self, kube: Kube, log: Path, *options: str) -> None:
        self.kube = kube
        self.log = log
        self.options = options
        self.lines: list[str] = []
        self.exited = False
        self._changed = threading.Condition()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
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


def peering_object(namespace: str | None) -> dict[str, Any]:
    if namespace is None:
        return {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": PEERING},
        }
    return {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": PEERING, "namespace": namespace},
    }


def wait_for_peers(kube: Kube, namespace: str | None, count: int) -> dict[str, Any]:
    """The peering object's keep-alives, once `count` replicas have written theirs."""
    client = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
    custom = kubernetes.client.CustomObjectsApi(client)
    if namespace is None:
        listing: tuple[Any, ...] = (custom.list_cluster_custom_object, "kopf.dev", "v1")
        plural = "clusterkopfpeerings"
    else:
        listing = (custom.list_namespaced_custom_object, "kopf.dev", "v1", namespace)
        plural = "kopfpeerings"
    stream = kubernetes.watch.Watch().stream(
        *listing, plural, field_selector=f"metadata.name={PEERING}", timeout_seconds=30
    )
    peers: dict[str, Any] = {}
    try:
        for event in stream:
            peers = event["object"].get("status") or {}
            if len(peers) == count:
                break
    finally:
        client.close()
    assert len(peers) == count, peers
    return peers


@pytest.mark.parametrize("namespace", [None, "default"], ids=["clusterwide", "namespaced"])
def test_the_standby_replica_takes_over_when_the_active_one_dies(
    crds: Kube, replicas: list[Replica], tmp_path: Path, namespace: str | None
) -> None:
    kube = crds
    scope = [] if namespace is None else ["--namespace", namespace]
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(peering_object(namespace)))
    options = ["--peering", PEERING, "--peering-lifetime", str(LIFETIME), *scope]
    active = Replica(kube, tmp_path / "active.log", *options, "--priority", "20")
    standby = Replica(kube, tmp_path / "standby.log", *options, "--priority", "10")
    replicas += [active, standby]
    # A replica with mandatory peering starts paused; it resumes on finding no replica of
    # a higher or equal priority.
    active.start()
    active.wait_for("Resuming operations after the pause")
    standby.start()
    peers = wait_for_peers(kube, namespace, 2)
    assert sorted(peer["priority"] for peer in peers.values()) == [10, 20]
    assert {peer["lifetime"] for peer in peers.values()} == {LIFETIME}

    study = example("synthetic-quadratic.yaml", maxTrials=12, parallelism=3)
    study["metadata"]["name"] = f"ha-{namespace or 'cluster'}"
    container = study["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"][2] = "import time; time.sleep(0.4)\n" + container["command"][2]
    apply(kube, study)
    started = wait_for_trials(kube, study["metadata"]["name"], 4)
    assert started < 12  # most of the study is left for the standby
    # Until now only the active replica has handled anything.
    assert standby.index_of("Handler '") is None
    assert standby.index_of("Resuming operations") is None

    killed = time.monotonic()
    active.kill()
    resumed = standby.wait_for("Resuming operations after the pause", timeout=LIFETIME + 15)
    took_over = time.monotonic() - killed
    # The standby waits for the dead replica's keep-alive to expire, not longer.
    assert took_over < LIFETIME + 5, took_over
    first_handled = standby.wait_for("Handler '")
    assert first_handled > resumed
    wait_for_phase(kube, study["metadata"]["name"], "Completed", timeout=60)

    selector = f"kubetune.io/study={study['metadata']['name']}"
    trials = get_json(kube, "tuningtrials", "-l", selector)["items"]
    assert sorted(t["spec"]["number"] for t in trials) == list(range(12))
    assert {t["status"]["state"] for t in trials} == {"Succeeded"}
    pods = get_json(kube, "pods", "-l", selector)["items"]
    owners = sorted(p["metadata"]["ownerReferences"][0]["name"] for p in pods)
    assert owners == sorted(t["metadata"]["name"] for t in trials)
    # The standby removed the dead replica's keep-alive when it took over.
    where = [] if namespace is None else ["-n", namespace]
    kind = "clusterkopfpeering" if namespace is None else "kopfpeering"
    remaining = get_json(kube, kind, PEERING, *where).get("status") or {}
    assert [peer["priority"] for peer in remaining.values()] == [10]


def wait_for_trials(kube: Kube, study: str, count: int) -> int:
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
        timeout_seconds=30,
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


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

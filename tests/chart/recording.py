"""A recorded end-to-end run of `kubetune operator` on the embedded control plane: every
resource request it makes, as Kubernetes authorization sees it (verb, group, resource,
subresource, namespace), for comparing with the chart's RBAC.

A run applies, in each namespace, a study that exercises every path of the operator (trials
created, reported through the pod annotation by kubetune_report, one pruned, one failed, the
study completed and then deleted) and a study reading its metrics from Prometheus with a
bearer token from a Secret and a CA bundle from a ConfigMap (the operator reads both; the
Prometheus URL answers nothing, which needs no more RBAC), for one watch mode (cluster-wide or
--namespace) with or without leader election.
The requests are told apart by their User-Agent: kopf's client says "kopf/...", the operator's
`kubernetes` client "OpenAPI-Generator/...", the reporting helper "Python-urllib/..."; the test
itself drives the cluster with kubectl only ("kubectl/..."), and the kubelet is aiohttp.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune_localcluster.access import ApiRequest
from tests.localcluster.conftest import Kube

OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")
REPORTER_AGENTS = ("Python-urllib/",)
STUDY_MAX_TRIALS = 4


@dataclass(frozen=True, order=True)
class Call:
    """One permission a request needs: the API group, resource[/subresource] and RBAC verb,
    in a namespace (None: a cluster-scoped resource, or across all namespaces)."""

    group: str
    resource: str
    verb: str
    namespace: str | None

    @property
    def rule(self) -> tuple[str, str, str]:
        return self.group, self.resource, self.verb


@dataclass
class Recorder:
    """Collects the calls of the clients whose User-Agent starts with one of `agents`."""

    agents: tuple[str, ...]
    calls: set[Call] = field(default_factory=set)
    user_agents: set[str] = field(default_factory=set)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, wanted: set[Call], timeout: float = 30) -> None:
        """Until every wanted call has been made (each request wakes the wait)."""
        with self._changed:
            self._changed.wait_for(lambda: wanted <= self.calls, timeout)
            missing = sorted(str(call) for call in wanted - self.calls)
        assert not missing, f"not called in {timeout} s: {missing}"

    async def __call__(self, request: ApiRequest) -> None:
        with self._changed:
            self._changed.notify_all()
            self.user_agents.add(request.user_agent)
            if request.user_agent.startswith(self.agents):
                resource = request.resource
                if request.subresource:
                    resource = f"{resource}/{request.subresource}"
                self.calls.add(Call(request.group, resource, request.verb, request.namespace))


@contextmanager
def recording(kube: Kube, *agents: str) -> Iterator[Recorder]:
    recorder = Recorder(agents)
    hooks = kube.running.cluster.server.request_hooks
    hooks.append(recorder)
    try:
        yield recorder
    finally:
        hooks.remove(recorder)


# The trainer: reports each step through the pod annotation (kubetune_report, with the
# kubeconfig the local kubelet gives each pod). Trials 0 and 1 do well; trial 2 reports a loss
# far worse than theirs at every step and is pruned by the median pruner; trial 3 fails.
TRAINER = """\
import os, sys, time
from kubetune_report import report, report_final
number = int(os.environ["KUBETUNE_TRIAL_NUMBER"])
if number == 3:
    sys.exit("trial 3 fails on purpose")
steps = 300 if number == 2 else 3
for step in range(steps):
    loss = 1000.0 if number == 2 else 1.0 / (step + 1)
    report(step, loss=loss)
    # The annotation holds the latest report: slow enough for the operator to see each step.
    time.sleep(0.1)
report_final(loss=loss)
"""


PROMETHEUS_SECRET = "prometheus-reader"
PROMETHEUS_CA = "prometheus-ca"


def prometheus_study(name: str, namespace: str) -> list[dict[str, Any]]:
    """A study whose metrics come from Prometheus, and the Secret and ConfigMap it names."""
    document = study(name, namespace)
    document["spec"]["metricsSource"] = {
        "prometheus": {
            # Nothing listens on port 1: the reads fail after the token and CA are read.
            "url": "http://127.0.0.1:1",
            "query": 'kubetune_trial_metric{pod="${trial.pod}", metric="${metric}"}',
            "pollInterval": "1s",
            "finalDelay": "1s",
            "retries": 0,
            "bearerTokenSecret": {"name": PROMETHEUS_SECRET, "key": "token"},
            "caConfigMap": {"name": PROMETHEUS_CA, "key": "ca.crt"},
        }
    }
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = [sys.executable, "-c", "import time; time.sleep(0.5)"]
    metadata = {"namespace": namespace}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": PROMETHEUS_SECRET, **metadata},
        "stringData": {"token": "not-a-real-token"},
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": PROMETHEUS_CA, **metadata},
        "data": {"ca.crt": "not a certificate"},
    }
    return [secret, config_map, document]


def study(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningStudy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "objective": {"metrics": [{"name": "loss", "direction": "minimize"}]},
            "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
            "algorithm": {"name": "random", "seed": 7},
            "pruner": {"name": "median", "startupTrials": 2, "warmupSteps": 1},
            "budget": {
                "maxTrials": STUDY_MAX_TRIALS,
                "parallelism": 1,
                "maxFailedTrials": 2,
            },
            # Keep no pod but the best trial's: the operator deletes the others' (pods delete).
            "podRetention": {"succeeded": 0, "failed": 0},
            "trialTemplate": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "python:3.12-slim",
                            "command": [sys.executable, "-c", textwrap.dedent(TRAINER)],
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        }
                    ],
                }
            },
        },
    }


@dataclass
class Run:
    """What one recorded run saw: the operator's calls and the reporting helper's, and the
    trial states each study reached (so a test can check that the run took every path)."""

    operator: set[Call]
    reporter: set[Call]
    states: dict[str, list[str]]
    user_agents: set[str]


def run_operator(kube: Kube, log: Path, args: list[str], study_namespaces: list[str]) -> Run:
    """Start `kubetune operator` with these arguments, run a study in each namespace to
    completion (all at once) and delete them; the calls made meanwhile."""
    name, sourced = "recorded", "prometheus-sourced"
    with (
        recording(kube, *OPERATOR_AGENTS) as operator,
        recording(kube, *REPORTER_AGENTS) as reporter,
        log.open("ab") as out,
    ):
        process = subprocess.Popen(
            [sys.executable, "-m", "kubetune", "operator", *args],
            env=kube.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            for namespace in study_namespaces:
                documents = [study(name, namespace), *prometheus_study(sourced, namespace)]
                stream = "\n---\n".join(json.dumps(document) for document in documents)
                kube.kubectl("apply", "-f", "-", stdin=stream)
            states = {}
            for namespace in study_namespaces:
                kube.wait_for(
                    f"tuningstudy/{name}",
                    "-n",
                    namespace,
                    condition="jsonpath={.status.completionTime}",
                    timeout=60,
                )
                trials = kube.get_json(
                    "tuningtrials", "-n", namespace, "-l", f"kubetune.io/study={name}"
                )["items"]
                trials.sort(key=lambda trial: trial["spec"]["number"])
                states[namespace] = [trial["status"]["state"] for trial in trials]
            # The Prometheus-sourced studies' reads of their token and CA.
            operator.wait_for(
                {
                    Call("", plural, "get", namespace)
                    for plural in ("secrets", "configmaps")
                    for namespace in study_namespaces
                }
            )
            for namespace in study_namespaces:
                kube.kubectl(
                    "delete",
                    "tuningstudy",
                    name,
                    sourced,
                    "-n",
                    namespace,
                    "--wait=true",
                    timeout=60,
                )
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    return Run(operator.calls, reporter.calls, states, operator.user_agents)

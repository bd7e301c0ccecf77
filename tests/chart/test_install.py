"""`helm install` of the chart with its default values on the real control plane, as a platform
team installs it: the operator runs as the chart's Deployment pod (the local kubelet runs the
operator image's entrypoint, `kubetune operator`, from the installed code), under the chart's
ServiceAccount, with every request checked by the real RBAC authorizer against the chart's
roles, and it runs a study to Completed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART
from tests.localcluster.conftest import Kube, install_crds, kube_binaries, local_kube

RELEASE = "kubetune"
NAMESPACE = "kubetune-system"
ROOT = Path(__file__).resolve().parents[2]


def helm(kube: Kube, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(kube_binaries() / "helm"), *args],
        capture_output=True,
        text=True,
        env=kube.env,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    with local_kube(tmp_path_factory.mktemp("helm"), plane="real") as kube:
        helm(
            kube,
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            "4m",
        )
        try:
            yield kube
        finally:
            pods = kube.kubectl("logs", "-n", NAMESPACE, "deploy/kubetune", check=False)
            print("operator log:\n", pods.stdout[-20000:], pods.stderr[-2000:])


def operator_pod(kube: Kube) -> dict[str, Any]:
    operator = "app.kubernetes.io/name=kubetune,app.kubernetes.io/component=operator"
    pods = kube.get_json("pods", "-n", NAMESPACE, "-l", operator)["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    assert len(running) == 1, [p["status"] for p in pods]
    return running[0]


def test_the_operator_runs_as_the_charts_deployment_pod(installed: Kube) -> None:
    kube = installed
    pod = operator_pod(kube)
    account = pod["spec"]["serviceAccountName"]
    assert account.startswith("kubetune")
    # Scheduled by the real kube-scheduler onto the local kubelet's node.
    assert pod["spec"]["nodeName"] == "kubetune-local"
    owner = pod["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ReplicaSet"  # made by the real deployment controller
    # The ServiceAccount admission plugin gave it a projected token volume.
    volumes = {v["name"] for v in pod["spec"]["volumes"]}
    assert any(name.startswith("kube-api-access-") for name in volumes)
    # The chart's RBAC, as the real authorizer answers for that account.
    user = f"system:serviceaccount:{NAMESPACE}:{account}"
    can = {
        what: kube.kubectl("auth", "can-i", "--as", user, *what.split(), check=False).stdout.strip()
        for what in (
            "create pods -n default",
            "delete pods -n default",
            "patch tuningstudies.kubetune.io/status -n default",
            "create tuningtrials.kubetune.io -n default",
            "create events -n default",
            "delete nodes",
            "delete namespaces",
            "create clusterrolebindings",
        )
    }
    assert can == {
        "create pods -n default": "yes",
        "delete pods -n default": "yes",
        "patch tuningstudies.kubetune.io/status -n default": "yes",
        "create tuningtrials.kubetune.io -n default": "yes",
        "create events -n default": "yes",
        "delete nodes": "no",
        "delete namespaces": "no",
        "create clusterrolebindings": "no",
    }


def test_the_installed_operator_runs_a_study_to_completed(installed: Kube) -> None:
    kube = installed
    install_crds(kube)  # already there from the chart's crds/: unchanged
    study: dict[str, Any] = yaml.safe_load(
        (ROOT / "examples" / "synthetic-quadratic.yaml").read_text()
    )
    study["spec"]["budget"].update(maxTrials=4, parallelism=2)
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(study))
    kube.wait_for(
        "tuningstudy/synthetic-quadratic",
        condition="jsonpath={.status.phase}=Completed",
        timeout=180,
    )
    status = kube.get_json("tuningstudy", "synthetic-quadratic")["status"]
    assert status["trials"]["succeeded"] == 4
    trials = kube.get_json("tuningtrials", "-l", "kubetune.io/study=synthetic-quadratic")
    assert sorted(t["spec"]["number"] for t in trials["items"]) == list(range(4))
    pods = kube.get_json("pods", "-l", "kubetune.io/study=synthetic-quadratic")["items"]
    assert len(pods) == 4, "a finished trial keeps its pod"
    assert {p["spec"]["nodeName"] for p in pods} == {"kubetune-local"}
    # kubectl logs goes through the API server to the kubelet's own endpoint: the operator
    # logged in with its in-cluster token.
    log = kube.kubectl("logs", "-n", NAMESPACE, "deploy/kubetune").stdout
    assert "Initial authentication has finished" in log
    assert "Forbidden" not in log


def test_the_dashboard_account_may_read_studies_and_trials_and_nothing_else(
    installed: Kube,
) -> None:
    kube = installed
    # Without --wait: the RBAC objects are what the real authorizer answers from, whether or
    # not the dashboard's pod is up yet.
    helm(
        kube,
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "dashboard.enabled=true",
    )
    account = kube.get_json("serviceaccount", "-n", NAMESPACE, f"{RELEASE}-dashboard")
    user = f"system:serviceaccount:{NAMESPACE}:{account['metadata']['name']}"
    reads = [
        f"{verb} {resource}.kubetune.io -n {namespace}"
        for verb in ("get", "list", "watch")
        for resource in ("tuningstudies", "tuningtrials")
        for namespace in ("default", NAMESPACE)
    ]
    writes = [
        f"{verb} {resource} -n default"
        for verb in ("create", "patch", "update", "delete", "deletecollection")
        for resource in (
            "tuningstudies.kubetune.io",
            "tuningtrials.kubetune.io",
            "tuningstudies.kubetune.io/status",
            "pods",
        )
    ]
    others = ["list pods -n default", "get secrets -n default", "list namespaces", "list nodes"]
    can = {
        what: kube.kubectl("auth", "can-i", "--as", user, *what.split(), check=False).stdout.strip()
        for what in reads + writes + others
    }
    assert can == {
        **dict.fromkeys(reads, "yes"),
        **dict.fromkeys(writes, "no"),
        **dict.fromkeys(others, "no"),
    }

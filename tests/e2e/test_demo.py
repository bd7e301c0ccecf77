"""`kubetune up` as a user runs it: it brings up the control plane and the operator, runs the
studies to their end, prints them, and leaves no process behind, also when Ctrl-C cuts it
short."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from kubetune.up.manifests import capacity_for, load_studies
from kubetune_localcluster.quantities import parse_quantity
from tests.e2e.conftest import ROOT
from tests.eventually import eventually
from tests.localcluster.conftest import PLANES, kube_binaries

KUBETUNE = str(Path(sys.executable).parent / "kubetune")
MARKER_ENV = "KUBETUNE_TEST_RUN"


def study_file(
    tmp_path: Path, name: str = "quadratic", **budget: Any
) -> tuple[Path, dict[str, Any]]:
    """The synthetic example under another name and budget, written as JSON (PyYAML would
    write the parameter name y unquoted, which kubectl's YAML reads as true)."""
    document: dict[str, Any] = yaml.safe_load(
        (ROOT / "examples" / "synthetic-quadratic.yaml").read_text()
    )
    document["metadata"]["name"] = name
    document["spec"]["budget"].update(budget)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(document))
    return path, document


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds the marker: `kubetune up` passes its own
    environment to the operator and, through the kubelet, to every pod process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours
            continue
        if f"{MARKER_ENV}={marker}".encode() in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def kill_leftovers(marker: str) -> None:
    for pid in processes_with(marker):  # only when a test failed: leave nothing behind
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("plane", PLANES)
def test_up_runs_the_study_to_its_end_and_prints_it_as_json(tmp_path: Path, plane: str) -> None:
    path, _ = study_file(tmp_path, maxTrials=5, parallelism=3)
    kubeconfig = tmp_path / "kubeconfig"
    marker = str(uuid.uuid4())
    # On the real plane etcd, kube-apiserver, the controller manager and the scheduler are
    # among the processes that must all be gone at the end.
    binaries = ["--binaries", str(kube_binaries())] if plane == "real" else []
    try:
        result = subprocess.run(
            [KUBETUNE, "up", "--json", "--kubeconfig", str(kubeconfig), *binaries, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"},
            check=False,
        )
        assert result.returncode == 0, result.stderr[-5000:]
        # stdout is the JSON alone; what people need to watch it goes to stderr.
        listing = json.loads(result.stdout)
        assert f"export KUBECONFIG={kubeconfig.resolve()}" in result.stderr
        assert kubeconfig.exists()
        assert processes_with(marker) == []
    finally:
        kill_leftovers(marker)
    assert listing["kind"] == "List"
    (study,) = listing["items"]
    assert study["kind"] == "TuningStudy"
    assert study["metadata"]["name"] == "quadratic"
    status = study["status"]
    assert status["phase"] == "Completed"
    assert status["trials"]["succeeded"] == 5
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Completed"]["reason"] == "MaxTrialsReached"
    best = status["bestTrial"]
    params = best["params"]
    # The best value is the trainer's own formula at the best parameters.
    expected = (params["x"] - 2) ** 2 + (params["y"] + 1) ** 2
    if params["shape"] == "ridge":
        expected += 1 + params["tilt"] * abs(params["x"] - params["y"])
    assert abs(best["value"] - expected) < 1e-9


def test_up_exits_1_when_no_trial_succeeds(tmp_path: Path) -> None:
    # A typo in the command: every trial fails. The study fails fast (three failures before any
    # success) instead of burning its 40 trials, and `kubetune up` says so with status 1.
    path, document = study_file(tmp_path, name="typo", parallelism=1)
    document["spec"]["budget"].pop("maxFailedTrials", None)  # the default: fail fast
    (container,) = document["spec"]["trialTemplate"]["spec"]["containers"]
    container["command"] = [sys.executable, "-c", "import sys; sys.exit(127)"]
    path.write_text(json.dumps(document))
    marker = str(uuid.uuid4())
    try:
        result = subprocess.run(
            [KUBETUNE, "up", "--json", "--kubeconfig", str(tmp_path / "kubeconfig"), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"},
            check=False,
        )
    finally:
        kill_leftovers(marker)
    assert result.returncode == 1, result.stderr[-5000:]
    (study,) = json.loads(result.stdout)["items"]
    status = study["status"]
    assert status["phase"] == "Failed"
    assert status["trials"]["total"] == 3, status
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Failed"]["reason"] == "NoTrialSucceeded"
    assert "trial 0 Failed (Error): exit code 127" in conditions["Failed"]["message"]


def test_ctrl_c_stops_the_operator_and_every_pod(tmp_path: Path) -> None:
    path, document = study_file(tmp_path, name="sleepy", maxTrials=2, parallelism=2)
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["python3", "-c", "import time; time.sleep(300)"]
    path.write_text(json.dumps(document))
    kubeconfig = tmp_path / "kubeconfig"
    marker = str(uuid.uuid4())
    up = subprocess.Popen(
        [KUBETUNE, "up", "--kubeconfig", str(kubeconfig), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert up.stdout is not None
        printed = []
        while "kubectl get tuningstudies -w" not in "".join(printed[-1:]):
            line = up.stdout.readline()
            assert line, "kubetune up ended early:\n" + "".join(printed)
            printed.append(line)
        # Both trials' pods run: the operator and the kubelet are at work.
        client = kubernetes.config.new_client_from_config(str(kubeconfig))
        running: set[str] = set()
        for event in kubernetes.watch.Watch().stream(
            kubernetes.client.CoreV1Api(client).list_namespaced_pod,
            "default",
            label_selector="kubetune.io/study=sleepy",
            timeout_seconds=60,
        ):
            if event["object"].status.phase == "Running":
                running.add(event["object"].metadata.name)
            if len(running) == 2:
                break
        assert running == {"sleepy-0", "sleepy-1"}
        # The operator's status write can trail the pods' start (a conflict with kopf's own
        # finalizer write is retried a moment later): the summary must show it Running.
        studies = kubernetes.client.CustomObjectsApi(client)

        def phase() -> str:
            study = studies.get_namespaced_custom_object(
                "kubetune.io", "v1alpha1", "default", "tuningstudies", "sleepy"
            )
            return str((study.get("status") or {}).get("phase"))

        eventually(lambda: phase() == "Running", timeout=30, message="the study Running")
        client.close()
        assert len(processes_with(marker)) >= 3  # the operator and two pods

        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
        assert up.returncode == 130, rest
        assert "Interrupted before every study ended." in rest
        assert "Study sleepy: Running" in rest
        assert processes_with(marker) == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        kill_leftovers(marker)


def test_an_invalid_manifest_is_refused_before_anything_starts(tmp_path: Path) -> None:
    invalid = ROOT / "tests" / "data" / "invalid" / "low-not-below-high.yaml"
    result = subprocess.run(
        [KUBETUNE, "up", "--kubeconfig", str(tmp_path / "kubeconfig"), str(invalid)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "spec.searchSpace[0]" in result.stderr
    assert "fix:" in result.stderr
    assert not (tmp_path / "kubeconfig").exists()


def test_the_node_fits_every_study_at_full_parallelism() -> None:
    digits = load_studies([ROOT / "examples" / "digits-classifier.yaml"])
    quadratic = load_studies([ROOT / "examples" / "synthetic-quadratic.yaml"])
    # Four trials at once, each with one GPU, 2 cpu and 4Gi.
    capacity = capacity_for(digits)
    assert capacity["nvidia.com/gpu"] == "4"
    assert parse_quantity(capacity["cpu"]) >= 8
    assert parse_quantity(capacity["memory"]) >= 16 * 2**30
    # Side by side, the synthetic study's four 50m trials come on top.
    both = capacity_for([*digits, *quadratic])
    assert parse_quantity(both["cpu"]) == Fraction(8) + Fraction(4 * 50, 1000)
    assert both["nvidia.com/gpu"] == "4"
    # --gpus sets the node's GPUs, to try a study with fewer than it asks for.
    assert capacity_for(digits, gpus=1)["nvidia.com/gpu"] == "1"

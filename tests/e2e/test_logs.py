"""`kubetune logs STUDY TRIAL`: a trial's log, read through the TuningTrial's status.podName
and the pod's log, on both control planes, with the operator running the study; and the
errors that say what to do when there is no such trial, no pod yet, or no pod any more."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from kubetune.spec import api
from tests.e2e.conftest import Operator
from tests.e2e.test_endings import X
from tests.e2e.test_endings import study as endings_study
from tests.eventually import eventually
from tests.localcluster.conftest import Kube

TRAINER = """\
    import json, os, pathlib, time
    number = os.environ["KUBETUNE_TRIAL_NUMBER"]
    print(f"hello from trial {number}", flush=True)
    release = pathlib.Path(RELEASE)
    while not release.exists():
        time.sleep(0.05)
    print("training done", flush=True)
    with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as log:
        json.dump({"loss": float(number)}, log)
"""


def study(name: str, release: Path) -> dict[str, Any]:
    """Two trials, one at a time, each waiting for `release` to exist before it finishes."""
    code = textwrap.dedent(TRAINER).replace("RELEASE", repr(str(release)))
    return endings_study(
        name, [sys.executable, "-c", code], [X], {"maxTrials": 2, "parallelism": 1}
    )


def kubetune(kube: Kube, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as its own process, with the cluster's kubeconfig in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "kubetune", *args],
        capture_output=True,
        text=True,
        env=kube.env,
        timeout=60,
        check=False,
    )


def logs_when(
    kube: Kube, text: str, *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`kubetune logs ARGS` once its output has `text` (a trial's pod starts, and its
    container prints, in its own time); fails with the last answer after `timeout`."""

    def showing() -> subprocess.CompletedProcess[str]:  # each try is a process of its own
        result = kubetune(kube, "logs", *args)
        assert result.returncode == 0, result
        assert text in result.stdout, result
        return result

    return eventually(
        showing,
        timeout=timeout,
        interval=0.2,
        message=f"{text!r} from kubetune logs {' '.join(args)}",
    )


def test_logs_of_a_running_and_a_finished_trial(operator: Operator, tmp_path: Path) -> None:
    kube = operator.kube
    release = tmp_path / "release"
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(study("logged", release)))

    running = logs_when(kube, "hello from trial 0", "logged", "0")
    assert running.stdout == "hello from trial 0\n"
    release.touch()
    kube.wait_for("tuningstudy/logged", condition="jsonpath={.status.completionTime}", timeout=90)

    finished = kubetune(kube, "logs", "logged", "0")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == "hello from trial 0\ntraining done\n"
    # By the TuningTrial's name, with the container named and only the last line.
    by_name = kubetune(kube, "logs", "logged", "logged-1", "-c", "trainer", "--tail", "1")
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout == "training done\n"
    with_namespace = kubetune(kube, "logs", "logged", "1", "-n", "default")
    assert with_namespace.stdout == "hello from trial 1\ntraining done\n"

    # Errors name the fix and exit 1.
    unknown = kubetune(kube, "logs", "logged", "7")
    assert unknown.returncode == 1
    assert "TuningStudy logged has no trial 7: give a trial number (0-1)" in unknown.stderr
    assert unknown.stdout == ""
    no_study = kubetune(kube, "logs", "nothing", "0")
    assert no_study.returncode == 1
    assert "no TuningStudy nothing in namespace default" in no_study.stderr
    elsewhere = kubetune(kube, "logs", "logged", "0", "-n", "research")
    assert elsewhere.returncode == 1
    assert "no TuningStudy logged in namespace research" in elsewhere.stderr
    no_container = kubetune(kube, "logs", "logged", "0", "--container", "sidecar")
    assert no_container.returncode == 1
    no_sidecar = "has no container sidecar: give one of trainer (kubetune logs --container"
    assert no_sidecar in no_container.stderr

    # A pod removed (as the pod retention rule removes old ones): the trial's record stays.
    trial = kube.get_json("tuningtrial", "logged-1")
    pod = trial["status"]["podName"]
    kube.kubectl("delete", "pod", pod, "--wait=true", timeout=60)
    removed = kubetune(kube, "logs", "logged", "1")
    assert removed.returncode == 1
    assert f"the pod {pod} of trial 1 (logged-1, Succeeded) no longer exists" in removed.stderr
    assert "pod retention rule (spec.podRetention)" in removed.stderr
    assert "status.message" in removed.stderr
    kube.kubectl("delete", "tuningstudy", "logged", "--wait=true", timeout=60)


def test_logs_of_a_trial_without_a_pod_yet(crds: Kube, tmp_path: Path) -> None:
    """No operator runs here: the study and its trial stay as written, the trial Pending."""
    kube = crds
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(study("waiting", tmp_path / "release")))
    no_trials = kubetune(kube, "logs", "waiting", "0")
    assert no_trials.returncode == 1
    assert "TuningStudy waiting has no trials yet" in no_trials.stderr
    trial = {
        "apiVersion": api.API_VERSION,
        "kind": api.TRIAL_KIND,
        "metadata": {"name": "waiting-0", "labels": {api.STUDY_LABEL: "waiting"}},
        "spec": {"study": "waiting", "number": 0, "params": {"x": 0.5}},
    }
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(trial))
    pending = kubetune(kube, "logs", "waiting", "0")
    assert pending.returncode == 1
    assert "trial 0 (waiting-0) has no pod yet: it is Pending" in pending.stderr
    kube.kubectl("delete", "tuningtrial", "waiting-0")
    kube.kubectl("delete", "tuningstudy", "waiting")

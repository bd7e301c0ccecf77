"""The example studies run to their end under `kubetune up`: the control plane, the operator
and the local kubelet, with each example's own trainer (all but the digits one, which needs
PyTorch and minutes)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from kubetune.up.manifests import load_studies
from tests.e2e.conftest import ROOT
from tests.localcluster.conftest import kube_binaries

KUBETUNE = str(Path(sys.executable).parent / "kubetune")
EXAMPLES = ["synthetic-quadratic.yaml", "multi-objective.yaml", "grid.yaml", "warm-start.yaml"]


def test_every_example_runs_to_completion_under_up(tmp_path: Path) -> None:
    # Read as kubectl reads YAML, written as JSON so that nothing is re-read differently.
    studies = load_studies([ROOT / "examples" / name for name in EXAMPLES])
    manifests = []
    for document in studies:
        # Six trials, two at a time: the four studies share this machine's cores.
        document["spec"]["budget"].update(maxTrials=6, parallelism=2)
        path = tmp_path / f"{document['metadata']['name']}.json"
        path.write_text(json.dumps(document))
        manifests.append(str(path))
    result = subprocess.run(
        [KUBETUNE, "up", "--json", "--kubeconfig", str(tmp_path / "kubeconfig"), *manifests],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    listing = json.loads(result.stdout)
    names = sorted(study["metadata"]["name"] for study in listing["items"])
    assert names == sorted(document["metadata"]["name"] for document in studies)
    for study in listing["items"]:
        status = study["status"]
        assert status["phase"] == "Completed", (study["metadata"]["name"], status.get("message"))
        assert status["trials"]["succeeded"] == status["trials"]["total"] > 0
        best = status["bestTrial"]
        values = best.get("values") or [best["value"]]
        assert all(v is not None and math.isfinite(v) for v in values)


def test_run_local_is_up_and_prints_the_re_runs_and_the_recommendation(tmp_path: Path) -> None:
    document = load_studies([ROOT / "examples" / "synthetic-quadratic.yaml"])[0]
    document["spec"]["budget"].update(maxTrials=4, parallelism=2)
    document["spec"]["reevaluation"] = {"topTrials": 2, "repeats": 2, "metric": "distance"}
    manifest = tmp_path / "study.json"
    manifest.write_text(json.dumps(document))
    result = subprocess.run(
        [KUBETUNE, "run-local", str(manifest), "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    assert "kubetune run-local is now `kubetune up`" in result.stderr
    assert (tmp_path / "work" / "kubeconfig").exists()
    out = result.stdout
    (winner,) = re.findall(r"^  Recommended: trial (\d+) with ", out, re.MULTILINE)
    assert re.search(r"^    distance \S+ ± \S+ over 2 seeds \(\d+, \d+\)$", out, re.MULTILINE)
    assert re.search(r"^    search value \S+, generalization gap [-+]\S+", out, re.MULTILINE)
    assert f"    trial {winner}, 2 seeds: distance " in out
    assert re.search(rf"^    trial {winner}, .* <- recommended$", out, re.MULTILINE)
    # The re-runs have a table of their own: each configuration twice, each run with a seed.
    runs = re.findall(r"^│ r(\d) of (\d+) +│ +(\d+) │ Succeeded", out, re.MULTILINE)
    configurations = {trial for _, trial, _ in runs}
    assert len(configurations) == 2
    assert winner in configurations
    expected = [(trial, repeat) for trial in sorted(configurations) for repeat in "01"]
    assert sorted((trial, repeat) for repeat, trial, _ in runs) == expected
    assert len({seed for _, _, seed in runs}) == 4
    assert f"trial {winner}'s configuration is recommended" in out


def test_the_multi_node_example_runs_every_trial_as_two_pods_on_the_real_plane(
    tmp_path: Path,
) -> None:
    """examples/multi-node-job.yaml, as written, under `kubetune up --binaries`: the real job
    controller runs each trial as an Indexed Job of two pods training data-parallel."""
    workdir = tmp_path / "work"
    result = subprocess.run(
        [
            KUBETUNE,
            "up",
            "--json",
            "--binaries",
            str(kube_binaries()),
            "--workdir",
            str(workdir),
            "--kubeconfig",
            str(tmp_path / "kubeconfig"),
            str(ROOT / "examples" / "multi-node-job.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    (study,) = json.loads(result.stdout)["items"]
    status = study["status"]
    assert status["phase"] == "Completed", status.get("message")
    total = status["trials"]["total"]
    assert total == study["spec"]["budget"]["maxTrials"]
    assert status["trials"]["succeeded"] >= 1
    assert status["trials"]["succeeded"] + status["trials"]["pruned"] == total
    # The kubelet keeps a folder per pod it ran: `<trial>-<index>-<suffix>-<uid>`.
    ran = [folder.name for folder in (workdir / "pods" / "pods" / "default").iterdir()]
    for number in range(total):
        indexes = {
            name.removeprefix(f"multi-node-job-{number}-").split("-")[0]
            for name in ran
            if name.startswith(f"multi-node-job-{number}-")
        }
        assert indexes == {"0", "1"}, (number, ran)


def test_up_refuses_job_trials_on_the_embedded_plane(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            KUBETUNE,
            "up",
            "--kubeconfig",
            str(tmp_path / "kubeconfig"),
            str(ROOT / "examples" / "multi-node-job.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "no job controller" in result.stderr
    assert "kubetune up --binaries DIR" in result.stderr

"""`kubetune trials STUDY`: a study's trials as a table, read from whatever cluster the
kubeconfig reaches (here the embedded control plane, with TuningTrials made through the API)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from kubetune.spec import api
from kubetune.spec.crd import crds
from kubetune_localcluster.cluster import ClusterThread

ROOT = Path(__file__).resolve().parents[2]
STUDY = "synthetic-quadratic"


def trial(number: int, params: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.TRIAL_KIND,
        "metadata": {"name": f"{STUDY}-{number}", "labels": {api.STUDY_LABEL: STUDY}},
        "spec": {"study": STUDY, "number": number, "params": params},
        "status": status,
    }


def rerun(of: dict[str, Any], repeat: int, seed: int, status: dict[str, Any]) -> dict[str, Any]:
    """A re-evaluation run of trial `of`'s configuration, named and labelled as the operator
    makes them."""
    number = of["spec"]["number"]
    body = trial(number, of["spec"]["params"], status)
    body["metadata"]["name"] = f"{STUDY}-{number}-r{repeat}"
    body["metadata"]["labels"][api.REEVALUATION_LABEL] = str(number)
    body["spec"].update(seed=seed, reevaluation={"trial": number, "repeat": repeat})
    return body


RECOMMENDATION = {
    "trial": 0,
    "params": {"x": 1.5, "y": -0.75, "shape": "bowl", "steps": 8},
    "metric": "distance",
    "values": [0.8],
    "seeds": [101],
    "mean": 0.8,
    "std": 0.0,
    "validationValue": 0.3125,
    "generalizationGap": 0.4875,
}
REEVALUATION = {
    "runs": 2,
    "finished": 2,
    "configurations": [
        {
            "trial": 0,
            "params": RECOMMENDATION["params"],
            "seeds": [101],
            "failedRuns": 1,
            "scores": [
                {
                    "metric": "distance",
                    "values": [0.8],
                    "mean": 0.8,
                    "std": 0.0,
                    "validationValue": 0.3125,
                }
            ],
        }
    ],
}

IMPORTANCES = {"y": 0.05, "x": 0.6, "tilt": 0.02, "shape": 0.3, "steps": 0.02, "extra": 0.01}
"""More parameters than the command line shows (5), not in order."""


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cluster holding a re-evaluated study, two of its trials and two re-runs of the first
    (one succeeded, one failed), and a trial of another study."""
    home = tmp_path_factory.mktemp("trials")
    with ClusterThread(workdir=home / "pods") as running:
        path = running.cluster.write_kubeconfig(home / "kubeconfig")
        client = kubernetes.config.new_client_from_config(str(path))
        extensions = kubernetes.client.ApiextensionsV1Api(client)
        for crd in crds():
            extensions.create_custom_resource_definition(crd)
        custom = kubernetes.client.CustomObjectsApi(client)
        study = yaml.safe_load((ROOT / "examples" / f"{STUDY}.yaml").read_text())
        custom.create_namespaced_custom_object(
            api.GROUP, api.VERSION, "default", api.STUDY_PLURAL, study
        )
        succeeded = trial(
            0,
            {"x": 1.5, "y": -0.75, "shape": "bowl", "steps": 8},
            {
                "state": "Succeeded",
                "reason": "Completed",
                "values": [0.3125],
                "metrics": {"loss": 0.3125, "distance": 0.559},
                "startTime": "2026-01-01T10:00:00Z",
                "completionTime": "2026-01-01T10:00:42Z",
            },
        )
        pruned = trial(
            1,
            {"x": -4.0, "y": 4.0, "shape": "ridge", "tilt": 1.25, "steps": 8},
            {
                "state": "Pruned",
                "reason": "Pruned",
                "startTime": "2026-01-01T10:00:00Z",
                "completionTime": "2026-01-01T10:00:03.5Z",
            },
        )
        stranger = trial(0, {"x": 9.0}, {"state": "Running"})
        stranger["metadata"] = {"name": "other-0", "labels": {api.STUDY_LABEL: "other"}}
        stranger["spec"]["study"] = "other"
        reruns = [
            rerun(succeeded, 1, 102, {"state": "Failed", "reason": "Error"}),
            rerun(
                succeeded,
                0,
                101,
                {
                    "state": "Succeeded",
                    "reason": "Completed",
                    "values": [0.64],
                    "metrics": {"loss": 0.64, "distance": 0.8},
                    "startTime": "2026-01-01T10:01:00Z",
                    "completionTime": "2026-01-01T10:01:40Z",
                },
            ),
        ]
        custom.patch_namespaced_custom_object_status(
            api.GROUP,
            api.VERSION,
            "default",
            api.STUDY_PLURAL,
            STUDY,
            {
                "status": {
                    "phase": "Completed",
                    "bestTrial": {
                        "name": f"{STUDY}-0",
                        "number": 0,
                        "value": 0.3125,
                        "params": succeeded["spec"]["params"],
                    },
                    "importances": IMPORTANCES,
                    "importancesTrials": 2,
                    "reevaluation": REEVALUATION,
                    "recommendation": RECOMMENDATION,
                }
            },
        )
        for body in (pruned, succeeded, stranger, *reruns):
            # The API server drops status on create, as Kubernetes does: set it through
            # the status subresource, as the operator does.
            status = body.pop("status")
            name = body["metadata"]["name"]
            custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, "default", api.TRIAL_PLURAL, body
            )
            custom.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, "default", api.TRIAL_PLURAL, name, {"status": status}
            )
        client.close()
        yield path


def kubetune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as its own process: the `kubernetes` client keeps process-wide state that
    would otherwise leak into later tests (a kopf test failed after this one in-process)."""
    return subprocess.run(
        [sys.executable, "-m", "kubetune", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def table(output: str, title: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the table printed under `title`, with the lines rich wraps a cell
    onto joined (a wrapped row's further lines have an empty first cell)."""

    def joined(above: list[str], below: list[str]) -> list[str]:
        return [" ".join(filter(None, pair)) for pair in zip(above, below, strict=True)]

    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    header: list[str] = []
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            break
        if not line or line[0] not in "┃│":
            continue  # a rule between the header and the rows
        cells = [cell.strip() for cell in line[1:-1].split(line[0])]
        if line[0] == "┃":
            header = joined(header, cells) if header else cells
        elif cells[0] or not rows:
            rows.append(cells)
        else:
            rows[-1] = joined(rows[-1], cells)
    return header, rows


def test_trials_prints_the_study_trials_as_a_table(kubeconfig: Path) -> None:
    result = kubetune("trials", STUDY, "--kubeconfig", str(kubeconfig))
    assert result.returncode == 0, result.stdout + result.stderr
    header, rows = table(result.stdout, f"Trials of {STUDY}")
    assert header[:6] == ["#", "state", "params", "value", "duration", "reason"]
    # The other study's trial is not listed, nor the re-runs (they have a table of their own).
    first, second = (dict(zip(header, row, strict=True)) for row in rows)
    assert first["#"] == "0"  # ordered by trial number
    assert first["state"] == "Succeeded"
    assert first["params"] == "x=1.5, y=-0.75, shape=bowl, steps=8"
    assert first["value"] == "0.3125"
    assert first["duration"] == "42.0s"
    assert first["reason"] == "Completed"
    assert second["#"] == "1"
    assert second["state"] == "Pruned"
    assert "tilt=1.25" in second["params"]
    assert second["duration"] == "3.5s"


def test_trials_lists_the_re_runs_with_their_seeds_and_marks_the_recommendation(
    kubeconfig: Path,
) -> None:
    result = kubetune("trials", STUDY, "--kubeconfig", str(kubeconfig))
    assert result.returncode == 0, result.stdout + result.stderr
    header, rows = table(result.stdout, f"Re-evaluation runs of {STUDY}")
    # The re-evaluation metric has a column of its own: the value that ranked the run.
    assert header == ["run", "seed", "state", "distance", "duration", "reason"]
    assert rows == [
        ["r0 of 0", "101", "Succeeded", "0.8", "40.0s", "Completed"],
        ["r1 of 0", "102", "Failed", "", "", "Error"],
    ]
    assert "trial 0's configuration is recommended" in result.stdout
    header, rows = table(result.stdout, f"Trials of {STUDY}")
    assert header[-1] == "re-evaluated (mean ± std)"
    assert [row[-1] for row in rows] == [
        "distance 0.8 ± 0 (search 0.3125) <- recommended",
        "",  # trial 1 was not re-evaluated
    ]
    # Below the tables: the recommendation with its generalization gap.
    assert "Recommended: trial 0 with x=1.5, y=-0.75, shape=bowl, steps=8" in result.stdout
    assert "  distance 0.8 ± 0 over 1 seed (101)" in result.stdout
    assert "generalization gap +0.4875 (the search's value was optimistic)" in result.stdout
    assert "  trial 0, 1 seed, 1 failed: distance 0.8 ± 0 (search 0.3125)" in result.stdout


def test_trials_reads_kubeconfig_from_the_environment_and_takes_a_namespace(
    kubeconfig: Path,
) -> None:
    env = {"KUBECONFIG": str(kubeconfig)}
    found = kubetune("trials", STUDY, "-n", "default", env=env)
    assert found.returncode == 0, found.stderr
    assert "Pruned" in found.stdout
    elsewhere = kubetune("trials", STUDY, "-n", "research", env=env)
    assert elsewhere.returncode == 1
    assert f"no TuningStudy {STUDY} in namespace research" in elsewhere.stdout + elsewhere.stderr


def test_trials_shows_the_best_trial_s_additional_metrics_and_the_top_importances(
    kubeconfig: Path,
) -> None:
    result = kubetune("trials", STUDY, "--kubeconfig", str(kubeconfig))
    assert result.returncode == 0, result.stdout + result.stderr
    # spec.objective.additionalMetrics of the example is [distance]: the loss is the value.
    assert "Best trial 0 also recorded: distance 0.559\n" in result.stdout
    # The most important first, the five largest of six; ties by name.
    assert (
        "Importances (PED-ANOVA over 2 trials): x 0.60, shape 0.30, y 0.05, steps 0.02, "
        "tilt 0.02, and 1 more\n"
    ) in result.stdout

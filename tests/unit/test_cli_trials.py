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

from kubetune.controlplane.cluster import ClusterThread
from kubetune.spec import api
from kubetune.spec.crd import crds

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


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cluster holding a study, two of its trials and a trial of another study."""
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
        for body in (pruned, succeeded, stranger):
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


def test_trials_prints_the_study_trials_as_a_table(kubeconfig: Path) -> None:
    result = kubetune("trials", STUDY, "--kubeconfig", str(kubeconfig))
    result.output = result.stdout + result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 0, result.output  # type: ignore[attr-defined]
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 2  # the other study's trial is not listed
    first, second = rows
    assert first.split("│")[1].strip() == "0"  # ordered by trial number
    assert "Succeeded" in first
    assert "x=1.5, y=-0.75, shape=bowl, steps=8" in first
    assert "0.3125" in first
    assert "42.0s" in first
    assert "Completed" in first
    assert second.split("│")[1].strip() == "1"
    assert "Pruned" in second
    assert "tilt=1.25" in second
    assert "3.5s" in second


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

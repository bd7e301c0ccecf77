"""How the local kubelet runs an image it cannot pull: the project's own images stand for their
Dockerfiles' ENTRYPOINT and CMD, with Kubernetes' rule for command and args."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from kubetune_localcluster.images import PROJECT_IMAGES, Image, container_argv, repository

ROOT = Path(__file__).resolve().parents[2]


def dockerfile_instruction(path: Path, name: str) -> tuple[str, ...]:
    """The exec form (a JSON list) of the last ENTRYPOINT or CMD of a Dockerfile."""
    found = re.findall(rf"^{name}\s+(\[.*\])\s*$", path.read_text(), flags=re.MULTILINE)
    return tuple(json.loads(found[-1])) if found else ()


@pytest.mark.parametrize(
    ("image", "dockerfile"),
    [
        ("ghcr.io/kubetune/kubetune", ROOT / "Dockerfile"),
        ("ghcr.io/kubetune/trainer", ROOT / "trainer-image" / "Dockerfile"),
    ],
)
def test_the_project_images_are_their_dockerfiles(image: str, dockerfile: Path) -> None:
    assert PROJECT_IMAGES[image] == Image(
        entrypoint=dockerfile_instruction(dockerfile, "ENTRYPOINT"),
        cmd=dockerfile_instruction(dockerfile, "CMD"),
    )


def test_the_chart_and_the_examples_name_the_project_images() -> None:
    values = yaml.safe_load((ROOT / "charts" / "kubetune" / "values.yaml").read_text())
    assert values["image"]["repository"] in PROJECT_IMAGES
    digits = yaml.safe_load((ROOT / "examples" / "digits-classifier.yaml").read_text())
    container = digits["spec"]["trialTemplate"]["spec"]["containers"][0]
    assert repository(container["image"]) in PROJECT_IMAGES


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("ghcr.io/kubetune/kubetune", "ghcr.io/kubetune/kubetune"),
        ("ghcr.io/kubetune/kubetune:0.1.0", "ghcr.io/kubetune/kubetune"),
        ("localhost:5000/trainer:1", "localhost:5000/trainer"),
        ("localhost:5000/trainer", "localhost:5000/trainer"),
        ("ghcr.io/kubetune/kubetune:0.1.0@sha256:" + "a" * 64, "ghcr.io/kubetune/kubetune"),
    ],
)
def test_repository_drops_tag_and_digest(reference: str, expected: str) -> None:
    assert repository(reference) == expected


IMAGES = {"op": Image(entrypoint=("kubetune", "operator"), cmd=("--metrics-port", "8000"))}


@pytest.mark.parametrize(
    ("container", "argv"),
    [
        # command replaces the entrypoint, args the CMD, as Kubernetes says.
        ({"image": "op", "command": ["sh", "-c"], "args": ["true"]}, ["sh", "-c", "true"]),
        ({"image": "op"}, ["kubetune", "operator", "--metrics-port", "8000"]),
        ({"image": "op:1", "args": ["--verbose"]}, ["kubetune", "operator", "--verbose"]),
        ({"image": "op", "args": []}, ["kubetune", "operator"]),
        ({"image": "python:3.12", "command": ["python"]}, ["python"]),
        ({"image": "python:3.12"}, None),
        ({"image": "python:3.12", "args": ["x"]}, None),
    ],
)
def test_what_a_container_runs(container: dict[str, object], argv: list[str] | None) -> None:
    assert container_argv(container, IMAGES) == argv

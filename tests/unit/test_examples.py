"""The examples in examples/ are documentation that is tested: each is a complete, valid
TuningStudy that the operator's own rules accept and its engine can start suggesting from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubetune.engine import Engine
from kubetune.spec import api
from kubetune.spec.manifests import parse_study, validate_files

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_the_promised_examples_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"synthetic-quadratic.yaml", "digits-classifier.yaml", "multi-objective.yaml"} <= names
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_and_checks_clean(path: Path) -> None:
    (report,) = validate_files([path])
    assert report.problems == []
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] == api.API_VERSION
    assert document["kind"] == api.STUDY_KIND
    study, problems = parse_study(document)
    assert problems == []
    assert study is not None
    assert study.metadata.name
    # Comments explain the choices: an example is documentation.
    assert path.read_text().startswith("#")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_engine_starts_every_example(path: Path) -> None:
    study, _ = parse_study(yaml.safe_load(path.read_text()))
    assert study is not None
    assert study.metadata.name is not None
    engine = Engine(study.spec, study.metadata.name, default_seed=0)
    names = {p.name for p in study.spec.search_space}
    for _ in range(2):
        suggestion = engine.ask()
        assert set(suggestion.params) <= names


def test_digits_example_matches_the_trainer_contract() -> None:
    study, _ = parse_study(
        yaml.safe_load((EXAMPLES[0].parent / "digits-classifier.yaml").read_text())
    )
    assert study is not None
    container = study.spec.trial_template.spec.containers[0]
    assert container.image == "ghcr.io/kubetune/trainer:0.1.0"
    assert container.command == ["python", "-m", "kubetune_trainers.digits"]
    assert container.resources is not None
    assert container.resources.limits is not None
    assert container.resources.limits["nvidia.com/gpu"] == 1
    momentum = next(p for p in study.spec.search_space if p.name == "momentum")
    assert momentum.condition is not None
    assert momentum.condition.values == ["sgd"]

"""Fuzzing what study authors write: the examples' manifests mutated anywhere (values
replaced by huge, tiny, wrong-typed, deeply nested or long ones, keys deleted, unknown keys
added) go through StudyController.reconcile, which parses them with parse_study and, when they
are valid, asks the engine for trials. Nothing raises, each example is bounded in time, and a
spec that cannot be run is Invalid with a reason. KUBETUNE_FUZZ_EXAMPLES sets the number of
examples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kubetune.controller import StudyController
from kubetune.controller.metrics_source import PrometheusPolicy
from kubetune.spec.study_status import StudyPhase
from tests.factories import T0
from tests.fuzzing import DEEP_VALUES, EXAMPLE_SECONDS, FUZZ, JSON_VALUES, MUTATIONS, mutated
from tests.unit.test_fuzz_trainer_output import assert_safe_to_send

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
MANIFESTS = {
    path.name: yaml.safe_load(path.read_text()) for path in sorted(EXAMPLES_DIR.glob("*.yaml"))
}
# The operator of a platform that allows the Prometheus the examples read.
EXAMPLES_PROMETHEUS = PrometheusPolicy.of(
    sorted(
        {
            manifest["spec"]["metricsSource"]["prometheus"]["url"]
            for manifest in MANIFESTS.values()
            if "prometheus" in (manifest["spec"].get("metricsSource") or {})
        }
    )
)
# Values authors have written that broke the operator (issue 13), among the random ones.
HOSTILE_VALUES = st.one_of(
    JSON_VALUES,
    DEEP_VALUES,
    st.sampled_from(["99999999999999h", "1e308", 1e308, -1e308, 1e-308, 2**63, 2**64]),
    # Long lists, up to 1,000 items: 10,000 choices take 6.6 s to check while validation is
    # quadratic (issue 13, item 1), past the bound on each example.
    st.integers(0, 3).map(lambda n: [f"choice-{i}" for i in range(10**n)]),
)
HOSTILE_MUTATIONS = st.lists(
    st.tuples(st.integers(0, 10**6), st.sampled_from(["replace", "delete", "add"]), HOSTILE_VALUES),
    min_size=1,
    max_size=4,
)


def document_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as the API server returns it (metadata it fills in)."""
    given = manifest.get("metadata")
    metadata: dict[str, Any] = given if isinstance(given, dict) else {}
    return {
        **manifest,
        "metadata": {
            "namespace": "default",
            "uid": "uid-fuzz",
            "generation": 1,
            "name": "fuzz",
            **metadata,
        },
    }


def decide(document: Any) -> None:
    began = time.monotonic()
    plan = StudyController(EXAMPLES_PROMETHEUS).reconcile(document, [], {}, T0)
    assert time.monotonic() - began < EXAMPLE_SECONDS
    assert_safe_to_send(plan)
    if plan.study_status.phase is StudyPhase.INVALID:
        assert plan.study_status.message
        assert plan.create_trials == ()


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_the_examples_as_they_are_start_trials(name: str) -> None:
    plan = StudyController(EXAMPLES_PROMETHEUS).reconcile(document_of(MANIFESTS[name]), [], {}, T0)
    assert plan.study_status.phase is not StudyPhase.INVALID, plan.study_status.message
    assert plan.create_trials


@FUZZ
@given(name=st.sampled_from(list(MANIFESTS)), mutations=HOSTILE_MUTATIONS)
def test_any_mutated_manifest(name: str, mutations: list[Any]) -> None:
    decide(document_of(mutated(MANIFESTS[name], mutations)))


@FUZZ
@given(name=st.sampled_from(list(MANIFESTS)), mutations=MUTATIONS)
def test_any_mutated_spec(name: str, mutations: list[Any]) -> None:
    """Mutations inside the spec only, where most of them land on a rule of validation."""
    manifest = dict(MANIFESTS[name])
    manifest["spec"] = mutated(manifest["spec"], mutations)
    decide(document_of(manifest))

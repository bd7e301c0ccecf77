"""The generated CRDs: committed as generated, structural, valid CRD objects, and strict enough
that `kubectl apply` refuses the manifests the operator would refuse."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import Field

from kubetune.spec import api
from kubetune.spec.base import ApiModel
from kubetune.spec.crd import (
    CrdGenerationError,
    crd_files,
    model_schema,
    study_crd,
    study_schema,
    trial_crd,
    trial_schema,
)
from kubetune.spec.manifests import validate_text
from kubetune.spec.study import IMMUTABLE_SPEC_FIELDS, TuningStudy, TuningStudySpec
from kubetune.spec.study_status import StudyPhase
from kubetune.spec.trial import TuningTrial
from tests.unit.crd_checks import (
    apply_defaults,
    kubectl_apply_errors,
    structural_problems,
    transition_rules_outside_correlatable_nodes,
)

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.37.0"

STUDY = yaml.safe_load(
    """
apiVersion: kubetune.io/v1alpha1
kind: TuningStudy
metadata: {name: digits, namespace: ml}
spec:
  objective:
    metrics: [{name: val_loss, direction: minimize, goal: 0.05}]
    aggregation: min
  searchSpace:
    - {name: lr, type: float, low: 0.0001, high: 0.1, log: true}
    - {name: layers, type: int, low: 1, high: 4}
    - {name: optimizer, type: categorical, choices: [sgd, adam, 3, true]}
    - {name: momentum, type: float, low: 0.5, high: 0.99,
       condition: {parameter: optimizer, values: [sgd]}}
    - {name: epochs, type: fixed, value: 10}
  algorithm: {name: tpe, seed: 42}
  pruner: {name: median, warmupSteps: 2}
  budget:
    maxTrials: 50
    parallelism: 4
    trialTimeout: 30m
    maxGpuHours: 10
    money: {limit: 100, pricePerGpuHour: {nvidia.com/gpu: 2.5}}
  warmStart:
    configurations: [{lr: 0.01, optimizer: adam}]
    results: [{params: {lr: 0.02, layers: 2}, values: [0.3]}]
  trialTemplate:
    metadata: {labels: {team: ml}}
    spec:
      restartPolicy: Never
      nodeSelector: {gpu: "true"}
      containers:
        - name: trainer
          image: ghcr.io/example/trainer:1
          args: ["--lr=${params.lr}"]
          env: [{name: DATA, value: /data}]
          resources: {limits: {nvidia.com/gpu: 1, memory: 4Gi}}
          volumeMounts: [{name: data, mountPath: /data}]
"""
)

TRIAL = yaml.safe_load(
    """
apiVersion: kubetune.io/v1alpha1
kind: TuningTrial
metadata: {name: digits-3}
spec: {study: digits, number: 3, params: {lr: 0.01, optimizer: adam, layers: 2, bn: true}}
status:
  state: Succeeded
  intermediateValues: [{step: 0, value: 0.9}, {step: 1, value: 0.5}]
  values: [0.42]
  systemAttrs: {"nsga2:generation": 0, "cma:restart": [1, 2]}
"""
)


def edited(manifest: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of the manifest with the field at a dotted path (list indexes allowed) set;
    value DELETE removes it."""
    result = copy.deepcopy(manifest)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = result
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return result


DELETE = object()


# --- (1) golden ------------------------------------------------------------------------------


def test_committed_crds_are_what_the_models_generate() -> None:
    generated = crd_files()
    assert list(generated) == ["tuningstudies.kubetune.io.yaml", "tuningtrials.kubetune.io.yaml"]
    # Only Kubetune's own: crds/kopf-peering.yaml is kopf's, written by hand.
    committed = {p.name: p.read_text() for p in sorted((ROOT / "crds").glob(f"*.{api.GROUP}.yaml"))}
    assert committed == generated, (
        "crds/ is out of date with the models: run `kubetune crds -o crds/` and commit the result"
    )


def test_crd_names_and_versions() -> None:
    for crd, kind, plural, short in (
        (study_crd(), api.STUDY_KIND, api.STUDY_PLURAL, api.STUDY_SHORT_NAMES),
        (trial_crd(), api.TRIAL_KIND, api.TRIAL_PLURAL, api.TRIAL_SHORT_NAMES),
    ):
        spec = crd["spec"]
        assert crd["metadata"]["name"] == f"{plural}.kubetune.io"
        assert (spec["group"], spec["scope"]) == ("kubetune.io", "Namespaced")
        assert spec["names"]["kind"] == kind
        assert spec["names"]["shortNames"] == list(short)
        assert spec["names"]["categories"] == ["kubetune"]
        assert not {"experiment", "trial", "suggestion"} & set(short)  # Katib's
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}


# --- (2) structural --------------------------------------------------------------------------


@pytest.mark.parametrize("schema", [study_schema(), trial_schema()], ids=["study", "trial"])
def test_generated_schemas_are_structural(schema: dict[str, Any]) -> None:
    assert structural_problems(schema) == []
    assert transition_rules_outside_correlatable_nodes(schema) == []


NOT_STRUCTURAL = {
    "anyOf with null, as kube-custom-resource 0.7.2 renders Optional": (
        {
            "type": "object",
            "properties": {"image": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        },
        [
            ".image: no type (needed unless int-or-string or preserve-unknown)",
            ".image: type inside allOf/anyOf/oneOf/not",
        ],
    ),
    "null type": (
        {"type": "object", "properties": {"x": {"type": "null"}}},
        [".x: type 'null' is not one of"],
    ),
    "$ref left in": (
        {"type": "object", "properties": {"x": {"$ref": "#/$defs/X"}}},
        [".x: $ref is not allowed", ".x: no type"],
    ),
    "description in a junctor": (
        {"type": "string", "anyOf": [{"description": "a"}, {"pattern": "b"}]},
        ["<root>: description inside allOf/anyOf/oneOf/not"],
    ),
    "field only inside a junctor": (
        {"type": "object", "oneOf": [{"properties": {"a": {}}}]},
        ["<root>.a: specified in a junctor but not outside it"],
    ),
    "properties and additionalProperties": (
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "additionalProperties": {"type": "string"},
        },
        ["<root>: properties and additionalProperties are mutually exclusive"],
    ),
    "metadata restricted beyond name": (
        {
            "type": "object",
            "properties": {
                "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}
            },
        },
        ["metadata.labels: only name and generateName may be restricted"],
    ),
    "int-or-string with a type": (
        {
            "type": "object",
            "properties": {"q": {"type": "string", "x-kubernetes-int-or-string": True}},
        },
        [".q: x-kubernetes-int-or-string needs an empty type"],
    ),
    "draft 2020-12 exclusiveMinimum": (
        {"type": "integer", "exclusiveMinimum": 0},
        ["<root>: exclusiveMinimum must be a boolean"],
    ),
}


@pytest.mark.parametrize("case", list(NOT_STRUCTURAL), ids=list(NOT_STRUCTURAL))
def test_structural_checker_catches(case: str) -> None:
    schema, expected = NOT_STRUCTURAL[case]
    problems = structural_problems(schema)
    for fragment in expected:
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)


def test_structural_checker_accepts_the_allowed_junctors() -> None:
    quantity = {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    }
    preserved = {"x-kubernetes-preserve-unknown-fields": True}
    schema = {
        "type": "object",
        "properties": {"q": quantity, "any": preserved, "metadata": {"type": "object"}},
    }
    assert structural_problems(schema) == []


def test_generator_refuses_a_union_with_no_structural_form() -> None:
    class Odd(ApiModel):
        both: int | list[str] = Field(default=0)
        """An int or a list."""

    with pytest.raises(CrdGenerationError, match=r"spec\.both"):
        model_schema(Odd, "spec", with_defaults=True)


# --- (3) the CRD objects validate against apiextensions.k8s.io/v1 ---------------------------


@pytest.mark.parametrize("crd", [study_crd(), trial_crd()], ids=["study", "trial"])
def test_crd_objects_match_the_kubernetes_crd_schema(crd: dict[str, Any]) -> None:
    # strict: unknown keys anywhere in the CRD (such as a leftover "title" or "const") fail.
    assert kubernetes_validate.validate(crd, KUBERNETES_VERSION, strict=True)


def _schema_node(schema: dict[str, Any], json_path: str) -> dict[str, Any]:
    node = schema
    for part in json_path.lstrip(".").split("."):
        name, _, index = part.partition("[")
        node = node["properties"][name]
        if index:
            node = node["items"]
    return node


@pytest.mark.parametrize(
    ("crd", "names"),
    [
        (
            study_crd(),
            [
                "Phase",
                "Trials",
                "Running",
                "Best",
                "Front",
                "Recommended",
                "Gap",
                "Mean",
                "GPU-Hours",
                "Age",
            ],
        ),
        (trial_crd(), ["Study", "Number", "Repeat", "State", "Value", "Seed", "Age"]),
    ],
    ids=["study", "trial"],
)
def test_printer_columns_point_at_fields_of_their_type(
    crd: dict[str, Any], names: list[str]
) -> None:
    (version,) = crd["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == names
    schema = version["schema"]["openAPIV3Schema"]
    for column in columns:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        assert _schema_node(schema, column["jsonPath"])["type"] == column["type"], column


def test_the_phase_column_names_every_phase() -> None:
    (version,) = study_crd()["spec"]["versions"]
    (phase,) = [c for c in version["additionalPrinterColumns"] if c["name"] == "Phase"]
    assert [p.value for p in StudyPhase if p.value not in phase["description"]] == []


# --- (4) what kubectl apply does with the schema ---------------------------------------------


def _all_properties(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, child in node.get("properties", {}).items():
        found.append((f"{path}.{name}", child))
        found += _all_properties(child, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", ".*")):
        if isinstance(node.get(key), dict):
            found += _all_properties(node[key], path + suffix)
    return found


POD_SPEC = ".spec.trialTemplate.spec"
# Kubernetes' own fields of the embedded PodSpec go undescribed, as kubebuilder's
# crd:maxDescLen=0 leaves them (`kubectl explain pod.spec` has them); the ones our model knows
# keep our descriptions.
DESCRIBED_POD_FIELDS = {
    f"{POD_SPEC}.{name}"
    for name in ("containers", "restartPolicy", "terminationGracePeriodSeconds")
}


@pytest.mark.parametrize("schema", [study_schema(), trial_schema()], ids=["study", "trial"])
def test_every_field_is_described_for_kubectl_explain(schema: dict[str, Any]) -> None:
    undescribed = [
        path
        for path, node in _all_properties(schema)
        if path != ".metadata"
        and not node.get("description")
        and (not path.startswith(f"{POD_SPEC}.") or path in DESCRIBED_POD_FIELDS)
    ]
    assert undescribed == []


def test_a_valid_study_and_trial_are_accepted_and_parse_with_the_models() -> None:
    assert kubectl_apply_errors(study_schema(), STUDY) == []
    assert kubectl_apply_errors(trial_schema(), TRIAL) == []
    TuningStudy.model_validate(apply_defaults(study_schema(), STUDY))
    TuningTrial.model_validate(apply_defaults(trial_schema(), TRIAL))


def test_examples_are_accepted() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == api.STUDY_KIND:
                assert kubectl_apply_errors(study_schema(), document) == [], path


def test_schema_defaults_are_the_model_defaults() -> None:
    minimal = {
        "apiVersion": api.API_VERSION,
        "kind": api.STUDY_KIND,
        "spec": {
            "objective": {"metrics": [{"name": "loss"}]},
            "searchSpace": [{"name": "x", "type": "float", "low": 0, "high": 1}],
            "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
        },
    }
    defaulted = apply_defaults(study_schema(), minimal)
    # What the API server stores shows the defaults the operator will use...
    assert defaulted["spec"]["algorithm"] == {"name": "tpe"}
    assert defaulted["spec"]["pruner"] == {"name": "none"}
    assert defaulted["spec"]["budget"] == {"parallelism": 1}
    assert defaulted["spec"]["objective"]["aggregation"] == "last"
    # ...and they are exactly the models' own.
    assert TuningStudy.model_validate(defaulted) == TuningStudy.model_validate(minimal)


# As the API server words them (kube-openapi's validate errors in apimachinery's field.Error
# form; unknown fields as a strict decoding error).
REJECTED_BY_SCHEMA = {
    "unknown algorithm": (
        "spec.algorithm.name",
        "bogus",
        'spec.algorithm.name: Unsupported value: "bogus": supported values: "random", "grid"',
    ),
    "parallelism 0": (
        "spec.budget.parallelism",
        0,
        "spec.budget.parallelism: Invalid value: 0: spec.budget.parallelism in body should be "
        "greater than 0",
    ),
    "empty search space": (
        "spec.searchSpace",
        [],
        "spec.searchSpace: Invalid value: 0: spec.searchSpace in body should have at least 1 items",
    ),
    "template without containers": (
        "spec.trialTemplate.spec.containers",
        DELETE,
        "spec.trialTemplate.spec.containers: Required value",
    ),
    "no container in the list": (
        "spec.trialTemplate.spec.containers",
        [],
        "spec.trialTemplate.spec.containers: Invalid value: 0: spec.trialTemplate.spec.containers "
        "in body should have at least 1 items",
    ),
    "wrong type": (
        "spec.budget.maxTrials",
        "ten",
        'spec.budget.maxTrials: Invalid value: "string": spec.budget.maxTrials in body must be of '
        'type integer: "string"',
    ),
    "a typo in a field name": (
        "spec.budget.paralelism",
        2,
        'unknown field "spec.budget.paralelism"',
    ),
    "a bad duration": (
        "spec.budget.trialTimeout",
        "30 minutes",
        'spec.budget.trialTimeout: Invalid value: "30 minutes": spec.budget.trialTimeout in body '
        "should match '",
    ),
    "a bad parameter name": (
        "spec.searchSpace.0.name",
        "learning-rate",
        'spec.searchSpace[0].name: Invalid value: "learning-rate": spec.searchSpace[0].name in '
        "body should match '^[A-Za-z_][A-Za-z0-9_]*$'",
    ),
    "restartPolicy Always": (
        "spec.trialTemplate.spec.restartPolicy",
        "Always",
        'spec.trialTemplate.spec.restartPolicy: Unsupported value: "Always": supported values: '
        '"Never", "OnFailure"',
    ),
    "a quantity that is neither int nor string": (
        "spec.trialTemplate.spec.containers.0.resources.limits.memory",
        True,
        'spec.trialTemplate.spec.containers[0].resources.limits.memory: Invalid value: "boolean": '
        "spec.trialTemplate.spec.containers[0].resources.limits.memory in body must be of type "
        'integer,string: "boolean"',
    ),
}


@pytest.mark.parametrize("case", list(REJECTED_BY_SCHEMA), ids=list(REJECTED_BY_SCHEMA))
def test_bad_manifests_are_rejected_by_the_schema(case: str) -> None:
    path, value, expected = REJECTED_BY_SCHEMA[case]
    errors = kubectl_apply_errors(study_schema(), edited(STUDY, path, value))
    assert any(e.startswith(expected) for e in errors), errors


REJECTED_BY_CEL = {
    "low >= high": (
        "spec.searchSpace.1.low",
        9,
        "spec.searchSpace[1].low: parameter layers: low must be less than high: "
        "swap them or widen the range",
    ),
    "log with low 0": (
        "spec.searchSpace.0.low",
        0,
        "spec.searchSpace[0].low: parameter lr: a log scale needs low > 0: "
        "raise low above zero or remove log",
    ),
    "float without high": (
        "spec.searchSpace.3.high",
        DELETE,
        "spec.searchSpace[3].high: parameter momentum: float and int parameters need low and "
        "high: set both bounds",
    ),
    "percentile pruner without percentile": (
        "spec.pruner",
        {"name": "percentile"},
        "spec.pruner.percentile: the percentile pruner needs percentile: "
        "set it, for example percentile: 25",
    ),
    "GPU-hour budget without trialTimeout": (
        "spec.budget.trialTimeout",
        DELETE,
        "spec.budget.trialTimeout: trialTimeout is required with maxGpuHours or money",
    ),
}


@pytest.mark.parametrize("case", list(REJECTED_BY_CEL), ids=list(REJECTED_BY_CEL))
def test_rules_beyond_the_schema_are_enforced_by_cel(case: str) -> None:
    path, value, expected = REJECTED_BY_CEL[case]
    errors = kubectl_apply_errors(study_schema(), edited(STUDY, path, value))
    assert len(errors) == 1, errors
    field, _, message = expected.partition(": ")
    # The API server prints the rule's reason before its message: Invalid value: "object" (the
    # node's type, for FieldValueInvalid) or Required value.
    assert errors[0].startswith(f"{field}: "), errors
    assert (
        errors[0]
        .split(": ", 1)[1]
        .startswith((f'Invalid value: "object": {message}', f"Required value: {message}"))
    ), errors


@pytest.mark.parametrize("case", list(REJECTED_BY_CEL), ids=list(REJECTED_BY_CEL))
def test_cel_and_kubetune_validate_flag_the_same_field(case: str) -> None:
    """The rule lives in the models' validation and again, in CEL, in the CRD: they must agree
    on where the mistake is."""
    path, value, expected = REJECTED_BY_CEL[case]
    manifest = yaml.safe_dump(edited(STUDY, path, value))
    flagged = {p.path for report in validate_text(manifest, "study.yaml") for p in report.problems}
    assert expected.split(":")[0] in flagged


def test_duplicate_parameter_names_are_found_by_list_map_key() -> None:
    search_space = study_schema()["properties"]["spec"]["properties"]["searchSpace"]
    assert search_space["x-kubernetes-list-type"] == "map"
    assert search_space["x-kubernetes-list-map-keys"] == ["name"]


def test_immutable_fields_come_from_the_models() -> None:
    spec = study_schema()["properties"]["spec"]
    aliases = {TuningStudySpec.model_fields[f].alias for f in IMMUTABLE_SPEC_FIELDS}
    transition = {
        name
        for name, node in spec["properties"].items()
        if any(r["rule"] == "self == oldSelf" for r in node.get("x-kubernetes-validations", []))
    }
    assert transition == aliases
    assert "budget" not in transition


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.objective.metrics.0.direction", "maximize"),
        ("spec.searchSpace.1.high", 8),
        ("spec.algorithm.seed", 7),
        ("spec.pruner.warmupSteps", 5),
        ("spec.warmStart.configurations", []),
        ("spec.trialTemplate.spec.containers.0.image", "other:2"),
    ],
)
def test_an_update_may_not_change_what_makes_trials_comparable(path: str, value: Any) -> None:
    field = path.split(".")[1]
    errors = kubectl_apply_errors(study_schema(), edited(STUDY, path, value), old=STUDY)
    node_type = study_schema()["properties"]["spec"]["properties"][field]["type"]
    # A CEL rule's bad value is the type of the node it sits on, as the API server prints it.
    assert errors == [
        f'spec.{field}: Invalid value: "{node_type}": {field} is immutable once the study '
        "exists: create a new study instead"
    ]


def test_an_update_may_change_the_budget_and_parallelism() -> None:
    updated = edited(edited(STUDY, "spec.budget.parallelism", 8), "spec.budget.maxTrials", 200)
    assert kubectl_apply_errors(study_schema(), updated, old=STUDY) == []


def test_an_optional_immutable_field_may_not_be_added_or_removed() -> None:
    without = edited(STUDY, "spec.warmStart", DELETE)
    expected = [
        'spec.warmStart: Invalid value: "object": warmStart cannot be added or removed once the '
        "study exists: create a new study instead"
    ]
    assert kubectl_apply_errors(study_schema(), without, old=STUDY) == expected
    assert kubectl_apply_errors(study_schema(), STUDY, old=without) == expected


def test_status_keeps_what_kopf_and_optuna_write() -> None:
    study_status = study_schema()["properties"]["status"]["properties"]
    assert study_status["kopf"]["x-kubernetes-preserve-unknown-fields"] is True  # kopf#527
    trial_status = trial_schema()["properties"]["status"]["properties"]
    assert trial_status["systemAttrs"]["x-kubernetes-preserve-unknown-fields"] is True
    assert kubectl_apply_errors(trial_schema(), TRIAL) == []

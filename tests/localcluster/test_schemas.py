"""Admission of custom objects (kubetune_localcluster.admission and the modules beside it):
pruning, defaulting, validation and CEL rules with the field paths, messages and status codes
of a real API server."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_localcluster.admission import admit
from kubetune_localcluster.cel_rules import schema_problems
from kubetune_localcluster.compiled_schemas import compiled
from kubetune_localcluster.field_errors import InvalidObject, invalid_status
from kubetune_localcluster.go_format import go_float

ROOT = Path(__file__).resolve().parents[2]
STUDY_CRD = yaml.safe_load((ROOT / "crds" / "tuningstudies.kubetune.io.yaml").read_text())
STUDY_SCHEMA: dict[str, Any] = STUDY_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
EXAMPLE: dict[str, Any] = yaml.safe_load(
    (ROOT / "examples" / "synthetic-quadratic.yaml").read_text()
)

GADGET: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "label": {"type": "string", "maxLength": 5, "minLength": 2, "pattern": "^[a-z]+$"},
                "note": {"type": "string", "nullable": True},
                "nickname": {"type": "string"},
                "port": {"x-kubernetes-int-or-string": True,
                         "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"},
                         "x-kubernetes-list-type": "set"},
                "ports": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "protocol": {"type": "string", "default": "TCP"},
                            "number": {"type": "integer"},
                        },
                        "x-kubernetes-validations": [
                            {"rule": "!has(self.number) || self.number > 0",
                             "messageExpression":
                                 "'port ' + self.name + ' needs a positive number'",
                             "message": "needs a positive number",
                             "fieldPath": ".number"},
                        ],
                    },
                },
                "limits": {"type": "object",
                           "properties": {"cpu": {"type": "integer", "default": 1}}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "properties": {"spec": {"type": "object"}}},
                "labels": {"type": "object",
                           "additionalProperties": {"type": "string", "maxLength": 3}},
                "replicas": {"type": "integer",
                             "x-kubernetes-validations": [
                                 {"rule": "self >= oldSelf",
                                  "message": "replicas may not go down"}]},
            },
            "x-kubernetes-validations": [
                {"rule": "self.size < 9 || self.color == 'blue'",
                 "message": "big gadgets are blue", "fieldPath": ".color",
                 "reason": "FieldValueForbidden"},
            ],
        },
    },
}  # fmt: skip


def gadget(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": "g", "namespace": "default"},
        "spec": {"size": 3, **spec},
    }


def causes(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    stored = admit(GADGET, old, None)[0] if old is not None else None
    with pytest.raises(InvalidObject) as raised:
        admit(GADGET, obj, stored)
    assert raised.value.code == 422
    return [(c["field"], c["reason"], c["message"]) for c in raised.value.causes]


# --- the example and the study schema -------------------------------------------------------


def test_the_example_study_is_admitted_unchanged_but_for_defaults() -> None:
    admitted, warnings = admit(STUDY_SCHEMA, EXAMPLE, None)
    assert warnings == []
    assert admitted["spec"]["algorithm"] == {**EXAMPLE["spec"]["algorithm"]}
    assert admitted["spec"]["objective"]["metrics"] == [{"name": "loss", "direction": "minimize"}]
    assert admitted["metadata"] == EXAMPLE["metadata"]
    assert "warmStart" not in admitted["spec"]  # no default where the parent is absent
    assert EXAMPLE["spec"].get("status") is None
    assert "kind" in admitted


def test_the_input_is_not_modified() -> None:
    before = copy.deepcopy(EXAMPLE)
    bad = copy.deepcopy(EXAMPLE)
    bad["spec"]["budget"]["typo"] = 1
    admit(STUDY_SCHEMA, bad, None, field_validation="Ignore")
    admit(STUDY_SCHEMA, EXAMPLE, None)
    assert before == EXAMPLE
    assert "typo" in bad["spec"]["budget"]


def test_a_study_error_is_worded_as_the_api_server_does() -> None:
    bad = copy.deepcopy(EXAMPLE)
    bad["spec"]["budget"]["parallelism"] = 0
    with pytest.raises(InvalidObject) as raised:
        admit(STUDY_SCHEMA, bad, None)
    status = invalid_status("TuningStudy", "kubetune.io", "synthetic-quadratic", raised.value)
    assert status == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'TuningStudy.kubetune.io "synthetic-quadratic" is invalid: '
        "spec.budget.parallelism: Invalid value: 0: spec.budget.parallelism in body should be "
        "greater than 0",
        "reason": "Invalid",
        "details": {
            "name": "synthetic-quadratic",
            "group": "kubetune.io",
            "kind": "TuningStudy",
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "message": "Invalid value: 0: spec.budget.parallelism in body should be "
                    "greater than 0",
                    "field": "spec.budget.parallelism",
                }
            ],
        },
        "code": 422,
    }


def test_several_errors_are_listed_in_brackets_and_block_the_cel_rules() -> None:
    bad = copy.deepcopy(EXAMPLE)
    bad["spec"]["algorithm"]["name"] = "bogus"
    bad["spec"]["searchSpace"][0]["low"] = 9  # a CEL error, not reported: the object is invalid
    with pytest.raises(InvalidObject) as raised:
        admit(STUDY_SCHEMA, bad, None)
    message = invalid_status("TuningStudy", "kubetune.io", "s", raised.value)["message"]
    assert message == (
        'TuningStudy.kubetune.io "s" is invalid: [spec.algorithm.name: Unsupported value: '
        '"bogus": supported values: "random", "grid", "tpe", "gp", "cmaes", "qmc", "nsga2", '
        '"nsga3", <nil>: Invalid value: "null": some validation rules were not checked because '
        "the object was invalid; correct the existing errors to complete validation]"
    )


# --- unknown fields --------------------------------------------------------------------------


def test_strict_refuses_unknown_fields_with_a_strict_decoding_error() -> None:
    bad = gadget(colour="red", ports=[{"name": "a", "proto": "x"}])
    bad["metadata"]["labelz"] = {}
    bad["status"] = {}
    with pytest.raises(InvalidObject) as raised:
        admit(GADGET, bad, None)
    assert raised.value.code == 400
    assert invalid_status("Gadget", "example.com", "g", raised.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Gadget in version "v1" cannot be handled as a Gadget: strict decoding error: '
        'unknown field "metadata.labelz", unknown field "spec.colour", '
        'unknown field "spec.ports[0].proto", unknown field "status"',
        "reason": "BadRequest",
        "code": 400,
    }


@pytest.mark.parametrize(("mode", "warned"), [("Warn", True), ("Ignore", False)])
def test_warn_and_ignore_prune_unknown_fields(mode: str, warned: bool) -> None:
    admitted, warnings = admit(GADGET, gadget(colour="red"), None, field_validation=mode)
    assert "colour" not in admitted["spec"]
    assert warnings == (['unknown field "spec.colour"'] if warned else [])


def test_preserved_subtrees_and_embedded_resources_keep_their_fields() -> None:
    template = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}
    obj = gadget(extra={"anything": {"goes": [1]}}, template=template)
    admitted, _ = admit(GADGET, obj, None)
    assert admitted["spec"]["extra"] == {"anything": {"goes": [1]}}
    assert admitted["spec"]["template"] == template
    with pytest.raises(InvalidObject, match=r'unknown field "spec\.template\.bogus"'):
        admit(GADGET, gadget(template={**template, "bogus": 1}), None)


# --- defaults and nulls ----------------------------------------------------------------------


def test_defaults_apply_in_nested_objects_and_list_items_where_the_parent_exists() -> None:
    admitted, _ = admit(GADGET, gadget(ports=[{"name": "a"}], limits={}), None)
    assert admitted["spec"]["color"] == "red"
    assert admitted["spec"]["ports"] == [{"name": "a", "protocol": "TCP"}]
    assert admitted["spec"]["limits"] == {"cpu": 1}
    assert "limits" not in admit(GADGET, gadget(), None)[0]["spec"]


def test_nulls_are_kept_where_nullable_defaulted_or_pruned_otherwise() -> None:
    admitted, _ = admit(GADGET, gadget(note=None, nickname=None, color=None), None)
    assert admitted["spec"]["note"] is None
    assert "nickname" not in admitted["spec"]
    assert admitted["spec"]["color"] == "red"


# --- OpenAPI validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"size": 0}, ("spec.size", "FieldValueInvalid",
                       "Invalid value: 0: spec.size in body should be greater than or equal to 1")),
        ({"size": 11}, ("spec.size", "FieldValueInvalid",
                        "Invalid value: 11: spec.size in body should be less than or equal to 10")),
        ({"ratio": 0.0}, ("spec.ratio", "FieldValueInvalid",
                          "Invalid value: 0: spec.ratio in body should be greater than 0")),
        ({"size": "3"}, ("spec.size", "FieldValueTypeInvalid",
                         'Invalid value: "string": spec.size in body must be of type integer: '
                         '"string"')),
        ({"color": "green"}, ("spec.color", "FieldValueNotSupported",
                              'Unsupported value: "green": supported values: "red", "blue"')),
        ({"label": "toolong"}, ("spec.label", "FieldValueTooLong",
                                "Too long: may not be longer than 5")),
        ({"label": "A1"}, ("spec.label", "FieldValueInvalid",
                           "Invalid value: \"A1\": spec.label in body should match '^[a-z]+$'")),
        ({"tags": ["a", "b", "c"]}, ("spec.tags", "FieldValueTooMany",
                                     "Too many: 3: must have at most 2 items")),
        ({"port": True}, ("spec.port", "FieldValueTypeInvalid",
                          'Invalid value: "boolean": spec.port in body must be of type '
                          'integer,string: "boolean"')),
        ({"labels": {"app.io/x": "long"}}, ("spec.labels.app.io/x", "FieldValueTooLong",
                                            "Too long: may not be longer than 3")),
        ({"ports": [{"protocol": "UDP"}]},
         ("spec.ports[0].name", "FieldValueRequired", "Required value")),
    ],
)  # fmt: skip
def test_schema_errors(spec: dict[str, Any], expected: tuple[str, str, str]) -> None:
    obj = gadget()
    obj["spec"].update(spec)
    assert expected in causes(obj)


def test_required_fields_and_accepted_values() -> None:
    obj = gadget()
    del obj["spec"]["size"]
    assert ("spec.size", "FieldValueRequired", "Required value") in causes(obj)
    admit(GADGET, gadget(port="http", ratio=1, size=2.0, tags=["a"]), None)  # 2.0 is an integer


def test_list_types_refuse_duplicates() -> None:
    found = causes(gadget(tags=["a", "a"], ports=[{"name": "x"}, {"name": "x", "number": 2}]))
    assert ("spec.tags[1]", "FieldValueDuplicate", 'Duplicate value: "a"') in found
    assert (
        "spec.ports[1]",
        "FieldValueDuplicate",
        'Duplicate value: map[string]interface {}{"name":"x"}',
    ) in found


# --- CEL -------------------------------------------------------------------------------------


def test_cel_rules_with_message_expression_field_path_and_reason() -> None:
    assert causes(gadget(ports=[{"name": "web", "number": 0}])) == [
        ("spec.ports[0].number", "FieldValueInvalid",
         'Invalid value: "object": port web needs a positive number'),
    ]  # fmt: skip
    assert causes(gadget(size=9)) == [
        ("spec.color", "FieldValueForbidden", "Forbidden: big gadgets are blue"),
    ]


def test_transition_rules_run_only_on_update_where_the_old_value_exists() -> None:
    admit(GADGET, gadget(replicas=1), None)
    admit(GADGET, gadget(replicas=1), admit(GADGET, gadget(), None)[0])
    assert causes(gadget(replicas=1), old=gadget(replicas=2)) == [
        (
            "spec.replicas",
            "FieldValueInvalid",
            'Invalid value: "integer": replicas may not go down',
        ),
    ]


def test_an_unchanged_invalid_value_passes_an_update_ratcheting() -> None:
    stored = gadget(size=42, color="blue")  # stored before the schema said maximum 10
    updated = copy.deepcopy(stored)
    updated["spec"]["label"] = "new"
    assert admit(GADGET, updated, stored)[0]["spec"]["size"] == 42
    updated["spec"]["size"] = 43
    with pytest.raises(InvalidObject, match=r"spec\.size"):
        admit(GADGET, updated, stored)


def test_memoized_rule_outcomes_give_the_same_errors_twice() -> None:
    bad = gadget(ports=[{"name": "web", "number": -1}])
    assert causes(bad) == causes(copy.deepcopy(bad))


def test_schemas_compile_once_by_identity_or_content() -> None:
    assert compiled(GADGET) is compiled(GADGET)
    assert compiled(copy.deepcopy(GADGET)) is compiled(GADGET)
    assert schema_problems(GADGET) == []
    broken = {"type": "object", "x-kubernetes-validations": [{"rule": "self.a >"}]}
    assert len(schema_problems(broken)) == 1


@pytest.mark.parametrize(
    ("value", "text"),
    [(1e6, "1e+06"), (4294967295.0, "4.294967295e+09"), (0.5, "0.5"), (100000.0, "100000"),
     (1e-5, "1e-05"), (-2.5, "-2.5"), (0.0001, "0.0001")],
)  # fmt: skip
def test_numbers_print_as_go_prints_them(value: float, text: str) -> None:
    assert go_float(value) == text

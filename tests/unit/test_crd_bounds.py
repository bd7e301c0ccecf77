"""Every list, string, map and number a user writes in a TuningStudy is bounded in the CRD, so
the API server refuses the absurd at apply, naming the field. The exceptions are the pod template
(its schema is Kubernetes' own PodSpec, which bounds nothing either) and warm-start results'
objective values (any float64 a run reported; JSON has no infinities)."""

from __future__ import annotations

from typing import Any

from kubetune.spec.crd import study_schema, trial_schema

UNBOUNDED_BY_DESIGN = ("spec.trialTemplate", "spec.warmStart.results[].values[]")


def unbounded(node: dict[str, Any], path: str) -> list[str]:
    if path.startswith(UNBOUNDED_BY_DESIGN):
        return []
    kind = node.get("type")
    found = []
    if "enum" not in node:
        if kind == "string" and "maxLength" not in node and node.get("format") != "date-time":
            found.append(path)
        if kind == "array" and "maxItems" not in node:
            found.append(path)
        if kind in ("integer", "number") and not {"minimum", "maximum"} <= set(node):
            found.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            found.append(path)
    for name, child in node.get("properties", {}).items():
        found += unbounded(child, f"{path}.{name}")
    if "items" in node:
        found += unbounded(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += unbounded(node["additionalProperties"], f"{path}.*")
    return found


def test_every_field_of_the_spec_is_bounded() -> None:
    assert unbounded(study_schema()["properties"]["spec"], "spec") == []


def test_the_walk_finds_an_unbounded_field() -> None:
    assert unbounded({"type": "object", "properties": {"n": {"type": "integer"}}}, "spec") == [
        "spec.n"
    ]


def test_the_root_refuses_names_past_the_label_limit() -> None:
    (rule,) = study_schema()["x-kubernetes-validations"]
    assert rule["rule"] == "self.metadata.name.size() <= 63"
    assert "label values are limited to 63" in rule["message"]


def test_the_trials_spec_and_the_status_lists_and_strings_are_bounded() -> None:
    # Numbers in the status are the operator's own sums and times; what a trainer controls
    # (messages, metrics, values) is bounded.
    trial = trial_schema()["properties"]
    assert unbounded(trial["spec"], "spec") == []
    numbers = {"status.intermediateValues[].step", "status.intermediateValues[].value"}
    numbers |= {"status.reportedSteps", "status.values[]", "status.metrics.*", "status.gpus"}
    numbers |= {"status.gpuSeconds", "status.cost"}
    assert set(unbounded(trial["status"], "status")) == numbers

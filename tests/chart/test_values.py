"""The chart's values: values.schema.json rejects each kind of mistake (as `helm install`
would, before rendering anything), agrees with values.yaml, every field of values.yaml is
documented, and the README's values table is the one generated from the schema."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.conftest import CHART, render
from tests.chart.values_table import rows, with_table

SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())

# One case per kind of mistake: the values, and where Helm's message must point.
MISTAKES = {
    "unknown top-level field": ({"replicas": 2}, "at '': additional properties 'replicas'"),
    "misspelled nested field": (
        {"image": {"tags": "1.0"}},
        "at '/image': additional properties 'tags'",
    ),
    "string for an integer": ({"replicaCount": "1"}, "at '/replicaCount': got string"),
    "string for a boolean": ({"ha": {"enabled": "true"}}, "at '/ha/enabled': got string"),
    "scalar for a list": (
        {"watch": {"namespaces": "team-a"}},
        "at '/watch/namespaces': got string, want array",
    ),
    "list for an object": ({"nodeSelector": ["linux"]}, "at '/nodeSelector': got array"),
    "number for a label value": (
        {"metrics": {"serviceMonitor": {"additionalLabels": {"release": 1}}}},
        "at '/metrics/serviceMonitor/additionalLabels/release': got number",
    ),
    "below the minimum": ({"ha": {"replicas": 1}}, "at '/ha/replicas': minimum"),
    "above the maximum": ({"operator": {"metricsPort": 70000}}, "at '/operator/metricsPort'"),
    "several replicas without HA": ({"replicaCount": 2}, "at '/replicaCount': maximum"),
    "not one of the choices": (
        {"image": {"pullPolicy": "Sometimes"}},
        "at '/image/pullPolicy'",
    ),
    "invalid namespace name": (
        {"watch": {"namespaces": ["Team_A"]}},
        "at '/watch/namespaces/0'",
    ),
    "duplicate namespace": (
        {"watch": {"namespaces": ["team-a", "team-a"]}},
        "at '/watch/namespaces'",
    ),
    "invalid duration": (
        {"metrics": {"podMonitor": {"interval": "15 seconds"}}},
        "at '/metrics/podMonitor/interval'",
    ),
    "invalid digest": ({"image": {"digest": "latest"}}, "at '/image/digest'"),
    "string for the dashboard's port": (
        {"dashboard": {"enabled": True, "port": "8080"}},
        "at '/dashboard/port': got string, want integer",
    ),
    "string for the dashboard switch": (
        {"dashboard": {"enabled": "yes"}},
        "at '/dashboard/enabled': got string, want boolean",
    ),
    "misspelled dashboard ingress field": (
        {"dashboard": {"ingress": {"enabled": True, "class": "nginx"}}},
        "at '/dashboard/ingress': additional properties 'class'",
    ),
    "ingress path without its type": (
        {"dashboard": {"ingress": {"hosts": [{"host": "a.example", "paths": [{"path": "/"}]}]}}},
        "at '/dashboard/ingress/hosts/0/paths/0'",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_the_schema_rejects_a_mistake(mistake: str) -> None:
    values, where = MISTAKES[mistake]
    with pytest.raises(helm.HelmValuesError) as caught:
        render(values)
    assert where in str(caught.value)


def test_the_schema_accepts_the_documented_values() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(VALUES))


def test_every_object_with_fields_forbids_unknown_ones() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, path
            for name, child in node["properties"].items():
                walk(child, f"{path}.{name}")
        assert node.get("description") or not path, f"{path} has no description"

    walk(SCHEMA, "")


def test_the_schema_defaults_are_values_yaml() -> None:
    def default_at(path: str) -> Any:
        value: Any = VALUES
        for part in path.split("."):
            value = value[part]
        return value

    documented = {path: json.loads(default) for path, _, default, _ in rows(SCHEMA)}
    assert documented == {path: default_at(path) for path in documented}
    # And every value of values.yaml is in the schema.
    assert set(VALUES) <= set(SCHEMA["properties"])


def test_every_field_of_values_yaml_is_documented() -> None:
    """Each key that the schema describes has a comment right above it in values.yaml."""
    described = {path for path, _, _, _ in rows(SCHEMA)}
    described |= {path.rsplit(".", 1)[0] for path in described if "." in path}
    stack: list[tuple[int, str]] = []
    previous = ""
    undocumented = []
    for line in (CHART / "values.yaml").read_text().splitlines():
        key = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if key:
            indent = len(key[1])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([name for _, name in stack] + [key[2]])
            stack.append((indent, key[2]))
            if path in described and not previous.lstrip().startswith("#"):
                undocumented.append(path)
        if line.strip():
            previous = line
    assert undocumented == [], undocumented


def test_the_readme_values_table_is_generated_from_the_schema() -> None:
    readme = (CHART / "README.md").read_text()
    assert with_table(readme, SCHEMA) == readme, "run: python -m tests.chart.values_table"
    assert "| `ha.enabled` | boolean | `false` |" in readme

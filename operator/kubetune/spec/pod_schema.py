"""Kubernetes' own core/v1 PodSpec schema, as the CRD's `spec.trialTemplate.spec`.

The trial template used to keep unknown fields, so anything reached the operator: a typo that
hung the study, or a value nested 1000 levels deep that crashed kopf's watch stream for every
study. With Kubernetes' schema embedded, as kubebuilder-generated CRDs such as JobSet and Kueue
embed PodTemplateSpec, the API server prunes or (under kubectl's strict field validation)
refuses unknown fields and refuses wrong types there, at apply, naming the field.

`podspec.json` is generated from the Kubernetes v1.37 OpenAPI definitions that the dev
dependency kubernetes-validate ships (`python -m kubetune.spec.pod_schema` writes it; a test
regenerates it and compares). It is vendored because the operator image has no dev
dependencies. The conversion makes the definitions a structural schema:
- `$ref`s are inlined;
- `type: [T, "null"]` becomes `T` (the API server prunes nulls, as it does for built-in kinds);
- IntOrString and Quantity become `x-kubernetes-int-or-string`;
- descriptions are left out, as kubebuilder's `crd:maxDescLen=0` does: they would make the CRD
  several times larger, and `kubectl explain pod.spec` has them;
- list-map keys stay where every key is required (containers, env, volumes by name); a list
  whose keys have only a Go default (ports by containerPort and protocol) becomes atomic, since
  a CRD may not key a list on an optional field.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Final

Schema = dict[str, Any]

KUBERNETES_VERSION: Final = "v1.37.0"
"""The Kubernetes version whose definitions podspec.json holds."""
SCHEMA_FILE: Final = "podspec.json"
POD_SPEC: Final = "io.k8s.api.core.v1.PodSpec"
INT_OR_STRING: Final = frozenset(
    {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "io.k8s.apimachinery.pkg.api.resource.Quantity",
    }
)


def pod_spec_schema() -> Schema:
    """The structural schema of core/v1 PodSpec, a fresh copy the caller may change."""
    text = resources.files("kubetune.spec").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: Schema = json.loads(text)
    return schema


def structural(definitions: dict[str, Schema], name: str = POD_SPEC) -> Schema:
    """The definition `name`, with everything it refers to, as a structural schema."""
    return _Converter(definitions).definition(name, ())


class _Converter:
    def __init__(self, definitions: dict[str, Schema]) -> None:
        self.definitions = definitions

    def definition(self, name: str, seen: tuple[str, ...]) -> Schema:
        if name in INT_OR_STRING:
            return {"x-kubernetes-int-or-string": True}
        if name in seen:  # no core/v1 pod type refers to itself; say so if one ever does
            raise ValueError(f"{' -> '.join((*seen, name))}: a recursive definition")
        return self.convert(self.definitions[name], (*seen, name))

    def convert(self, node: Schema, seen: tuple[str, ...]) -> Schema:
        if "$ref" in node:
            return self.definition(node["$ref"].rsplit("/", 1)[-1], seen)
        if "oneOf" in node:
            raise ValueError(f"{seen[-1]}: a oneOf that is neither IntOrString nor Quantity")
        out: Schema = {}
        types = node.get("type")
        if isinstance(types, list):
            types = [kind for kind in types if kind != "null"]
            types = types[0] if len(types) == 1 else None
        if types is not None:
            out["type"] = types
        if "enum" in node:
            out["enum"] = [value for value in node["enum"] if value is not None]
        if "properties" in node:
            out["properties"] = {
                key: self.convert(value, seen) for key, value in sorted(node["properties"].items())
            }
        if isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = self.convert(node["additionalProperties"], seen)
        if "items" in node:
            out["items"] = self.convert(node["items"], seen)
        if node.get("required"):
            out["required"] = sorted(node["required"])
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = node["x-kubernetes-list-map-keys"]
            if set(keys) <= set(out["items"].get("required", [])):
                out["x-kubernetes-list-type"] = "map"
                out["x-kubernetes-list-map-keys"] = keys
        elif list_type == "set" and "type" in out["items"]:
            out["x-kubernetes-list-type"] = "set"
        return out


def generated(definitions_file: Path) -> str:
    """podspec.json's text, from kubernetes-validate's `_definitions.json`."""
    definitions = json.loads(definitions_file.read_text(encoding="utf-8"))["$defs"]
    return json.dumps(structural(definitions), indent=1, sort_keys=True) + "\n"


def definitions_file() -> Path:
    """kubernetes-validate's definitions of KUBERNETES_VERSION (a dev dependency)."""
    import kubernetes_validate  # type: ignore[import-untyped]  # a dev dependency

    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return folder / f"{KUBERNETES_VERSION}-local" / "_definitions.json"


if __name__ == "__main__":
    target = Path(__file__).with_name(SCHEMA_FILE)
    target.write_text(generated(definitions_file()), encoding="utf-8")
    print(f"wrote {target}")

"""The CustomResourceDefinitions of TuningStudy and TuningTrial, generated from the API models.

`kubetune crds -o crds/` writes what `crd_files()` returns; a unit test fails when the
committed crds/*.yaml differ from it. The schema is pydantic's JSON schema of the spec and
status models, rewritten into a Kubernetes *structural* schema by a small converter here:
`$ref`s inlined, `anyOf [T, null]` turned into `T` with `nullable: true`, `int | str` into
`x-kubernetes-int-or-string`, values that may be any scalar (categorical choices, fixed values,
params maps) and free-form dicts into `x-kubernetes-preserve-unknown-fields`, the draft 2020-12
numeric `exclusiveMinimum` into OpenAPI 3.0's boolean form, and titles dropped.

Why our own converter rather than kube-custom-resource: with pydantic 2.14, its 0.7.2 release
leaves `anyOf [{type: string}, {type: 'null'}]` in the output, which the API server refuses,
and it has no hook for our scalar unions, CEL rules or list-map keys; fixing its output would
take a converter of the same size as this one. This one fails loudly (CrdGenerationError, with
the field path) on any JSON schema construct it does not know how to make structural, instead
of emitting a CRD that a real cluster rejects.

Rules that a schema cannot express but CEL can are added as `x-kubernetes-validations`:
immutability of the fields in IMMUTABLE_SPEC_FIELDS (transition rules), and the parameter,
budget and pruner checks that `kubetune validate` also makes, so that `kubectl apply` rejects
the same mistakes with a message that names the field and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import yaml
from pydantic import BaseModel

from kubetune.spec import api
from kubetune.spec.pod_schema import pod_spec_schema
from kubetune.spec.study import IMMUTABLE_SPEC_FIELDS, TuningStudySpec
from kubetune.spec.study_status import TuningStudyStatus
from kubetune.spec.trial import TuningTrialSpec, TuningTrialStatus

Schema = dict[str, Any]

_SCALAR_TYPES: Final = frozenset({"boolean", "integer", "number", "string"})
_SCALAR_BOUNDS: Final = frozenset({"minimum", "maximum", "maxLength"})
_DROPPED_KEYS: Final = frozenset({"title", "$schema", "propertyNames"})
_KEY_ORDER: Final = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "example",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
)

HEADER: Final = (
    "# Generated from the pydantic models in operator/kubetune/spec by `kubetune crds -o crds/`.\n"
    "# Do not edit: change the models and run that command again.\n"
)


class CrdGenerationError(ValueError):
    """A model uses a construct that has no structural-schema equivalent."""


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry; `fieldPath` is relative to the node it sits on."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None
    message_expression: str | None = None

    def to_schema(self) -> Schema:
        entry: Schema = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            entry["messageExpression"] = self.message_expression
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


def _parameter_rule(rule: str, message: str, field: str, reason: str) -> CelRule:
    # The message expression names the parameter; the API server prefixes the field path
    # (spec.searchSpace[2].low), so the user sees both where and which.
    return CelRule(
        rule=rule,
        message=message,
        field_path=field,
        reason=reason,
        message_expression=f"'parameter ' + self.name + ': {message}'",
    )


_INVALID: Final = "FieldValueInvalid"
_REQUIRED: Final = "FieldValueRequired"

# Checks a schema cannot express. Paths use property names and [] for list items.
RULES: Final[dict[str, tuple[CelRule, ...]]] = {
    "spec.searchSpace[]": (
        _parameter_rule(
            "!has(self.low) || !has(self.high) || self.low < self.high",
            "low must be less than high: swap them or widen the range",
            ".low",
            _INVALID,
        ),
        _parameter_rule(
            "!has(self.log) || !self.log || (has(self.low) && self.low > 0.0)",
            "a log scale needs low > 0: raise low above zero or remove log",
            ".low",
            _INVALID,
        ),
        _parameter_rule(
            "!(self.type in ['float', 'int']) || (has(self.low) && has(self.high))",
            "float and int parameters need low and high: set both bounds",
            ".high",
            _REQUIRED,
        ),
        # Not CEL: "categorical needs choices" and "fixed needs value". Those fields hold scalar
        # unions (preserve-unknown-fields, no type), which Kubernetes leaves out of the type CEL
        # sees, so a rule naming them does not compile and the real API server refuses the
        # whole CRD. spec.search_space_rules names both mistakes (the study becomes Invalid).
    ),
    "spec.budget": (
        CelRule(
            "!(has(self.maxGpuHours) || has(self.money)) || has(self.trialTimeout)",
            "trialTimeout is required with maxGpuHours or money: it bounds what one trial can "
            "cost; set it, for example trialTimeout: 2h",
            ".trialTimeout",
            _REQUIRED,
        ),
    ),
    "spec.pruner": (
        CelRule(
            "!has(self.name) || self.name != 'percentile' || has(self.percentile)",
            "the percentile pruner needs percentile: set it, for example percentile: 25",
            ".percentile",
            _REQUIRED,
        ),
        CelRule(
            "!has(self.name) || self.name != 'patient' || has(self.patience)",
            "the patient pruner needs patience: set the steps without improvement to allow",
            ".patience",
            _REQUIRED,
        ),
    ),
}

NAME_RULE: Final = CelRule(
    f"self.metadata.name.size() <= {api.MAX_STUDY_NAME_LENGTH}",
    f"metadata.name may have at most {api.MAX_STUDY_NAME_LENGTH} characters: it is the value of "
    f"the {api.STUDY_LABEL} label on each trial and pod, and label values are limited to "
    f"{api.MAX_STUDY_NAME_LENGTH}; choose a shorter name",
    reason=_INVALID,
)
"""On the schema's root, where CEL sees metadata.name (and only name and generateName). No
fieldPath: the API server accepts only paths the schema declares, and metadata has no
properties there; the message names the field instead."""

# Lists whose items are identified by a key: the API server rejects a duplicate key (two
# parameters named lr) and merges them by key under server-side apply.
LIST_MAP_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "spec.objective.metrics": ("name",),
    "spec.searchSpace": ("name",),
    "spec.trialTemplate.spec.containers": ("name",),
    "status.conditions": ("type",),
}

STUDY_DESCRIPTIONS: Final = (
    "A hyperparameter tuning study: the operator runs one training pod per trial with the "
    "hyperparameters Optuna suggests, prunes hopeless trials and stops when a budget is spent.",
    "What to optimize, over which search space, how, within which budget, and the pod each "
    "trial runs. Only budget may change once the study exists.",
    "Progress of the study, written by the operator: phase, conditions, trial counts, best "
    "trial and budget used. It never grows with the number of trials.",
)
TRIAL_DESCRIPTIONS: Final = (
    "One training run of a TuningStudy: its hyperparameters, state and reported values. Owned "
    "by its study and created by the operator; the study is rebuilt from its trials.",
    "Which study the trial belongs to, its number and its hyperparameters.",
    "State, reported values, timings and cost of the trial, and the Optuna state needed to "
    "rebuild the study, written by the operator.",
)


# --- JSON schema to structural schema --------------------------------------------------------


def _clean_description(text: str) -> str:
    # Docstrings are wrapped at 100 columns; kubectl explain wraps by itself.
    return re.sub(r"\s+", " ", text).strip()


def _ordered(node: Schema) -> Schema:
    rank = {key: index for index, key in enumerate(_KEY_ORDER)}
    return {key: node[key] for key in sorted(node, key=lambda k: (rank.get(k, len(rank)), k))}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


class _Converter:
    """Rewrites one pydantic JSON schema (with its $defs) into a structural schema."""

    def __init__(self, defs: dict[str, Schema], *, with_defaults: bool) -> None:
        self._defs = defs
        self._with_defaults = with_defaults

    def _dereference(self, node: Schema, path: str) -> Schema:
        while "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in self._defs:
                raise CrdGenerationError(f"{path}: unknown reference {node['$ref']}")
            # What the referring field says (description, default) wins over the type's own.
            node = {**self._defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def convert(self, node: Schema, path: str) -> Schema:
        node = self._dereference(dict(node), path)
        out: Schema = {}
        if "anyOf" in node:
            # The field's own keys (description, default) then apply to the merged node.
            out.update(self._union(node.pop("anyOf"), path))
        for key in ("allOf", "oneOf", "not"):
            if key in node:
                raise CrdGenerationError(f"{path}: {key} has no structural equivalent here")
        for key, value in node.items():
            if key in _DROPPED_KEYS:
                continue
            if key == "description":
                out["description"] = _clean_description(value)
            elif key == "const":
                out["enum"] = [value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
                # JSON schema 2020-12 puts the bound here; OpenAPI 3.0 wants a flag beside it.
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                out[bound] = value
                out[key] = True
            elif key == "examples":
                out["example"] = value[0]
            elif key == "properties":
                out["properties"] = {
                    name: self.convert(child, f"{path}.{name}") for name, child in value.items()
                }
            elif key == "patternProperties":
                # A map whose keys follow a pattern: CRDs cannot check key patterns, the
                # operator's validation does. The values keep their schema.
                (child,) = value.values()
                out["additionalProperties"] = self.convert(child, f"{path}.*")
            elif key == "additionalProperties":
                if value is True:
                    out["x-kubernetes-preserve-unknown-fields"] = True
                elif isinstance(value, dict):
                    out["additionalProperties"] = self.convert(value, f"{path}.*")
                # False: unknown fields are pruned (and refused by kubectl's strict validation).
            elif key == "items":
                out["items"] = self.convert(value, f"{path}[]")
            elif key == "default":
                continue  # decided below, once the node is converted
            else:
                out[key] = value
        if "properties" in out and "additionalProperties" in out:
            raise CrdGenerationError(f"{path}: both properties and additionalProperties")
        if self._with_defaults and "default" in node:
            default = self._meaningful_default(node["default"], out)
            if default is not None:
                out["default"] = default
        return _ordered(out)

    def _union(self, branches: list[Schema], path: str) -> Schema:
        kept = [self._dereference(b, path) for b in branches if b.get("type") != "null"]
        out: Schema = {"nullable": True} if len(kept) < len(branches) else {}
        if len(kept) == 1:
            out.update(self.convert(kept[0], path))
            return out
        # A scalar branch's own bounds (a choice's maxLength, int64) cannot be kept in a union
        # with no type; spec.manifests.parse_study checks them.
        if any(set(b) - _SCALAR_BOUNDS != {"type"} or b["type"] not in _SCALAR_TYPES for b in kept):
            raise CrdGenerationError(f"{path}: a union of {kept} has no structural equivalent")
        types = {b["type"] for b in kept}
        if types == {"integer", "string"}:
            # The one union Kubernetes allows: a quantity such as 1 or "500Mi".
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            out["x-kubernetes-int-or-string"] = True
        else:
            # A string, number or boolean: no structural type covers it, so the value is kept
            # as written and the operator's validation checks it. Only a scalar fits: an
            # object or a list there would be kept as written, nested to any depth (one nested
            # 1000 deep crashed the watch stream of the operator), and these bounds apply to
            # objects and lists alone.
            out["x-kubernetes-preserve-unknown-fields"] = True
            out["maxProperties"] = 0
            out["maxItems"] = 0
        return out

    def _meaningful_default(self, value: Any, node: Schema) -> Any:
        """The default worth showing: not null, empty or false; an object's default as {} when
        the API server can rebuild it from the defaults of its fields."""
        if value is None or value is False or value in ("", [], {}):
            return None
        if isinstance(value, dict):
            implied = {
                name: child["default"]
                for name, child in node.get("properties", {}).items()
                if "default" in child
            }
            value = _without_nulls(value)
            return {} if value == implied else value
        return value


def _node_at(schema: Schema, path: str) -> Schema:
    node = schema
    for part in path.split("."):
        name, items = (part[:-2], True) if part.endswith("[]") else (part, False)
        try:
            node = node["properties"][name]
            if items:
                node = node["items"]
        except KeyError:
            raise CrdGenerationError(f"{path}: no such field in the schema") from None
    return node


def _add_validations(node: Schema, rules: list[Schema]) -> None:
    node["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), *rules]


def _immutability_rules(schema: Schema) -> None:
    spec = schema["properties"]["spec"]
    presence: list[Schema] = []
    for field_name in IMMUTABLE_SPEC_FIELDS:
        field = TuningStudySpec.model_fields[field_name]
        alias = field.alias or field_name
        _add_validations(
            spec["properties"][alias],
            [
                {
                    "rule": "self == oldSelf",
                    "message": f"{alias} is immutable once the study exists: "
                    "create a new study instead",
                }
            ],
        )
        # A transition rule on a field runs only when the field is in both the old and the new
        # object; adding or removing an optional one is caught on spec, which always exists.
        if alias not in spec.get("required", []) and "default" not in spec["properties"][alias]:
            presence.append(
                {
                    "rule": f"has(self.{alias}) == has(oldSelf.{alias})",
                    "message": f"{alias} cannot be added or removed once the study exists: "
                    "create a new study instead",
                    "fieldPath": f".{alias}",
                }
            )
    if presence:
        _add_validations(spec, presence)


def model_schema(model: type[BaseModel], path: str, *, with_defaults: bool) -> Schema:
    """The structural schema of one API model (a spec or a status), before CEL rules."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _Converter(defs, with_defaults=with_defaults).convert(raw, path)


def _described(schema: Schema, fallback: str) -> Schema:
    # A model's class docstring is its description; the top-level models may have none.
    return _ordered({"description": fallback, **schema})


def _root_schema(
    descriptions: tuple[str, str, str], spec: type[BaseModel], status: type[BaseModel]
) -> Schema:
    description, spec_description, status_description = descriptions
    schema: Schema = {
        "description": description,
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": f"{api.API_VERSION}: the API group and version of this object.",
                "type": "string",
            },
            "kind": {"description": "The kind of this object.", "type": "string"},
            # The API server owns metadata; a CRD may only restrict name and generateName.
            "metadata": {"type": "object"},
            # Defaults apply to what users write; status is written whole by the operator.
            "spec": _described(model_schema(spec, "spec", with_defaults=True), spec_description),
            "status": _described(
                model_schema(status, "status", with_defaults=False), status_description
            ),
        },
        "required": ["spec"],
    }
    for path, keys in LIST_MAP_KEYS.items():
        if path.split(".", 1)[0] not in schema["properties"]:
            continue
        try:
            node = _node_at(schema, path)
        except CrdGenerationError:
            continue  # a path of the other kind
        node["x-kubernetes-list-type"] = "map"
        node["x-kubernetes-list-map-keys"] = list(keys)
    return schema


# What our own model of the pod spec adds to Kubernetes' schema of it: descriptions and the
# narrower rules of a trial pod (at least one container; restartPolicy Never or OnFailure).
_OVERLAID: Final = (
    "description",
    "enum",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
)


def _overlay(ours: Schema, kubernetes: Schema) -> Schema:
    """Kubernetes' schema of a node, with our model's constraints and descriptions on it."""
    out = dict(kubernetes)
    out.update({key: ours[key] for key in _OVERLAID if key in ours})
    if ours.get("required"):
        out["required"] = sorted({*kubernetes.get("required", []), *ours["required"]})
    for branch in ("items", "additionalProperties"):
        if isinstance(ours.get(branch), dict) and isinstance(kubernetes.get(branch), dict):
            out[branch] = _overlay(ours[branch], kubernetes[branch])
    if "properties" in kubernetes:
        out["properties"] = {
            name: _overlay(ours.get("properties", {}).get(name, {}), node)
            for name, node in kubernetes["properties"].items()
        }
    return _ordered(out)


def _embed_pod_spec(schema: Schema) -> None:
    """spec.trialTemplate.spec becomes Kubernetes' own PodSpec schema (spec/pod_schema.py)."""
    template = _node_at(schema, "spec.trialTemplate")
    template["properties"]["spec"] = _overlay(template["properties"]["spec"], pod_spec_schema())


def study_schema() -> Schema:
    """The openAPIV3Schema of TuningStudy, CEL rules included."""
    schema = _root_schema(STUDY_DESCRIPTIONS, TuningStudySpec, TuningStudyStatus)
    _embed_pod_spec(schema)
    for path, rules in RULES.items():
        _add_validations(_node_at(schema, path), [rule.to_schema() for rule in rules])
    _add_validations(schema, [NAME_RULE.to_schema()])
    _immutability_rules(schema)
    return schema


def trial_schema() -> Schema:
    """The openAPIV3Schema of TuningTrial."""
    return _root_schema(TRIAL_DESCRIPTIONS, TuningTrialSpec, TuningTrialStatus)


# --- the CRD objects -------------------------------------------------------------------------


def _column(
    name: str, type_: str, json_path: str, description: str, *, priority: int = 0
) -> Schema:
    column: Schema = {
        "name": name,
        "type": type_,
        "jsonPath": json_path,
        "description": description,
    }
    if priority:
        # kubectl shows a column of priority above 0 only with `-o wide`.
        column["priority"] = priority
    return column


_AGE: Final = _column("Age", "date", ".metadata.creationTimestamp", "Time since creation.")

STUDY_COLUMNS: Final = (
    _column(
        "Phase",
        "string",
        ".status.phase",
        "Pending, Running, Reevaluating, Completed, Failed or Invalid.",
    ),
    _column("Trials", "string", ".status.progress", "Finished trials over maxTrials."),
    _column("Running", "integer", ".status.trials.running", "Trials running now."),
    _column("Best", "number", ".status.bestTrial.value", "Best objective value so far."),
    # With several objectives Best is empty (there is no single best value): Front says how
    # many trials are on the Pareto front; it reads 0 for a single-objective study.
    _column(
        "Front",
        "integer",
        ".status.paretoFrontSize",
        "Trials on the Pareto front (several objectives).",
    ),
    # The result of spec.reevaluation, beside the search's Best: the trial whose configuration
    # is best on average over new seeds, and how optimistic the search's value of it was.
    _column(
        "Recommended",
        "integer",
        ".status.recommendation.trial",
        "The search trial whose configuration is recommended after re-evaluation.",
    ),
    _column(
        "Gap",
        "number",
        ".status.recommendation.generalizationGap",
        "Generalization gap: how much worse the re-evaluated mean is than the search's value "
        "(positive: the search was optimistic).",
    ),
    _column(
        "Mean",
        "number",
        ".status.recommendation.mean",
        "The recommended configuration's mean of the re-evaluation metric over its seeds.",
        priority=1,
    ),
    _column("GPU-Hours", "number", ".status.budget.gpuHours", "GPU-hours used so far."),
    _AGE,
)
TRIAL_COLUMNS: Final = (
    _column("Study", "string", ".spec.study", "The study the trial belongs to."),
    _column("Number", "integer", ".spec.number", "Trial number within the study."),
    # A re-run has the number of the search trial it repeats; Repeat tells them apart.
    _column(
        "Repeat",
        "integer",
        ".spec.reevaluation.repeat",
        "Which re-evaluation run of trial Number's configuration this is (empty for a search "
        "trial).",
    ),
    _column("State", "string", ".status.state", "Pending, Running, Succeeded, Pruned, ..."),
    _column("Value", "number", ".status.values[0]", "Final value of the first objective."),
    _column("Seed", "integer", ".spec.seed", "The seed the trainer received.", priority=1),
    _AGE,
)


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: tuple[str, ...],
    schema: Schema,
    columns: tuple[Schema, ...],
) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{api.GROUP}",
            "labels": {
                "app.kubernetes.io/name": "kubetune",
                "app.kubernetes.io/part-of": "kubetune",
            },
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": [api.CATEGORY],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(column) for column in columns],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def study_crd() -> Schema:
    """The CustomResourceDefinition of TuningStudy, as a dict."""
    return _crd(
        kind=api.STUDY_KIND,
        plural=api.STUDY_PLURAL,
        singular=api.STUDY_SINGULAR,
        short_names=api.STUDY_SHORT_NAMES,
        schema=study_schema(),
        columns=STUDY_COLUMNS,
    )


def trial_crd() -> Schema:
    """The CustomResourceDefinition of TuningTrial, as a dict."""
    return _crd(
        kind=api.TRIAL_KIND,
        plural=api.TRIAL_PLURAL,
        singular=api.TRIAL_SINGULAR,
        short_names=api.TRIAL_SHORT_NAMES,
        schema=trial_schema(),
        columns=TRIAL_COLUMNS,
    )


def crds() -> list[Schema]:
    """Both CRDs, study first."""
    return [study_crd(), trial_crd()]


class _PlainDumper(yaml.SafeDumper):
    """Writes a node shared by two fields out twice: anchors and aliases read badly in a CRD."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def crd_files() -> dict[str, str]:
    """File name -> YAML text of each CRD, in a stable order (what `kubetune crds` writes)."""
    return {
        f"{crd['metadata']['name']}.yaml": HEADER
        + yaml.dump(crd, Dumper=_PlainDumper, sort_keys=False, width=100, allow_unicode=True)
        for crd in crds()
    }

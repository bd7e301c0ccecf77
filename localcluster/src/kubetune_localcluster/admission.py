"""Admission of custom objects against their CRD's openAPIV3Schema, as a Kubernetes API server
does it: unknown fields pruned (or refused under fieldValidation=Strict), nulls pruned and
defaults applied, the OpenAPI validation, list-type map/set uniqueness and the CEL
x-kubernetes-validations rules (cel-python), with the field paths and messages the real server
gives (apiextensions-apiserver: pruning, defaulting, listtype and cel packages; kube-openapi's
validate errors, apimachinery's field.Error wording).

The steps are the modules beside this one, over the schema `compiled_schemas` compiles once:
`pruning`, `openapi_validation`, `cel_validation`; the errors are `field_errors`. jsonschema is
not used: it cannot word errors as Kubernetes does and knows nothing of nullable,
int-or-string, list types, embedded resources or ratcheting.
"""

from __future__ import annotations

from typing import Any

from kubetune_localcluster.cel_validation import cel_causes
from kubetune_localcluster.compiled_schemas import MISSING, Schema, compiled
from kubetune_localcluster.field_errors import Cause, InvalidObject, field_error
from kubetune_localcluster.openapi_validation import list_type_causes, schema_causes
from kubetune_localcluster.pruning import copy_value, fill_defaults, prune_nulls, prune_unknown

# Errors after which the API server does not run the CEL rules (hasBlockingErr).
_BLOCKING = frozenset(
    {
        "FieldValueNotSupported",
        "FieldValueRequired",
        "FieldValueTooLong",
        "FieldValueTooMany",
        "FieldValueTypeInvalid",
    }
)
_NOT_CHECKED = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


def validate(schema: Schema, obj: Any, old: Any = None) -> list[Cause]:
    """The 422 causes for an already pruned and defaulted object (empty when it is valid): the
    schema errors, list-type uniqueness, then the CEL rules unless a blocking error came first."""
    node = compiled(schema)
    old_value = MISSING if old is None else old
    causes = list(schema_causes(node, obj, "", old_value))
    if node.has_list_types:
        old_errors = [] if old is None else list(list_type_causes(node, old, ""))
        if not old_errors:  # ratcheting: a stored object that already broke them may stay so
            causes += list_type_causes(node, obj, "")
    if node.has_rules:
        if any(c["reason"] in _BLOCKING for c in causes):
            causes.append(field_error("FieldValueInvalid", "<nil>", None, _NOT_CHECKED))
        else:
            causes += cel_causes(node, obj, old_value, "")
    for cause in causes:
        if cause["field"] == "<nil>":
            cause["field"] = ""
    return causes


def admit(
    schema: Schema,
    obj: dict[str, Any],
    old: dict[str, Any] | None,
    *,
    field_validation: str = "Strict",
    subresource: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Prune unknown fields (keeping x-kubernetes-preserve-unknown-fields subtrees and the
    metadata of the object itself, whose unknown keys are ObjectMeta's), reject them instead
    under Strict (400, 'strict decoding error: unknown field "spec.foo"'), apply defaults,
    validate (types, required, enum, bounds, pattern, nullable, int-or-string, maxItems, list
    types...), evaluate CEL x-kubernetes-validations (transition rules with oldSelf only when
    old is given). On an update, values that did not change are not re-validated (ratcheting).
    Returns the admitted object and warnings (Warn mode); raises InvalidObject otherwise.

    `subresource` is the part being written ("status" or None); the caller has already reset
    the other part to its stored value, so it passes unchanged (ratcheting) whatever it is."""
    del subresource  # the whole object is validated either way, as the API server does
    if field_validation not in ("Strict", "Warn", "Ignore"):
        raise InvalidObject(
            [],
            code=400,
            message=f"fieldValidation must be Strict, Warn or Ignore, not {field_validation!r}",
        )
    node = compiled(schema)
    result = copy_value(obj)
    unknown: list[str] = []
    prune_unknown(result, node, "", unknown, meta=True)
    unknown.sort()
    warnings: list[str] = []
    if unknown and field_validation == "Strict":
        kind = str(obj.get("kind", ""))
        version = str(obj.get("apiVersion", "")).rpartition("/")[2]
        listed = ", ".join(f'unknown field "{p}"' for p in unknown)
        message = (
            f'{kind} in version "{version}" cannot be handled as a {kind}: '
            f"strict decoding error: {listed}"
        )
        causes = [
            {"reason": "FieldValueUnknown", "message": f'unknown field "{p}"', "field": p}
            for p in unknown
        ]
        raise InvalidObject(causes, code=400, message=message)
    if field_validation == "Warn":
        warnings = [f'unknown field "{p}"' for p in unknown]
    prune_nulls(result, node)
    fill_defaults(result, node)
    causes = validate(schema, result, old)
    if causes:
        raise InvalidObject(causes)
    return result, warnings

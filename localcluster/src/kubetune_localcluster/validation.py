"""The checks the API server makes on built-in objects (which are otherwise stored as given)
and on every object's name."""

from __future__ import annotations

import re
from typing import Any, TypeGuard

from kubetune_localcluster.errors import invalid
from kubetune_localcluster.objects import Object, metadata
from kubetune_localcluster.resources import CRD_STORAGE, Resource

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_INT32 = 2**31 - 1


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_pod_spec(spec: Any) -> list[dict[str, str]]:
    """ValidatePodSpec's rules the emulator applies (on create and update)."""
    deadline = spec.get("activeDeadlineSeconds") if isinstance(spec, dict) else None
    if _is_int(deadline) and not 1 <= deadline <= MAX_INT32:
        return [
            {
                "reason": "FieldValueInvalid",
                "field": "spec.activeDeadlineSeconds",
                "message": f"Invalid value: {deadline}: must be between 1 and {MAX_INT32}, "
                "inclusive",
            }
        ]
    return []


def check_pod_update(new: Object, old: Object) -> list[dict[str, str]]:
    """ValidatePodUpdate's rule for spec.activeDeadlineSeconds: it may be set where it was
    not, and lowered, never raised or removed. (The rest of that rule, that a pod's spec is
    otherwise immutable but for images and added tolerations, is not emulated.)"""
    deadline = (new.get("spec") or {}).get("activeDeadlineSeconds")
    before = (old.get("spec") or {}).get("activeDeadlineSeconds")
    field = "spec.activeDeadlineSeconds"
    if _is_int(deadline):
        if not 0 <= deadline <= MAX_INT32:
            message = f"Invalid value: {deadline}: must be between 0 and {MAX_INT32}, inclusive"
        elif _is_int(before) and before < deadline:
            message = f"Invalid value: {deadline}: must be less than or equal to previous value"
        else:
            return []
    elif deadline is None and before is not None:
        message = "Invalid value: null: must not update from a positive integer to nil value"
    else:
        return []
    return [{"reason": "FieldValueInvalid", "field": field, "message": message}]


def check_builtin(resource: Resource, obj: Object) -> list[dict[str, str]]:
    """The cheap checks made on built-in kinds (they are otherwise stored as given)."""
    causes = []
    if resource.plural == "pods" and not resource.group:
        containers = (obj.get("spec") or {}).get("containers")
        if not isinstance(containers, list) or not containers:
            causes.append(
                {
                    "reason": "FieldValueRequired",
                    "message": "Required value",
                    "field": "spec.containers",
                }
            )
        else:
            for i, container in enumerate(containers):
                if not isinstance(container, dict) or not container.get("name"):
                    causes.append(
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value",
                            "field": f"spec.containers[{i}].name",
                        }
                    )
        causes.extend(check_pod_spec(obj.get("spec")))
    if resource.storage == CRD_STORAGE:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if metadata(obj).get("name") != expected:
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f'Invalid value: "{metadata(obj).get("name")}": must be '
                    f'spec.names.plural+"."+spec.group',
                }
            )
        for path, value in (
            ("spec.group", spec.get("group")),
            ("spec.names.plural", names.get("plural")),
            ("spec.names.kind", names.get("kind")),
        ):
            if not value:
                causes.append(
                    {"reason": "FieldValueRequired", "message": "Required value", "field": path}
                )
        versions = spec.get("versions") or []
        if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "spec.versions",
                    "message": "Invalid value: must have exactly one version marked "
                    "as storage version",
                }
            )
    return causes


def check_name(resource: Resource, name: str) -> None:
    pattern, limit = (_LABEL, 63) if resource.plural == "namespaces" else (_SUBDOMAIN, 253)
    if not pattern.match(name) or len(name) > limit:
        what = "RFC 1123 label" if limit == 63 else "lowercase RFC 1123 subdomain"
        raise invalid(
            resource,
            name,
            [
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f'Invalid value: "{name}": a {what} must consist of lower case '
                    "alphanumeric characters, '-' or '.', and must start and end with "
                    "an alphanumeric character",
                }
            ],
        )

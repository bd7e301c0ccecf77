"""The errors the API server answers with, each as the Status body Kubernetes sends."""

from __future__ import annotations

from typing import Any

from kubetune_localcluster.objects import Object
from kubetune_localcluster.resources import Resource


class ApiError(Exception):
    """An error the API server answers with a Status body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Object:
        body: Object = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


class StrictDecodingError(ApiError):
    """Unknown fields under fieldValidation=Strict: 400 on create and update, as here; a PATCH
    answers 422 instead (the API server's patcher words it as an invalid `patch` field)."""

    def __init__(self, message: str, unknown: list[str]) -> None:
        super().__init__(400, "BadRequest", message)
        self.unknown = unknown

    def detail(self) -> str:
        """`strict decoding error: unknown field "spec.foo", ...` (runtime.StrictDecodingError)."""
        return "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in self.unknown)


class Gone(ApiError):  # noqa: N818 - 410 Gone
    def __init__(self, asked: int, oldest: int) -> None:
        super().__init__(410, "Expired", f"too old resource version: {asked} ({oldest})")


def status_details(resource: Resource, name: str) -> dict[str, Any]:
    return {"name": name, "group": resource.group, "kind": resource.plural}


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{resource.group_resource} "{name}" not found',
        details=status_details(resource, name),
    )


def conflict(resource: Resource, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource.group_resource} "{name}": {why}',
        details=status_details(resource, name),
    )


def invalid(resource: Resource, name: str, causes: list[dict[str, str]]) -> ApiError:
    listed = ", ".join(
        f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes
    )
    return ApiError(
        422,
        "Invalid",
        f"{resource.kind}.{resource.group or ''}".rstrip(".")
        + f' "{name}" is invalid: '
        + (f"[{listed}]" if len(causes) > 1 else listed),
        details={**status_details(resource, name), "kind": resource.kind, "causes": causes},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unknown_resource() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", details={})

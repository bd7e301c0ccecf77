"""The writes of the emulated API server: create, replace, the patch types and server-side
apply, delete (one object or a collection), a pod's binding and a namespace's finalize; the
store applies their rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import yaml
from aiohttp import web

from kubetune_localcluster.errors import ApiError, StrictDecodingError, bad_request, not_found
from kubetune_localcluster.objects import Object
from kubetune_localcluster.patches import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    PATCH_TYPES,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    UnsupportedPatch,
    apply_patch,
    builtin_list_shape,
    schema_list_shapes,
    server_side_apply,
)
from kubetune_localcluster.reads import selection
from kubetune_localcluster.resources import Resource
from kubetune_localcluster.store import Store
from kubetune_localcluster.times import timestamp
from kubetune_localcluster.wire import (
    JSON,
    PROTOBUF,
    YAML,
    decode,
    dumps,
    flag,
    json_response,
    media_type,
    present,
    read_body,
    unsupported_media,
)


def field_validation(request: web.Request) -> str:
    value = request.query.get("fieldValidation") or "Warn"
    if value not in ("Strict", "Warn", "Ignore"):
        raise bad_request(
            f'fieldValidation: Unsupported value: "{value}": supported '
            'values: "Ignore", "Strict", "Warn"'
        )
    return value


def dry_run(request: web.Request) -> bool:
    return bool(request.query.getall("dryRun", []))


def check_kind(resource: Resource, body: Object) -> None:
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if kind is not None and kind != resource.kind:
        raise bad_request(
            f"the kind of the object ({kind}) does not match the resource ({resource.kind})"
        )
    if api_version is not None and str(api_version).rpartition("/")[0] != resource.group:
        raise bad_request(
            f"the API version of the object ({api_version}) does not match "
            f"the group of the resource ({resource.group_version})"
        )


def strict_patch_error(patched: Object, error: StrictDecodingError) -> ApiError:
    """Unknown fields in a patched object: 422 with one cause at `patch`, worded as the
    API server's patcher does (errors.NewInvalid with an empty kind and name)."""
    value = json.dumps(dumps(patched).decode())
    cause = f"Invalid value: {value}: {error.detail()}"
    return ApiError(
        422,
        "Invalid",
        f' "" is invalid: patch: {cause}',
        details={
            "name": "",
            "group": "",
            "kind": "",
            "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "patch"}],
        },
    )


def unsupported_patch(resource: Resource) -> ApiError:
    accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
    if not resource.custom:
        accepted.append(STRATEGIC_MERGE_PATCH)
    return unsupported_media(accepted)


class Writes:
    """POST, PUT, PATCH and DELETE requests of objects and collections."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    async def create(
        self, request: web.Request, resource: Resource, namespace: str | None
    ) -> web.Response:
        body = await object_body(request, resource)
        obj, warnings = self.store.create(
            resource,
            namespace,
            body,
            field_validation=field_validation(request),
            dry_run=dry_run(request),
        )
        return json_response(present(resource, obj), 201, warnings)

    async def replace(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str | None,
        name: str,
        sub: str | None,
    ) -> web.Response:
        body = await object_body(request, resource)
        obj, warnings = self.store.update(
            resource,
            namespace,
            name,
            body,
            subresource=sub,
            field_validation=field_validation(request),
            dry_run=dry_run(request),
            require_version=resource.custom,
        )
        return json_response(present(resource, obj), 200, warnings)

    async def patch(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str | None,
        name: str,
        sub: str | None,
    ) -> web.Response:
        media = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media not in (*PATCH_TYPES, APPLY_PATCH) or (
            resource.custom and media == STRATEGIC_MERGE_PATCH
        ):
            raise unsupported_patch(resource)
        raw = await request.read()
        if media == APPLY_PATCH:
            return self.apply(request, resource, namespace, name, sub, raw)
        current = self.store.get(resource.storage, namespace or "", name)
        if current is None:
            raise not_found(resource, name)
        try:
            patched = apply_patch(media, current, raw)
        except UnsupportedPatch as error:
            raise unsupported_patch(resource) from error
        except PatchError as error:
            if error.decode:
                raise bad_request(str(error)) from error
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {error}",
                details={
                    "name": name,
                    "group": resource.group,
                    "kind": resource.plural,
                    "causes": [{"message": str(error)}],
                },
            ) from error
        try:
            obj, warnings = self.store.update(
                resource,
                namespace,
                name,
                patched,
                subresource=sub,
                field_validation=field_validation(request),
                dry_run=dry_run(request),
                old=current,
            )
        except StrictDecodingError as error:
            raise strict_patch_error(patched, error) from error
        return json_response(present(resource, obj), 200, warnings)

    def apply(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str | None,
        name: str,
        sub: str | None,
        raw: bytes,
    ) -> web.Response:
        """Server-side apply: merge the configuration into the object, or create it (201)
        when it does not exist; the field manager's fields go to metadata.managedFields. Every
        apply is forced (--force-conflicts is accepted; conflicts are not detected)."""
        manager = request.query.get("fieldManager")
        if not manager:
            cause = "Required value: is required for apply patch"
            raise ApiError(
                422,
                "Invalid",
                f'PatchOptions.meta.k8s.io "" is invalid: fieldManager: {cause}',
                details={
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        {"reason": "FieldValueRequired", "message": cause, "field": "fieldManager"}
                    ],
                },
            )
        try:
            config = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise bad_request(f"error decoding YAML: {error}") from error
        if not isinstance(config, dict):
            raise bad_request("the apply configuration must be an object")
        if not config.get("apiVersion") or not config.get("kind"):
            raise bad_request("the apply configuration must set apiVersion and kind")
        check_kind(resource, config)
        meta = config.get("metadata") or {}
        if not isinstance(meta, dict):
            raise bad_request("metadata of the apply configuration must be an object")
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the "
                f"name on the URL ({name})"
            )
        # What a write of this (sub)resource takes: where the resource has a status
        # subresource, the status apart from the rest.
        if sub == "status":
            config, meta = ({"status": config["status"]} if "status" in config else {}), {}
        elif resource.has_status:
            config = {k: v for k, v in config.items() if k != "status"}
        current = self.store.get(resource.storage, namespace or "", name)
        if current is None and sub is not None:
            raise not_found(resource, name)
        shapes = schema_list_shapes(resource.schema) if resource.custom else builtin_list_shape
        applied = server_side_apply(
            current,
            {**config, "metadata": {**meta, "name": name}},
            manager=manager,
            api_version=resource.group_version,
            time=timestamp(self.clock()),
            shapes=shapes,
            subresource=sub,
        )
        managed = applied["metadata"]["managedFields"]
        validation = field_validation(request)
        if current is None:
            obj, warnings = self.store.create(
                resource,
                namespace,
                applied,
                field_validation=validation,
                dry_run=dry_run(request),
                managed_fields=managed,
            )
            return json_response(present(resource, obj), 201, warnings)
        obj, warnings = self.store.update(
            resource,
            namespace,
            name,
            applied,
            subresource=sub,
            field_validation=validation,
            dry_run=dry_run(request),
            old=current,
            managed_fields=managed,
        )
        return json_response(present(resource, obj), 200, warnings)

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        options: dict[str, Any] = {}
        if raw.strip():
            media = media_type(request)
            if media not in (JSON, YAML, PROTOBUF):
                raise unsupported_media([JSON, YAML, PROTOBUF])
            options = decode(media, raw)
            if not isinstance(options, dict):
                raise bad_request("the DeleteOptions must be an object")
        query = request.query
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "gracePeriodSeconds" in query:
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        if "orphanDependents" in query:
            options["orphanDependents"] = flag(query["orphanDependents"])
        if options.get("orphanDependents") is not None and "propagationPolicy" not in options:
            options["propagationPolicy"] = "Orphan" if options["orphanDependents"] else "Background"
        return options

    async def delete(
        self, request: web.Request, resource: Resource, namespace: str | None, name: str
    ) -> web.Response:
        options = await self._delete_options(request)
        grace = options.get("gracePeriodSeconds")
        obj, gone = self.store.delete(
            resource,
            namespace,
            name,
            propagation=options.get("propagationPolicy"),
            grace_period=None if grace is None else int(grace),
            preconditions=options.get("preconditions"),
            dry_run=dry_run(request) or bool(options.get("dryRun")),
        )
        if gone and not resource.custom and resource.plural != "pods":
            return json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "group": resource.group,
                        "kind": resource.plural,
                        "uid": obj["metadata"]["uid"],
                    },
                }
            )
        return json_response(present(resource, obj))

    async def delete_collection(
        self, request: web.Request, resource: Resource, namespace: str | None
    ) -> web.Response:
        options = await self._delete_options(request)
        grace = options.get("gracePeriodSeconds")
        deleted = self.store.delete_collection(
            resource,
            namespace,
            selection(request, resource),
            propagation=options.get("propagationPolicy"),
            grace_period=None if grace is None else int(grace),
        )
        return json_response(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.group_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": [present(resource, o) for o in deleted],
            }
        )

    async def bind(
        self, request: web.Request, resource: Resource, namespace: str, name: str
    ) -> web.Response:
        body = await read_body(request, resource)
        target = body.get("target") if isinstance(body, dict) else None
        if not isinstance(target, dict) or not target.get("name"):
            raise bad_request("a Binding needs target.name (the node)")
        self.store.bind(resource, namespace, name, str(target["name"]))
        return json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            201,
        )

    async def finalize(self, request: web.Request, resource: Resource, name: str) -> web.Response:
        body = await read_body(request, resource)
        current = self.store.get(resource.storage, "", name)
        if current is None:
            raise not_found(resource, name)
        finalizers = ((body or {}).get("spec") or {}).get("finalizers") or []
        obj, _ = self.store.update(
            resource,
            None,
            name,
            {**current, "spec": {**(current.get("spec") or {}), "finalizers": finalizers}},
        )
        return json_response(obj)


async def object_body(request: web.Request, resource: Resource) -> dict[str, Any]:
    """The object a create or an update sends: a JSON object of the resource's kind."""
    body = await read_body(request, resource)
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be an object")
    check_kind(resource, body)
    return body

"""The reads of the emulated API server: get, list (with selectors, pages, Tables and partial
metadata) and a pod's log."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from kubetune_localcluster.errors import ApiError, bad_request, not_found
from kubetune_localcluster.objects import Object
from kubetune_localcluster.resources import Resource
from kubetune_localcluster.selectors import FieldSelector, LabelSelector
from kubetune_localcluster.store import Store
from kubetune_localcluster.wire import accepts, dumps, json_response, present

PodLogProvider = Callable[[str, str, str | None], str | None]


def selection(request: web.Request, resource: Resource) -> Callable[[Object], bool] | None:
    """A request's label and field selectors as one predicate (None: every object)."""
    labels = LabelSelector.parse(request.query.get("labelSelector"))
    fields = FieldSelector.parse(request.query.get("fieldSelector"), resource.field_labels)
    if labels.empty and fields.empty:
        return None
    if fields.empty:
        return lambda obj: labels.matches(obj["metadata"].get("labels"))
    return lambda obj: labels.matches(obj["metadata"].get("labels")) and fields.matches(obj)


def partial(obj: Object) -> Object:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


class Reads:
    """GET requests of objects and lists, and of a pod's log (from the provider the kubelet
    registers)."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self.log_provider: PodLogProvider | None = None

    def table(
        self, request: web.Request, resource: Resource, objects: list[Object]
    ) -> dict[str, Any]:
        from kubetune_localcluster import printers, tables  # written beside this module

        try:
            return tables.table(
                [present(resource, obj) for obj in objects],
                # A CRD version with no printer columns shows its age, as the API server does.
                (resource.printer_columns or [printers.AGE_COLUMN]) if resource.custom else None,
                kind=resource.kind,
                include_object=request.query.get("includeObject", "Metadata"),
                now=self.clock(),
            )
        except ValueError as error:
            raise bad_request(str(error)) from error

    def get(
        self, request: web.Request, resource: Resource, namespace: str | None, name: str
    ) -> web.Response:
        obj = self.store.get(resource.storage, namespace or "", name)
        if obj is None:
            raise not_found(resource, name)
        if accepts(request, **{"as": "Table"}):
            return json_response(self.table(request, resource, [obj]))
        if accepts(request, **{"as": "PartialObjectMetadata"}):
            return json_response(partial(obj))
        return json_response(present(resource, obj))

    def list_objects(
        self, request: web.Request, resource: Resource, namespace: str | None
    ) -> web.Response:
        predicate = selection(request, resource)
        objects = [
            obj
            for obj in self.store.objects(resource.storage, namespace)
            if predicate is None or predicate(obj)
        ]
        objects.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        token = request.query.get("continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))
                after = (str(start[0]), str(start[1]))
            except (ValueError, TypeError, IndexError) as error:
                raise bad_request("continue key is not valid") from error
            objects = [
                o
                for o in objects
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
            ]
        limit = int(request.query.get("limit") or 0)
        if 0 < limit < len(objects):
            last = objects[limit - 1]["metadata"]
            key = [last.get("namespace", ""), last["name"]]
            metadata["continue"] = base64.urlsafe_b64encode(dumps(key)).decode()
            metadata["remainingItemCount"] = len(objects) - limit
            objects = objects[:limit]
        if accepts(request, **{"as": "Table"}):
            table = self.table(request, resource, objects)
            table["metadata"] = {**(table.get("metadata") or {}), **metadata}
            return json_response(table)
        if accepts(request, **{"as": "PartialObjectMetadataList"}):
            return json_response(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                    "items": [partial(o) for o in objects],
                }
            )
        return json_response(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.group_version,
                "metadata": metadata,
                "items": [present(resource, o) for o in objects],
            }
        )

    def log(
        self, request: web.Request, resource: Resource, namespace: str, name: str
    ) -> web.Response:
        pod = self.store.get(resource.storage, namespace, name)
        if pod is None:
            raise not_found(resource, name)
        container = request.query.get("container")
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        if (
            container is not None
            and container not in names
            and container
            not in [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
        ):
            raise bad_request(f"container {container} is not valid for pod {name}")
        if container is None and len(names) > 1:
            raise bad_request(
                f"a container name must be specified for pod {name}, choose one "
                f"of: [{' '.join(str(n) for n in names)}]"
            )
        text = None if self.log_provider is None else self.log_provider(namespace, name, container)
        if text is None:
            raise ApiError(
                404,
                "NotFound",
                f'the log of pod "{name}" is not available',
                details={"name": name, "kind": "pods"},
            )
        tail = request.query.get("tailLines")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail) :]) if int(tail) > 0 else ""
        limit = request.query.get("limitBytes")
        data = text.encode()
        if limit is not None:
            data = data[: int(limit)]
        return web.Response(body=data, content_type="text/plain")

"""The state of the emulated cluster and the rules every write follows.

`Store` holds the objects of every resource (a dict per namespace, so a lookup is O(1) and a
list only walks its own resource and namespace), one resourceVersion counter for all objects,
a bounded window of recent events per resource for watches that resume from a
resourceVersion, and the watchers, each fed through its own bounded queue. On top of that it
applies what the API server and its controllers do: uid, creationTimestamp, generation,
generateName, preconditions, the status subresource, finalizers and graceful deletion,
propagation policies and garbage collection through ownerReferences, namespace and CRD
cleanup, CRD registration and admission of custom objects through `schemas.admit`.

Stored objects are never mutated: a write builds a new dict (sharing unchanged subtrees), so a
response or a watch event can hold an object without copying it. The garbage collector runs
to completion at the end of each write (the real one runs a moment later), so a client sees a
settled cluster once a request has returned.
"""

from __future__ import annotations

import asyncio
import copy
import random
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeGuard

from kubetune_localcluster import times
from kubetune_localcluster.quantities import qos_class
from kubetune_localcluster.resources import CRD_STORAGE, Registry, Resource
from kubetune_localcluster.times import timestamp

Object = dict[str, Any]
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NAME_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


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


def _details(resource: Resource, name: str) -> dict[str, Any]:
    return {"name": name, "group": resource.group, "kind": resource.plural}


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{resource.group_resource} "{name}" not found',
        details=_details(resource, name),
    )


def conflict(resource: Resource, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource.group_resource} "{name}": {why}',
        details=_details(resource, name),
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
        details={**_details(resource, name), "kind": resource.kind, "causes": causes},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


@dataclass(slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    obj: Object
    old: Object | None  # the previous state (MODIFIED, DELETED), to match selectors on it
    rv: int
    # The serialized watch line per apiVersion, so that N watchers cost one serialization.
    lines: dict[str, bytes] | None = None


class Watch:
    """One watcher: its filter and its bounded queue (None in the queue ends the watch)."""

    def __init__(
        self,
        namespace: str | None,
        predicate: Callable[[Object], bool] | None,
        maxsize: int,
    ) -> None:
        self.namespace = namespace
        self.predicate = predicate
        self.queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue(maxsize)
        self.closed = False

    def translate(self, event: WatchEvent) -> WatchEvent | None:
        """The event this watcher sees: a change into or out of its selector is ADDED or
        DELETED, as the API server's watch cache words it."""
        obj_ns = event.obj["metadata"].get("namespace")
        if self.namespace is not None and obj_ns != self.namespace:
            return None
        if self.predicate is None:
            return event
        now = self.predicate(event.obj)
        before = event.old is not None and self.predicate(event.old)
        if event.type == "MODIFIED":
            if now and before:
                return event
            if now:
                return WatchEvent("ADDED", event.obj, event.old, event.rv)
            if before:
                return WatchEvent("DELETED", event.obj, event.old, event.rv)
            return None
        if event.type == "DELETED":
            return event if self.predicate(event.old or event.obj) else None
        return event if now else None

    def offer(self, event: WatchEvent) -> None:
        """Queue an event; a watcher that has fallen far behind is closed (it resumes from
        the last resourceVersion it saw, as a client of a real server does)."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Gone(ApiError):  # noqa: N818 - 410 Gone
    def __init__(self, asked: int, oldest: int) -> None:
        super().__init__(410, "Expired", f"too old resource version: {asked} ({oldest})")


@dataclass
class Collection:
    """The objects of one storage key (group/plural), by namespace then name."""

    window: int
    objects: dict[str, dict[str, Object]] = field(default_factory=dict)
    events: deque[WatchEvent] = field(default_factory=deque)
    floor: int = 0  # events at or below this resourceVersion are no longer kept
    watches: set[Watch] = field(default_factory=set)

    def record(self, event: WatchEvent) -> None:
        if len(self.events) >= self.window:
            self.floor = self.events.popleft().rv
        self.events.append(event)
        for watch in tuple(self.watches):
            seen = watch.translate(event)
            if seen is not None:
                watch.offer(seen)


def _meta(obj: Object) -> dict[str, Any]:
    meta: dict[str, Any] = obj["metadata"]
    return meta


def _untimed(entries: Any) -> list[Any]:
    """managedFields without their times: a write that changes only those is a no-op."""
    return [
        {k: v for k, v in e.items() if k != "time"} if isinstance(e, dict) else e
        for e in entries or []
    ]


def _without(obj: Object, *keys: str) -> Object:
    return {k: v for k, v in obj.items() if k not in keys}


def _image_pull_policy(image: str) -> str:
    tag = image.rpartition("/")[2]
    return "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"


def _secret_default(resource: Resource, obj: Object) -> Object:
    """A Secret without a type is Opaque (the API's defaulting; kubectl create secret generic
    leaves it to the server)."""
    if resource.plural == "secrets" and not resource.group and not obj.get("type"):
        return {**obj, "type": "Opaque"}
    return obj


def _pod_defaults(pod: Object) -> Object:
    """The defaults the API server writes into a new pod (the ones a kubelet reads)."""
    spec = copy.deepcopy(pod.get("spec") or {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
    spec.setdefault("securityContext", {})
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
                container.setdefault(
                    "imagePullPolicy", _image_pull_policy(str(container.get("image", "")))
                )
                container.setdefault("resources", {})
    return {**pod, "spec": spec, "status": {"phase": "Pending", "qosClass": qos_class(spec)}}


MAX_INT32 = 2**31 - 1


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_pod_spec(spec: Any) -> list[dict[str, str]]:
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


def _check_pod_update(new: Object, old: Object) -> list[dict[str, str]]:
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


def _check_builtin(resource: Resource, obj: Object) -> list[dict[str, str]]:
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
        causes.extend(_check_pod_spec(obj.get("spec")))
    if resource.storage == CRD_STORAGE:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if _meta(obj).get("name") != expected:
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f'Invalid value: "{_meta(obj).get("name")}": must be '
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


class Store:
    """The objects, their watchers and the rules of every write (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        *,
        event_window: int = 10_000,
        watch_queue: int = 10_000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.registry = registry
        self.rv = 0
        self.event_window = event_window
        self.watch_queue = watch_queue
        self.clock = clock or times.now
        self._collections: dict[str, Collection] = {}
        self._uids: dict[str, tuple[str, str, str]] = {}  # uid -> (storage, namespace, name)
        self._dependents: dict[str, set[str]] = {}  # owner uid -> dependent uids
        self._pending: deque[tuple[str, str]] = deque()  # garbage collector work
        self._settling = False

    # --- reading -----------------------------------------------------------------------

    def collection(self, storage: str) -> Collection:
        found = self._collections.get(storage)
        if found is None:
            found = self._collections[storage] = Collection(self.event_window)
        return found

    def get(self, storage: str, namespace: str, name: str) -> Object | None:
        return self.collection(storage).objects.get(namespace, {}).get(name)

    def objects(self, storage: str, namespace: str | None) -> Iterator[Object]:
        by_namespace = self.collection(storage).objects
        if namespace is not None:
            yield from by_namespace.get(namespace, {}).values()
            return
        for objects in by_namespace.values():
            yield from objects.values()

    def by_uid(self, uid: str) -> Object | None:
        where = self._uids.get(uid)
        return None if where is None else self.get(*where)

    def count(self, namespace: str) -> int:
        return sum(
            len(self.collection(storage).objects.get(namespace, {}))
            for storage in self.registry.namespaced_storages()
        )

    def watch(
        self,
        storage: str,
        namespace: str | None,
        predicate: Callable[[Object], bool] | None,
        since: int | None,
    ) -> tuple[Watch, list[WatchEvent]]:
        """Subscribe, then take what is to be sent first, in one step (no event is lost):
        from a resourceVersion, the kept events after it; without one, the current objects
        as ADDED. Raises Gone when the events after `since` are no longer kept."""
        collection = self.collection(storage)
        watch = Watch(namespace, predicate, self.watch_queue)
        first: list[WatchEvent] = []
        if since is None:
            for obj in self.objects(storage, namespace):
                if predicate is None or predicate(obj):
                    first.append(WatchEvent("ADDED", obj, None, int(_meta(obj)["resourceVersion"])))
        else:
            if since < collection.floor:
                raise Gone(since, collection.floor + 1)
            for event in reversed(collection.events):
                if event.rv <= since:
                    break
                seen = watch.translate(event)
                if seen is not None:
                    first.append(seen)
            first.reverse()
        collection.watches.add(watch)
        return watch, first

    def unwatch(self, storage: str, watch: Watch) -> None:
        self.collection(storage).watches.discard(watch)

    def close_watches(self) -> None:
        for collection in self._collections.values():
            for watch in collection.watches:
                watch.close()
            collection.watches.clear()

    # --- low-level writes ----------------------------------------------------------------

    def _key(self, obj: Object) -> tuple[str, str]:
        meta = _meta(obj)
        return meta.get("namespace", ""), meta["name"]

    def _store(self, resource: Resource, obj: Object, old: Object | None) -> Object:
        self.rv += 1
        obj = {**obj, "metadata": {**_meta(obj), "resourceVersion": str(self.rv)}}
        namespace, name = self._key(obj)
        collection = self.collection(resource.storage)
        collection.objects.setdefault(namespace, {})[name] = obj
        uid = _meta(obj)["uid"]
        self._uids[uid] = (resource.storage, namespace, name)
        self._index_owners(uid, old, obj)
        collection.record(WatchEvent("MODIFIED" if old else "ADDED", obj, old, self.rv))
        self._after_store(resource, obj, old)
        return obj

    def _remove(self, resource: Resource, old: Object) -> Object:
        self.rv += 1
        obj = {**old, "metadata": {**_meta(old), "resourceVersion": str(self.rv)}}
        namespace, name = self._key(old)
        collection = self.collection(resource.storage)
        objects = collection.objects.get(namespace, {})
        objects.pop(name, None)
        if not objects:
            collection.objects.pop(namespace, None)
        uid = _meta(old)["uid"]
        self._uids.pop(uid, None)
        self._index_owners(uid, old, None)
        collection.record(WatchEvent("DELETED", obj, old, self.rv))
        self._after_remove(resource, obj)
        return obj

    def _index_owners(self, uid: str, old: Object | None, new: Object | None) -> None:
        before = {r.get("uid") for r in (_meta(old).get("ownerReferences") or [])} if old else set()
        after = {r.get("uid") for r in (_meta(new).get("ownerReferences") or [])} if new else set()
        for owner in before - after:
            dependents = self._dependents.get(str(owner))
            if dependents is not None:
                dependents.discard(uid)
                if not dependents:
                    del self._dependents[str(owner)]
        for owner in after - before:
            self._dependents.setdefault(str(owner), set()).add(uid)

    def _after_store(self, resource: Resource, obj: Object, old: Object | None) -> None:
        meta = _meta(obj)
        if meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or []
            if FOREGROUND in finalizers or ORPHAN in finalizers:
                self._pending.append(("owner", meta["uid"]))
            if resource.plural == "namespaces" and not resource.group:
                self._pending.append(("namespace", meta["name"]))
            if resource.storage == CRD_STORAGE:
                self._pending.append(("crd", meta["name"]))
        for ref in meta.get("ownerReferences") or []:
            owner = self._uids.get(str(ref.get("uid")))
            if owner is None:
                if self.registry.by_kind(str(ref.get("apiVersion")), str(ref.get("kind"))):
                    self._pending.append(("dependent", meta["uid"]))
            elif _meta(self.get(*owner) or {"metadata": {}}).get("deletionTimestamp"):
                self._pending.append(("dependent", meta["uid"]))
                self._pending.append(("owner", str(ref.get("uid"))))

    def _after_remove(self, resource: Resource, obj: Object) -> None:
        meta = _meta(obj)
        for dependent in self._dependents.get(meta["uid"], ()):
            self._pending.append(("dependent", dependent))
        for ref in meta.get("ownerReferences") or []:
            self._pending.append(("owner", str(ref.get("uid"))))
        namespace = meta.get("namespace")
        if namespace:
            ns = self.get("/namespaces", "", namespace)
            if ns is not None and _meta(ns).get("deletionTimestamp"):
                self._pending.append(("namespace", namespace))
        if resource.custom:
            crd_name = f"{resource.plural}.{resource.group}"
            crd = self.get(CRD_STORAGE, "", crd_name)
            if crd is not None and _meta(crd).get("deletionTimestamp"):
                self._pending.append(("crd", crd_name))
        if resource.storage == CRD_STORAGE:
            storage = self.registry.crd_storage(meta["name"])
            self.registry.unregister_crd(meta["name"])
            if storage is not None:
                for watch in self.collection(storage).watches:
                    watch.close()
                self.collection(storage).watches.clear()

    # --- the writes the API serves ---------------------------------------------------------

    def _namespace_for(self, resource: Resource, namespace: str | None, obj: Object) -> str:
        if not resource.namespaced:
            return ""
        given = _meta(obj).get("namespace")
        if namespace and given and given != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )
        return str(namespace or given or "default")

    def _admit(
        self,
        resource: Resource,
        obj: Object,
        old: Object | None,
        field_validation: str,
        subresource: str | None,
    ) -> tuple[Object, list[str]]:
        name = str(_meta(obj).get("name", ""))
        if not resource.custom:
            causes = _check_builtin(resource, obj)
            pod = resource.plural == "pods" and not resource.group
            if pod and old is not None and subresource is None:
                causes.extend(_check_pod_update(obj, old))
            if causes:
                raise invalid(resource, name, causes)
            return obj, []
        if resource.schema is None:
            return obj, []
        from kubetune_localcluster import schemas  # written beside this module

        try:
            admitted, warnings = schemas.admit(
                resource.schema,
                obj,
                old,
                field_validation=field_validation,
                subresource=subresource,
            )
        except schemas.InvalidObject as error:
            if error.code == 400 and error.causes:
                unknown = [str(c.get("field", "")) for c in error.causes]
                raise StrictDecodingError(error.message, unknown) from error
            body = schemas.invalid_status(resource.kind, resource.group, name, error)
            raise ApiError(
                int(body["code"]),
                str(body["reason"]),
                str(body["message"]),
                details=body.get("details"),
            ) from error
        return admitted, list(warnings)

    def _check_name(self, resource: Resource, name: str) -> None:
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

    def create(
        self,
        resource: Resource,
        namespace: str | None,
        body: Object,
        *,
        field_validation: str = "Warn",
        dry_run: bool = False,
        managed_fields: list[Object] | None = None,
    ) -> tuple[Object, list[str]]:
        """Create an object; `managed_fields` are its metadata.managedFields (server-side
        apply's), any in the body are dropped."""
        meta = dict(body.get("metadata") or {})
        obj: Object = {**body, "apiVersion": resource.group_version, "kind": resource.kind}
        ns = self._namespace_for(resource, namespace, {"metadata": meta})
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(
                    resource,
                    "",
                    [
                        {
                            "reason": "FieldValueRequired",
                            "field": "metadata.name",
                            "message": "Required value: name or generateName is required",
                        }
                    ],
                )
            collection = self.collection(resource.storage).objects.get(ns, {})
            while True:
                name = str(prefix) + "".join(random.choices(_NAME_SUFFIX, k=5))
                if name not in collection:
                    break
            meta["name"] = name
        name = str(meta["name"])
        self._check_name(resource, name)
        if ns:
            ns_obj = self.get("/namespaces", "", ns)
            if ns_obj is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{ns}" not found',
                    details={"name": ns, "kind": "namespaces"},
                )
            if _meta(ns_obj).get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{resource.group_resource} "{name}" is forbidden: unable to create new '
                    f"content in namespace {ns} because it is being terminated",
                    details=_details(resource, name),
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if self.get(resource.storage, ns, name) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource.group_resource} "{name}" already exists',
                details=_details(resource, name),
            )
        for key in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "managedFields",
            "selfLink",
        ):
            meta.pop(key, None)
        if managed_fields:
            meta["managedFields"] = managed_fields
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp(self.clock())
        if resource.has_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        obj["metadata"] = meta
        if resource.has_status and resource.custom:
            obj.pop("status", None)  # a CRD with a status subresource ignores it on create
        if resource.plural == "pods" and not resource.group:
            try:
                obj = _pod_defaults(obj)
            except ValueError as error:  # a resource quantity that does not parse
                cause = {"reason": "FieldValueInvalid", "field": "spec", "message": str(error)}
                raise invalid(resource, name, [cause]) from None
        obj = _secret_default(resource, obj)
        obj, warnings = self._admit(resource, obj, None, field_validation, None)
        obj = self._on_create(resource, obj)
        if dry_run:
            return {**obj, "metadata": {**_meta(obj), "resourceVersion": str(self.rv)}}, warnings
        stored = self._store(resource, obj, None)
        self._after_create(resource, stored)
        self.settle()
        return stored, warnings

    def _on_create(self, resource: Resource, obj: Object) -> Object:
        if resource.plural == "namespaces" and not resource.group:
            meta = _meta(obj)
            labels = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
            return {
                **obj,
                "metadata": {**meta, "labels": labels},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
        if resource.storage == CRD_STORAGE:
            meta = _meta(obj)
            finalizers = list(meta.get("finalizers") or [])
            if CRD_CLEANUP not in finalizers:
                finalizers.append(CRD_CLEANUP)
            return {
                **obj,
                "metadata": {**meta, "finalizers": finalizers},
                "status": self._crd_status(obj),
            }
        return obj

    def _crd_status(self, crd: Object) -> Object:
        now = timestamp(self.clock())
        spec = crd.get("spec") or {}
        names = dict(spec.get("names") or {})
        names.setdefault("singular", str(names.get("kind", "")).lower())
        names.setdefault("listKind", f"{names.get('kind', '')}List")
        storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
        return {
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": now,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": now,
                },
            ],
            "acceptedNames": names,
            "storedVersions": storage,
        }

    def _after_create(self, resource: Resource, obj: Object) -> None:
        if resource.storage == CRD_STORAGE:
            self.registry.register_crd(obj)
        elif resource.plural == "namespaces" and not resource.group:
            account = self.registry.find("", "v1", "serviceaccounts")
            name = _meta(obj)["name"]
            if account is not None and self.get(account.storage, name, "default") is None:
                self._store(
                    account,
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {
                            "name": "default",
                            "namespace": name,
                            "uid": str(uuid.uuid4()),
                            "creationTimestamp": timestamp(self.clock()),
                        },
                    },
                    None,
                )

    def update(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Object,
        *,
        subresource: str | None = None,
        field_validation: str = "Warn",
        dry_run: bool = False,
        require_version: bool = False,
        old: Object | None = None,
        managed_fields: list[Object] | None = None,
    ) -> tuple[Object, list[str]]:
        """Replace an object (PUT, or the result of a PATCH). With `require_version`, a body
        without metadata.resourceVersion is refused (PUT of a custom object). A body without
        metadata.managedFields keeps the object's, as the API server does; `managed_fields`
        (server-side apply's) replace them, also on a status write, and a change to them alone
        (other than their times) is a write."""
        ns = (namespace or "") if resource.namespaced else ""
        current = self.get(resource.storage, ns, name)
        if current is None:
            raise not_found(resource, name)
        if old is not None and _meta(old)["resourceVersion"] != _meta(current)["resourceVersion"]:
            raise conflict(
                resource,
                name,
                "the object has been modified; please apply your "
                "changes to the latest version and try again",
            )
        old = current
        if not isinstance(body.get("metadata"), dict):
            body = {**body, "metadata": {}}
        meta = dict(body["metadata"])
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the "
                f"name on the URL ({name})"
            )
        self._namespace_for(resource, ns or None, {"metadata": meta})
        version = meta.get("resourceVersion")
        if version:
            if str(version) != _meta(old)["resourceVersion"]:
                raise conflict(
                    resource,
                    name,
                    "the object has been modified; please apply "
                    "your changes to the latest version and try again",
                )
        elif require_version:
            raise invalid(
                resource,
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.resourceVersion",
                        "message": "Invalid value: 0x0: must be specified for an update",
                    }
                ],
            )
        old_meta = _meta(old)
        if "managedFields" not in meta and "managedFields" in old_meta:
            meta["managedFields"] = old_meta["managedFields"]
        if managed_fields is not None:
            meta["managedFields"] = managed_fields
        if subresource == "status":
            # Only the status (and server-side apply's managedFields) is taken from a status
            # write.
            new = {**old}
            if "status" in body:
                new["status"] = body["status"]
            else:
                new.pop("status", None)
            if managed_fields is not None:
                new["metadata"] = {**old_meta, "managedFields": managed_fields}
        else:
            new = {**body, "apiVersion": resource.group_version, "kind": resource.kind}
            for key in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            meta["name"] = name
            if ns:
                meta["namespace"] = ns
            new["metadata"] = meta
            if resource.has_status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise invalid(
                        resource,
                        name,
                        [
                            {
                                "reason": "FieldValueForbidden",
                                "field": "metadata.finalizers",
                                "message": "Forbidden: no new finalizers can be added if the "
                                "object is being deleted, found new finalizers "
                                + ", ".join(f'"{f}"' for f in sorted(added)),
                            }
                        ],
                    )
        if subresource is None:
            new = _secret_default(resource, new)
        new, warnings = self._admit(resource, new, old, field_validation, subresource)
        if resource.storage == CRD_STORAGE and subresource is None:
            new = {**new, "status": {**(new.get("status") or {}), **self._crd_status(new)}}
        unchanged = (
            _without(new, "metadata") == _without(old, "metadata")
            and _without(_meta(new), "resourceVersion", "managedFields")
            == _without(old_meta, "resourceVersion", "managedFields")
            and (
                managed_fields is None
                or _untimed(_meta(new).get("managedFields"))
                == _untimed(old_meta.get("managedFields"))
            )
        )
        if unchanged:
            return old, warnings  # a no-op write changes nothing, not even resourceVersion
        if resource.has_generation and "generation" in old_meta:
            ignored = ("metadata", "status") if resource.has_status else ("metadata",)
            if _without(new, *ignored) != _without(old, *ignored):
                new = {
                    **new,
                    "metadata": {**_meta(new), "generation": int(old_meta["generation"]) + 1},
                }
        if dry_run:
            return new, warnings
        stored = self._store(resource, new, old)
        if resource.storage == CRD_STORAGE and subresource is None:
            self.registry.register_crd(stored)
        self._maybe_finish_deletion(resource, stored)
        self.settle()
        return stored, warnings

    def _maybe_finish_deletion(self, resource: Resource, obj: Object) -> None:
        meta = _meta(obj)
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return
        is_namespace = resource.plural == "namespaces" and not resource.group
        if is_namespace and (obj.get("spec") or {}).get("finalizers"):
            return
        is_pod = resource.plural == "pods" and not resource.group
        if is_pod and meta.get("deletionGracePeriodSeconds"):
            return  # the kubelet removes it once its containers have stopped
        self._remove(resource, obj)

    def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        grace_period: int | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> tuple[Object, bool]:
        """Delete an object; returns it and whether it is gone (False: marked for deletion,
        waiting for finalizers or, for a pod on a node, for the kubelet)."""
        ns = (namespace or "") if resource.namespaced else ""
        old = self.get(resource.storage, ns, name)
        if old is None:
            raise not_found(resource, name)
        meta = _meta(old)
        for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            wanted = (preconditions or {}).get(key)
            if wanted and str(wanted) != str(meta.get(key)):
                raise conflict(
                    resource,
                    name,
                    f"Precondition failed: {label} in precondition: "
                    f"{wanted}, {label} in object meta: {meta.get(key)}",
                )
        if propagation not in (None, "Foreground", "Background", "Orphan"):
            raise bad_request(
                f"propagationPolicy: Unsupported value: {propagation!r}: "
                'supported values: "Foreground", "Background", "Orphan"'
            )
        if dry_run:
            return old, False
        result, gone = self._delete(resource, old, propagation, grace_period)
        self.settle()
        return result, gone

    def _delete(
        self,
        resource: Resource,
        old: Object,
        propagation: str | None,
        grace_period: int | None,
    ) -> tuple[Object, bool]:
        meta = _meta(old)
        finalizers = list(meta.get("finalizers") or [])
        extra = {"Foreground": FOREGROUND, "Orphan": ORPHAN}.get(propagation or "")
        is_pod = resource.plural == "pods" and not resource.group
        is_namespace = resource.plural == "namespaces" and not resource.group
        grace = 0
        if is_pod:
            spec = old.get("spec") or {}
            phase = (old.get("status") or {}).get("phase")
            if spec.get("nodeName") and phase not in ("Succeeded", "Failed"):
                default = spec.get("terminationGracePeriodSeconds", 30)
                grace = max(0, int(default if grace_period is None else grace_period))
        if meta.get("deletionTimestamp"):
            # Already being deleted: a shorter grace period or a new policy still applies.
            new_meta = dict(meta)
            if extra and extra not in finalizers:
                new_meta["finalizers"] = [*finalizers, extra]
            if is_pod and grace < int(meta.get("deletionGracePeriodSeconds") or 0):
                new_meta["deletionGracePeriodSeconds"] = grace
            if new_meta == meta:
                return old, False
            stored = self._store(resource, {**old, "metadata": new_meta}, old)
            self._maybe_finish_deletion(resource, stored)
            return stored, self.by_uid(meta["uid"]) is None
        if extra and extra not in finalizers:
            finalizers.append(extra)
        if not finalizers and not grace and not is_namespace:
            return self._remove(resource, old), True
        now = self.clock()
        new_meta = {
            **meta,
            "deletionTimestamp": timestamp(now + timedelta(seconds=grace)),
            "deletionGracePeriodSeconds": grace,
        }
        if finalizers:
            new_meta["finalizers"] = finalizers
        new = {**old, "metadata": new_meta}
        if is_namespace:
            new["status"] = {**(old.get("status") or {}), "phase": "Terminating"}
        return self._store(resource, new, old), False

    def delete_collection(
        self,
        resource: Resource,
        namespace: str | None,
        predicate: Callable[[Object], bool] | None,
        *,
        propagation: str | None = None,
        grace_period: int | None = None,
    ) -> list[Object]:
        ns = (namespace or None) if resource.namespaced else ""
        chosen = [
            o for o in self.objects(resource.storage, ns) if predicate is None or predicate(o)
        ]
        deleted = []
        for obj in chosen:
            current = self.by_uid(_meta(obj)["uid"])
            if current is not None:
                deleted.append(self._delete(resource, current, propagation, grace_period)[0])
        self.settle()
        return deleted

    def bind(self, resource: Resource, namespace: str, name: str, node: str) -> Object:
        """pods/binding: set spec.nodeName and the PodScheduled condition."""
        old = self.get(resource.storage, namespace, name)
        if old is None:
            raise not_found(resource, name)
        if (old.get("spec") or {}).get("nodeName"):
            raise conflict(
                resource,
                name,
                f'pod {name} is already assigned to node "{old["spec"]["nodeName"]}"',
            )
        status = dict(old.get("status") or {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastTransitionTime": timestamp(self.clock()),
            }
        )
        status["conditions"] = conditions
        new = {**old, "spec": {**(old.get("spec") or {}), "nodeName": node}, "status": status}
        stored = self._store(resource, new, old)
        self.settle()
        return stored

    # --- the garbage collector and the namespace and CRD cleanup ---------------------------

    def settle(self) -> None:
        """Run the garbage collector and the cleanups until nothing is left to do."""
        if self._settling:
            return
        self._settling = True
        try:
            while self._pending:
                what, key = self._pending.popleft()
                if what == "dependent":
                    self._collect_dependent(key)
                elif what == "owner":
                    self._collect_owner(key)
                elif what == "namespace":
                    self._clean_namespace(key)
                else:
                    self._clean_crd(key)
        finally:
            self._settling = False

    def _resource_of(self, obj: Object) -> Resource | None:
        return self.registry.by_kind(str(obj.get("apiVersion")), str(obj.get("kind")))

    def _collect_dependent(self, uid: str) -> None:
        obj = self.by_uid(uid)
        if obj is None or _meta(obj).get("deletionTimestamp"):
            return
        refs = _meta(obj).get("ownerReferences") or []
        solid, dangling, waiting = [], [], []
        for ref in refs:
            owner = self.by_uid(str(ref.get("uid")))
            if owner is None:
                if self.registry.by_kind(str(ref.get("apiVersion")), str(ref.get("kind"))):
                    dangling.append(ref)
                else:
                    solid.append(ref)  # an owner of a kind not served here is left alone
            elif _meta(owner).get("deletionTimestamp") and FOREGROUND in (
                _meta(owner).get("finalizers") or []
            ):
                waiting.append(ref)
            else:
                solid.append(ref)
        resource = self._resource_of(obj)
        if resource is None or not refs:
            return
        if solid:
            if not dangling and not any(r.get("blockOwnerDeletion") for r in waiting):
                return
            kept = [
                {**r, "blockOwnerDeletion": False} if r in waiting else r
                for r in refs
                if r not in dangling
            ]
            self._store(resource, {**obj, "metadata": {**_meta(obj), "ownerReferences": kept}}, obj)
            for ref in waiting:
                self._pending.append(("owner", str(ref.get("uid"))))
            return
        finalizers = _meta(obj).get("finalizers") or []
        if waiting and self._dependents.get(uid):
            policy = "Foreground"
        elif ORPHAN in finalizers:
            policy = "Orphan"
        elif FOREGROUND in finalizers:
            policy = "Foreground"
        else:
            policy = "Background"
        self._delete(resource, obj, policy, None)

    def _collect_owner(self, uid: str) -> None:
        owner = self.by_uid(uid)
        if owner is None or not _meta(owner).get("deletionTimestamp"):
            return
        resource = self._resource_of(owner)
        if resource is None:
            return
        finalizers = list(_meta(owner).get("finalizers") or [])
        dependents = [d for d in (self.by_uid(u) for u in self._dependents.get(uid, ())) if d]
        if ORPHAN in finalizers:
            for dependent in dependents:
                refs = [
                    r for r in _meta(dependent).get("ownerReferences") or [] if r.get("uid") != uid
                ]
                dep_resource = self._resource_of(dependent)
                if dep_resource is not None:
                    self._store(
                        dep_resource,
                        {**dependent, "metadata": {**_meta(dependent), "ownerReferences": refs}},
                        dependent,
                    )
            finalizers.remove(ORPHAN)
        elif FOREGROUND in finalizers:
            for dependent in dependents:
                if not _meta(dependent).get("deletionTimestamp"):
                    self._pending.append(("dependent", _meta(dependent)["uid"]))
            blocking = [
                d
                for d in dependents
                if any(
                    r.get("uid") == uid and r.get("blockOwnerDeletion")
                    for r in _meta(d).get("ownerReferences") or []
                )
            ]
            if blocking:
                return
            finalizers.remove(FOREGROUND)
        else:
            return
        owner = self.by_uid(uid) or owner
        stored = self._store(
            resource, {**owner, "metadata": {**_meta(owner), "finalizers": finalizers}}, owner
        )
        self._maybe_finish_deletion(resource, stored)

    def _delete_all(self, storage: str, namespace: str | None) -> int:
        left = 0
        for obj in list(self.objects(storage, namespace)):
            left += 1
            if not _meta(obj).get("deletionTimestamp"):
                resource = self._resource_of(obj) or self.registry.versions(storage)[0]
                self._delete(resource, obj, None, None)
        return left

    def _clean_namespace(self, name: str) -> None:
        ns = self.get("/namespaces", "", name)
        if ns is None or not _meta(ns).get("deletionTimestamp"):
            return
        for storage in self.registry.namespaced_storages():
            self._delete_all(storage, name)
        if self.count(name):
            return
        resource = self.registry.find("", "v1", "namespaces")
        assert resource is not None
        ns = self.get("/namespaces", "", name) or ns
        if (ns.get("spec") or {}).get("finalizers"):
            ns = self._store(resource, {**ns, "spec": {**ns["spec"], "finalizers": []}}, ns)
        self._maybe_finish_deletion(resource, ns)

    def _clean_crd(self, name: str) -> None:
        crd = self.get(CRD_STORAGE, "", name)
        if crd is None or not _meta(crd).get("deletionTimestamp"):
            return
        storage = self.registry.crd_storage(name)
        if (
            storage is not None
            and self._delete_all(storage, None)
            and any(True for _ in self.objects(storage, None))
        ):
            return
        finalizers = [f for f in _meta(crd).get("finalizers") or [] if f != CRD_CLEANUP]
        resource = self.registry.versions(CRD_STORAGE)[0]
        crd = self._store(
            resource, {**crd, "metadata": {**_meta(crd), "finalizers": finalizers}}, crd
        )
        self._maybe_finish_deletion(resource, crd)

    # --- start-up -----------------------------------------------------------------------

    def bootstrap(self, namespaces: Iterable[str]) -> None:
        resource = self.registry.find("", "v1", "namespaces")
        assert resource is not None
        for name in namespaces:
            self.create(resource, None, {"metadata": {"name": name}})

"""The state of the emulated cluster and the rules every write follows.

`Store` holds the objects of every resource (a dict per namespace, so a lookup is O(1) and a
list only walks its own resource and namespace), one resourceVersion counter for all objects,
a bounded window of recent events per resource for watches that resume from a
resourceVersion, and the watchers, each fed through its own bounded queue. On top of that it
applies what the API server and its controllers do: uid, creationTimestamp, generation,
generateName, preconditions, the status subresource, finalizers and graceful deletion,
propagation policies and garbage collection through ownerReferences, namespace and CRD
cleanup, CRD registration and admission of custom objects through `admission.admit`. The rules
live beside it: `validation` and `defaults` for built-in objects, `garbage` for the garbage
collector and the cleanups, `watch` for the watchers, `errors` for the Status errors.

Stored objects are never mutated: a write builds a new dict (sharing unchanged subtrees), so a
response or a watch event can hold an object without copying it. The garbage collector runs
to completion at the end of each write (the real one runs a moment later), so a client sees a
settled cluster once a request has returned.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubetune_localcluster import times
from kubetune_localcluster.defaults import crd_status, on_create, pod_defaults, secret_default
from kubetune_localcluster.errors import (
    ApiError,
    Gone,
    StrictDecodingError,
    bad_request,
    conflict,
    invalid,
    not_found,
    status_details,
)
from kubetune_localcluster.garbage import FOREGROUND, ORPHAN, GarbageCollector
from kubetune_localcluster.objects import Object, metadata
from kubetune_localcluster.resources import CRD_STORAGE, Registry, Resource
from kubetune_localcluster.times import timestamp
from kubetune_localcluster.validation import check_builtin, check_name, check_pod_update
from kubetune_localcluster.watch import Watch, WatchEvent

_NAME_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


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


def _untimed(entries: Any) -> list[Any]:
    """managedFields without their times: a write that changes only those is a no-op."""
    return [
        {k: v for k, v in e.items() if k != "time"} if isinstance(e, dict) else e
        for e in entries or []
    ]


def _without(obj: Object, *keys: str) -> Object:
    return {k: v for k, v in obj.items() if k not in keys}


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
        self.uids: dict[str, tuple[str, str, str]] = {}  # uid -> (storage, namespace, name)
        self.collector = GarbageCollector(self)

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
        where = self.uids.get(uid)
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
                    first.append(
                        WatchEvent("ADDED", obj, None, int(metadata(obj)["resourceVersion"]))
                    )
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

    def _key(self, obj: Object) -> tuple[str, str]:
        meta = metadata(obj)
        return meta.get("namespace", ""), meta["name"]

    def write(self, resource: Resource, obj: Object, old: Object | None) -> Object:
        self.rv += 1
        obj = {**obj, "metadata": {**metadata(obj), "resourceVersion": str(self.rv)}}
        namespace, name = self._key(obj)
        collection = self.collection(resource.storage)
        collection.objects.setdefault(namespace, {})[name] = obj
        uid = metadata(obj)["uid"]
        self.uids[uid] = (resource.storage, namespace, name)
        self.collector.index_owners(uid, old, obj)
        collection.record(WatchEvent("MODIFIED" if old else "ADDED", obj, old, self.rv))
        self.collector.after_store(resource, obj, old)
        return obj

    def remove(self, resource: Resource, old: Object) -> Object:
        self.rv += 1
        obj = {**old, "metadata": {**metadata(old), "resourceVersion": str(self.rv)}}
        namespace, name = self._key(old)
        collection = self.collection(resource.storage)
        objects = collection.objects.get(namespace, {})
        objects.pop(name, None)
        if not objects:
            collection.objects.pop(namespace, None)
        uid = metadata(old)["uid"]
        self.uids.pop(uid, None)
        self.collector.index_owners(uid, old, None)
        collection.record(WatchEvent("DELETED", obj, old, self.rv))
        self.collector.after_remove(resource, obj)
        if resource.storage == CRD_STORAGE:
            meta = metadata(obj)
            storage = self.registry.crd_storage(meta["name"])
            self.registry.unregister_crd(meta["name"])
            if storage is not None:
                for watch in self.collection(storage).watches:
                    watch.close()
                self.collection(storage).watches.clear()
        return obj

    def _namespace_for(self, resource: Resource, namespace: str | None, obj: Object) -> str:
        if not resource.namespaced:
            return ""
        given = metadata(obj).get("namespace")
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
        name = str(metadata(obj).get("name", ""))
        if not resource.custom:
            causes = check_builtin(resource, obj)
            pod = resource.plural == "pods" and not resource.group
            if pod and old is not None and subresource is None:
                causes.extend(check_pod_update(obj, old))
            if causes:
                raise invalid(resource, name, causes)
            return obj, []
        if resource.schema is None:
            return obj, []
        from kubetune_localcluster import admission, field_errors  # written beside this module

        try:
            admitted, warnings = admission.admit(
                resource.schema,
                obj,
                old,
                field_validation=field_validation,
                subresource=subresource,
            )
        except field_errors.InvalidObject as error:
            if error.code == 400 and error.causes:
                unknown = [str(c.get("field", "")) for c in error.causes]
                raise StrictDecodingError(error.message, unknown) from error
            body = field_errors.invalid_status(resource.kind, resource.group, name, error)
            raise ApiError(
                int(body["code"]),
                str(body["reason"]),
                str(body["message"]),
                details=body.get("details"),
            ) from error
        return admitted, list(warnings)

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
        check_name(resource, name)
        if ns:
            ns_obj = self.get("/namespaces", "", ns)
            if ns_obj is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{ns}" not found',
                    details={"name": ns, "kind": "namespaces"},
                )
            if metadata(ns_obj).get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{resource.group_resource} "{name}" is forbidden: unable to create new '
                    f"content in namespace {ns} because it is being terminated",
                    details=status_details(resource, name),
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if self.get(resource.storage, ns, name) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource.group_resource} "{name}" already exists',
                details=status_details(resource, name),
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
                obj = pod_defaults(obj)
            except ValueError as error:  # a resource quantity that does not parse
                cause = {"reason": "FieldValueInvalid", "field": "spec", "message": str(error)}
                raise invalid(resource, name, [cause]) from None
        obj = secret_default(resource, obj)
        obj, warnings = self._admit(resource, obj, None, field_validation, None)
        obj = on_create(resource, obj, self.clock())
        if dry_run:
            return {**obj, "metadata": {**metadata(obj), "resourceVersion": str(self.rv)}}, warnings
        stored = self.write(resource, obj, None)
        self._after_create(resource, stored)
        self.collector.settle()
        return stored, warnings

    def _after_create(self, resource: Resource, obj: Object) -> None:
        if resource.storage == CRD_STORAGE:
            self.registry.register_crd(obj)
        elif resource.plural == "namespaces" and not resource.group:
            account = self.registry.find("", "v1", "serviceaccounts")
            name = metadata(obj)["name"]
            if account is not None and self.get(account.storage, name, "default") is None:
                self.write(
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
        if (
            old is not None
            and metadata(old)["resourceVersion"] != metadata(current)["resourceVersion"]
        ):
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
            if str(version) != metadata(old)["resourceVersion"]:
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
        old_meta = metadata(old)
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
            new = secret_default(resource, new)
        new, warnings = self._admit(resource, new, old, field_validation, subresource)
        if resource.storage == CRD_STORAGE and subresource is None:
            new = {**new, "status": {**(new.get("status") or {}), **crd_status(new, self.clock())}}
        unchanged = (
            _without(new, "metadata") == _without(old, "metadata")
            and _without(metadata(new), "resourceVersion", "managedFields")
            == _without(old_meta, "resourceVersion", "managedFields")
            and (
                managed_fields is None
                or _untimed(metadata(new).get("managedFields"))
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
                    "metadata": {**metadata(new), "generation": int(old_meta["generation"]) + 1},
                }
        if dry_run:
            return new, warnings
        stored = self.write(resource, new, old)
        if resource.storage == CRD_STORAGE and subresource is None:
            self.registry.register_crd(stored)
        self.maybe_finish_deletion(resource, stored)
        self.collector.settle()
        return stored, warnings

    def maybe_finish_deletion(self, resource: Resource, obj: Object) -> None:
        meta = metadata(obj)
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return
        is_namespace = resource.plural == "namespaces" and not resource.group
        if is_namespace and (obj.get("spec") or {}).get("finalizers"):
            return
        is_pod = resource.plural == "pods" and not resource.group
        if is_pod and meta.get("deletionGracePeriodSeconds"):
            return  # the kubelet removes it once its containers have stopped
        self.remove(resource, obj)

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
        meta = metadata(old)
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
        result, gone = self.delete_object(resource, old, propagation, grace_period)
        self.collector.settle()
        return result, gone

    def delete_object(
        self,
        resource: Resource,
        old: Object,
        propagation: str | None,
        grace_period: int | None,
    ) -> tuple[Object, bool]:
        meta = metadata(old)
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
            stored = self.write(resource, {**old, "metadata": new_meta}, old)
            self.maybe_finish_deletion(resource, stored)
            return stored, self.by_uid(meta["uid"]) is None
        if extra and extra not in finalizers:
            finalizers.append(extra)
        if not finalizers and not grace and not is_namespace:
            return self.remove(resource, old), True
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
        return self.write(resource, new, old), False

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
            current = self.by_uid(metadata(obj)["uid"])
            if current is not None:
                deleted.append(self.delete_object(resource, current, propagation, grace_period)[0])
        self.collector.settle()
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
        stored = self.write(resource, new, old)
        self.collector.settle()
        return stored

    def bootstrap(self, namespaces: Iterable[str]) -> None:
        resource = self.registry.find("", "v1", "namespaces")
        assert resource is not None
        for name in namespaces:
            self.create(resource, None, {"metadata": {"name": name}})

"""The garbage collector, and the namespace and CRD cleanup: what the API server's
controllers do once an object is deleted or loses its owner.

Owners are found through ownerReferences (an index of each owner's dependents), and deletion
propagates as Kubernetes propagates it: Background (the owner goes, then its dependents),
Foreground (the owner waits, with the foregroundDeletion finalizer, for the dependents that
block it) and Orphan (the dependents lose their reference). A namespace being deleted empties
itself, a CRD being deleted deletes its objects. The work is queued by the writes and run to
completion by `settle` at the end of each write (the real controllers run a moment later), so a
client sees a settled cluster once a request has returned.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from kubetune_localcluster.defaults import CRD_CLEANUP
from kubetune_localcluster.objects import Object, metadata
from kubetune_localcluster.resources import CRD_STORAGE, Resource

if TYPE_CHECKING:
    from kubetune_localcluster.store import Store

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


class GarbageCollector:
    """The owners index and the queue of work the writes leave for the collector."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dependents: dict[str, set[str]] = {}  # owner uid -> dependent uids
        self.pending: deque[tuple[str, str]] = deque()  # garbage collector work
        self.settling = False

    def index_owners(self, uid: str, old: Object | None, new: Object | None) -> None:
        before = (
            {r.get("uid") for r in (metadata(old).get("ownerReferences") or [])} if old else set()
        )
        after = (
            {r.get("uid") for r in (metadata(new).get("ownerReferences") or [])} if new else set()
        )
        for owner in before - after:
            dependents = self.dependents.get(str(owner))
            if dependents is not None:
                dependents.discard(uid)
                if not dependents:
                    del self.dependents[str(owner)]
        for owner in after - before:
            self.dependents.setdefault(str(owner), set()).add(uid)

    def after_store(self, resource: Resource, obj: Object, old: Object | None) -> None:
        meta = metadata(obj)
        if meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or []
            if FOREGROUND in finalizers or ORPHAN in finalizers:
                self.pending.append(("owner", meta["uid"]))
            if resource.plural == "namespaces" and not resource.group:
                self.pending.append(("namespace", meta["name"]))
            if resource.storage == CRD_STORAGE:
                self.pending.append(("crd", meta["name"]))
        for ref in meta.get("ownerReferences") or []:
            owner = self.store.uids.get(str(ref.get("uid")))
            if owner is None:
                if self.store.registry.by_kind(str(ref.get("apiVersion")), str(ref.get("kind"))):
                    self.pending.append(("dependent", meta["uid"]))
            elif metadata(self.store.get(*owner) or {"metadata": {}}).get("deletionTimestamp"):
                self.pending.append(("dependent", meta["uid"]))
                self.pending.append(("owner", str(ref.get("uid"))))

    def after_remove(self, resource: Resource, obj: Object) -> None:
        meta = metadata(obj)
        for dependent in self.dependents.get(meta["uid"], ()):
            self.pending.append(("dependent", dependent))
        for ref in meta.get("ownerReferences") or []:
            self.pending.append(("owner", str(ref.get("uid"))))
        namespace = meta.get("namespace")
        if namespace:
            ns = self.store.get("/namespaces", "", namespace)
            if ns is not None and metadata(ns).get("deletionTimestamp"):
                self.pending.append(("namespace", namespace))
        if resource.custom:
            crd_name = f"{resource.plural}.{resource.group}"
            crd = self.store.get(CRD_STORAGE, "", crd_name)
            if crd is not None and metadata(crd).get("deletionTimestamp"):
                self.pending.append(("crd", crd_name))

    def settle(self) -> None:
        """Run the garbage collector and the cleanups until nothing is left to do."""
        if self.settling:
            return
        self.settling = True
        try:
            while self.pending:
                what, key = self.pending.popleft()
                if what == "dependent":
                    self._collect_dependent(key)
                elif what == "owner":
                    self._collect_owner(key)
                elif what == "namespace":
                    self._clean_namespace(key)
                else:
                    self._clean_crd(key)
        finally:
            self.settling = False

    def _resource_of(self, obj: Object) -> Resource | None:
        return self.store.registry.by_kind(str(obj.get("apiVersion")), str(obj.get("kind")))

    def _collect_dependent(self, uid: str) -> None:
        obj = self.store.by_uid(uid)
        if obj is None or metadata(obj).get("deletionTimestamp"):
            return
        refs = metadata(obj).get("ownerReferences") or []
        solid, dangling, waiting = [], [], []
        for ref in refs:
            owner = self.store.by_uid(str(ref.get("uid")))
            if owner is None:
                if self.store.registry.by_kind(str(ref.get("apiVersion")), str(ref.get("kind"))):
                    dangling.append(ref)
                else:
                    solid.append(ref)  # an owner of a kind not served here is left alone
            elif metadata(owner).get("deletionTimestamp") and FOREGROUND in (
                metadata(owner).get("finalizers") or []
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
            self.store.write(
                resource, {**obj, "metadata": {**metadata(obj), "ownerReferences": kept}}, obj
            )
            for ref in waiting:
                self.pending.append(("owner", str(ref.get("uid"))))
            return
        finalizers = metadata(obj).get("finalizers") or []
        if waiting and self.dependents.get(uid):
            policy = "Foreground"
        elif ORPHAN in finalizers:
            policy = "Orphan"
        elif FOREGROUND in finalizers:
            policy = "Foreground"
        else:
            policy = "Background"
        self.store.delete_object(resource, obj, policy, None)

    def _collect_owner(self, uid: str) -> None:
        owner = self.store.by_uid(uid)
        if owner is None or not metadata(owner).get("deletionTimestamp"):
            return
        resource = self._resource_of(owner)
        if resource is None:
            return
        finalizers = list(metadata(owner).get("finalizers") or [])
        dependents = [d for d in (self.store.by_uid(u) for u in self.dependents.get(uid, ())) if d]
        if ORPHAN in finalizers:
            for dependent in dependents:
                refs = [
                    r
                    for r in metadata(dependent).get("ownerReferences") or []
                    if r.get("uid") != uid
                ]
                dep_resource = self._resource_of(dependent)
                if dep_resource is not None:
                    self.store.write(
                        dep_resource,
                        {**dependent, "metadata": {**metadata(dependent), "ownerReferences": refs}},
                        dependent,
                    )
            finalizers.remove(ORPHAN)
        elif FOREGROUND in finalizers:
            for dependent in dependents:
                if not metadata(dependent).get("deletionTimestamp"):
                    self.pending.append(("dependent", metadata(dependent)["uid"]))
            blocking = [
                d
                for d in dependents
                if any(
                    r.get("uid") == uid and r.get("blockOwnerDeletion")
                    for r in metadata(d).get("ownerReferences") or []
                )
            ]
            if blocking:
                return
            finalizers.remove(FOREGROUND)
        else:
            return
        owner = self.store.by_uid(uid) or owner
        stored = self.store.write(
            resource, {**owner, "metadata": {**metadata(owner), "finalizers": finalizers}}, owner
        )
        self.store.maybe_finish_deletion(resource, stored)

    def _delete_all(self, storage: str, namespace: str | None) -> int:
        left = 0
        for obj in list(self.store.objects(storage, namespace)):
            left += 1
            if not metadata(obj).get("deletionTimestamp"):
                resource = self._resource_of(obj) or self.store.registry.versions(storage)[0]
                self.store.delete_object(resource, obj, None, None)
        return left

    def _clean_namespace(self, name: str) -> None:
        ns = self.store.get("/namespaces", "", name)
        if ns is None or not metadata(ns).get("deletionTimestamp"):
            return
        for storage in self.store.registry.namespaced_storages():
            self._delete_all(storage, name)
        if self.store.count(name):
            return
        resource = self.store.registry.find("", "v1", "namespaces")
        assert resource is not None
        ns = self.store.get("/namespaces", "", name) or ns
        if (ns.get("spec") or {}).get("finalizers"):
            ns = self.store.write(resource, {**ns, "spec": {**ns["spec"], "finalizers": []}}, ns)
        self.store.maybe_finish_deletion(resource, ns)

    def _clean_crd(self, name: str) -> None:
        crd = self.store.get(CRD_STORAGE, "", name)
        if crd is None or not metadata(crd).get("deletionTimestamp"):
            return
        storage = self.store.registry.crd_storage(name)
        if (
            storage is not None
            and self._delete_all(storage, None)
            and any(True for _ in self.store.objects(storage, None))
        ):
            return
        finalizers = [f for f in metadata(crd).get("finalizers") or [] if f != CRD_CLEANUP]
        resource = self.store.registry.versions(CRD_STORAGE)[0]
        crd = self.store.write(
            resource, {**crd, "metadata": {**metadata(crd), "finalizers": finalizers}}, crd
        )
        self.store.maybe_finish_deletion(resource, crd)

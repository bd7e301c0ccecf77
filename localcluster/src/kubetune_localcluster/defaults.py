"""The defaults the API server and its controllers write into new built-in objects: a pod's
(the ones a kubelet reads), a secret's type, a namespace's finalizer and label, a CRD's
finalizer and status."""

from __future__ import annotations

import copy
from datetime import datetime

from kubetune_localcluster.objects import Object, metadata
from kubetune_localcluster.quantities import qos_class
from kubetune_localcluster.resources import CRD_STORAGE, Resource
from kubetune_localcluster.times import timestamp

CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"


def _image_pull_policy(image: str) -> str:
    tag = image.rpartition("/")[2]
    return "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"


def secret_default(resource: Resource, obj: Object) -> Object:
    """A Secret without a type is Opaque (the API's defaulting; kubectl create secret generic
    leaves it to the server)."""
    if resource.plural == "secrets" and not resource.group and not obj.get("type"):
        return {**obj, "type": "Opaque"}
    return obj


def pod_defaults(pod: Object) -> Object:
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


def on_create(resource: Resource, obj: Object, now: datetime) -> Object:
    if resource.plural == "namespaces" and not resource.group:
        meta = metadata(obj)
        labels = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
        return {
            **obj,
            "metadata": {**meta, "labels": labels},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
    if resource.storage == CRD_STORAGE:
        meta = metadata(obj)
        finalizers = list(meta.get("finalizers") or [])
        if CRD_CLEANUP not in finalizers:
            finalizers.append(CRD_CLEANUP)
        return {
            **obj,
            "metadata": {**meta, "finalizers": finalizers},
            "status": crd_status(obj, now),
        }
    return obj


def crd_status(crd: Object, now: datetime) -> Object:
    when = timestamp(now)
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
                "lastTransitionTime": when,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": when,
            },
        ],
        "acceptedNames": names,
        "storedVersions": storage,
    }

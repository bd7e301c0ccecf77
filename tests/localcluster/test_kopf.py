"""A minimal kopf operator against the local cluster, as Kubetune's operator runs against it:
it logs in through a kubeconfig (KUBECONFIG, read by the `kubernetes` client), creates a pod
it adopts, patches status, reacts to a spec change, handles deletion behind its finalizer, and
resumes its objects after a restart. Every outcome is checked through the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import kopf
import kubernetes
import pytest
from kopf.testing import KopfRunner

from tests.localcluster.conftest import Kube

GROUP, VERSION, PLURAL = "test.kubetune.io", "v1", "widgets"
NAMESPACE = "default"
FINALIZER = "test.kubetune.io/finalizer"
TIMEOUT = 30

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            },
                            # kopf keeps its progress and handler results in status as well.
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


def operator() -> tuple[kopf.OperatorRegistry, kopf.OperatorSettings]:
    """The handlers and settings of the test operator (a registry of its own, so that
    nothing leaks into kopf's default one)."""
    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # What kopf's default registry does: the `kubernetes` client reads $KUBECONFIG.
        return kopf.login_via_client(**kwargs)

    @kopf.on.create(GROUP, VERSION, PLURAL, id="create", registry=registry)
    def create(
        name: str, namespace: str, body: kopf.Body, patch: kopf.Patch, **_: Any
    ) -> dict[str, str]:
        worker = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-worker", "labels": {"widget": name}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": "python:3.12-slim",
                        "command": ["python3", "-c", "import time; time.sleep(300)"],
                    }
                ],
            },
        }
        kopf.adopt(worker, owner=body)
        kubernetes.client.CoreV1Api().create_namespaced_pod(namespace, worker)
        patch.status["phase"] = "Created"
        kopf.info(body, reason="WorkerCreated", message=f"Pod {name}-worker created")
        return {"pod": worker["metadata"]["name"]}  # kopf stores it in status.create

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec.size", id="resize", registry=registry)
    def resize(new: int, patch: kopf.Patch, **_: Any) -> None:
        patch.status["size"] = new

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="resume", registry=registry)
    def resume(patch: kopf.Patch, **_: Any) -> None:
        patch.status["resumed"] = True

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="delete", registry=registry)
    def delete(name: str, namespace: str, **_: Any) -> None:
        farewell = {"metadata": {"name": f"{name}-farewell"}, "data": {"widget": name}}
        kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, farewell)

    return registry, settings


def run_operator() -> KopfRunner:
    registry, settings = operator()
    return KopfRunner(
        ["run", "--standalone", f"--namespace={NAMESPACE}"],
        registry=registry,
        settings=settings,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def api(kube: Kube) -> Iterator[kubernetes.client.ApiClient]:
    """The CRD installed, KUBECONFIG set for the operator's login, and a client for checks."""
    default = kubernetes.client.Configuration.get_default_copy()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KUBECONFIG", str(kube.kubeconfig))
        # The client reads $KUBECONFIG once, when imported (before this fixture ran).
        env.setattr(
            kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kube.kubeconfig)
        )
        env.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # no in-cluster login
        client = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
        kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(WIDGET_CRD)
        yield client
        client.close()
    # kopf's login configured the client's default; leave it as the other tests found it.
    kubernetes.client.Configuration.set_default(default)


def await_event(
    list_objects: Callable[..., Any],
    name: str,
    condition: Callable[[str, Any], bool],
    *args: Any,
    selector: str = "metadata.name",
) -> Any:
    """Watch the objects whose field `selector` is `name` until `condition(event type,
    object)` holds for one (the first events are the current state); fail after TIMEOUT s."""
    watch = kubernetes.watch.Watch()
    for event in watch.stream(
        list_objects,
        *args,
        field_selector=f"{selector}={name}",
        timeout_seconds=TIMEOUT,
        _request_timeout=TIMEOUT + 5,
    ):
        if condition(event["type"], event["object"]):
            watch.stop()
            return event["object"]
    raise AssertionError(f"{name}: the condition did not hold within {TIMEOUT} s")


def await_widget(
    client: kubernetes.client.ApiClient, name: str, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(client)
    found: dict[str, Any] = await_event(
        custom.list_namespaced_custom_object,
        name,
        lambda kind, obj: kind != "DELETED" and condition(obj),
        GROUP,
        VERSION,
        NAMESPACE,
        PLURAL,
    )
    return found


def await_gone(list_objects: Callable[..., Any], name: str, *args: Any) -> None:
    """Return once the object is gone: absent from a list, or deleted while watched from that
    list's resourceVersion (a watch alone would miss a deletion that came before it)."""
    listing = list_objects(*args, field_selector=f"metadata.name={name}")
    items = listing["items"] if isinstance(listing, dict) else listing.items
    if not items:
        return
    version = (
        listing["metadata"]["resourceVersion"]
        if isinstance(listing, dict)
        else listing.metadata.resource_version
    )
    watch = kubernetes.watch.Watch()
    for event in watch.stream(
        list_objects,
        *args,
        field_selector=f"metadata.name={name}",
        resource_version=version,
        timeout_seconds=TIMEOUT,
        _request_timeout=TIMEOUT + 5,
    ):
        if event["type"] == "DELETED":
            watch.stop()
            return
    raise AssertionError(f"{name}: still there after {TIMEOUT} s")


def assert_clean(runner: KopfRunner) -> None:
    assert runner.exit_code == 0
    assert runner.exception is None
    # Nothing went wrong with the API: no error, no retry, no warning but the expected one.
    problems = [
        line
        for line in runner.output.splitlines()
        if ("[WARNING" in line or "[ERROR" in line or "Traceback" in line)
        and "OS signals are ignored: running not in the main thread" not in line
    ]
    assert problems == [], runner.output


def test_operator_creates_adopts_resumes_and_finalizes(
    kube: Kube, api: kubernetes.client.ApiClient
) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    core = kubernetes.client.CoreV1Api(api)
    widget = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 1},
    }
    with run_operator() as first:
        created = custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, widget)
        uid = created["metadata"]["uid"]
        done = await_widget(api, "w1", lambda w: w.get("status", {}).get("phase") == "Created")
        assert done["status"]["create"] == {"pod": "w1-worker"}
        assert FINALIZER in done["metadata"]["finalizers"]

        worker = core.read_namespaced_pod("w1-worker", NAMESPACE)
        [owner] = worker.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Widget", "w1", uid, True)
        assert worker.metadata.labels == {"widget": "w1"}
        running = await_event(
            core.list_namespaced_pod,
            "w1-worker",
            lambda _, pod: pod.status is not None and pod.status.phase == "Running",
            NAMESPACE,
        )
        pod_uid = running.metadata.uid

        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, "w1", {"spec": {"size": 3}}
        )
        await_widget(api, "w1", lambda w: w.get("status", {}).get("size") == 3)
        # The event the handler posted (kopf posts core/v1 events in the background).
        reported = await_event(
            core.list_namespaced_event,
            "w1",
            lambda _, event: event.reason == "WorkerCreated",
            NAMESPACE,
            selector="involvedObject.name",
        )
        assert (reported.involved_object.kind, reported.involved_object.uid) == ("Widget", uid)
        assert (reported.type, reported.message) == ("Normal", "Pod w1-worker created")
    assert_clean(first)

    # A new operator process: the existing widget is resumed, not created again.
    with run_operator() as second:
        resumed = await_widget(api, "w1", lambda w: w.get("status", {}).get("resumed") is True)
        assert resumed["status"]["create"] == {"pod": "w1-worker"}
        workers = core.list_namespaced_pod(NAMESPACE, label_selector="widget=w1").items
        assert [pod.metadata.uid for pod in workers] == [pod_uid]

        custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "w1")
        await_gone(custom.list_namespaced_custom_object, "w1", GROUP, VERSION, NAMESPACE, PLURAL)
        # The delete handler ran before the finalizer let the widget go ...
        farewell = core.read_namespaced_config_map("w1-farewell", NAMESPACE)
        assert farewell.data == {"widget": "w1"}
        # ... and the adopted pod went with its owner (its process stopped by the kubelet).
        await_gone(core.list_namespaced_pod, "w1-worker", NAMESPACE)
    assert_clean(second)

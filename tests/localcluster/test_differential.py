"""The same requests to both control planes, the emulator and the real kube-apiserver, with the
status codes and the fields that matter compared: where the emulator differs, the emulator is
wrong. Each test runs its requests on both and asserts the two answers are equal (and, so that
two equally wrong answers cannot pass, what that answer is)."""

from __future__ import annotations

import base64
import json
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.eventually import eventually
from tests.localcluster.conftest import WIDGET_CRD, Kube, local_kube

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"
Json = dict[str, Any]


@pytest.fixture(scope="module")
def planes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Kube]]:
    with (
        local_kube(tmp_path_factory.mktemp("embedded")) as embedded,
        local_kube(tmp_path_factory.mktemp("real"), plane="real") as real,
    ):
        for kube in (embedded, real):
            kube.kubectl("apply", "-f", "-", stdin=json.dumps(WIDGET_CRD))
            kube.kubectl("wait", "--for=condition=Established", "crd/widgets.example.com")
        yield {"embedded": embedded, "real": real}


def client(kube: Kube, *, anonymous: bool = False) -> httpx.Client:
    """An HTTP client with the kubeconfig's server, CA and credentials (none if anonymous)."""
    config = yaml.safe_load(kube.kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    folder = Path(tempfile.mkdtemp(dir=kube.kubeconfig.parent))

    def written(name: str, data: str) -> str:
        path = folder / name
        path.write_bytes(base64.b64decode(data))
        return str(path)

    context = ssl.create_default_context(
        cafile=written("ca.crt", cluster["certificate-authority-data"])
    )
    headers = {}
    if not anonymous:
        if "token" in user:
            headers["Authorization"] = f"Bearer {user['token']}"
        else:
            context.load_cert_chain(
                written("client.crt", user["client-certificate-data"]),
                written("client.key", user["client-key-data"]),
            )
    return httpx.Client(base_url=cluster["server"], verify=context, headers=headers, timeout=30)


def on_both(planes: dict[str, Kube], run: Callable[[Kube], Any]) -> Any:
    """`run` on each plane; the answers must be equal, and that answer is returned."""
    answers = {name: run(kube) for name, kube in planes.items()}
    assert answers["embedded"] == answers["real"], answers
    return answers["real"]


def config_map(name: str, **metadata: Any) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, **metadata},
        "data": {"a": "1"},
    }


def test_who_may_write_and_with_what_bodies(planes: dict[str, Kube]) -> None:
    def run(kube: Kube) -> dict[str, int]:
        with client(kube, anonymous=True) as anonymous, client(kube) as admin:
            return {
                "anonymous create": anonymous.post(CONFIGMAPS, json=config_map("x")).status_code,
                "anonymous version": anonymous.get("/version").status_code,
                # A web page's cross-site POST: text/plain, which the API does not read.
                "text/plain create": admin.post(
                    CONFIGMAPS,
                    content=json.dumps(config_map("y")),
                    headers={"Content-Type": "text/plain"},
                ).status_code,
                "form create": admin.post(CONFIGMAPS, data={"a": "b"}).status_code,
                "stored": admin.get(f"{CONFIGMAPS}/x").status_code,
            }

    assert on_both(planes, run) == {
        "anonymous create": 403,
        "anonymous version": 200,
        "text/plain create": 415,
        "form create": 415,
        "stored": 404,
    }


def test_kubectl_create_apply_and_server_side_apply(planes: dict[str, Kube]) -> None:
    manifest = json.dumps(config_map("applied", labels={"app": "demo"}))

    def run(kube: Kube) -> list[str]:
        outputs = [
            # Protobuf bodies: kubectl's generated clients send them for built-in kinds.
            kube.kubectl("create", "configmap", "created", "--from-literal=a=b").stdout,
            kube.kubectl("create", "namespace", "made").stdout,
            kube.kubectl("create", "secret", "generic", "hidden", "--from-literal=k=v").stdout,
            kube.kubectl("apply", "-f", "-", stdin=manifest).stdout,
            kube.kubectl("apply", "-f", "-", stdin=manifest).stdout,
            kube.kubectl("apply", "--server-side", "-f", "-", stdin=manifest).stdout,
            kube.kubectl(
                "apply", "--server-side", "-f", "-", stdin=json.dumps(config_map("ssa"))
            ).stdout,
        ]
        kube.kubectl("delete", "namespace", "made", "--wait=false")
        return [line.strip() for line in outputs]

    assert on_both(planes, run) == [
        "configmap/created created",
        "namespace/made created",
        "secret/hidden created",
        "configmap/applied created",
        "configmap/applied unchanged",
        "configmap/applied serverside-applied",
        "configmap/ssa serverside-applied",
    ]


def test_patch_of_every_type(planes: dict[str, Kube]) -> None:
    patches = [
        ("application/merge-patch+json", {"data": {"b": "2"}}),
        ("application/json-patch+json", [{"op": "add", "path": "/data/c", "value": "3"}]),
        ("application/strategic-merge-patch+json", {"metadata": {"labels": {"x": "y"}}}),
        ("application/json-patch+json", [{"op": "test", "path": "/data/a", "value": "no"}]),
    ]

    def run(kube: Kube) -> Json:
        with client(kube) as api:
            api.post(CONFIGMAPS, json=config_map("patched"))
            codes = [
                api.patch(
                    f"{CONFIGMAPS}/patched", content=json.dumps(body), headers={"Content-Type": t}
                ).status_code
                for t, body in patches
            ]
            api.post(WIDGETS, json=widget("w"))
            # Custom resources take no strategic merge patch.
            strategic = api.patch(
                f"{WIDGETS}/w",
                content=json.dumps({"spec": {"size": 2}}),
                headers={"Content-Type": "application/strategic-merge-patch+json"},
            ).status_code
            # kopf's patches: metadata (finalizers, annotations) and the status subresource.
            merge = {"Content-Type": "application/merge-patch+json"}
            kopf = [
                api.patch(
                    f"{WIDGETS}/w",
                    content=json.dumps(
                        {"metadata": {"finalizers": ["example.com/x"], "annotations": {"k": "v"}}}
                    ),
                    headers=merge,
                ).status_code,
                api.patch(
                    f"{WIDGETS}/w/status",
                    content=json.dumps({"status": {"phase": "Ready"}}),
                    headers=merge,
                ).status_code,
            ]
            stored = api.get(f"{CONFIGMAPS}/patched").json()
            shown = api.get(f"{WIDGETS}/w").json()
            api.patch(f"{WIDGETS}/w", content=b'{"metadata":{"finalizers":null}}', headers=merge)
            api.delete(f"{WIDGETS}/w")
        return {
            "codes": codes,
            "strategic on a custom resource": strategic,
            "kopf": kopf,
            "data": stored["data"],
            "labels": stored["metadata"].get("labels"),
            "widget": (shown["status"], shown["metadata"]["finalizers"], shown["spec"]),
        }

    assert on_both(planes, run) == {
        "codes": [200, 200, 200, 422],
        "strategic on a custom resource": 415,
        "kopf": [200, 200],
        "data": {"a": "1", "b": "2", "c": "3"},
        "labels": {"x": "y"},
        "widget": ({"phase": "Ready"}, ["example.com/x"], {"size": 1, "color": "red"}),
    }


def widget(name: str, size: int = 1) -> Json:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


def test_delete_with_each_propagation_policy(planes: dict[str, Kube]) -> None:
    def run(kube: Kube) -> Json:
        outcome = {}
        with client(kube) as api:
            for policy in ("Background", "Foreground", "Orphan"):
                owner = api.post(CONFIGMAPS, json=config_map(f"owner-{policy.lower()}")).json()
                reference = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                }
                name = f"dependent-{policy.lower()}"
                api.post(CONFIGMAPS, json=config_map(name, ownerReferences=[reference]))
                deleted = api.request(
                    "DELETE",
                    f"{CONFIGMAPS}/{owner['metadata']['name']}",
                    json={"propagationPolicy": policy},
                ).status_code

                def dependent() -> Json | None:
                    answer = api.get(f"{CONFIGMAPS}/{name}")  # noqa: B023 (used at once)
                    return answer.json() if answer.status_code == 200 else None

                # The garbage collector acts in its own time (a real one is asynchronous) and
                # gives no signal to wait on: polled.
                if policy == "Orphan":
                    eventually(
                        lambda: not (dependent() or {}).get("metadata", {}).get("ownerReferences"),
                        timeout=30,
                        message=f"{name} orphaned on the {kube.plane} plane",
                    )
                    outcome[policy] = (deleted, "orphaned")
                else:
                    eventually(
                        lambda: dependent() is None,
                        timeout=30,
                        message=f"{name} collected on the {kube.plane} plane",
                    )
                    outcome[policy] = (deleted, "collected")
        return outcome

    assert on_both(planes, run) == {
        "Background": (200, "collected"),
        "Foreground": (200, "collected"),
        "Orphan": (200, "orphaned"),
    }


def test_list_and_watch_with_selectors(planes: dict[str, Kube]) -> None:
    def run(kube: Kube) -> Json:
        with client(kube) as api:
            for name, tier in (("sel-a", "web"), ("sel-b", "db"), ("sel-c", "web")):
                api.post(CONFIGMAPS, json=config_map(name, labels={"tier": tier}))

            def names(**params: str) -> list[str]:
                listing = api.get(CONFIGMAPS, params=params).json()
                return sorted(item["metadata"]["name"] for item in listing["items"])

            listed = {
                "label": names(labelSelector="tier=web"),
                "set": names(labelSelector="tier in (db),tier!=web"),
                "field": names(fieldSelector="metadata.name=sel-b"),
                "both": names(labelSelector="tier=web", fieldSelector="metadata.name!=sel-a"),
            }
            version = api.get(CONFIGMAPS).json()["metadata"]["resourceVersion"]
            api.patch(
                f"{CONFIGMAPS}/sel-b",
                content=b'{"data":{"z":"1"}}',
                headers={"Content-Type": "application/merge-patch+json"},
            )
            api.patch(
                f"{CONFIGMAPS}/sel-a",
                content=b'{"data":{"z":"1"}}',
                headers={"Content-Type": "application/merge-patch+json"},
            )
            seen = []
            params = {
                "watch": "true",
                "resourceVersion": version,
                "labelSelector": "tier=web",
                "timeoutSeconds": "2",
            }
            with api.stream("GET", CONFIGMAPS, params=params) as stream:
                for line in stream.iter_lines():
                    event = json.loads(line)
                    seen.append((event["type"], event["object"]["metadata"]["name"]))
                    break
        return {**listed, "watch": seen}

    assert on_both(planes, run) == {
        "label": ["sel-a", "sel-c"],
        "set": ["sel-b"],
        "field": ["sel-b"],
        "both": ["sel-c"],
        "watch": [("MODIFIED", "sel-a")],
    }


def test_a_pods_active_deadline_may_only_be_set_or_lowered(planes: dict[str, Kube]) -> None:
    """How the operator stops a trial and keeps its pod: it lowers activeDeadlineSeconds."""
    pods = "/api/v1/namespaces/default/pods"
    merge = {"Content-Type": "application/merge-patch+json"}
    sleeper = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "deadline"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.12-slim",
                    "command": [sys.executable, "-c", "import time; time.sleep(60)"],
                }
            ],
        },
    }

    def run(kube: Kube) -> list[Any]:
        answers: list[Any] = []
        with client(kube) as api:
            created = api.post(pods, json=sleeper)
            assert created.status_code == 201, created.text
            for deadline in (600, 900, None, 300, 0, -1):
                body = {"spec": {"activeDeadlineSeconds": deadline}}
                answer = api.patch(f"{pods}/deadline", content=json.dumps(body), headers=merge)
                details = answer.json().get("details") or {}
                answers.append((answer.status_code, details.get("causes")))
            stored = api.get(f"{pods}/deadline").json()["spec"]["activeDeadlineSeconds"]
            answers.append(stored)
            api.request("DELETE", f"{pods}/deadline", params={"gracePeriodSeconds": "0"})
        return answers

    def invalid(value: str, message: str) -> list[Json]:
        field = "spec.activeDeadlineSeconds"
        return [
            {
                "reason": "FieldValueInvalid",
                "field": field,
                "message": f"Invalid value: {value}: {message}",
            }
        ]

    assert on_both(planes, run) == [
        (200, None),  # set where there was none
        (422, invalid("900", "must be less than or equal to previous value")),
        (422, invalid("null", "must not update from a positive integer to nil value")),
        (200, None),  # lowered
        (422, invalid("0", "must be between 1 and 2147483647, inclusive")),
        (
            422,
            invalid("-1", "must be between 1 and 2147483647, inclusive")
            + invalid("-1", "must be between 0 and 2147483647, inclusive"),
        ),
        300,
    ]

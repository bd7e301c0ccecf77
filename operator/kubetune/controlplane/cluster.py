"""A local cluster: the API server emulator and the local kubelet, started together.

    async with LocalCluster(capacity={"nvidia.com/gpu": "2"}) as cluster:
        cluster.write_kubeconfig(Path("kubeconfig"))
        ...

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
from typing import Any, TypeVar

import yaml

from kubetune.controlplane.apiserver import ApiServer
from kubetune.controlplane.kubelet import Kubelet

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

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace), sort_keys=False))
        return path

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


class ClusterThread:
    """A LocalCluster served from a background thread with its own event loop, so that
    synchronous callers (subprocesses such as kubectl, kopf's KopfRunner, the `kubernetes`
    client) can use it. Entering starts it (and re-raises a failed start); leaving stops it,
    kubelet first, so no pod process outlives it."""

    def __init__(self, *, start_timeout: float = 30.0, **options: Any) -> None:
        self.cluster = LocalCluster(**options)
        self.start_timeout = start_timeout
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

"""The real control plane: etcd, kube-apiserver, kube-controller-manager and kube-scheduler from
binaries built by scripts/kube-binaries, with the local kubelet registered as their one node.

    async with RealCluster(Path(binaries), capacity={"nvidia.com/gpu": "2"}) as cluster:
        cluster.write_kubeconfig(Path("kubeconfig"))

It is laid out as envtest and kwok run their binaries, plus what they leave out so that pods
really run: the API server listens on 127.0.0.1 only with TLS, client-certificate
authentication, Node and RBAC authorization and service-account token signing; the controller
manager runs the controllers a workload needs (garbage collection, namespaces, service
accounts and their tokens, the root-CA publisher, Jobs, Deployments, ReplicaSets, node
lifecycle, ...) each with its own service-account credentials; the scheduler binds pods.
Every component logs to `<workdir>/logs/<name>.log`; etcd keeps its data in the workdir.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import aiohttp

from kubetune_localcluster.certificates import (
    CertificateAuthority,
    KeyPair,
    signing_key,
)
from kubetune_localcluster.environment import NODE_IP, free_port
from kubetune_localcluster.images import PROJECT_IMAGES, Image
from kubetune_localcluster.kubeconfigs import inline, kubeconfig, write_kubeconfig
from kubetune_localcluster.kubelet import DEFAULT_NODE_NAME, Kubelet

BINARIES: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SERVICE_CLUSTER_IP_RANGE: Final = "10.0.0.0/24"
KUBERNETES_SERVICE_IP: Final = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS: Final = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "disruption-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "node-lifecycle-controller",
    "pod-garbage-collector-controller",
    "resourcequota-controller",
)
"""What kube-controller-manager runs (--controllers). Left out: cloud, storage, certificate
signing and the token cleaner, which nothing here needs."""
PR_SET_PDEATHSIG: Final = 1
START_TIMEOUT_SECONDS: Final = 120.0
STOP_GRACE_SECONDS: Final = 10.0
DEFAULT_CAPACITY: Final = {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "0"}


class ControlPlaneError(RuntimeError):
    """A component could not be started: the message names it and ends with its log."""


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""
"""Every request once (at its response), with its user, user agent, verb and object."""


def missing_binaries(folder: Path) -> list[str]:
    return [name for name in BINARIES if not os.access(folder / name, os.X_OK)]


@dataclass
class _Component:
    name: str
    argv: list[str]
    log: Path
    process: asyncio.subprocess.Process | None = None
    log_file: Any = field(default=None, repr=False)

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class RealCluster:
    """A real control plane on loopback and the local kubelet as its node. Same interface as
    LocalCluster: start(), stop(), url, kubelet, kubeconfig(), write_kubeconfig()."""

    def __init__(
        self,
        binaries: Path,
        *,
        capacity: dict[str, str] | None = None,
        workdir: Path | None = None,
        service_discovery_dir: Path | None = None,
        images: Mapping[str, Image] = PROJECT_IMAGES,
        port: int = 0,
    ) -> None:
        self.binaries = binaries
        self.capacity = {**DEFAULT_CAPACITY, **(capacity or {})}
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.gettempdir())
        self.service_discovery_dir = service_discovery_dir
        self.images = images
        self.port = port
        self.kubelet: Kubelet | None = None
        self._components: list[_Component] = []
        self._ca: CertificateAuthority | None = None
        self._admin: KeyPair | None = None

    @property
    def url(self) -> str:
        return f"https://{NODE_IP}:{self.port}"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: one JSON line per request (who, which verb on what),
        at Metadata level. Tests read it to check RBAC against what clients really called."""
        return self.workdir / "audit.log"

    async def start(self) -> None:
        missing = missing_binaries(self.binaries)
        if missing:
            raise ControlPlaneError(
                f"{', '.join(missing)} not found in {self.binaries}: build them with "
                "./scripts/kube-binaries and pass the folder it prints"
            )
        if self._own_workdir:
            self.workdir = Path(tempfile.mkdtemp(prefix="kubetune-real-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.port = self.port or free_port()
        try:
            self._issue_certificates()
            await self._start_etcd()
            await self._start_apiserver()
            await self._start_controllers()
            assert self._ca is not None
            kubelet_client = self._ca.issue(
                "kubelet-client",
                common_name=f"system:node:{DEFAULT_NODE_NAME}",
                organizations=("system:nodes",),
                client=True,
            )
            kubelet_serving = self._ca.issue(
                "kubelet-serving",
                common_name=DEFAULT_NODE_NAME,
                hosts=(NODE_IP, DEFAULT_NODE_NAME),
                server=True,
            )
            self.kubelet = Kubelet(
                self.url,
                capacity=self.capacity,
                workdir=self.workdir / "pods",
                service_discovery_dir=self.service_discovery_dir,
                schedules=False,
                tls=self._client_tls(kubelet_client),
                serving=(self._server_tls(kubelet_serving), free_port()),
                images=self.images,
            )
            await self.kubelet.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """The kubelet first (it ends every pod process), then the components in reverse."""
        if self.kubelet is not None:
            await self.kubelet.stop()
            self.kubelet = None
        for component in reversed(self._components):
            await _terminate(component)
        self._components = []
        if self._own_workdir and self.workdir.name.startswith("kubetune-real-"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        """An admin kubeconfig (group system:masters), credentials inlined."""
        assert self._ca is not None
        assert self._admin is not None
        return _kubeconfig(self.url, self._ca.pem, self._admin, "kubetune-admin", namespace)

    def session(self, **options: Any) -> aiohttp.ClientSession:
        """An HTTP session on the API server with the admin's client certificate."""
        assert self._admin is not None
        connector = aiohttp.TCPConnector(ssl=self._client_tls(self._admin))
        return aiohttp.ClientSession(self.url, connector=connector, **options)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        return write_kubeconfig(path, self.kubeconfig(namespace))

    async def __aenter__(self) -> RealCluster:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the components -------------------------------------------------------------------

    def _issue_certificates(self) -> None:
        ca = CertificateAuthority(self.pki)
        self._ca = ca
        ca.issue(
            "apiserver",
            common_name="kube-apiserver",
            hosts=(
                NODE_IP,
                "localhost",
                KUBERNETES_SERVICE_IP,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server=True,
        )
        ca.issue("apiserver-kubelet-client", common_name="kube-apiserver", client=True)
        self._admin = ca.issue(
            "admin", common_name="kubetune-admin", organizations=("system:masters",), client=True
        )
        for user in ("kube-controller-manager", "kube-scheduler"):
            pair = ca.issue(user, common_name=f"system:{user}", client=True)
            document = _kubeconfig(self.url, ca.pem, pair, f"system:{user}", "default")
            write_kubeconfig(self.pki / f"{user}.kubeconfig", document)
        signing_key(self.pki / "service-account.key")

    async def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self._etcd_url = f"http://{NODE_IP}:{client}"
        await self._launch(
            "etcd",
            [
                f"--name={DEFAULT_NODE_NAME}",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self._etcd_url}",
                f"--advertise-client-urls={self._etcd_url}",
                f"--listen-peer-urls=http://{NODE_IP}:{peer}",
                f"--initial-advertise-peer-urls=http://{NODE_IP}:{peer}",
                f"--initial-cluster={DEFAULT_NODE_NAME}=http://{NODE_IP}:{peer}",
                # A throwaway store: durability is not worth an fsync per write here.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        await self._wait_ready("etcd", f"{self._etcd_url}/health", tls=None)

    async def _start_apiserver(self) -> None:
        pki = self.pki
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        await self._launch(
            "kube-apiserver",
            [
                f"--etcd-servers={self._etcd_url}",
                f"--bind-address={NODE_IP}",
                f"--advertise-address={NODE_IP}",
                f"--secure-port={self.port}",
                f"--cert-dir={self.workdir / 'apiserver'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'service-account.pub'}",
                f"--service-account-signing-key-file={pki / 'service-account.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                # The `kubernetes` Service's endpoints refuse a loopback address; nothing here
                # routes Service IPs anyway (pods reach the API server at its own address).
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
            ],
        )
        assert self._admin is not None
        await self._wait_ready(
            "kube-apiserver", f"{self.url}/readyz", tls=self._client_tls(self._admin)
        )

    async def _start_controllers(self) -> None:
        pki = self.pki
        await self._launch(
            "kube-controller-manager",
            [
                *self._client_component_flags("kube-controller-manager"),
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'service-account.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            ],
        )
        await self._launch("kube-scheduler", self._client_component_flags("kube-scheduler"))
        # Pods in `default` need its ServiceAccount, which the controller manager makes: a pod
        # created right after start() must not be refused for the want of it.
        assert self._admin is not None
        await self._wait_ready(
            "the default ServiceAccount",
            f"{self.url}/api/v1/namespaces/default/serviceaccounts/default",
            tls=self._client_tls(self._admin),
        )

    def _client_component_flags(self, name: str) -> list[str]:
        """What the controller manager and the scheduler share: their kubeconfig (for the
        API, and to check who calls their own endpoint), loopback, one replica."""
        kubeconfig = self.pki / f"{name}.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={NODE_IP}",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
        ]

    async def _launch(self, name: str, args: list[str]) -> None:
        log = self.workdir / "logs" / f"{name}.log"
        component = _Component(name, [str(self.binaries / name), *args], log)
        component.log_file = log.open("ab")
        component.process = await asyncio.create_subprocess_exec(
            *component.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=component.log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._components.append(component)

    async def _wait_ready(self, what: str, url: str, tls: ssl.SSLContext | None) -> None:
        """Poll `url` until it answers 200; fail with a component's log if one exits, or when
        the time runs out."""
        connector = aiohttp.TCPConnector(ssl=tls) if tls is not None else None
        async with aiohttp.ClientSession(connector=connector) as session:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + START_TIMEOUT_SECONDS
            last = "no answer"
            while loop.time() < deadline:
                for component in self._components:
                    assert component.process is not None
                    if component.process.returncode is not None:
                        raise ControlPlaneError(
                            f"{component.name} exited with {component.process.returncode}:\n"
                            f"{component.tail()}"
                        )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as answer:
                        if answer.status == 200:
                            return
                        last = f"HTTP {answer.status}: {(await answer.text())[-500:]}"
                await asyncio.sleep(0.2)  # the component is still starting
        logs = "\n".join(f"{c.name}:\n{c.tail()}" for c in self._components)
        raise ControlPlaneError(
            f"{what} not ready in {START_TIMEOUT_SECONDS:g} s ({last}):\n{logs}"
        )

    def _client_tls(self, pair: KeyPair) -> ssl.SSLContext:
        assert self._ca is not None
        context = ssl.create_default_context(cafile=str(self._ca.cert))
        context.load_cert_chain(str(pair.cert), str(pair.key))
        return context

    def _server_tls(self, pair: KeyPair) -> ssl.SSLContext:
        """The kubelet's serving context: only clients with a certificate of this CA (the API
        server, for logs) get in."""
        assert self._ca is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self._ca.cert))
        context.load_cert_chain(str(pair.cert), str(pair.key))
        context.verify_mode = ssl.CERT_REQUIRED
        return context


def _kubeconfig(url: str, ca: bytes, pair: KeyPair, user: str, namespace: str) -> dict[str, Any]:
    """A kubeconfig of one of the real plane's users, its client certificate inlined."""
    credentials = {
        "client-certificate-data": inline(pair.cert.read_bytes()),
        "client-key-data": inline(pair.key.read_bytes()),
    }
    return kubeconfig(url, ca, user, credentials, namespace, cluster="kubetune-real")


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started it dies, so that no
    etcd or kube-apiserver outlives a cluster whose owner was killed without cleaning up."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


async def _terminate(component: _Component) -> None:
    process = component.process
    if process is not None and process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    if component.log_file is not None:
        component.log_file.close()

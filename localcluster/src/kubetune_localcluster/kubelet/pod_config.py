"""What a pod's containers are started with: their env (the API server's address, a
kubeconfig on the embedded plane, envFrom and env with the secrets and config maps they refer
to, ports mapped to loopback ports, shared within a subdomain, peer names mapped to loopback,
the termination message file) and, on the real plane, the pod's volumes and each container's
mounts of them."""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from kubetune_localcluster.environment import (
    NODE_IP,
    ContainerConfigError,
    SharedPorts,
    container_env,
    env_references,
    field_value,
    free_port,
    map_peer_names,
    map_ports,
    map_termination_path,
    pod_hostname,
    secret_values,
    shares_port,
    subdomain_group,
)
from kubetune_localcluster.kubelet.client import ApiClient, ApiRequestError, Json
from kubetune_localcluster.kubelet.events import PodEvents
from kubetune_localcluster.pod_status import AdmittedPod
from kubetune_localcluster.volumes import (
    VolumeError,
    container_mounts,
    hiding,
    prepare_targets,
    volume_files,
    write_volume,
)


class PodConfig:
    def __init__(
        self,
        client: ApiClient,
        events: PodEvents,
        *,
        workdir: Path,
        token: str | None,
        tls: ssl.SSLContext | None,
    ) -> None:
        self._client = client
        self._events = events
        self.workdir = workdir
        self._token = token
        self._tls = tls
        self._shared_ports = SharedPorts()

    def base_env(self, pod: AdmittedPod) -> dict[str, str]:
        api_url = self._client.api_url
        url = urlsplit(api_url)
        service = {
            "KUBERNETES_SERVICE_HOST": url.hostname or NODE_IP,
            "KUBERNETES_SERVICE_PORT": str(url.port or 80),
            "HOSTNAME": pod_hostname(pod.obj),
        }
        if self._tls is not None:
            # A real API server: a pod authenticates with its service-account token (a
            # volume), never with the credentials of whoever started this kubelet.
            inherited = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
            return {**inherited, **service}
        kubeconfig = pod.folder / "kubeconfig"
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubetune-local", "cluster": {"server": api_url}}],
            "users": [{"name": "pod", "user": {"token": self._token} if self._token else {}}],
            "contexts": [
                {
                    "name": "kubetune-local",
                    "context": {
                        "cluster": "kubetune-local",
                        "user": "pod",
                        "namespace": pod.namespace,
                    },
                }
            ],
            "current-context": "kubetune-local",
        }
        kubeconfig.write_text(json.dumps(document, indent=2))
        return {**os.environ, **service, "KUBECONFIG": str(kubeconfig)}

    async def prepare(self, pod: AdmittedPod, base: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """Each container's env, and the pod's volumes; ContainerConfigError or VolumeError
        while a secret or config map they need is missing."""
        envs = await self._envs(pod, base)
        if self._tls is not None:  # the embedded plane runs pods without volumes
            await self._make_volumes(pod)
        return envs

    async def _envs(self, pod: AdmittedPod, base: Mapping[str, str]) -> dict[str, dict[str, str]]:
        secret_names: set[str] = set()
        config_map_names: set[str] = set()
        for container in pod.containers:
            secrets, config_maps = env_references(container.spec)
            secret_names |= secrets
            config_map_names |= config_maps
        secrets_found = {name: await self._values(pod, "secrets", name) for name in secret_names}
        maps_found = {
            name: await self._values(pod, "configmaps", name) for name in config_map_names
        }
        group = subdomain_group(pod.obj)
        envs = {}
        for container in pod.containers:
            env = container_env(container.spec, pod.obj, secrets_found, maps_found, base)
            ports = {}
            for port in container.spec.get("ports") or []:
                number = port.get("containerPort")
                if isinstance(number, int):
                    key = (container.name, number)
                    if key not in pod.host_ports:
                        if group is not None and shares_port(pod.obj, port):
                            pod.host_ports[key] = self._shared_ports.port(
                                group, number, pod.uid, free_port
                            )
                        else:
                            pod.host_ports[key] = free_port()
                    ports[number] = pod.host_ports[key]
            env = map_ports(
                map_termination_path(env, container.message_path, container.termination_file),
                ports,
            )
            if group is not None:
                env = map_peer_names(env, *group)
            envs[container.name] = env
        for container in pod.containers:
            if container.state.get("waiting", {}).get("reason") == "CreateContainerConfigError":
                container.state = {"waiting": {"reason": "ContainerCreating"}}
        return envs

    def release_ports(self, pod: AdmittedPod) -> None:
        """The pod's processes have all ended: it gives up its share of its subdomain's ports,
        which are freed once no other pod of the group holds them."""
        self._shared_ports.release(pod.uid)

    async def _make_volumes(self, pod: AdmittedPod) -> None:
        """Make the pod's volumes in its folder and each container's mounts of them."""
        volumes: dict[str, Path] = {}

        async def fetch(plural: str, name: str) -> Json | None:
            try:
                return await self._client.request(
                    "GET", f"/api/v1/namespaces/{pod.namespace}/{plural}/{name}"
                )
            except ApiRequestError as error:
                if error.status == 404:
                    return None
                raise VolumeError(f"cannot read {plural[:-1]} {name!r}: {error}") from None

        async def request_token(audience: str | None, seconds: int) -> str:
            account = pod.spec.get("serviceAccountName") or "default"
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [audience] if audience else [],
                    "expirationSeconds": seconds,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": pod.name,
                        "uid": pod.uid,
                    },
                },
            }
            path = f"/api/v1/namespaces/{pod.namespace}/serviceaccounts/{account}/token"
            try:
                answer = await self._client.request("POST", path, body=body, attempts=1)
            except ApiRequestError as error:
                raise VolumeError(f"cannot get a token for {account!r}: {error}") from None
            return str(answer["status"]["token"])

        for volume in pod.spec.get("volumes") or []:
            files = await volume_files(
                volume, fetch, request_token, lambda path: field_value(pod.obj, path)
            )
            if files is not None:
                name = str(volume["name"])
                volumes[name] = write_volume(pod.folder / "volumes" / name, files)
        for container in pod.containers:
            mounts = container_mounts(container.spec, volumes)
            needed = [self.workdir.resolve(), Path(sys.prefix), Path(sys.base_prefix)]
            left_out = hiding(mounts, needed)
            for mount in left_out:
                self._events.record(
                    pod.obj,
                    "Warning",
                    "MountLeftOut",
                    f"volume mount {mount.target} of container {container.name} would hide "
                    "this machine's installed code or the pod's files: the local kubelet shares "
                    "the host's filesystem, so the container sees the host's folder there",
                )
            container.mounts = [mount for mount in mounts if mount not in left_out]
            prepare_targets(container.mounts)

    async def _values(self, pod: AdmittedPod, plural: str, name: str) -> dict[str, str] | None:
        try:
            obj = await self._client.request(
                "GET", f"/api/v1/namespaces/{pod.namespace}/{plural}/{name}"
            )
        except ApiRequestError as error:
            if error.status == 404:
                return None
            raise ContainerConfigError(f"cannot read {plural[:-1]} {name!r}: {error}") from None
        if plural == "secrets":
            return secret_values(obj)
        values = {key: str(value) for key, value in (obj.get("data") or {}).items()}
        for key, value in (obj.get("binaryData") or {}).items():
            values[key] = base64.b64decode(value).decode("utf-8", "replace")
        return values

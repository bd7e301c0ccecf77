"""What a container's process sees of its node: its env, its ports, its termination file.

Every process of the local kubelet shares this host's network and filesystem, so the env is
built as Kubernetes builds it (envFrom, env with $(VAR) expansion, the downward API, secrets
and config maps), then each declared containerPort is given a free loopback port and the
terminationMessagePath a file of the pod's own, and the env is rewritten to name them. Pods
that set the same spec.subdomain in a namespace stand for pods with their own IPs behind a
headless Service: they share the loopback port of each containerPort number (`SharedPorts`),
and the DNS names of their peers are rewritten to the loopback address (`map_peer_names`).
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

NODE_IP: Final = "127.0.0.1"
"""The address of the node, of every pod on it and of their ports: the host's loopback."""
METRICS_PORT_NAME: Final = "metrics"
SCRAPE_PORT_ANNOTATION: Final = "prometheus.io/port"

Json = dict[str, Any]


class ContainerConfigError(Exception):
    """The container's env cannot be built yet (reason CreateContainerConfigError)."""


_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_EXPANSION = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, $$ is a literal $, and unknown
    references are left as written."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _EXPANSION.sub(replace, text)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """The downward-API value of a fieldRef.fieldPath."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": NODE_IP,
        "status.podIPs": NODE_IP,
        "status.hostIP": NODE_IP,
        "status.hostIPs": NODE_IP,
    }
    if path in simple:
        return str(simple[path])
    if path in ("metadata.labels", "metadata.annotations"):
        mapping = metadata.get(path.split(".")[1]) or {}
        return "\n".join(f"{key}={json.dumps(mapping[key])}" for key in sorted(mapping))
    match = _FIELD_KEY.match(path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f'unsupported fieldRef fieldPath "{path}"')


def env_references(container: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The names of the secrets and config maps a container's env reads."""
    secrets: set[str] = set()
    config_maps: set[str] = set()
    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            secrets.add(source["secretRef"].get("name", ""))
        if "configMapRef" in source:
            config_maps.add(source["configMapRef"].get("name", ""))
    for variable in container.get("env") or []:
        value_from = variable.get("valueFrom") or {}
        if "secretKeyRef" in value_from:
            secrets.add(value_from["secretKeyRef"].get("name", ""))
        if "configMapKeyRef" in value_from:
            config_maps.add(value_from["configMapKeyRef"].get("name", ""))
    return secrets, config_maps


def secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    """A secret's values, base64-decoded (stringData too, should the server keep it)."""
    values = {
        key: base64.b64decode(value).decode("utf-8", "replace")
        for key, value in (secret.get("data") or {}).items()
    }
    values.update(secret.get("stringData") or {})
    return values


def container_env(
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    secrets: Mapping[str, Mapping[str, str] | None],
    config_maps: Mapping[str, Mapping[str, str] | None],
    base: Mapping[str, str],
) -> dict[str, str]:
    """The env a container's process gets: `base`, then envFrom, then env (each value
    expanded against what came before). `secrets` and `config_maps` map a name to its values,
    or to None when the object does not exist. Raises ContainerConfigError as the kubelet
    words it when a required source is missing."""
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    env = dict(base)

    def source(kind: str, name: str, optional: bool) -> Mapping[str, str] | None:
        values = (secrets if kind == "secret" else config_maps).get(name)
        if values is None and not optional:
            raise ContainerConfigError(f'{kind} "{name}" not found')
        return values

    for item in container.get("envFrom") or []:
        prefix = item.get("prefix", "")
        for kind, key in (("secret", "secretRef"), ("configmap", "configMapRef")):
            if key in item:
                ref = item[key]
                values = source(kind, ref.get("name", ""), bool(ref.get("optional")))
                for name, value in (values or {}).items():
                    env[prefix + name] = value
    for variable in container.get("env") or []:
        name = variable["name"]
        if "value" in variable or "valueFrom" not in variable:
            env[name] = expand(str(variable.get("value", "")), env)
            continue
        value_from = variable["valueFrom"]
        if "fieldRef" in value_from:
            env[name] = field_value(pod, value_from["fieldRef"].get("fieldPath", ""))
            continue
        for kind, key, label in (
            ("secret", "secretKeyRef", "Secret"),
            ("configmap", "configMapKeyRef", "ConfigMap"),
        ):
            if key in value_from:
                ref = value_from[key]
                optional = bool(ref.get("optional"))
                values = source(kind, ref.get("name", ""), optional)
                if values is not None and ref.get("key") in values:
                    env[name] = values[ref["key"]]
                elif not optional:
                    raise ContainerConfigError(
                        f"couldn't find key {ref.get('key')} in {label} "
                        f"{namespace}/{ref.get('name', '')}"
                    )
                break
        else:
            raise ContainerConfigError(
                f"env {name}: unsupported valueFrom {sorted(value_from)}; the local kubelet "
                "supports fieldRef, secretKeyRef and configMapKeyRef"
            )
    return env


def free_port() -> int:
    """A loopback port nothing listens on now (the process binds it moments later)."""
    with socket.socket() as probe:
        probe.bind((NODE_IP, 0))
        port: int = probe.getsockname()[1]
        return port


def map_ports(env: Mapping[str, str], ports: Mapping[int, int]) -> dict[str, str]:
    """The env with each *PORT variable that names a declared containerPort rewritten to the
    host port given to it: processes share one network, so two pods cannot both listen on
    the port their spec declares."""
    mapped = {str(container): str(host) for container, host in ports.items()}
    return {
        name: mapped.get(value, value) if name.upper().endswith("PORT") else value
        for name, value in env.items()
    }


HOSTNAME_MAX_LENGTH: Final = 63


def pod_hostname(pod: Mapping[str, Any]) -> str:
    """The pod's hostname as the kubelet gives it: spec.hostname when set, else the pod name,
    cut to 63 characters with no trailing '-' or '.' left (truncatePodHostnameIfNeeded)."""
    metadata = pod.get("metadata") or {}
    hostname = str((pod.get("spec") or {}).get("hostname") or metadata.get("name", ""))
    if len(hostname) <= HOSTNAME_MAX_LENGTH:
        return hostname
    return hostname[:HOSTNAME_MAX_LENGTH].rstrip("-.")


def subdomain_group(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, spec.subdomain) of a pod that sets a subdomain, else None: the pods a
    headless Service of that name would give DNS names `<hostname>.<subdomain>`."""
    subdomain = (pod.get("spec") or {}).get("subdomain")
    if not subdomain:
        return None
    return str((pod.get("metadata") or {}).get("namespace", "default")), str(subdomain)


def is_scrape_port(pod: Mapping[str, Any], port: Mapping[str, Any]) -> bool:
    """Whether a declared port is a metrics endpoint published for Prometheus: named
    `metrics`, or the port the prometheus.io/port annotation names."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    annotated = str(annotations.get(SCRAPE_PORT_ANNOTATION, ""))
    return port.get("name") == METRICS_PORT_NAME or str(port.get("containerPort")) == annotated


def shares_port(pod: Mapping[str, Any], port: Mapping[str, Any]) -> bool:
    """Whether a declared port's loopback port is shared with the pod's subdomain group. A
    metrics endpoint is not: Prometheus scrapes each pod at its own port, and no peer reaches
    it by the DNS name that stands for one pod's IP."""
    return subdomain_group(pod) is not None and not is_scrape_port(pod, port)


class SharedPorts:
    """The loopback port of each containerPort number in a subdomain group, with the pods that
    took it. The first pod of the group to ask allocates it, the others get the same: on a
    real cluster each pod listens on the number at its own IP, here they share one address,
    so exactly one of them (a rendezvous server) can listen and the others connect to it. A
    port is freed when the last pod holding it is released."""

    def __init__(self) -> None:
        self._ports: dict[tuple[str, str, int], int] = {}
        self._holders: dict[tuple[str, str, int], set[str]] = {}

    def port(
        self, group: tuple[str, str], number: int, holder: str, allocate: Callable[[], int]
    ) -> int:
        """The group's loopback port for containerPort `number`, held by `holder` (a pod's
        uid) from now on; `allocate` gives one when no pod of the group holds it."""
        key = (*group, number)
        if key not in self._ports:
            self._ports[key] = allocate()
        self._holders.setdefault(key, set()).add(holder)
        return self._ports[key]

    def release(self, holder: str) -> None:
        """`holder` no longer needs its ports: free those nobody else holds."""
        for key in [key for key, holders in self._holders.items() if holder in holders]:
            self._holders[key].discard(holder)
            if not self._holders[key]:
                del self._holders[key]
                del self._ports[key]


_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"


def map_peer_names(env: Mapping[str, str], namespace: str, subdomain: str) -> dict[str, str]:
    """The env with every value that is the DNS name of a pod in the subdomain rewritten to the
    loopback address: `<label>.<subdomain>`, `<label>.<subdomain>.<namespace>.svc` and
    `<label>.<subdomain>.<namespace>.svc.cluster.local` (the last also absolute, with a final
    '.'), `<label>` any DNS label, the case ignored as DNS does. There is no cluster DNS, and
    every pod of the group runs on this host. A value with a port (`name:port`) is left as it
    is."""
    suffix = re.escape(subdomain)
    qualified = re.escape(f"{namespace}.svc")
    name = re.compile(
        rf"{_DNS_LABEL}\.{suffix}(?:\.{qualified}(?:\.cluster\.local\.?)?)?", re.IGNORECASE
    )
    return {key: NODE_IP if name.fullmatch(value) else value for key, value in env.items()}


def scrape_targets(pod: Mapping[str, Any], host_ports: Mapping[tuple[str, int], int]) -> list[Json]:
    """The file_sd target groups of a pod's metrics endpoints: ports named `metrics`, and the
    port the prometheus.io/port annotation names; each at its host port on loopback."""
    metadata = pod.get("metadata") or {}
    labels = {
        re.sub(r"[^A-Za-z0-9_]", "_", key): str(value)
        for key, value in (metadata.get("labels") or {}).items()
    }
    groups = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            host = host_ports.get((container.get("name", ""), number))
            if host is None or not is_scrape_port(pod, port):
                continue
            groups.append(
                {
                    "targets": [f"{NODE_IP}:{host}"],
                    "labels": {
                        **labels,
                        "namespace": str(metadata.get("namespace", "default")),
                        "pod": str(metadata.get("name", "")),
                        "container": str(container.get("name", "")),
                    },
                }
            )
    return groups


def map_termination_path(env: Mapping[str, str], message_path: str, mapped: Path) -> dict[str, str]:
    """The env with every value equal to the container's terminationMessagePath replaced by
    the local file standing for it."""
    return {name: str(mapped) if value == message_path else value for name, value in env.items()}

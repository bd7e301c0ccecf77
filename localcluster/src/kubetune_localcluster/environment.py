"""What a container's process sees of its node: its env, its ports, its termination file.

Every process of the local kubelet shares this host's network and filesystem, so the env is
built as Kubernetes builds it (envFrom, env with $(VAR) expansion, the downward API, secrets
and config maps), then each declared containerPort is given a free loopback port and the
terminationMessagePath a file of the pod's own, and the env is rewritten to name them.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import Mapping
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


def scrape_targets(pod: Mapping[str, Any], host_ports: Mapping[tuple[str, int], int]) -> list[Json]:
    """The file_sd target groups of a pod's metrics endpoints: ports named `metrics`, and the
    port the prometheus.io/port annotation names; each at its host port on loopback."""
    metadata = pod.get("metadata") or {}
    annotated = str((metadata.get("annotations") or {}).get(SCRAPE_PORT_ANNOTATION, ""))
    labels = {
        re.sub(r"[^A-Za-z0-9_]", "_", key): str(value)
        for key, value in (metadata.get("labels") or {}).items()
    }
    groups = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            host = host_ports.get((container.get("name", ""), number))
            wanted = port.get("name") == METRICS_PORT_NAME or str(number) == annotated
            if host is None or not wanted:
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

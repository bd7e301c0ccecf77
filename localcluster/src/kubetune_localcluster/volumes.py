"""Pod volumes on the local kubelet: each volume is made as a folder in the pod's folder, and a
container's volumeMounts are bind mounts in a private mount namespace of its process, so a
process finds them at the paths it expects (the service-account token at
/var/run/secrets/kubernetes.io/serviceaccount, where the Kubernetes clients look) while other
pods see their own.

Kinds: emptyDir, configMap, secret and projected (serviceAccountToken, configMap, secret,
downwardAPI). Others are left out. A mount needs root (unshare and mount); the mount target is
created on the host as an empty folder when missing, since a bind mount needs one."""

from __future__ import annotations

import base64
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Json = dict[str, Any]
Fetch = Callable[[str, str], Awaitable[Json | None]]
"""(plural, name) -> the object in the pod's namespace, or None when it does not exist."""
RequestToken = Callable[[str | None, int], Awaitable[str]]
"""(audience, expiration seconds) -> a token of the pod's service account, bound to the pod."""
FieldValue = Callable[[str], str]
"""A downward-API fieldPath -> its value."""

DEFAULT_TOKEN_SECONDS = 3607
"""What a kubelet asks for a projected token by default (an hour and a few seconds)."""


class VolumeError(Exception):
    """A volume cannot be made yet (a missing config map or secret); retried like env."""


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str


def _decode(obj: Json, kind: str) -> dict[str, bytes]:
    if kind == "secrets":
        return {key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()}
    values = {key: str(value).encode() for key, value in (obj.get("data") or {}).items()}
    for key, value in (obj.get("binaryData") or {}).items():
        values[key] = base64.b64decode(value)
    return values


async def _object_files(source: Mapping[str, Any], kind: str, fetch: Fetch) -> dict[str, bytes]:
    """The files of a configMap or secret source: every key, or the listed items."""
    name = str(source.get("secretName") or source.get("name") or "")
    obj = await fetch(kind, name)
    if obj is None:
        if source.get("optional"):
            return {}
        raise VolumeError(f'{kind[:-1]} "{name}" not found')
    values = _decode(obj, kind)
    items = source.get("items")
    if not items:
        return values
    files = {}
    for item in items:
        if item["key"] not in values:
            if source.get("optional"):
                continue
            raise VolumeError(f'{kind[:-1]} "{name}" has no key {item["key"]!r}')
        files[str(item["path"])] = values[item["key"]]
    return files


async def volume_files(
    volume: Mapping[str, Any],
    fetch: Fetch,
    request_token: RequestToken,
    field_value: FieldValue,
) -> dict[str, bytes] | None:
    """The files of one volume (relative path -> content); {} for an emptyDir, None for a
    kind the local kubelet does not make."""
    if "emptyDir" in volume:
        return {}
    if "configMap" in volume:
        return await _object_files(volume["configMap"], "configmaps", fetch)
    if "secret" in volume:
        return await _object_files(volume["secret"], "secrets", fetch)
    if "projected" not in volume:
        return None
    files: dict[str, bytes] = {}
    for source in volume["projected"].get("sources") or []:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            files[str(token["path"])] = (
                await request_token(
                    token.get("audience"),
                    int(token.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS),
                )
            ).encode()
        elif "configMap" in source:
            files.update(await _object_files(source["configMap"], "configmaps", fetch))
        elif "secret" in source:
            files.update(await _object_files(source["secret"], "secrets", fetch))
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    value = field_value(str(item["fieldRef"]["fieldPath"]))
                    files[str(item["path"])] = value.encode()
    return files


def write_volume(folder: Path, files: Mapping[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return folder


def container_mounts(container: Mapping[str, Any], volumes: Mapping[str, Path]) -> list[Mount]:
    """A container's volumeMounts onto the volumes made (subPath included)."""
    mounts = []
    for mount in container.get("volumeMounts") or []:
        source = volumes.get(str(mount.get("name")))
        if source is None:
            continue
        if mount.get("subPath"):
            source = source / str(mount["subPath"])
        mounts.append(Mount(source, str(mount["mountPath"])))
    return mounts


def prepare_targets(mounts: list[Mount]) -> None:
    """Bind mounts need an existing target of the source's kind."""
    for mount in mounts:
        target = Path(mount.target)
        if mount.source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()


def in_mount_namespace(argv: list[str], mounts: list[Mount]) -> list[str]:
    """argv run in a private mount namespace with the mounts in place. unshare and sh both
    exec, so the process keeps its pid and process group (signals still reach it)."""
    if not mounts:
        return argv
    script = "set -e\n" + "".join(
        f"mount --bind {shlex.quote(str(m.source))} {shlex.quote(m.target)}\n"
        for m in mount_order(mounts)
    )
    script += 'exec "$@"\n'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *argv]


def mount_order(mounts: list[Mount]) -> list[Mount]:
    """Parents before children: a mount on /srv would hide one made before it on /srv/data."""
    return sorted(mounts, key=lambda mount: len(Path(mount.target).parts))


def hiding(mounts: list[Mount], needed: list[Path]) -> list[Mount]:
    """The mounts whose target would hide a path the process needs: the installed code (the
    virtualenv), the pod's folder, or another mount's source. A real container has a root
    filesystem of its own; here the host's is shared, so an emptyDir on /tmp would hide a
    checkout under /tmp. Such a mount is left out (the process sees the host's folder)."""
    paths = [*needed, *(mount.source for mount in mounts)]
    return [
        mount
        for mount in mounts
        if any(path.is_relative_to(mount.target) and path != mount.source for path in paths)
    ]

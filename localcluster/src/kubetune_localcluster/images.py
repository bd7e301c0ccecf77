"""Images as the local kubelet runs them. It pulls nothing: a container runs its `command` as
a host process, and an image it knows stands for that image's ENTRYPOINT and CMD, mapped to
the commands installed on this machine (Kubernetes' rule: `command` replaces the entrypoint,
`args` replace the CMD)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Image:
    """An image's ENTRYPOINT and CMD, as argv lists of commands found on the kubelet's PATH."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()


PROJECT_IMAGES: Mapping[str, Image] = {
    # Dockerfile: the operator image runs `kubetune operator` from the installed package.
    "ghcr.io/kubetune/kubetune": Image(
        entrypoint=("kubetune", "operator"),
        cmd=("--liveness", "http://0.0.0.0:8080/healthz", "--metrics-port", "8000"),
    ),
    # trainer-image/Dockerfile: the example trainers, installed with kubetune_trainers.
    "ghcr.io/kubetune/trainer": Image(cmd=("python", "-m", "kubetune_trainers.digits")),
}
"""The project's own images (repository -> what it runs); tests keep them equal to the
Dockerfiles."""


def repository(reference: str) -> str:
    """An image reference without its digest and tag: ghcr.io/a/b:1.0@sha256:... -> ghcr.io/a/b."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def container_argv(container: Mapping[str, Any], images: Mapping[str, Image]) -> list[str] | None:
    """What a container runs: command + args, else the known image's entrypoint with the args
    (or the image's CMD when there are none); None when the image is unknown and no command is
    given (nothing can be run)."""
    command = list(container.get("command") or [])
    args = container.get("args")
    if command:
        return [str(part) for part in [*command, *(args or [])]]
    image = images.get(repository(str(container.get("image") or "")))
    if image is None:
        return None
    argv = [*image.entrypoint, *(args if args is not None else image.cmd)]
    return [str(part) for part in argv] or None

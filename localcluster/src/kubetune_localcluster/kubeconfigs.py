"""Kubeconfig documents for the local clusters: one builder for the emulator's token and the
real control plane's client certificates, and one writer (owner-only, as kubectl writes
them)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kubetune_localcluster.certificates import write_private


def inline(data: bytes) -> str:
    """Bytes as a kubeconfig's *-data field holds them."""
    return base64.b64encode(data).decode()


def kubeconfig(
    server: str,
    certificate_authority: bytes,
    user: str,
    credentials: Mapping[str, str],
    namespace: str = "default",
    cluster: str = "kubetune",
) -> dict[str, Any]:
    """A kubeconfig with one cluster (its server and CA), one user (`credentials`: a token,
    or client-certificate-data and client-key-data) and one current context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": inline(certificate_authority),
                },
            }
        ],
        "users": [{"name": user, "user": dict(credentials)}],
        "contexts": [
            {
                "name": cluster,
                "context": {"cluster": cluster, "user": user, "namespace": namespace},
            }
        ],
        "current-context": cluster,
        "preferences": {},
    }


def write_kubeconfig(path: Path, document: Mapping[str, Any]) -> Path:
    """The document as YAML at `path`, readable by its owner only."""
    return write_private(path, yaml.safe_dump(dict(document), sort_keys=False).encode())

"""Who may call the emulated API server, and how a request is described to those who watch it.

Every request but the health endpoints and /version must carry the server's bearer token; the
HTTPS listener serves a certificate of its own, which the kubeconfig names as its CA (client-go
sends a kubeconfig's credentials only over TLS). Request hooks see each resource request as
Kubernetes authorization would (`ApiRequest`: the RBAC verb, group, resource, subresource,
namespace and name).
"""

from __future__ import annotations

import hmac
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

# What anyone may read without credentials (system:public-info-viewer): health and version.
PUBLIC_PATHS = frozenset({"healthz", "livez", "readyz"})


@dataclass(frozen=True)
class ApiRequest:
    """A resource request as Kubernetes authorization sees it (the RBAC verb and resource)."""

    verb: str
    """get, list, watch, create, update, patch, delete or deletecollection."""
    group: str
    version: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None
    user_agent: str


RequestHook = Callable[[ApiRequest], Awaitable[None]]
"""Awaited before a resource request is served; it may delay the request (never answer it)."""


def server_context(certificate: bytes, key: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    folder = tempfile.mkdtemp(prefix="kubetune-apiserver-")
    try:  # ssl loads a certificate chain from files only: a private, short-lived folder
        (cert_path, key_path) = (f"{folder}/tls.crt", f"{folder}/tls.key")
        with open(cert_path, "wb") as out:
            out.write(certificate)
        with open(key_path, "wb") as out:
            out.write(key)
        context.load_cert_chain(cert_path, key_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return context


def rbac_verb(method: str, name: str | None, watching: bool) -> str:
    """The authorization verb of a request, as the real API server derives it."""
    if method == "GET":
        return "watch" if watching else ("list" if name is None else "get")
    if method == "DELETE":
        return "deletecollection" if name is None else "delete"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def authenticated(request: web.Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )


def is_public(request: web.Request) -> bool:
    parts = [part for part in request.path.split("/") if part]
    return bool(parts) and (parts[0] in PUBLIC_PATHS or parts == ["version"])

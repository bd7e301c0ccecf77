"""How the reporting helper reaches the API server: the in-cluster service account, or a
kubeconfig (token, client certificate, CA), with no client library."""

from __future__ import annotations

import base64
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kubetune_report.errors import ReportError
from kubetune_report.kubeconfig_yaml import load_kubeconfig

logger = logging.getLogger(__name__)

KUBECONFIG_ENV: Final = "KUBECONFIG"
SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeConnection:
    """How to reach the API server: its URL, credentials and TLS settings."""

    server: str
    token: str | None = None
    token_file: Path | None = None
    """Read before each request: bound service-account tokens are rotated by the kubelet."""
    basic_auth: tuple[str, str] | None = None
    ssl_context: ssl.SSLContext | None = None

    def headers(self) -> dict[str, str]:
        token = self.token_file.read_text().strip() if self.token_file else self.token
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self.basic_auth:
            user_pass = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            return {"Authorization": f"Basic {user_pass}"}
        return {}


def in_cluster_connection(
    environ: Mapping[str, str], service_account: Path = SERVICE_ACCOUNT_DIR
) -> KubeConnection | None:
    """The pod's own service account, as client-go finds it; None outside a cluster."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    token_file = service_account / "token"
    if not host or not port or not token_file.is_file():
        return None
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    ca_file = service_account / "ca.crt"
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file.is_file() else None)
    return KubeConnection(f"https://{host}:{port}", token_file=token_file, ssl_context=context)


def kubeconfig_path(environ: Mapping[str, str]) -> Path | None:
    """The first existing file of KUBECONFIG (a path list, as kubectl reads it), else
    ~/.kube/config."""
    listed = environ.get(KUBECONFIG_ENV)
    candidates = (
        [Path(part) for part in listed.split(os.pathsep) if part]
        if listed
        else [Path(environ.get("HOME", "~")).expanduser() / ".kube" / "config"]
    )
    return next((path for path in candidates if path.is_file()), None)


def _named(config: Mapping[str, Any], section: str, name: str, kind: str) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(kind)
            return value if isinstance(value, dict) else {}
    raise ReportError(f"kubeconfig has no {kind} named {name!r} in {section}")


def kubeconfig_connection(path: Path) -> tuple[KubeConnection, str | None]:
    """The current context of a kubeconfig file: the connection and the context's namespace.
    Supports server, certificate-authority(-data), insecure-skip-tls-verify, token, tokenFile,
    username/password and client-certificate/key (files or data); exec and auth-provider
    plugins are not supported (use a token)."""
    config = load_kubeconfig(path.read_text())
    base = path.parent

    def file(value: str) -> str:
        return str((base / value).expanduser())

    current = config.get("current-context")
    if not current:
        raise ReportError(f"kubeconfig {path} has no current-context")
    context = _named(config, "contexts", current, "context")
    cluster = _named(config, "clusters", context.get("cluster", ""), "cluster")
    user = _named(config, "users", context["user"], "user") if context.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ReportError(f"kubeconfig {path}: cluster {context.get('cluster')!r} has no server")
    for plugin in ("exec", "auth-provider"):
        if plugin in user:
            raise ReportError(
                f"kubeconfig {path}: user {context.get('user')!r} uses {plugin} credentials, "
                "which kubetune_report does not support; give it a token or a client certificate"
            )
    context_ssl = None
    if str(server).startswith("https:"):
        ca_data = cluster.get("certificate-authority-data")
        ca_file = cluster.get("certificate-authority")
        context_ssl = ssl.create_default_context(
            cafile=file(ca_file) if ca_file and not ca_data else None,
            cadata=base64.b64decode(ca_data).decode() if ca_data else None,
        )
        if cluster.get("insecure-skip-tls-verify") in (True, "true"):
            context_ssl.check_hostname = False
            context_ssl.verify_mode = ssl.CERT_NONE
        _load_client_certificate(context_ssl, user, file)
    token_file = user.get("tokenFile")
    basic = (user["username"], user.get("password", "")) if user.get("username") else None
    connection = KubeConnection(
        str(server).rstrip("/"),
        token=user.get("token"),
        token_file=Path(file(token_file)) if token_file and not user.get("token") else None,
        basic_auth=basic,
        ssl_context=context_ssl,
    )
    return connection, context.get("namespace")


def _load_client_certificate(
    context: ssl.SSLContext, user: Mapping[str, Any], file: Callable[[str], str]
) -> None:
    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    if cert_data or key_data:
        # ssl loads a certificate chain from files only: a private, short-lived directory.
        with tempfile.TemporaryDirectory(prefix="kubetune-report-") as directory:
            paths: list[str | None] = []
            for name, data, path in (
                ("cert", cert_data, user.get("client-certificate")),
                ("key", key_data, user.get("client-key")),
            ):
                if data:
                    path = os.path.join(directory, name)
                    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
                        out.write(base64.b64decode(data))
                    paths.append(path)
                else:
                    paths.append(file(path) if path else None)
            if paths[0] is None:
                raise ReportError("kubeconfig user has a client key but no client certificate")
            context.load_cert_chain(paths[0], paths[1])
    elif user.get("client-certificate"):
        key = user.get("client-key")
        context.load_cert_chain(file(user["client-certificate"]), file(key) if key else None)

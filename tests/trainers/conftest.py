"""Fixtures for the trainer and reporting-helper tests: a local Kubernetes API stand-in that
records requests and answers from a script, TLS material made with openssl, one torch thread."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def annotation(self) -> dict[str, Any]:
        """The metrics annotation this merge patch sets, parsed."""
        return json.loads(self.json["metadata"]["annotations"]["kubetune.io/metrics"])


@dataclass
class ApiServer:
    """Answers each request with the next scripted (status, headers), then 200."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    client_certificates: list[dict[str, Any] | None] = field(default_factory=list)

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for a trainer to reach this server with a token, at `path`."""
        path.write_text(
            json.dumps(
                {
                    "current-context": "local",
                    "contexts": [{"name": "local", "context": {"cluster": "local", "user": "t"}}],
                    "clusters": [{"name": "local", "cluster": {"server": self.url}}],
                    "users": [{"name": "t", "user": {"token": "trainer-token"}}],
                }
            )
        )
        return path


def _serve(context: ssl.SSLContext | None) -> Iterator[ApiServer]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                api.requests.append(Recorded("PATCH", self.path, dict(self.headers), body))
                peer = getattr(self.connection, "getpeercert", None)
                api.client_certificates.append(peer() if peer else None)
                status, headers = api.script.pop(0) if api.script else (200, {})
            payload = json.dumps({"kind": "Pod", "code": status}).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if context is not None else "http"
    api = ApiServer(f"{scheme}://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    """A plain-HTTP API server on 127.0.0.1."""
    yield from _serve(None)


@dataclass(frozen=True)
class Tls:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, from openssl."""
    directory = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        directory, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=kubetune-test-ca",
    )  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (directory / f"{name}.ext").write_text(extension)
        _openssl(
            directory, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=kubetune-test-{name}",
        )  # fmt: skip
        _openssl(
            directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        )  # fmt: skip
    return Tls(
        directory / "ca.crt",
        directory / "server.crt",
        directory / "server.key",
        directory / "client.crt",
        directory / "client.key",
    )


def server_context(tls: Tls, require_client_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.server_cert, tls.server_key)
    if require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(tls.ca)
    return context


@pytest.fixture
def tls_api_server(tls: Tls) -> Iterator[ApiServer]:
    """An HTTPS API server with the test CA's certificate for 127.0.0.1."""
    yield from _serve(server_context(tls))


@pytest.fixture
def mtls_api_server(tls: Tls) -> Iterator[ApiServer]:
    """An HTTPS API server that requires a client certificate from the test CA."""
    yield from _serve(server_context(tls, require_client_certificate=True))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """CI has two cores: one thread per trainer keeps runs fast and reproducible."""
    import torch

    torch.set_num_threads(1)

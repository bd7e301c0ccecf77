"""A Kubernetes API server emulator over HTTP, for the tests, kubectl, kopf and the demo.

It serves the built-in kinds Kubetune and its tools use (namespaces, pods with status, log and
binding, nodes, core/v1 and events.k8s.io/v1 events, secrets, configmaps, serviceaccounts,
services, leases, CustomResourceDefinitions, the RBAC kinds, PodDisruptionBudgets and
NetworkPolicies) and every resource a CRD registers, with the semantics of a real API server
that `store.Store` applies: resourceVersions, generation, preconditions, merge/JSON/strategic
merge patches, the status subresource, label and field selectors, watches that resume from a
resourceVersion, finalizers, propagation policies and garbage collection, discovery (legacy and
aggregated), OpenAPI documents and Tables for kubectl, admission of custom objects against their
CRD schema.

`ApiServer` listens, authenticates and routes; the handlers live beside it: `discovery`
(discovery and OpenAPI), `reads` (get, list, logs), `watch_stream` (watches), `writes`
(create, update, patch, apply, delete, binding, finalize), on `wire` (media types, bodies,
responses) and `access` (the token, TLS, the kubeconfig, `ApiRequest` for request hooks).

It is built on aiohttp directly, not on kmock: kmock records every request and re-checks its
filters over that whole history for each new request (its View.__contains__), so its cost per
request grew with the run (73 -> 5 trials/s in issue 4); its watch replayed every object and
subscribed after the snapshot. Here nothing grows with the run: no request history, O(1)
lookups, lists walk only their resource and namespace, each watcher has a bounded queue.

It listens on loopback twice: plain HTTP (`url`, for the in-process clients: the kubelet,
`LocalCluster.session`, tests) and HTTPS (`tls_url`, with a self-signed certificate made at
start), which the kubeconfig names with its CA. Both check the same bearer token
(`ApiServer.token`, in the kubeconfig): every request but the health endpoints and /version
without it is refused as a real API server refuses it: 403 Forbidden for system:anonymous when
it carries no credentials, 401 Unauthorized when they are wrong. The HTTPS listener exists
because client-go (kubectl) sends a kubeconfig's
credentials only over TLS (tools/clientcmd: "only try to read the auth information if we are
secure"). A request body must be of a media type the API accepts (JSON, YAML, Kubernetes
protobuf for built-in kinds, the patch types on PATCH), else 415 Unsupported Media Type.
Together they keep a web page the user visits (a cross-site text/plain or form POST to
loopback) from writing to the cluster. Responses are JSON, whatever
the Accept (client-go asks for "application/vnd.kubernetes.protobuf, application/json" and
reads the JSON). Built-in objects are stored as given, with only cheap checks (names; pods
need spec.containers) and the pod defaults a kubelet reads. Server-side apply
(application/apply-patch+yaml) merges into the object, or creates it, and records the
manager in metadata.managedFields (`patches.server_side_apply`; conflicts are not detected).
A pod log is served by the provider the kubelet registers; `follow` returns the log so far.

Request hooks (`ApiServer.request_hooks`) see each resource request as Kubernetes
authorization would (verb, group, resource, subresource, namespace, name) before it is served,
and may hold it: tests use them to record what a client calls (the Helm chart's RBAC is
checked against that) and to stop a client at an exact moment (a crash between two writes).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any

from aiohttp import web

from kubetune_localcluster import times
from kubetune_localcluster.access import (
    ApiRequest,
    RequestHook,
    authenticated,
    is_public,
    rbac_verb,
    server_context,
)
from kubetune_localcluster.certificates import self_signed
from kubetune_localcluster.discovery import Discovery
from kubetune_localcluster.errors import ApiError, bad_request, unknown_resource
from kubetune_localcluster.kubeconfigs import kubeconfig
from kubetune_localcluster.reads import PodLogProvider, Reads
from kubetune_localcluster.resources import Registry
from kubetune_localcluster.selectors import SelectorError
from kubetune_localcluster.store import Store
from kubetune_localcluster.watch_stream import WatchStreams
from kubetune_localcluster.wire import error_response, flag, json_response
from kubetune_localcluster.writes import Writes

log = logging.getLogger(__name__)


class ApiServer:
    """The API server emulator: `async with ApiServer() as server:` then use `server.url`
    with `Authorization: Bearer {server.token}`, or `server.kubeconfig()`."""

    def __init__(
        self,
        *,
        event_window: int = 10_000,
        watch_queue: int = 10_000,
        clock: Callable[[], datetime] | None = None,
        token: str | None = None,
    ) -> None:
        self.token = token or secrets.token_urlsafe(32)
        """The bearer token every request but health and version checks must carry."""
        self.registry = Registry()
        self.clock = clock or times.now
        self.store = Store(
            self.registry, event_window=event_window, watch_queue=watch_queue, clock=self.clock
        )
        self.store.bootstrap(["default", "kube-system", "kube-public", "kube-node-lease"])
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._tls_url: str | None = None
        self.certificate: bytes | None = None
        """The HTTPS listener's certificate (PEM), its own CA; made at start()."""
        self.request_hooks: list[RequestHook] = []
        self.discovery = Discovery(self.registry, self.store)
        self.reads = Reads(self.store, self.clock)
        self.watches = WatchStreams(self.store, self.reads)
        self.writes = Writes(self.store, self.clock)

    async def start(self, host: str = "127.0.0.1", port: int = 0, tls_port: int = 0) -> None:
        """Listen on `host`: plain HTTP on `port`, HTTPS on `tls_port` (0: any free one)."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()  # type: ignore[attr-defined]
        self._url = f"http://{host}:{bound[1]}"
        self.certificate, key = self_signed(
            "kubetune-apiserver", ("localhost", "127.0.0.1", "::1", host)
        )
        tls_site = web.TCPSite(
            self._runner, host, tls_port, ssl_context=server_context(self.certificate, key)
        )
        await tls_site.start()
        tls_server = tls_site._server
        assert tls_server is not None
        tls_bound = tls_server.sockets[0].getsockname()  # type: ignore[attr-defined]
        self._tls_url = f"https://{host}:{tls_bound[1]}"

    async def stop(self) -> None:
        """Close every watch and the listener."""
        self.store.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the API server is not started")
        return self._url

    @property
    def tls_url(self) -> str:
        """The HTTPS listener (the kubeconfig's server; `certificate` is its CA)."""
        if self._tls_url is None:
            raise RuntimeError("the API server is not started")
        return self._tls_url

    def client_tls(self) -> ssl.SSLContext:
        """A client TLS context that trusts this server's certificate (for `tls_url`)."""
        if self.certificate is None:
            raise RuntimeError("the API server is not started")
        return ssl.create_default_context(cadata=self.certificate.decode())

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header of a client of this server."""
        return {"Authorization": f"Bearer {self.token}"}

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        """A kubeconfig document for this server: the HTTPS listener with its CA, and the
        token (client-go sends a token only over TLS)."""
        credentials = {"token": self.token}
        return kubeconfig(self.tls_url, self.certificate or b"", "kubetune", credentials, namespace)

    def set_pod_log_provider(self, provider: PodLogProvider | None) -> None:
        self.reads.log_provider = provider

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if not is_public(request) and not authenticated(request, self.token):
                if "Authorization" in request.headers:
                    raise ApiError(401, "Unauthorized", "Unauthorized")
                # No credentials at all: a real server (anonymous auth on, its default) takes
                # the request as system:anonymous, whom RBAC lets read only health and version.
                raise ApiError(
                    403,
                    "Forbidden",
                    f'forbidden: User "system:anonymous" cannot {request.method.lower()} '
                    f'path "{request.path}"',
                )
            return await self._route(request)
        except ApiError as error:
            return error_response(error)
        except SelectorError as error:
            return error_response(bad_request(str(error)))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug here must still answer with a Status
            log.exception("the API server failed on %s %s", request.method, request.path)
            return error_response(
                ApiError(500, "InternalError", f"an error on the server: {error}")
            )

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [part for part in request.path.split("/") if part]
        if not parts:
            return json_response({"paths": self.discovery.paths()})
        head = parts[0]
        if head == "version" and len(parts) == 1:
            return json_response(self.discovery.version())
        if head in ("healthz", "livez", "readyz"):
            return web.Response(text="ok")
        if head == "openapi":
            return self.discovery.openapi(parts[1:])
        if head == "api":
            if len(parts) == 1:
                return self.discovery.core(request)
            if parts[1] != "v1":
                raise unknown_resource()
            group, version, rest = "", "v1", parts[2:]
        elif head == "apis":
            if len(parts) == 1:
                return self.discovery.group_list(request)
            if len(parts) == 2:
                return self.discovery.group(parts[1])
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise unknown_resource()
        if not rest:
            return self.discovery.resources(group, version)
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise unknown_resource()
        resource = self.registry.find(group, version, rest[0])
        if resource is None or (namespace is not None and not resource.namespaced):
            raise unknown_resource()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if name is not None and resource.namespaced and namespace is None:
            raise unknown_resource()
        if sub is not None and sub not in resource.subresources:
            raise unknown_resource()
        method = request.method
        if self.request_hooks:
            watching = watch_path or flag(request.query.get("watch"))
            described = ApiRequest(
                verb=rbac_verb(method, name, watching),
                group=group,
                version=version,
                resource=resource.plural,
                subresource=sub,
                namespace=namespace,
                name=name,
                user_agent=request.headers.get("User-Agent", ""),
            )
            for hook in list(self.request_hooks):
                await hook(described)
        if name is None:
            if method == "GET":
                if watch_path or flag(request.query.get("watch")):
                    return await self.watches.watch(request, resource, namespace)
                return self.reads.list_objects(request, resource, namespace)
            if method == "POST":
                return await self.writes.create(request, resource, namespace)
            if method == "DELETE":
                return await self.writes.delete_collection(request, resource, namespace)
        elif sub is None:
            if method == "GET" and watch_path:
                return await self.watches.watch(request, resource, namespace, name)
            if method == "GET":
                return self.reads.get(request, resource, namespace, name)
            if method == "PUT":
                return await self.writes.replace(request, resource, namespace, name, None)
            if method == "PATCH":
                return await self.writes.patch(request, resource, namespace, name, None)
            if method == "DELETE":
                return await self.writes.delete(request, resource, namespace, name)
        elif sub == "status":
            if method == "GET":
                return self.reads.get(request, resource, namespace, name)
            if method == "PUT":
                return await self.writes.replace(request, resource, namespace, name, "status")
            if method == "PATCH":
                return await self.writes.patch(request, resource, namespace, name, "status")
        elif sub == "log" and method == "GET":
            return self.reads.log(request, resource, namespace or "", name)
        elif sub == "binding" and method == "POST":
            return await self.writes.bind(request, resource, namespace or "", name)
        elif sub == "finalize" and method == "PUT":
            return await self.writes.finalize(request, resource, name)
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

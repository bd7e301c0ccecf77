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
import base64
import contextlib
import hmac
import json
import logging
import re
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from kubetune_localcluster import protobuf, times
from kubetune_localcluster.certificates import self_signed
from kubetune_localcluster.errors import (
    ApiError,
    Gone,
    StrictDecodingError,
    bad_request,
    not_found,
)
from kubetune_localcluster.objects import Object
from kubetune_localcluster.patches import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    PATCH_TYPES,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    UnsupportedPatch,
    apply_patch,
    builtin_list_shape,
    schema_list_shapes,
    server_side_apply,
)
from kubetune_localcluster.resources import CRD_STORAGE, Registry, Resource
from kubetune_localcluster.selectors import FieldSelector, LabelSelector, SelectorError
from kubetune_localcluster.store import Store
from kubetune_localcluster.times import timestamp
from kubetune_localcluster.watch import WatchEvent

log = logging.getLogger(__name__)

PodLogProvider = Callable[[str, str, str | None], str | None]
KUBERNETES_VERSION = {"major": "1", "minor": "37"}
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
DEFAULT_WATCH_TIMEOUT = 1800.0
BOOKMARK_EVERY = 60.0
_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")
JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = protobuf.MEDIA_TYPE
# What anyone may read without credentials (system:public-info-viewer): health and version.
PUBLIC_PATHS = frozenset({"healthz", "livez", "readyz"})


def _go_integer(text: str) -> int | float:
    """A JSON integer as the API server's decoder reads it: an int64, else a float64 (so a
    schema's type integer refuses it with 422, as a real server does, instead of an overflow)."""
    number = int(text)
    return number if -(2**63) <= number < 2**63 else float(number)


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


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes version order: GA before beta before alpha, higher numbers first."""
    match = _VERSION.match(version)
    if match is None:
        return (3, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[match[2]]
    return (stage, -int(match[1]), -int(match[3] or 0), version)


def _accepts(request: web.Request, **params: str) -> bool:
    """Whether one of the Accept media ranges carries all these parameters (as=Table...)."""
    for media_range in request.headers.get("Accept", "").split(","):
        found = dict(
            part.strip().split("=", 1) for part in media_range.split(";")[1:] if "=" in part
        )
        if all(found.get(key) == value for key, value in params.items()):
            return True
    return False


def _media_type(request: web.Request) -> str:
    """The request body's media type (no parameters, lower case); JSON when none is given,
    as the API server assumes."""
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower() or JSON


def _unsupported_media(accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def _server_context(certificate: bytes, key: bytes) -> ssl.SSLContext:
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


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "")


def _rbac_verb(method: str, name: str | None, watching: bool) -> str:
    """The authorization verb of a request, as the real API server derives it."""
    if method == "GET":
        return "watch" if watching else ("list" if name is None else "get")
    if method == "DELETE":
        return "deletecollection" if name is None else "delete"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


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
        self._log_provider: PodLogProvider | None = None
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._tls_url: str | None = None
        self.certificate: bytes | None = None
        """The HTTPS listener's certificate (PEM), its own CA; made at start()."""
        self._openapi_cache: tuple[tuple[str, ...], dict[str, dict[str, Any]]] | None = None
        self.request_hooks: list[RequestHook] = []

    # --- lifecycle ----------------------------------------------------------------------

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
            self._runner, host, tls_port, ssl_context=_server_context(self.certificate, key)
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
        certificate = base64.b64encode(self.certificate or b"").decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubetune",
                    "cluster": {
                        "server": self.tls_url,
                        "certificate-authority-data": certificate,
                    },
                }
            ],
            "users": [{"name": "kubetune", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "kubetune",
                    "context": {"cluster": "kubetune", "user": "kubetune", "namespace": namespace},
                }
            ],
            "current-context": "kubetune",
            "preferences": {},
        }

    def set_pod_log_provider(self, provider: PodLogProvider | None) -> None:
        self._log_provider = provider

    # --- responses ----------------------------------------------------------------------

    @staticmethod
    def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
        response = web.Response(body=_dumps(body), status=status, content_type="application/json")
        for warning in warnings or []:
            text = warning.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
            response.headers.add("Warning", f'299 - "{text}"')
        return response

    def _error(self, error: ApiError) -> web.Response:
        return self._json(error.status(), error.code)

    @staticmethod
    def _present(resource: Resource, obj: Object) -> Object:
        """The object as served by this version (one stored copy serves every version)."""
        if obj.get("apiVersion") == resource.group_version:
            return obj
        return {**obj, "apiVersion": resource.group_version}

    async def _body(self, request: web.Request, resource: Resource) -> Any:
        """The decoded body of a create or update: JSON, YAML, or (built-in kinds only, as
        client-go's typed clients send them) Kubernetes protobuf."""
        media = _media_type(request)
        accepted = [JSON, YAML] if resource.custom else [JSON, YAML, PROTOBUF]
        if media not in accepted:
            raise _unsupported_media(accepted)
        raw = await request.read()
        if not raw:
            raise bad_request("the request body is empty")
        return self._decode(media, raw)

    @staticmethod
    def _decode(media: str, raw: bytes) -> Any:
        try:
            if media == PROTOBUF:
                return protobuf.decode(raw)
            if media == YAML:
                return yaml.safe_load(raw)
            return json.loads(raw, parse_int=_go_integer)
        except protobuf.UnknownKind as error:
            raise _unsupported_media([JSON, YAML]) from error
        except (ValueError, yaml.YAMLError) as error:
            raise bad_request(f"the body of the request could not be decoded: {error}") from error

    # --- routing ------------------------------------------------------------------------

    def _authenticated(self, request: web.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self.token.encode()
        )

    @staticmethod
    def _public(request: web.Request) -> bool:
        parts = [part for part in request.path.split("/") if part]
        return bool(parts) and (parts[0] in PUBLIC_PATHS or parts == ["version"])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if not self._public(request) and not self._authenticated(request):
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
            return self._error(error)
        except SelectorError as error:
            return self._error(bad_request(str(error)))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug here must still answer with a Status
            log.exception("the API server failed on %s %s", request.method, request.path)
            return self._error(ApiError(500, "InternalError", f"an error on the server: {error}"))

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [part for part in request.path.split("/") if part]
        if not parts:
            return self._json({"paths": self._paths()})
        head = parts[0]
        if head == "version" and len(parts) == 1:
            return self._json(self._version())
        if head in ("healthz", "livez", "readyz"):
            return web.Response(text="ok")
        if head == "openapi":
            return self._openapi(parts[1:])
        if head == "api":
            if len(parts) == 1:
                return self._discovery_core(request)
            if parts[1] != "v1":
                raise self._unknown()
            group, version, rest = "", "v1", parts[2:]
        elif head == "apis":
            if len(parts) == 1:
                return self._discovery_groups(request)
            if len(parts) == 2:
                return self._discovery_group(parts[1])
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise self._unknown()
        if not rest:
            return self._discovery_resources(group, version)
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
            raise self._unknown()
        resource = self.registry.find(group, version, rest[0])
        if resource is None or (namespace is not None and not resource.namespaced):
            raise self._unknown()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if name is not None and resource.namespaced and namespace is None:
            raise self._unknown()
        if sub is not None and sub not in resource.subresources:
            raise self._unknown()
        method = request.method
        if self.request_hooks:
            watching = watch_path or _flag(request.query.get("watch"))
            described = ApiRequest(
                verb=_rbac_verb(method, name, watching),
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
                if watch_path or _flag(request.query.get("watch")):
                    return await self._watch(request, resource, namespace)
                return self._list(request, resource, namespace)
            if method == "POST":
                return await self._create(request, resource, namespace)
            if method == "DELETE":
                return await self._delete_collection(request, resource, namespace)
        elif sub is None:
            if method == "GET" and watch_path:
                return await self._watch(request, resource, namespace, name)
            if method == "GET":
                return self._get(request, resource, namespace, name)
            if method == "PUT":
                return await self._replace(request, resource, namespace, name, None)
            if method == "PATCH":
                return await self._patch(request, resource, namespace, name, None)
            if method == "DELETE":
                return await self._delete(request, resource, namespace, name)
        elif sub == "status":
            if method == "GET":
                return self._get(request, resource, namespace, name)
            if method == "PUT":
                return await self._replace(request, resource, namespace, name, "status")
            if method == "PATCH":
                return await self._patch(request, resource, namespace, name, "status")
        elif sub == "log" and method == "GET":
            return self._log(request, resource, namespace or "", name)
        elif sub == "binding" and method == "POST":
            return await self._bind(request, resource, namespace or "", name)
        elif sub == "finalize" and method == "PUT":
            return await self._finalize(request, resource, name)
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    @staticmethod
    def _unknown() -> ApiError:
        return ApiError(
            404, "NotFound", "the server could not find the requested resource", details={}
        )

    # --- discovery ----------------------------------------------------------------------

    def _version(self) -> dict[str, Any]:
        return {
            **KUBERNETES_VERSION,
            "gitVersion": "v1.37.0-kubetune",
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "python",
            "compiler": "aiohttp",
            "platform": "linux/amd64",
        }

    def _groups(self) -> list[tuple[str, list[str]]]:
        groups = self.registry.group_versions()
        return [
            (group, sorted(versions, key=version_priority))
            for group, versions in groups.items()
            if group
        ]

    def _paths(self) -> list[str]:
        paths = ["/api", "/api/v1", "/apis", "/openapi/v2", "/openapi/v3", "/version"]
        for group, versions in self._groups():
            paths.append(f"/apis/{group}")
            paths.extend(f"/apis/{group}/{version}" for version in versions)
        return sorted(paths)

    def _aggregated_group(self, group: str, versions: list[str]) -> dict[str, Any]:
        return {
            "metadata": {"name": group, "creationTimestamp": None},
            "versions": [
                {
                    "version": version,
                    "resources": [
                        r.discovery_v2() for r in self.registry.resources(group, version)
                    ],
                    "freshness": "Current",
                }
                for version in versions
            ],
        }

    def _aggregated(self, items: list[dict[str, Any]]) -> web.Response:
        body = {
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        }
        response = web.Response(body=_dumps(body))
        response.headers["Content-Type"] = AGGREGATED
        return response

    def _discovery_core(self, request: web.Request) -> web.Response:
        if _accepts(request, g="apidiscovery.k8s.io", v="v2", **{"as": "APIGroupDiscoveryList"}):
            return self._aggregated([self._aggregated_group("", ["v1"])])
        host = request.host
        return self._json(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            }
        )

    @staticmethod
    def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _discovery_groups(self, request: web.Request) -> web.Response:
        groups = self._groups()
        if _accepts(request, g="apidiscovery.k8s.io", v="v2", **{"as": "APIGroupDiscoveryList"}):
            return self._aggregated([self._aggregated_group(g, vs) for g, vs in groups])
        return self._json(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group_entry(group, versions) for group, versions in groups],
            }
        )

    def _discovery_group(self, group: str) -> web.Response:
        for name, versions in self._groups():
            if name == group:
                return self._json(
                    {"kind": "APIGroup", "apiVersion": "v1", **self._group_entry(name, versions)}
                )
        raise self._unknown()

    def _discovery_resources(self, group: str, version: str) -> web.Response:
        resources = list(self.registry.resources(group, version))
        if not resources:
            raise self._unknown()
        return self._json(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": resources[0].group_version,
                "resources": [entry for r in resources for entry in r.api_resources()],
            }
        )

    # --- OpenAPI ------------------------------------------------------------------------

    def _crds(self) -> list[Object]:
        return list(self.store.objects(CRD_STORAGE, None))

    def _openapi(self, parts: list[str]) -> web.Response:
        from kubetune_localcluster import openapi  # written beside this module

        if parts == ["v2"]:
            return self._json(openapi.openapi_v2(self._crds()))
        if parts[:1] != ["v3"]:
            raise self._unknown()
        documents = self._openapi_documents()
        if len(parts) == 1:
            return self._json(openapi.openapi_v3_paths(list(documents), documents=documents))
        path = "/".join(parts[1:])
        group_version = "v1" if path == "api/v1" else path.removeprefix("apis/")
        if group_version not in documents or not path.startswith(("api/", "apis/")):
            raise self._unknown()
        return self._json(documents[group_version])

    def _openapi_documents(self) -> dict[str, dict[str, Any]]:
        """The OpenAPI v3 document of every group/version, rebuilt when a CRD changes."""
        from kubetune_localcluster import openapi  # written beside this module

        crds = self._crds()
        key = tuple(c["metadata"]["resourceVersion"] for c in crds)
        if self._openapi_cache is not None and self._openapi_cache[0] == key:
            return self._openapi_cache[1]
        documents = {}
        for group, versions in [("", ["v1"]), *self._groups()]:
            for version in versions:
                group_version = f"{group}/{version}" if group else version
                kinds = [r.kind for r in self.registry.resources(group, version) if not r.custom]
                documents[group_version] = openapi.openapi_v3_document(group_version, kinds, crds)
        self._openapi_cache = (key, documents)
        return documents

    # --- reads --------------------------------------------------------------------------

    def _predicate(
        self, request: web.Request, resource: Resource
    ) -> Callable[[Object], bool] | None:
        labels = LabelSelector.parse(request.query.get("labelSelector"))
        fields = FieldSelector.parse(request.query.get("fieldSelector"), resource.field_labels)
        if labels.empty and fields.empty:
            return None
        if fields.empty:
            return lambda obj: labels.matches(obj["metadata"].get("labels"))
        return lambda obj: labels.matches(obj["metadata"].get("labels")) and fields.matches(obj)

    def _table(
        self, request: web.Request, resource: Resource, objects: list[Object]
    ) -> dict[str, Any]:
        from kubetune_localcluster import tables  # written beside this module

        try:
            return tables.table(
                [self._present(resource, obj) for obj in objects],
                # A CRD version with no printer columns shows its age, as the API server does.
                (resource.printer_columns or [tables.AGE_COLUMN]) if resource.custom else None,
                kind=resource.kind,
                include_object=request.query.get("includeObject", "Metadata"),
                now=self.clock(),
            )
        except ValueError as error:
            raise bad_request(str(error)) from error

    @staticmethod
    def _partial(obj: Object) -> Object:
        return {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }

    def _get(
        self, request: web.Request, resource: Resource, namespace: str | None, name: str
    ) -> web.Response:
        obj = self.store.get(resource.storage, namespace or "", name)
        if obj is None:
            raise not_found(resource, name)
        if _accepts(request, **{"as": "Table"}):
            return self._json(self._table(request, resource, [obj]))
        if _accepts(request, **{"as": "PartialObjectMetadata"}):
            return self._json(self._partial(obj))
        return self._json(self._present(resource, obj))

    def _list(
        self, request: web.Request, resource: Resource, namespace: str | None
    ) -> web.Response:
        predicate = self._predicate(request, resource)
        objects = [
            obj
            for obj in self.store.objects(resource.storage, namespace)
            if predicate is None or predicate(obj)
        ]
        objects.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        token = request.query.get("continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))
                after = (str(start[0]), str(start[1]))
            except (ValueError, TypeError, IndexError) as error:
                raise bad_request("continue key is not valid") from error
            objects = [
                o
                for o in objects
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
            ]
        limit = int(request.query.get("limit") or 0)
        if 0 < limit < len(objects):
            last = objects[limit - 1]["metadata"]
            key = [last.get("namespace", ""), last["name"]]
            metadata["continue"] = base64.urlsafe_b64encode(_dumps(key)).decode()
            metadata["remainingItemCount"] = len(objects) - limit
            objects = objects[:limit]
        if _accepts(request, **{"as": "Table"}):
            table = self._table(request, resource, objects)
            table["metadata"] = {**(table.get("metadata") or {}), **metadata}
            return self._json(table)
        if _accepts(request, **{"as": "PartialObjectMetadataList"}):
            return self._json(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                    "items": [self._partial(o) for o in objects],
                }
            )
        return self._json(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.group_version,
                "metadata": metadata,
                "items": [self._present(resource, o) for o in objects],
            }
        )

    async def _watch(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str | None,
        name: str | None = None,
    ) -> web.StreamResponse:
        query = request.query
        predicate = self._predicate(request, resource)
        if name is not None:  # the legacy /watch/.../NAME form
            inner = predicate

            def predicate(obj: Object) -> bool:
                return obj["metadata"]["name"] == name and (inner is None or inner(obj))

        version = query.get("resourceVersion") or ""
        initial = _flag(query.get("sendInitialEvents")) if "sendInitialEvents" in query else False
        since: int | None = None
        if version not in ("", "0") and not initial:
            try:
                since = int(version)
            except ValueError as error:
                raise bad_request(f"invalid resource version: {version!r}") from error
        timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        bookmarks = (
            _flag(query.get("allowWatchBookmarks")) if "allowWatchBookmarks" in query else False
        )
        table = _accepts(request, **{"as": "Table"})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            watch, first = self.store.watch(resource.storage, namespace, predicate, since)
        except Gone as error:
            await response.prepare(request)
            await response.write(_dumps({"type": "ERROR", "object": error.status()}) + b"\n")
            return response
        try:
            await response.prepare(request)

            def line(event: WatchEvent) -> bytes:
                if table:
                    rows = self._table(request, resource, [event.obj])
                    return _dumps({"type": event.type, "object": rows}) + b"\n"
                if event.lines is None:
                    event.lines = {}
                cached = event.lines.get(resource.group_version)
                if cached is None:
                    body = {"type": event.type, "object": self._present(resource, event.obj)}
                    cached = event.lines[resource.group_version] = _dumps(body) + b"\n"
                return cached

            if first:
                await response.write(b"".join(line(event) for event in first))
            if initial:
                await response.write(self._bookmark(resource, initial_end=True))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(min(left, BOOKMARK_EVERY)):
                        event = await watch.queue.get()
                except TimeoutError:
                    if bookmarks and loop.time() < deadline:
                        await response.write(self._bookmark(resource))
                    continue
                if event is None:
                    break
                batch = [line(event)]
                while not watch.queue.empty():
                    more = watch.queue.get_nowait()
                    if more is None:
                        watch.queue.put_nowait(None)
                        break
                    batch.append(line(more))
                await response.write(b"".join(batch))
            if bookmarks and not watch.closed:
                await response.write(self._bookmark(resource))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(resource.storage, watch)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    def _bookmark(self, resource: Resource, *, initial_end: bool = False) -> bytes:
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        body = {"kind": resource.kind, "apiVersion": resource.group_version, "metadata": metadata}
        return _dumps({"type": "BOOKMARK", "object": body}) + b"\n"

    def _log(
        self, request: web.Request, resource: Resource, namespace: str, name: str
    ) -> web.Response:
        pod = self.store.get(resource.storage, namespace, name)
        if pod is None:
            raise not_found(resource, name)
        container = request.query.get("container")
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        if (
            container is not None
            and container not in names
            and container
            not in [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
        ):
            raise bad_request(f"container {container} is not valid for pod {name}")
        if container is None and len(names) > 1:
            raise bad_request(
                f"a container name must be specified for pod {name}, choose one "
                f"of: [{' '.join(str(n) for n in names)}]"
            )
        text = (
            None if self._log_provider is None else self._log_provider(namespace, name, container)
        )
        if text is None:
            raise ApiError(
                404,
                "NotFound",
                f'the log of pod "{name}" is not available',
                details={"name": name, "kind": "pods"},
            )
        tail = request.query.get("tailLines")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail) :]) if int(tail) > 0 else ""
        limit = request.query.get("limitBytes")
        data = text.encode()
        if limit is not None:
            data = data[: int(limit)]
        return web.Response(body=data, content_type="text/plain")

    # --- writes -------------------------------------------------------------------------

    @staticmethod
    def _field_validation(request: web.Request) -> str:
        value = request.query.get("fieldValidation") or "Warn"
        if value not in ("Strict", "Warn", "Ignore"):
            raise bad_request(
                f'fieldValidation: Unsupported value: "{value}": supported '
                'values: "Ignore", "Strict", "Warn"'
            )
        return value

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        return bool(request.query.getall("dryRun", []))

    async def _create(
        self, request: web.Request, resource: Resource, namespace: str | None
    ) -> web.Response:
        body = await self._body(request, resource)
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be an object")
        self._check_kind(resource, body)
        obj, warnings = self.store.create(
            resource,
            namespace,
            body,
            field_validation=self._field_validation(request),
            dry_run=self._dry_run(request),
        )
        return self._json(self._present(resource, obj), 201, warnings)

    @staticmethod
    def _check_kind(resource: Resource, body: Object) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind is not None and kind != resource.kind:
            raise bad_request(
                f"the kind of the object ({kind}) does not match the resource ({resource.kind})"
            )
        if api_version is not None and str(api_version).rpartition("/")[0] != resource.group:
            raise bad_request(
                f"the API version of the object ({api_version}) does not match "
                f"the group of the resource ({resource.group_version})"
            )

    async def _replace(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str | None,
        name: str,
        sub: str | None,
    ) -> web.Response:
        body = await self._body(request, resource)
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be an object")
        self._check_kind(resource, body)
        obj, warnings = self.store.update(
            resource,
            namespace,
            name,
            body,
            subresource=sub,
            field_validation=self._field_validation(request),
            dry_run=self._dry_run(request),
            require_version=resource.custom,
        )
        return self._json(self._present(resource, obj), 200, warnings)

    async def _patch(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str | None,
        name: str,
        sub: str | None,
    ) -> web.Response:
        media = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media not in (*PATCH_TYPES, APPLY_PATCH) or (
            resource.custom and media == STRATEGIC_MERGE_PATCH
        ):
            raise self._unsupported_patch(resource)
        raw = await request.read()
        if media == APPLY_PATCH:
            return self._apply(request, resource, namespace, name, sub, raw)
        current = self.store.get(resource.storage, namespace or "", name)
        if current is None:
            raise not_found(resource, name)
        try:
            patched = apply_patch(media, current, raw)
        except UnsupportedPatch as error:
            raise self._unsupported_patch(resource) from error
        except PatchError as error:
            if error.decode:
                raise bad_request(str(error)) from error
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {error}",
                details={
                    "name": name,
                    "group": resource.group,
                    "kind": resource.plural,
                    "causes": [{"message": str(error)}],
                },
            ) from error
        try:
            obj, warnings = self.store.update(
                resource,
                namespace,
                name,
                patched,
                subresource=sub,
                field_validation=self._field_validation(request),
                dry_run=self._dry_run(request),
                old=current,
            )
        except StrictDecodingError as error:
            raise self._strict_patch_error(patched, error) from error
        return self._json(self._present(resource, obj), 200, warnings)

    @staticmethod
    def _strict_patch_error(patched: Object, error: StrictDecodingError) -> ApiError:
        """Unknown fields in a patched object: 422 with one cause at `patch`, worded as the
        API server's patcher does (errors.NewInvalid with an empty kind and name)."""
        value = json.dumps(_dumps(patched).decode())
        cause = f"Invalid value: {value}: {error.detail()}"
        return ApiError(
            422,
            "Invalid",
            f' "" is invalid: patch: {cause}',
            details={
                "name": "",
                "group": "",
                "kind": "",
                "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "patch"}],
            },
        )

    @staticmethod
    def _unsupported_patch(resource: Resource) -> ApiError:
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
        if not resource.custom:
            accepted.append(STRATEGIC_MERGE_PATCH)
        return _unsupported_media(accepted)

    def _apply(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str | None,
        name: str,
        sub: str | None,
        raw: bytes,
    ) -> web.Response:
        """Server-side apply: merge the configuration into the object, or create it (201)
        when it does not exist; the field manager's fields go to metadata.managedFields. Every
        apply is forced (--force-conflicts is accepted; conflicts are not detected)."""
        manager = request.query.get("fieldManager")
        if not manager:
            cause = "Required value: is required for apply patch"
            raise ApiError(
                422,
                "Invalid",
                f'PatchOptions.meta.k8s.io "" is invalid: fieldManager: {cause}',
                details={
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        {"reason": "FieldValueRequired", "message": cause, "field": "fieldManager"}
                    ],
                },
            )
        try:
            config = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise bad_request(f"error decoding YAML: {error}") from error
        if not isinstance(config, dict):
            raise bad_request("the apply configuration must be an object")
        if not config.get("apiVersion") or not config.get("kind"):
            raise bad_request("the apply configuration must set apiVersion and kind")
        self._check_kind(resource, config)
        meta = config.get("metadata") or {}
        if not isinstance(meta, dict):
            raise bad_request("metadata of the apply configuration must be an object")
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the "
                f"name on the URL ({name})"
            )
        # What a write of this (sub)resource takes: where the resource has a status
        # subresource, the status apart from the rest.
        if sub == "status":
            config, meta = ({"status": config["status"]} if "status" in config else {}), {}
        elif resource.has_status:
            config = {k: v for k, v in config.items() if k != "status"}
        current = self.store.get(resource.storage, namespace or "", name)
        if current is None and sub is not None:
            raise not_found(resource, name)
        shapes = schema_list_shapes(resource.schema) if resource.custom else builtin_list_shape
        applied = server_side_apply(
            current,
            {**config, "metadata": {**meta, "name": name}},
            manager=manager,
            api_version=resource.group_version,
            time=timestamp(self.clock()),
            shapes=shapes,
            subresource=sub,
        )
        managed = applied["metadata"]["managedFields"]
        validation = self._field_validation(request)
        if current is None:
            obj, warnings = self.store.create(
                resource,
                namespace,
                applied,
                field_validation=validation,
                dry_run=self._dry_run(request),
                managed_fields=managed,
            )
            return self._json(self._present(resource, obj), 201, warnings)
        obj, warnings = self.store.update(
            resource,
            namespace,
            name,
            applied,
            subresource=sub,
            field_validation=validation,
            dry_run=self._dry_run(request),
            old=current,
            managed_fields=managed,
        )
        return self._json(self._present(resource, obj), 200, warnings)

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        options: dict[str, Any] = {}
        if raw.strip():
            media = _media_type(request)
            if media not in (JSON, YAML, PROTOBUF):
                raise _unsupported_media([JSON, YAML, PROTOBUF])
            options = self._decode(media, raw)
            if not isinstance(options, dict):
                raise bad_request("the DeleteOptions must be an object")
        query = request.query
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "gracePeriodSeconds" in query:
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        if "orphanDependents" in query:
            options["orphanDependents"] = _flag(query["orphanDependents"])
        if options.get("orphanDependents") is not None and "propagationPolicy" not in options:
            options["propagationPolicy"] = "Orphan" if options["orphanDependents"] else "Background"
        return options

    async def _delete(
        self, request: web.Request, resource: Resource, namespace: str | None, name: str
    ) -> web.Response:
        options = await self._delete_options(request)
        grace = options.get("gracePeriodSeconds")
        obj, gone = self.store.delete(
            resource,
            namespace,
            name,
            propagation=options.get("propagationPolicy"),
            grace_period=None if grace is None else int(grace),
            preconditions=options.get("preconditions"),
            dry_run=self._dry_run(request) or bool(options.get("dryRun")),
        )
        if gone and not resource.custom and resource.plural != "pods":
            return self._json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "group": resource.group,
                        "kind": resource.plural,
                        "uid": obj["metadata"]["uid"],
                    },
                }
            )
        return self._json(self._present(resource, obj))

    async def _delete_collection(
        self, request: web.Request, resource: Resource, namespace: str | None
    ) -> web.Response:
        options = await self._delete_options(request)
        grace = options.get("gracePeriodSeconds")
        deleted = self.store.delete_collection(
            resource,
            namespace,
            self._predicate(request, resource),
            propagation=options.get("propagationPolicy"),
            grace_period=None if grace is None else int(grace),
        )
        return self._json(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.group_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": [self._present(resource, o) for o in deleted],
            }
        )

    async def _bind(
        self, request: web.Request, resource: Resource, namespace: str, name: str
    ) -> web.Response:
        body = await self._body(request, resource)
        target = body.get("target") if isinstance(body, dict) else None
        if not isinstance(target, dict) or not target.get("name"):
            raise bad_request("a Binding needs target.name (the node)")
        self.store.bind(resource, namespace, name, str(target["name"]))
        return self._json(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            201,
        )

    async def _finalize(self, request: web.Request, resource: Resource, name: str) -> web.Response:
        body = await self._body(request, resource)
        current = self.store.get(resource.storage, "", name)
        if current is None:
            raise not_found(resource, name)
        finalizers = ((body or {}).get("spec") or {}).get("finalizers") or []
        obj, _ = self.store.update(
            resource,
            None,
            name,
            {**current, "spec": {**(current.get("spec") or {}), "finalizers": finalizers}},
        )
        return self._json(obj)

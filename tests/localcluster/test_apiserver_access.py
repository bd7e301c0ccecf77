"""Who may call the API server emulator and with what bodies: the bearer token on both
listeners (403 without it, 401 with a wrong one, except health and version), its kubeconfig
(HTTPS with its CA, the token), the request media types it accepts (415 otherwise, which also
stops a web page's cross-site form or text/plain POST) and the JSON it answers a client asking
for protobuf."""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import aiohttp
import kubernetes
import pytest

from kubetune_localcluster.access import ApiRequest
from kubetune_localcluster.apiserver import ApiServer
from tests.localcluster.conftest import PODS, WIDGETS, call, pod

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture
async def anonymous(server: ApiServer) -> Any:
    async with aiohttp.ClientSession(server.url) as session:
        yield session


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/api"),
        ("GET", "/apis"),
        ("GET", "/api/v1"),
        ("GET", "/openapi/v3"),
        ("GET", PODS),
        ("GET", f"{PODS}?watch=true"),
        ("POST", PODS),
        ("DELETE", f"{PODS}/a"),
        ("GET", "/nonsense"),
    ],
)
async def test_a_request_without_credentials_is_forbidden_to_anonymous(
    anonymous: aiohttp.ClientSession, method: str, path: str
) -> None:
    """As a real API server with anonymous auth on (its default) answers: the request is
    system:anonymous's, and RBAC lets it read only health and version."""
    status, body = await call(anonymous, method, path, pod("a") if method == "POST" else None)
    assert (status, body["reason"], body["code"]) == (403, "Forbidden", 403)
    assert 'User "system:anonymous" cannot' in body["message"]


async def test_health_and_version_are_open(anonymous: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/livez", "/readyz", "/readyz/ping"):
        async with anonymous.get(path) as response:
            assert (response.status, await response.text()) == (200, "ok"), path
    status, version = await call(anonymous, "GET", "/version")
    assert (status, version["major"]) == (200, "1")


async def test_a_wrong_token_is_unauthorized_and_writes_nothing(server: ApiServer) -> None:
    for header in (f"Bearer {server.token}x", f"Basic {server.token}", server.token):
        async with aiohttp.ClientSession(server.url, headers={"Authorization": header}) as bad:
            status, body = await call(bad, "POST", PODS, pod("a"))
        assert (status, body["reason"]) == (401, "Unauthorized"), header
    assert server.store.get("/pods", "default", "a") is None
    # The scheme is case-insensitive.
    lower = {"Authorization": f"bearer {server.token}"}
    async with aiohttp.ClientSession(server.url, headers=lower) as good:
        status, _ = await call(good, "POST", PODS, pod("a"))
    assert status == 201


async def test_an_unauthorized_request_reaches_no_request_hook(
    server: ApiServer, anonymous: aiohttp.ClientSession, http: aiohttp.ClientSession
) -> None:
    seen: list[ApiRequest] = []

    async def record(request: ApiRequest) -> None:
        seen.append(request)

    server.request_hooks.append(record)
    await call(anonymous, "GET", PODS)
    assert seen == []
    await call(http, "GET", PODS)
    assert [(r.verb, r.resource) for r in seen] == [("list", "pods")]


async def test_a_given_token_and_a_random_one() -> None:
    async with ApiServer(token="s3cret") as given, ApiServer() as other:
        assert given.token == "s3cret"
        assert len(other.token) >= 32
        assert ApiServer().token != ApiServer().token
        assert given.headers == {"Authorization": "Bearer s3cret"}


async def test_the_kubeconfig_names_the_https_listener_its_ca_and_the_token(
    server: ApiServer,
) -> None:
    config = server.kubeconfig("team-a")
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == server.tls_url
    assert server.tls_url.startswith("https://127.0.0.1:")
    assert base64.b64decode(cluster["certificate-authority-data"]) == server.certificate
    assert config["users"][0]["user"] == {"token": server.token}
    assert config["contexts"][0]["context"]["namespace"] == "team-a"
    # The HTTPS listener checks the same token, and its certificate is for 127.0.0.1.
    connector = aiohttp.TCPConnector(ssl=server.client_tls())
    async with aiohttp.ClientSession(server.tls_url, connector=connector) as tls:
        status, _ = await call(tls, "GET", PODS)
        assert status == 403
        status, listed = await call(tls, "GET", PODS, headers=server.headers)
        assert (status, listed["kind"]) == (200, "PodList")
    # A client that does not trust the certificate is refused by its TLS check.
    async with aiohttp.ClientSession(server.tls_url) as untrusting:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await call(untrusting, "GET", "/version")
    assert isinstance(server.client_tls(), ssl.SSLContext)


async def test_the_kubernetes_client_logs_in_with_the_kubeconfig(
    client: kubernetes.client.ApiClient,
) -> None:
    core = kubernetes.client.CoreV1Api(client)
    config_map = {"metadata": {"name": "c"}, "data": {"k": "v"}}
    await asyncio.to_thread(core.create_namespaced_config_map, "default", config_map)
    read = await asyncio.to_thread(core.read_namespaced_config_map, "c", "default")
    assert read.data == {"k": "v"}


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",  # what a web page's form or fetch sends cross-site without a preflight
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/cbor",
    ],
)
async def test_bodies_of_other_media_types_are_refused(
    server: ApiServer, http: aiohttp.ClientSession, content_type: str
) -> None:
    data = '{"metadata": {"name": "c"}}'
    async with http.post(CONFIGMAPS, data=data, headers={"Content-Type": content_type}) as r:
        body = await r.json()
        assert r.status == 415
    assert body["reason"] == "UnsupportedMediaType"
    assert body["kind"] == "Status"
    assert (
        "accepted media types include: application/json, application/yaml, "
        "application/vnd.kubernetes.protobuf" in body["message"]
    )
    assert server.store.get("/configmaps", "default", "c") is None
    # PUT and a DELETE with a body are held to the same rule.
    await call(http, "POST", CONFIGMAPS, {"metadata": {"name": "d"}})
    for method in ("PUT", "DELETE"):
        async with http.request(
            method, f"{CONFIGMAPS}/d", data=data, headers={"Content-Type": content_type}
        ) as response:
            assert response.status == 415, method
    assert server.store.get("/configmaps", "default", "d") is not None


async def test_json_yaml_and_a_body_without_a_content_type_are_read(
    http: aiohttp.ClientSession,
) -> None:
    yaml_body = "metadata: {name: from-yaml}\ndata: {k: v}\n"
    async with http.post(
        CONFIGMAPS, data=yaml_body, headers={"Content-Type": "application/yaml"}
    ) as response:
        assert response.status == 201
    # No Content-Type: JSON, as the API server assumes.
    bare = b'{"metadata": {"name": "bare"}}'
    async with http.post(CONFIGMAPS, data=bare, skip_auto_headers=["Content-Type"]) as response:
        assert response.status == 201, await response.text()
    async with http.post(CONFIGMAPS, data=bare) as response:  # application/octet-stream
        assert response.status == 415
    _, listed = await call(http, "GET", CONFIGMAPS)
    assert [c["metadata"]["name"] for c in listed["items"]] == ["bare", "from-yaml"]


async def test_custom_resources_take_no_protobuf_and_no_strategic_merge_patch(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    headers = {"Content-Type": "application/vnd.kubernetes.protobuf"}
    async with http.post(WIDGETS, data=b"k8s\x00", headers=headers) as response:
        body = await response.json()
        assert response.status == 415
    assert body["message"].endswith(
        "accepted media types include: application/json, application/yaml"
    )


async def test_a_client_asking_for_protobuf_or_json_gets_json(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", PODS, pod("a"))
    accept = {"Accept": "application/vnd.kubernetes.protobuf, application/json"}
    for path in (f"{PODS}/a", PODS, "/api/v1"):
        async with http.get(path, headers=accept) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            body = await response.json()
        assert body["kind"] in ("Pod", "PodList", "APIResourceList"), path
    async with http.get(f"{PODS}?watch=true&timeoutSeconds=1", headers=accept) as response:
        assert response.content_type == "application/json"
        line = await response.content.readline()
    assert b'"ADDED"' in line

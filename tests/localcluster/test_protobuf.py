"""Kubernetes protobuf request bodies decoded to the JSON the API server would have read: bodies
built here field by field (numbers from the Kubernetes 1.37 generated.proto files), the shipped
message table checked against those sources when the Go module cache holds them, and the HTTP
answers (201 for a built-in kind, 415 for a custom one, 400 for a broken body). What the real
kubectl sends is in test_kubectl.py."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubetune_localcluster.apiserver import ApiServer
from kubetune_localcluster.protobuf import (
    MAGIC,
    MEDIA_TYPE,
    MESSAGES,
    UnknownKind,
    decode,
    go_duration,
)
from kubetune_localcluster.protobuf_table import message_table
from kubetune_localcluster.protobuf_wire import ProtobufError
from tests.localcluster.conftest import WIDGETS, call

PROTOBUF = {"Content-Type": MEDIA_TYPE}


# --- a minimal protobuf writer ---------------------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers: two's complement in ten bytes
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def number(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)


def chunk(field: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(field << 3 | 2) + varint(len(data)) + data


def entries(field: int, mapping: dict[str, bytes | str]) -> bytes:
    return b"".join(chunk(field, chunk(1, k) + chunk(2, v)) for k, v in mapping.items())


def body(api_version: str, kind: str, raw: bytes) -> bytes:
    """The envelope: the magic and a runtime.Unknown (TypeMeta, raw)."""
    return MAGIC + chunk(1, chunk(1, api_version) + chunk(2, kind)) + chunk(2, raw)


def object_meta(name: str, **labels: str) -> bytes:
    # name 1, generation 7 (zero: omitted, omitempty), creationTimestamp 8 (the zero Time:
    # empty), labels 11
    return chunk(1, name) + number(7, 0) + chunk(8, b"") + entries(11, labels)


CONFIG_MAP = body(
    "v1",
    "ConfigMap",
    chunk(1, object_meta("settings", app="x"))
    + entries(2, {"a": "b"})
    + entries(3, {"blob": b"\x00\xff"})
    + number(4, 0),  # immutable: a pointer, so false is kept
)


def test_a_config_map_decodes_as_its_json() -> None:
    assert decode(CONFIG_MAP) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": {"app": "x"}},
        "data": {"a": "b"},
        "binaryData": {"blob": "AP8="},
        "immutable": False,
    }


def test_a_pod_decodes_nested_lists_maps_inline_structs_and_well_known_types() -> None:
    port = number(3, 8080) + chunk(4, "TCP")  # containerPort, protocol
    resources = chunk(1, chunk(1, "cpu") + chunk(2, chunk(1, "500m")))  # limits: Quantity
    container = (
        chunk(1, "main")
        + chunk(2, "busybox")
        + chunk(3, "sleep")
        + chunk(3, "1")
        + chunk(6, port)
        + chunk(8, resources)
    )
    volume = chunk(1, "scratch") + chunk(2, chunk(2, b""))  # VolumeSource (inline): emptyDir
    spec = (
        chunk(1, volume)
        + chunk(2, container)
        + chunk(3, "")  # restartPolicy "": omitempty
        + number(4, 0)  # terminationGracePeriodSeconds: a pointer, 0 kept
    )
    meta = chunk(1, "p") + number(10, -1)  # deletionGracePeriodSeconds: negative int64
    decoded = decode(body("v1", "Pod", chunk(1, meta) + chunk(2, spec)))
    assert decoded["metadata"] == {"name": "p", "deletionGracePeriodSeconds": -1}
    assert decoded["spec"] == {
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "command": ["sleep", "1"],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "500m"}},
            }
        ],
        "terminationGracePeriodSeconds": 0,
    }


def test_int_or_string_times_and_a_non_omitempty_zero() -> None:
    by_number = number(3, 80) + chunk(4, number(1, 0) + number(2, 8080))
    by_name = number(3, 443) + chunk(4, number(1, 1) + chunk(3, "https"))
    zero = number(3, 0)  # port has no omitempty: 0 stays
    service = body(
        "v1", "Service", chunk(2, chunk(1, by_number) + chunk(1, by_name) + chunk(1, zero))
    )
    assert decode(service)["spec"]["ports"] == [
        {"port": 80, "targetPort": 8080},
        {"port": 443, "targetPort": "https"},
        {"port": 0},
    ]
    # core/v1 Event: firstTimestamp (Time, seconds only) 6, eventTime (MicroTime) 10.
    moment = number(1, 1_780_000_000) + number(2, 123_456_789)
    event = decode(
        body("v1", "Event", chunk(1, chunk(1, "e")) + chunk(6, moment) + chunk(10, moment))
    )
    assert event["firstTimestamp"] == "2026-05-28T20:26:40Z"
    assert event["eventTime"] == "2026-05-28T20:26:40.123456Z"
    # reportingComponent has no omitempty: written even when the body leaves it out.
    assert event["reportingComponent"] == ""


def test_delete_options_decode_under_any_api_version() -> None:
    raw = number(1, 0) + chunk(4, "Foreground") + chunk(5, "All")
    assert decode(body("meta.k8s.io/v1", "DeleteOptions", raw)) == {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "propagationPolicy": "Foreground",
        "dryRun": ["All"],
    }


def test_unknown_kinds_and_broken_bodies_are_refused() -> None:
    with pytest.raises(UnknownKind):
        decode(body("example.com/v1", "Widget", b""))
    with pytest.raises(ProtobufError):
        decode(b'{"kind": "ConfigMap"}')  # no magic
    with pytest.raises(ProtobufError):
        decode(CONFIG_MAP[:-3])  # truncated
    assert not issubclass(ProtobufError, UnknownKind)


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (0, "0s"),
        (999, "999ns"),
        (1_500, "1.5µs"),
        (1_500_000, "1.5ms"),
        (90_000_000_000, "1m30s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-2_000_000_000, "-2s"),
    ],
)
def test_durations_read_as_go_writes_them(nanoseconds: int, text: str) -> None:
    assert go_duration(nanoseconds) == text


def _module_cache() -> Path:
    return Path(os.environ.get("GOMODCACHE") or Path.home() / "go" / "pkg" / "mod")


@pytest.mark.skipif(
    not (_module_cache() / "k8s.io" / "api@v0.37.1").is_dir(),
    reason="the Kubernetes v0.37.1 Go sources are not in the Go module cache",
)
def test_the_shipped_table_is_the_kubernetes_sources() -> None:
    """Regenerate with: message_table(GOMODCACHE) dumped (sorted keys, compact) into
    builtin-protobuf.json.gz."""
    with gzip.open(MESSAGES, "rt") as handle:
        assert json.load(handle) == message_table(_module_cache())


# --- over HTTP ---------------------------------------------------------------------------------


async def test_a_protobuf_create_is_served_and_answered_in_json(
    http: aiohttp.ClientSession,
) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    async with http.post(path, data=CONFIG_MAP, headers=PROTOBUF) as response:
        assert response.status == 201, await response.text()
        assert response.content_type == "application/json"
        created = await response.json()
    assert created["data"] == {"a": "b"}
    assert created["metadata"]["creationTimestamp"].endswith("Z")  # set by the server
    status, got = await call(http, "GET", f"{path}/settings")
    assert (status, got["binaryData"]) == (200, {"blob": "AP8="})


async def test_protobuf_is_refused_for_custom_resources_and_broken_bodies(
    http: aiohttp.ClientSession, crd: dict[str, Any]
) -> None:
    async with http.post(
        WIDGETS, data=body("example.com/v1", "Widget", b""), headers=PROTOBUF
    ) as r:
        refused = await r.json()
        assert r.status == 415
    assert refused["reason"] == "UnsupportedMediaType"
    assert "application/json, application/yaml" in refused["message"]
    assert MEDIA_TYPE not in refused["message"]
    path = "/api/v1/namespaces/default/configmaps"
    async with http.post(path, data=CONFIG_MAP[:-3], headers=PROTOBUF) as response:
        assert response.status == 400
        assert (await response.json())["reason"] == "BadRequest"


async def test_a_protobuf_delete_options_body(http: aiohttp.ClientSession) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    await call(http, "POST", path, {"metadata": {"name": "c"}})
    options = body("v1", "DeleteOptions", chunk(5, "All"))  # dryRun: nothing is deleted
    async with http.delete(f"{path}/c", data=options, headers=PROTOBUF) as response:
        assert response.status == 200
    status, _ = await call(http, "GET", f"{path}/c")
    assert status == 200


async def test_a_protobuf_body_needs_the_token(server: ApiServer) -> None:
    async with (
        aiohttp.ClientSession(server.url) as anonymous,
        anonymous.post(
            "/api/v1/namespaces/default/configmaps", data=CONFIG_MAP, headers=PROTOBUF
        ) as r,
    ):
        assert r.status == 403
    assert server.store.get("/configmaps", "default", "settings") is None

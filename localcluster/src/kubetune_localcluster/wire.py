"""The wire format of the emulated API: the media types a request body may have, how a body is
decoded, and the JSON responses (an object as served by the version asked for, a Status for an
error, warnings as Warning headers)."""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from kubetune_localcluster import protobuf
from kubetune_localcluster.errors import ApiError, bad_request
from kubetune_localcluster.objects import Object
from kubetune_localcluster.resources import Resource

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = protobuf.MEDIA_TYPE


def go_integer(text: str) -> int | float:
    """A JSON integer as the API server's decoder reads it: an int64, else a float64 (so a
    schema's type integer refuses it with 422, as a real server does, instead of an overflow)."""
    number = int(text)
    return number if -(2**63) <= number < 2**63 else float(number)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def accepts(request: web.Request, **params: str) -> bool:
    """Whether one of the Accept media ranges carries all these parameters (as=Table...)."""
    for media_range in request.headers.get("Accept", "").split(","):
        found = dict(
            part.strip().split("=", 1) for part in media_range.split(";")[1:] if "=" in part
        )
        if all(found.get(key) == value for key, value in params.items()):
            return True
    return False


def media_type(request: web.Request) -> str:
    """The request body's media type (no parameters, lower case); JSON when none is given,
    as the API server assumes."""
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower() or JSON


def unsupported_media(accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "")


def json_response(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    response = web.Response(body=dumps(body), status=status, content_type="application/json")
    for warning in warnings or []:
        text = warning.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        response.headers.add("Warning", f'299 - "{text}"')
    return response


def error_response(error: ApiError) -> web.Response:
    return json_response(error.status(), error.code)


def present(resource: Resource, obj: Object) -> Object:
    """The object as served by this version (one stored copy serves every version)."""
    if obj.get("apiVersion") == resource.group_version:
        return obj
    return {**obj, "apiVersion": resource.group_version}


async def read_body(request: web.Request, resource: Resource) -> Any:
    """The decoded body of a create or update: JSON, YAML, or (built-in kinds only, as
    client-go's typed clients send them) Kubernetes protobuf."""
    media = media_type(request)
    accepted = [JSON, YAML] if resource.custom else [JSON, YAML, PROTOBUF]
    if media not in accepted:
        raise unsupported_media(accepted)
    raw = await request.read()
    if not raw:
        raise bad_request("the request body is empty")
    return decode(media, raw)


def decode(media: str, raw: bytes) -> Any:
    try:
        if media == PROTOBUF:
            return protobuf.decode(raw)
        if media == YAML:
            return yaml.safe_load(raw)
        return json.loads(raw, parse_int=go_integer)
    except protobuf.UnknownKind as error:
        raise unsupported_media([JSON, YAML]) from error
    except (ValueError, yaml.YAMLError) as error:
        raise bad_request(f"the body of the request could not be decoded: {error}") from error

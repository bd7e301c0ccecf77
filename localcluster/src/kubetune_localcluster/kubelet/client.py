"""The kubelet's client of the API server: plain HTTP(S) requests, as a real node makes them,
retried on connection errors, conflicts and server errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

KUBELET_USER_AGENT = "kubetune-local-kubelet"
REQUEST_TIMEOUT_SECONDS: Final = 30.0

Json = dict[str, Any]


class ApiRequestError(Exception):
    """A request of the kubelet's to the API server failed with this HTTP status (0: no
    answer). Not the emulator's `errors.ApiError`, which the server answers with."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


def pod_path(namespace: str, name: str, subresource: str = "") -> str:
    suffix = f"/{subresource}" if subresource else ""
    return f"/api/v1/namespaces/{namespace}/pods/{name}{suffix}"


class ApiClient:
    """One session to the API server for the whole kubelet, with its bearer token or its
    client TLS context."""

    def __init__(self, api_url: str, *, token: str | None, tls: ssl.SSLContext | None) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.tls = tls
        self.closing = False
        """Set when the kubelet stops: a failed request is no longer retried, and the kubelet
        writes nothing more (statuses, events, deletions); the API server may be gone."""
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.tls) if self.tls is not None else None,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            # So that request hooks (RBAC recordings, benchmarks) can tell the kubelet apart.
            headers={
                "User-Agent": KUBELET_USER_AGENT,
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session, for a request the kubelet reads as a stream (a watch)."""
        assert self._session is not None
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Json | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        attempts: int = 5,
    ) -> Json:
        """One API call, retried on connection errors, conflicts and server errors; 404 and
        other client errors raise ApiRequestError at once."""
        assert self._session is not None
        delay = 0.05
        for attempt in range(attempts):
            try:
                async with self._session.request(
                    method,
                    self.api_url + path,
                    data=None if body is None else json.dumps(body),
                    headers={"Content-Type": content_type, "Accept": "application/json"},
                    params=params,
                ) as response:
                    text = await response.text()
                    if response.status < 300:
                        result: Json = json.loads(text) if text else {}
                        return result
                    error = ApiRequestError(response.status, text)
                    retry = response.status in (409, 429) or response.status >= 500
                    if not retry:
                        raise error
            except (aiohttp.ClientError, TimeoutError) as failure:
                error = ApiRequestError(0, str(failure))
            if attempt + 1 < attempts and not self.closing:
                await asyncio.sleep(delay)  # back off before retrying the request
                delay = min(delay * 2, 1.0)
        raise error

    async def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        """Delete the pod object now that its processes are dead (gracePeriodSeconds=0)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        with contextlib.suppress(ApiRequestError):
            await self.request("DELETE", pod_path(namespace, name), body=body)

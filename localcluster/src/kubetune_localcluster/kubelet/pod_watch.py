"""The kubelet's list and watch of its pods: a watch that ends is re-established from the last
resourceVersion seen; 410 Gone and failed requests relist."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Final

import aiohttp

from kubetune_localcluster.kubelet.client import (
    REQUEST_TIMEOUT_SECONDS,
    ApiClient,
    ApiRequestError,
    Json,
)

logger = logging.getLogger(__name__)
WATCH_TIMEOUT_SECONDS: Final = 300
WATCH_RETRY_SECONDS: Final = 0.5


class PodWatch:
    """Hands every pod the server has to `relist` (a list), `observe` (an added or modified
    pod) and `forget` (the uid of a deleted one)."""

    def __init__(
        self,
        client: ApiClient,
        selector: dict[str, str],
        *,
        relist: Callable[[list[Json]], None],
        observe: Callable[[Json], None],
        forget: Callable[[str], None],
    ) -> None:
        self._client = client
        self._selector = selector
        self._relist = relist
        self._observe = observe
        self._forget = forget
        self._resource_version = ""

    async def list(self) -> None:
        listed = await self._client.request("GET", "/api/v1/pods", params=self._selector)
        self._relist(listed.get("items") or [])
        self._resource_version = str((listed.get("metadata") or {}).get("resourceVersion", ""))

    async def run(self) -> None:
        """Watch from the last resourceVersion seen; re-watch when a watch ends, relist on
        410 Gone or errors."""
        must_list = False
        while not self._client.closing:
            try:
                if must_list:
                    await self.list()
                    must_list = False
                must_list = await self._watch_once()
            except (ApiRequestError, aiohttp.ClientError, TimeoutError, ValueError) as error:
                logger.debug("kubelet: pod watch failed, relisting: %s", error)
                must_list = True
                await asyncio.sleep(WATCH_RETRY_SECONDS)  # the server may be restarting

    async def _watch_once(self) -> bool:
        """One watch request; True when the pods must be listed again (410 Gone)."""
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS),
            **self._selector,
        }
        if self._resource_version:
            params["resourceVersion"] = self._resource_version
        async with self._client.session.get(
            self._client.api_url + "/api/v1/pods",
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT_SECONDS),
        ) as response:
            if response.status == 410:
                return True
            if response.status >= 300:
                raise ApiRequestError(response.status, await response.text())
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip() and self._on_watch_event(json.loads(line)):
                        return True
        return False

    def _on_watch_event(self, event: Json) -> bool:
        """Handle one watch event; True when it says the resourceVersion is too old."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                return True
            raise ApiRequestError(int(obj.get("code") or 500), json.dumps(obj))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._resource_version = str(version)
        if kind == "BOOKMARK":
            return False
        if kind == "DELETED":
            self._forget(str(obj["metadata"]["uid"]))
        else:
            self._observe(obj)
        return False

"""The local kubelet's own HTTPS endpoint, which a real API server calls for `kubectl logs`
(GET /containerLogs/<namespace>/<pod>/<container>). Only clients with a certificate of the
cluster's CA get in (the API server's kubelet-client certificate), as a kubelet with x509
authentication allows; there is no exec, attach or port-forward."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from aiohttp import web

LogProvider = Callable[[str, str, str | None], str | None]
Running = Callable[[str, str, str | None], bool]
FOLLOW_POLL_SECONDS = 0.25


def select(text: str, tail_lines: str | None, limit_bytes: str | None) -> str:
    """tailLines, then limitBytes, as the kubelet applies them."""
    if tail_lines is not None:
        count = int(tail_lines)
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-count:]) if count > 0 else ""
    if limit_bytes is not None:
        text = text.encode()[: int(limit_bytes)].decode("utf-8", "ignore")
    return text


def node_app(logs: LogProvider, running: Running) -> web.Application:
    async def container_logs(request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        pod, container = request.match_info["pod"], request.match_info["container"]
        text = logs(namespace, pod, container)
        if text is None:
            raise web.HTTPNotFound(
                text=f"container {container!r} of pod {namespace}/{pod} is not on this node"
            )
        query = request.query
        try:
            first = select(text, query.get("tailLines"), query.get("limitBytes"))
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error)) from None
        if query.get("follow") not in ("true", "1"):
            return web.Response(text=first, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(first.encode())
        sent = len(text.encode())
        while True:
            current = logs(namespace, pod, container)
            if current is None:
                break
            data = current.encode()
            if len(data) > sent:
                await response.write(data[sent:])
                sent = len(data)
            elif not running(namespace, pod, container):
                break
            await asyncio.sleep(FOLLOW_POLL_SECONDS)  # a log file has no change notification
        await response.write_eof()
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    app.router.add_get("/healthz", healthz)
    return app


async def serve_node_endpoint(
    logs: LogProvider, running: Running, context: ssl.SSLContext, port: int, host: str = "127.0.0.1"
) -> web.AppRunner:
    runner = web.AppRunner(node_app(logs, running), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    return runner

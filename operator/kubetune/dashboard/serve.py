"""optuna-dashboard served over the fed storage, until interrupted."""

from __future__ import annotations

import logging
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna_dashboard
from kubernetes import client

from .feed import Feed
from .storage import SnapshotStorage

logger = logging.getLogger(__name__)

LIST_TIMEOUT_SECONDS = 60.0


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    # The dashboard polls every few seconds from each open page: one slow request must not
    # hold up the others.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        logger.debug(format, *args)


def serve(api_client: client.ApiClient, namespace: str | None, host: str, port: int) -> None:
    """Feed the storage from the cluster and serve the dashboard on host:port (blocks)."""
    storage = SnapshotStorage()
    feed = Feed(client.CustomObjectsApi(api_client), storage, namespace)
    feed.start()
    if not feed.listed.wait(LIST_TIMEOUT_SECONDS):
        raise RuntimeError(
            f"could not list TuningStudies and TuningTrials in {LIST_TIMEOUT_SECONDS:.0f}s;"
            " check the kubeconfig or --namespace and that the Kubetune CRDs are installed"
        )
    app = optuna_dashboard.wsgi(storage)
    with make_server(
        host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    ) as server:
        where = namespace or "all namespaces"
        print(
            f"kubetune dashboard: http://{host}:{port}/dashboard ({where}, read-only)", flush=True
        )
        server.serve_forever()

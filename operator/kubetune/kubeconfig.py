"""How every part of Kubetune reaches a cluster: a kubeconfig, or the pod's service account.

The operator, the leader election, `kubetune dashboard` and `kubetune.client` all connect here,
in the order kubectl uses: a kubeconfig given, else $KUBECONFIG, else (inside a pod) the service
account, else ~/.kube/config. Each gets an ApiClient of its own, never the `kubernetes` module's
global configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
"""Where a pod's service account names the pod's namespace."""


class KubeconfigError(Exception):
    """No cluster to talk to: the kubeconfig cannot be read, and this is not a pod."""


@dataclass(frozen=True)
class Connection:
    """A client of one cluster, and the namespace its context (or pod) names."""

    api_client: Any  # kubernetes.client.ApiClient, which is untyped
    namespace: str


def connect(kubeconfig: str | Path | None = None, *, connections: int | None = None) -> Connection:
    """A client of the cluster the kubeconfig names, or of the cluster this pod runs in.

    The namespace is the kubeconfig context's, or the pod's, or `default`. Raises
    KubeconfigError, saying why, when neither a kubeconfig nor a service account is there.
    `connections`: how many threads call the client at once. urllib3 keeps 5 per core
    otherwise (10 on two cores), and a request made beyond them opens a connection that is
    closed after it ("Connection pool is full, discarding connection").
    """
    configuration = kubernetes.client.Configuration()
    if connections is not None:
        configuration.connection_pool_maxsize = connections
    # Read $KUBECONFIG now: the kubernetes client reads it once, when first imported.
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or None
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return _in_cluster(configuration)
    path = path or os.path.expanduser("~/.kube/config")
    try:
        api_client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=configuration
        )
        _, active = kubernetes.config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, OSError) as error:
        raise KubeconfigError(f"cannot read the kubeconfig {path}: {error}") from error
    namespace = (active or {}).get("context", {}).get("namespace") or "default"
    return Connection(api_client, namespace)


def _in_cluster(configuration: Any) -> Connection:  # kubernetes.client.Configuration
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException as error:
        raise KubeconfigError(f"cannot use the pod's service account: {error}") from error
    return Connection(kubernetes.client.ApiClient(configuration), pod_namespace())


def pod_namespace() -> str:
    """The pod's own namespace in a cluster; "default" elsewhere."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"

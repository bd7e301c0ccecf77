"""kubetune.kubeconfig.connect: which cluster and namespace each part of Kubetune talks to."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest
import yaml

from kubetune import kubeconfig


def write_kubeconfig(path: Path, server: str, namespace: str | None = None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace is not None:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": context}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process as if it ran in a pod of namespace team-b: a service account mounted."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "ca.crt").write_text("not checked before a request")
    (account / "namespace").write_text("team-b\n")
    incluster = kubernetes.config.incluster_config
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setattr(kubeconfig, "SERVICE_ACCOUNT_NAMESPACE", account / "namespace")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return account


@pytest.fixture(autouse=True)
def no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_a_given_kubeconfig_names_the_cluster_and_the_namespace(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", "https://given:6443", "team-a")
    connection = kubeconfig.connect(path)
    assert connection.api_client.configuration.host == "https://given:6443"
    assert connection.namespace == "team-a"


def test_kubeconfig_env_is_read_at_the_call_and_a_context_without_namespace_means_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "env", "https://env:6443")))
    connection = kubeconfig.connect()
    assert connection.api_client.configuration.host == "https://env:6443"
    assert connection.namespace == "default"


def test_in_a_pod_the_service_account_and_the_pods_namespace(pod: Path) -> None:
    connection = kubeconfig.connect()
    configuration = connection.api_client.configuration
    assert configuration.host == "https://10.0.0.1:443"
    assert configuration.api_key["BearerToken"] == "bearer pod-token"
    assert connection.namespace == "team-b"
    assert kubeconfig.pod_namespace() == "team-b"


def test_in_a_pod_a_kubeconfig_given_or_in_the_env_still_wins(
    pod: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = write_kubeconfig(tmp_path / "given", "https://given:6443", "team-a")
    assert kubeconfig.connect(given).api_client.configuration.host == "https://given:6443"
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "env", "https://env:6443")))
    assert kubeconfig.connect().api_client.configuration.host == "https://env:6443"


def test_outside_a_pod_the_home_kubeconfig(tmp_path: Path) -> None:
    home = tmp_path / "home" / ".kube"
    home.mkdir(parents=True)
    write_kubeconfig(home / "config", "https://home:6443", "team-c")
    connection = kubeconfig.connect()
    assert connection.api_client.configuration.host == "https://home:6443"
    assert connection.namespace == "team-c"


def test_no_kubeconfig_and_no_pod_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(kubeconfig.KubeconfigError, match=r"cannot read the kubeconfig .*home"):
        kubeconfig.connect()
    missing = tmp_path / "missing"
    with pytest.raises(kubeconfig.KubeconfigError, match="missing"):
        kubeconfig.connect(missing)


def test_a_pod_whose_service_account_is_not_mounted_is_an_error(
    pod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pod / "token").unlink()
    with pytest.raises(kubeconfig.KubeconfigError, match="service account"):
        kubeconfig.connect()
    monkeypatch.setattr(kubeconfig, "SERVICE_ACCOUNT_NAMESPACE", pod / "absent")
    assert kubeconfig.pod_namespace() == "default"


def pool_size(api_client: kubernetes.client.ApiClient) -> int:
    """How many connections the client's urllib3 pool keeps open per host."""
    return int(api_client.rest_client.pool_manager.connection_pool_kw["maxsize"])


def test_the_operators_client_keeps_a_connection_for_each_of_its_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubetune.k8s.api import API_THREADS, KubeApi

    monkeypatch.setattr("multiprocessing.cpu_count", lambda: 2)  # urllib3's default: 10
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "env", "https://env:6443")))
    assert pool_size(kubeconfig.connect().api_client) == 10
    assert pool_size(KubeApi.from_environment().custom.api_client) == API_THREADS > 10


def test_in_a_pod_the_pool_is_sized_too(pod: Path) -> None:
    assert pool_size(kubeconfig.connect(connections=16).api_client) == 16

"""kubetune_report outside a cluster: kubeconfig files (the simple cases kubectl writes), read
without PyYAML, and the helper's promise to need nothing but the standard library."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from kubetune.spec import api
from kubetune_report import (
    Reporter,
    ReportError,
    RetryPolicy,
    kubeconfig_connection,
    parse_simple_yaml,
)
from tests.trainers.conftest import ApiServer, Tls

REPORT_SOURCES = Path(__file__).resolve().parents[2] / "report" / "src"
MODULES = sorted((REPORT_SOURCES / "kubetune_report").glob("*.py"))
QUICK = RetryPolicy(attempts=2, backoff=0.0, max_backoff=0.0)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server: str, cluster: str, user: str, namespace: str = "team-c") -> str:
    """A kubeconfig in the layout kubectl writes, with the given cluster and user fields."""
    return textwrap.dedent(
        """\
        apiVersion: v1
        clusters:
        - cluster:
            {cluster}
            server: {server}
          name: other
        - cluster:
            server: https://192.0.2.1:6443
          name: unused
        contexts:
        - context:
            cluster: other
            namespace: {namespace}
            user: trainer
          name: ctx # the one in use
        current-context: "ctx"
        kind: Config
        preferences: {{}}
        users:
        - name: trainer
          user:
            {user}
        """
    ).format(server=server, cluster=cluster, user=user, namespace=namespace)


def test_simple_yaml_reads_what_kubectl_writes() -> None:
    document = parse_simple_yaml(
        textwrap.dedent(
            """\
            # comment
            ---
            apiVersion: v1
            clusters:
              - name: 'it''s'
                cluster:
                  server: https://10.0.0.1:6443 # trailing comment
                  insecure-skip-tls-verify: true
            list:
            - a
            - "b: c"
            -
              nested: 1
            empty:
            preferences: {}
            url: http://x#not-a-comment
            """
        )
    )
    assert document == {
        "apiVersion": "v1",
        "clusters": [
            {
                "name": "it's",
                "cluster": {"server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True},
            }
        ],
        "list": ["a", "b: c", {"nested": 1}],
        "empty": None,
        "preferences": {},
        "url": "http://x#not-a-comment",
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: &anchor 1", "line 1: YAML construct '&anchor 1' not supported"),
        ("a: [1, 2]", "line 1: YAML construct '[1, 2]' not supported"),
        ("a: |\n  text", "line 1: YAML construct '|' not supported"),
        ("a: 1\n    b: 2", "line 2: unexpected indentation"),
        ("a: 'open", "line 1: unterminated quote"),
    ],
)
def test_simple_yaml_names_the_line_it_cannot_read(text: str, problem: str) -> None:
    with pytest.raises(ReportError, match=problem.replace("[", r"\[").replace("|", r"\|")):
        parse_simple_yaml(text)


def _patch_through(path: Path, server: ApiServer) -> None:
    environ = {
        api.POD_NAME_ENV: "study-9",
        "KUBECONFIG": f"{path.parent / 'absent'}{os.pathsep}{path}",
    }
    reporter = Reporter.from_environment(environ, QUICK, service_account=path.parent / "none")
    assert reporter.annotator is not None
    reporter.report(5, loss=0.5)


def test_kubeconfig_with_ca_data_and_token(
    tls_api_server: ApiServer, tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The simple parser, as in an image without PyYAML.
    monkeypatch.setitem(sys.modules, "yaml", None)
    path = tmp_path / "config"
    path.write_text(
        kubeconfig(
            tls_api_server.url,
            f"certificate-authority-data: {b64(tls.ca)}",
            "token: abc.def",
        )
    )
    _patch_through(path, tls_api_server)
    (request,) = tls_api_server.requests
    assert request.headers["Authorization"] == "Bearer abc.def"
    # The context's namespace when KUBETUNE_POD_NAMESPACE is not set.
    assert request.path == "/api/v1/namespaces/team-c/pods/study-9"


def test_kubeconfig_with_client_certificate_files_relative_to_it(
    mtls_api_server: ApiServer, tls: Tls, tmp_path: Path
) -> None:
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_bytes((tls.ca.parent / name).read_bytes())
    path = tmp_path / "config"
    path.write_text(
        kubeconfig(
            mtls_api_server.url,
            "certificate-authority: ca.crt",
            "client-certificate: client.crt\n    client-key: client.key",
        )
    )
    _patch_through(path, mtls_api_server)
    assert len(mtls_api_server.requests) == 1
    assert "Authorization" not in mtls_api_server.requests[0].headers


def test_kubeconfig_with_client_certificate_data(
    mtls_api_server: ApiServer, tls: Tls, tmp_path: Path
) -> None:
    path = tmp_path / "config"
    path.write_text(
        kubeconfig(
            mtls_api_server.url,
            f"certificate-authority-data: {b64(tls.ca)}",
            f"client-certificate-data: {b64(tls.client_cert)}\n"
            f"    client-key-data: {b64(tls.client_key)}",
        )
    )
    _patch_through(path, mtls_api_server)
    assert len(mtls_api_server.requests) == 1
    assert not list(Path(tempfile.gettempdir()).glob("kubetune-report-*"))  # key material removed


def test_kubeconfig_insecure_skip_tls_verify_and_basic_auth(
    tls_api_server: ApiServer, tmp_path: Path
) -> None:
    path = tmp_path / "config"
    path.write_text(
        kubeconfig(
            tls_api_server.url,
            "insecure-skip-tls-verify: true",
            "username: admin\n    password: 'p:w'",
        )
    )
    _patch_through(path, tls_api_server)
    expected = base64.b64encode(b"admin:p:w").decode()
    assert tls_api_server.requests[0].headers["Authorization"] == f"Basic {expected}"


def test_kubeconfig_as_json(api_server: ApiServer, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "clusters": [{"name": "k", "cluster": {"server": api_server.url}}],
                "users": [{"name": "u", "user": {"tokenFile": "token"}}],
            }
        )
    )
    (tmp_path / "token").write_text("from-file\n")
    connection, namespace = kubeconfig_connection(path)
    assert namespace is None
    assert connection.headers() == {"Authorization": "Bearer from-file"}


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("exec:\n      command: aws", "uses exec credentials, which kubetune_report does not"),
        ("auth-provider:\n      name: gcp", "uses auth-provider credentials"),
    ],
)
def test_kubeconfig_plugins_are_refused_with_the_fix(
    tmp_path: Path, user: str, problem: str
) -> None:
    path = tmp_path / "config"
    path.write_text(kubeconfig("https://127.0.0.1:1", "insecure-skip-tls-verify: true", user))
    with pytest.raises(ReportError, match=problem):
        kubeconfig_connection(path)


def test_kubeconfig_without_the_current_context(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(kubeconfig("http://x", "", "token: t").replace('"ctx"', "gone"))
    with pytest.raises(ReportError, match="kubeconfig has no context named 'gone' in contexts"):
        kubeconfig_connection(path)


def test_imports_and_reports_with_only_the_standard_library(
    api_server: ApiServer, tmp_path: Path
) -> None:
    """`python -I -S`: no site-packages, only report/src on the path. The helper imports, loads
    only standard-library modules (and its own), reads a kubeconfig without PyYAML, patches the
    pod and writes the termination message."""
    config = tmp_path / "config"
    config.write_text(kubeconfig(api_server.url, "", "token: stdlib"))
    log = tmp_path / "termination-log"
    script = textwrap.dedent(
        f"""\
        import sys
        sys.path.insert(0, {str(REPORT_SOURCES)!r})
        import kubetune_report as report
        report.report(1, val_accuracy=0.5)
        report.report_final(val_accuracy=0.75, val_loss=0.5)
        foreign = sorted(
            name for name in sys.modules
            if name.split(".")[0] not in sys.stdlib_module_names
            and name.split(".")[0] not in ("kubetune_report", "__main__")
        )
        print(foreign)
        print(sorted(n for n in sys.modules if n.startswith("kubetune")))
        """
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "KUBECONFIG": str(config),
        api.POD_NAME_ENV: "trial-pod",
        api.TERMINATION_LOG_ENV: str(log),
    }
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    foreign, ours = done.stdout.splitlines()
    assert foreign == "[]"
    # Its own modules only: nothing of the operator's kubetune package.
    assert ours == str(
        sorted(
            ["kubetune_report"]
            + [f"kubetune_report.{path.stem}" for path in MODULES if path.stem != "__init__"]
        )
    )
    assert done.stderr == ""
    assert json.loads(log.read_text()) == {"val_accuracy": 0.75, "val_loss": 0.5}
    steps = [(r.annotation["step"], r.annotation["final"]) for r in api_server.requests]
    assert steps == [(1, False), (1, True)]
    assert api_server.requests[0].headers["Authorization"] == "Bearer stdlib"

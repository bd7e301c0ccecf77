"""`kubetune up --prometheus`: the demo with a real Prometheus (Debian's `prometheus` binary)
scraping the operator and the trainers, which a study then reads its objective from; and the
clear refusal when the binary is missing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kubetune.up.prometheus import metrics_source_hints, prometheus_config
from kubetune_localcluster.environment import free_port
from tests.e2e.conftest import ROOT
from tests.e2e.test_demo import KUBETUNE, MARKER_ENV, kill_leftovers, processes_with
from tests.eventually import eventually
from tests.prometheus_server import prometheus_trainer

# Exports its metrics on the Prometheus route only: every value the study records went
# trainer -> the demo's Prometheus -> PromQL -> operator.
TRAINER = prometheus_trainer(steps=3, pause=0.4)


def prometheus_study(tmp_path: Path, url: str) -> Path:
    """examples/prometheus-objective.yaml made runnable here: two trials of a local trainer,
    quick polls, no bearer token, and the url of the demo's Prometheus."""
    document: dict[str, Any] = yaml.safe_load(
        (ROOT / "examples" / "prometheus-objective.yaml").read_text()
    )
    spec = document["spec"]
    spec["objective"].pop("additionalMetrics")
    spec["searchSpace"] = [{"name": "x", "type": "categorical", "choices": [2.0, 3.0]}]
    spec["algorithm"] = {"name": "grid"}
    spec.pop("pruner")
    spec["budget"] = {"maxTrials": 2, "parallelism": 2, "trialTimeout": "60s"}
    source = spec["metricsSource"]["prometheus"]
    source.pop("bearerTokenSecret")
    source.update(url=url, pollInterval="1s", finalDelay="1s", timeout="2s", retries=1)
    container = spec["trialTemplate"]["spec"]["containers"][0]
    container["command"] = [sys.executable, "-c", TRAINER]
    container["env"] = [
        {"name": "KUBETUNE_METRICS_PORT", "value": "9100"},
        {"name": "KUBETUNE_METRICS_LINGER", "value": "10"},
    ]
    path = tmp_path / "prometheus-objective.json"
    path.write_text(json.dumps(document))
    return path


def query(url: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5.0).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_up_with_prometheus_scrapes_the_operator_and_the_trainers(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    path = prometheus_study(tmp_path, url)
    marker = str(uuid.uuid4())
    # --keep: Prometheus stays up after the study ended, until Ctrl-C, so the test queries a
    # finished study's series without racing the end of the run.
    command = [KUBETUNE, "up", "--prometheus", "--prometheus-port", str(port), "--keep"]
    up = subprocess.Popen(
        # A relative --workdir: Prometheus and the pods must still find their files.
        [*command, "--workdir", "run", "--kubeconfig", "kubeconfig", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert up.stdout is not None
        printed: list[str] = []
        while not printed or not printed[-1].startswith(f"  {url}/graph"):
            line = up.stdout.readline()
            assert line, "kubetune up ended early:\n" + "".join(printed)
            printed.append(line)
        assert f"Prometheus on {url} " in "".join(printed)
        # The study's url is this Prometheus: no hint to change it.
        assert "not from this run's Prometheus" not in "".join(printed)

        # The operator, scraped on its free metrics port, reports the study completed.
        operator = 'kubetune_study_phase{job="kubetune-operator", phase="Completed"} == 1'
        (phase,) = eventually(  # Prometheus has no push notification of new samples
            lambda: query(url, operator), timeout=30, interval=0.2, message=repr(operator)
        )
        assert phase["metric"]["study"] == "prometheus-objective"
        # The trainers were scraped through the kubelet's file_sd, labelled as a PodMonitor
        # labels them: namespace, pod, container, endpoint; not the pod's own labels.
        loss = 'kubetune_trial_metric{job="kubetune-trials", metric="loss"}'
        series = query(url, f"last_over_time({loss}[10m])")
        labels = sorted((s["metric"] for s in series), key=lambda m: m["pod"])
        assert [m["pod"] for m in labels] == ["prometheus-objective-0", "prometheus-objective-1"]
        for metric in labels:
            assert metric["namespace"] == "default"
            assert (metric["container"], metric["endpoint"]) == ("trainer", "metrics")
            assert metric["study"] == "prometheus-objective"  # the trainer's own label
            assert not any(name.startswith("kubetune_io_") for name in metric)

        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
        # Every study had ended, so Ctrl-C is a normal end.
        assert up.returncode == 0, "".join(printed) + rest
        # Values read back from that Prometheus: x = 2 gives exactly 0, its final value.
        assert "Study prometheus-objective: Completed" in rest
        assert re.search(r"best trial [01]: 0\.0 with x=2\b", rest), rest
        # Prometheus stopped with the rest: no process, nothing on its port.
        assert processes_with(marker) == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/-/ready", timeout=2.0)
        assert (tmp_path / "run" / "prometheus" / "data").is_dir()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        kill_leftovers(marker)


def test_without_the_binary_up_says_how_to_install_it_before_starting_anything(
    tmp_path: Path,
) -> None:
    path = ROOT / "examples" / "synthetic-quadratic.yaml"
    kubeconfig = tmp_path / "kubeconfig"
    # This Python's bin folder alone: kubetune runs, prometheus is not there.
    bin_dir = str(Path(sys.executable).parent)
    assert not (Path(bin_dir) / "prometheus").exists()
    result = subprocess.run(
        [KUBETUNE, "up", "--prometheus", "--kubeconfig", str(kubeconfig), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": bin_dir},
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "`prometheus` binary on PATH" in result.stderr
    assert "apt-get install prometheus" in result.stderr
    assert not kubeconfig.exists()

    # --prometheus-port alone is a usage error, not silently ignored.
    result = subprocess.run(
        [KUBETUNE, "up", "--prometheus-port", "9090", "--kubeconfig", str(kubeconfig), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--prometheus-port" in result.stderr
    assert "needs --prometheus" in result.stderr
    assert not kubeconfig.exists()


def test_the_config_is_one_prometheus_accepts(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(8000, tmp_path / "targets")))
    result = subprocess.run(
        ["promtool", "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_study_reading_another_prometheus_gets_a_hint() -> None:
    document: dict[str, Any] = yaml.safe_load(
        (ROOT / "examples" / "prometheus-objective.yaml").read_text()
    )
    plain: dict[str, Any] = yaml.safe_load(
        (ROOT / "examples" / "synthetic-quadratic.yaml").read_text()
    )
    # The example's in-cluster url is not the demo's Prometheus.
    (hint,) = metrics_source_hints([document, plain], "http://127.0.0.1:9090")
    assert "spec.metricsSource.prometheus.url to http://127.0.0.1:9090" in hint
    # Without --prometheus, the hint says how to start one.
    (hint,) = metrics_source_hints([document], None)
    assert "kubetune up --prometheus --prometheus-port 9090" in hint
    # The same server, spelt another way, is no reason for a hint.
    source = document["spec"]["metricsSource"]["prometheus"]
    for same in ("http://localhost:9090", "http://127.0.0.1:9090/"):
        source["url"] = same
        assert metrics_source_hints([document], "http://127.0.0.1:9090") == []

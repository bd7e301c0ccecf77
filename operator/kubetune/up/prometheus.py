"""The Prometheus of `kubetune up --prometheus`: the `prometheus` binary on PATH, scraping the
operator and the trials' metrics ports, and what a study reading Prometheus should point at.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import yaml

from kubetune.up.manifests import UpError
from kubetune_localcluster.environment import free_port

PROMETHEUS_BINARY: Final = "prometheus"
PROMETHEUS_INSTALL_HINT: Final = "apt-get install prometheus"
PROMETHEUS_SCRAPE_INTERVAL: Final = "1s"
"""Short, so the demo's trials (seconds long) are scraped several times each."""
PROMETHEUS_READY_SECONDS: Final = 30.0
"""How long Prometheus may take to answer /-/ready (it replays its storage first)."""
PROMETHEUS_STOP_SECONDS: Final = 10.0
OPERATOR_JOB: Final = "kubetune-operator"
TRIALS_JOB: Final = "kubetune-trials"
LOOPBACK: Final = "127.0.0.1"


def find_prometheus() -> Path:
    """The `prometheus` binary on PATH, or an UpError saying how to get it."""
    found = shutil.which(PROMETHEUS_BINARY)
    if found is None:
        raise UpError(
            f"--prometheus needs the `{PROMETHEUS_BINARY}` binary on PATH and there is none; "
            f"fix: install it (Debian/Ubuntu: `{PROMETHEUS_INSTALL_HINT}`; the package does "
            "not start a server by itself) or leave out --prometheus"
        )
    return Path(found)


def prometheus_config(
    operator_metrics_port: int, targets: Path, scrape_interval: str = PROMETHEUS_SCRAPE_INTERVAL
) -> dict[str, Any]:
    """The demo's Prometheus configuration: the operator's /metrics, and every trial pod's
    metrics endpoint that the kubelet publishes as a file_sd JSON file under `targets`.

    The trials' series carry the labels a PodMonitor gives them in a cluster (namespace, pod,
    container, endpoint), and not the pod's own labels, so that the queries of a study's
    `metricsSource.prometheus` work unchanged here and there."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": OPERATOR_JOB,
                "static_configs": [{"targets": [f"{LOOPBACK}:{operator_metrics_port}"]}],
            },
            {
                "job_name": TRIALS_JOB,
                "file_sd_configs": [
                    {"files": [str(targets / "*.json")], "refresh_interval": scrape_interval}
                ],
                "relabel_configs": [
                    # The kubelet also labels a target with the pod's labels (kubetune_io_study,
                    # ...); a PodMonitor does not: keep the internal labels and its four.
                    {"action": "labelkeep", "regex": "__.+|job|namespace|pod|container"},
                    {"target_label": "endpoint", "replacement": "metrics"},
                ],
            },
        ],
    }


@dataclass
class DemoPrometheus:
    """One `prometheus` process of `kubetune up`, its configuration, storage and log in
    `workdir`, listening on loopback only."""

    binary: Path
    workdir: Path
    port: int | None = None
    """None: a free port, chosen at start."""
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def allowed_urls(self) -> tuple[str, ...]:
        """The URLs studies may give for this Prometheus (metrics_source_hints accepts both)."""
        return (self.url, f"http://localhost:{self.port}")

    @property
    def log(self) -> Path:
        return self.workdir / "prometheus.log"

    async def start(self, config: Mapping[str, Any]) -> None:
        """Start it and return once it is ready; an UpError with its log when it cannot."""
        if self.port is None:
            self.port = free_port()
        storage = self.workdir / "data"
        storage.mkdir(parents=True, exist_ok=True)
        for group in config.get("scrape_configs") or []:
            for sd in group.get("file_sd_configs") or []:
                for pattern in sd["files"]:
                    # Watched from the start: a folder created later is seen only on refresh.
                    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        with self.log.open("ab") as out:
            # A session of its own, as the operator: Ctrl-C reaches `kubetune up` alone, which
            # stops Prometheus after the operator.
            self.process = await asyncio.create_subprocess_exec(
                str(self.binary),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        await self._ready()

    async def _ready(self) -> None:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROMETHEUS_READY_SECONDS
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                if self.process.returncode is not None:
                    raise UpError(
                        f"Prometheus exited with status {self.process.returncode} (is port "
                        f"{self.port} free? --prometheus-port picks another); the end of its "
                        f"log ({self.log}):\n{log_tail(self.log)}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                if loop.time() > deadline:
                    raise UpError(
                        f"Prometheus was not ready after {PROMETHEUS_READY_SECONDS:g} s; the "
                        f"end of its log ({self.log}):\n{log_tail(self.log)}"
                    )
                # Prometheus has no readiness notification but its HTTP endpoint: poll it.
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM (it flushes its storage), then SIGKILL if it lingers."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), PROMETHEUS_STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()


def metrics_source_hints(
    studies: Sequence[Mapping[str, Any]], prometheus_url: str | None
) -> list[str]:
    """What to change so that each study reading its metrics from Prometheus reads the demo's:
    one line per study whose `spec.metricsSource.prometheus.url` is not that Prometheus."""
    hints = []
    for document in studies:
        source = ((document.get("spec") or {}).get("metricsSource") or {}).get("prometheus")
        if not source:
            continue
        name = document["metadata"]["name"]
        url = str(source.get("url", ""))
        if prometheus_url is None:
            hints.append(
                f"study {name} reads its metrics from Prometheus ({url}), which this run does "
                "not start: fix: `kubetune up --prometheus --prometheus-port 9090` with "
                f"spec.metricsSource.prometheus.url http://{LOOPBACK}:9090"
            )
        elif not _same_server(url, prometheus_url):
            hints.append(
                f"study {name} reads its metrics from {url}, not from this run's Prometheus: "
                f"fix: set spec.metricsSource.prometheus.url to {prometheus_url} (choose the "
                "port with --prometheus-port)"
            )
    return hints


def _same_server(url: str, ours: str) -> bool:
    theirs, mine = urlsplit(url), urlsplit(ours)
    loopback = {LOOPBACK, "localhost"}
    return (
        theirs.scheme == mine.scheme
        and theirs.hostname in loopback
        and theirs.port == mine.port
        and theirs.path.strip("/") == ""
    )


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(cannot read it: {error})"

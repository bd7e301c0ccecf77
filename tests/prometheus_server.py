"""A real Prometheus server for the tests (Debian's `prometheus` package, which scripts/test
installs when it is missing), started on a free loopback port with a scrape configuration the
test gives, and queried through its HTTP API."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kubetune_localcluster.environment import free_port
from tests.eventually import eventually

STARTUP_TIMEOUT_S = 30.0


SCRAPED_BY_ENV = "TEST_SCRAPED_BY"
"""A trainer's env: the Prometheus it waits for after its first step (prometheus_trainer)."""


def prometheus_trainer(steps: int, pause: float, hopeless_steps: int | None = None) -> str:
    """A trainer (python -c) exporting on the reporting helper's Prometheus route only: loss
    (x - 2)^2 + 1/step and accuracy step/10 at steps 1..`steps`, `pause` seconds apart, then
    exactly (x - 2)^2 and 0.9 as final values; report_final waits until they were scraped
    (KUBETUNE_METRICS_LINGER).

    A trial whose loss is above 10 trains `hopeless_steps` steps instead, so a test of the
    pruner does not race the trainer's end: pruned, it is stopped long before; not pruned,
    it ends Succeeded and the test fails.

    With SCRAPED_BY_ENV set to a Prometheus URL, the trainer goes on from its first step only
    once that Prometheus holds it (30 s at most): a test that needs a polled intermediate
    value then does not race the discovery and the first scrape of a new pod."""
    return textwrap.dedent(
        f"""\
        import json, os, time, urllib.parse, urllib.request
        from kubetune_report import Reporter

        def wait_until_scraped(url):
            pod = os.environ["KUBETUNE_POD_NAME"]
            query = urllib.parse.urlencode({{"query": f'kubetune_trial_step{{{{pod="{{pod}}"}}}}'}})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with urllib.request.urlopen(f"{{url}}/api/v1/query?{{query}}", timeout=5) as answer:
                    if json.load(answer)["data"]["result"]:
                        return
                time.sleep(0.2)

        reporter = Reporter(
            study=os.environ["KUBETUNE_STUDY"],
            trial=os.environ["KUBETUNE_TRIAL"],
            metrics_port=int(os.environ["KUBETUNE_METRICS_PORT"]),
            metrics_linger=float(os.environ["KUBETUNE_METRICS_LINGER"]),
        )
        x = float(os.environ["KUBETUNE_PARAM_X"])
        steps = {hopeless_steps or steps} if (x - 2) ** 2 > 10 else {steps}
        for step in range(1, steps + 1):
            reporter.report(step, loss=(x - 2) ** 2 + 1 / step, accuracy=step / 10)
            if step == 1 and os.environ.get("{SCRAPED_BY_ENV}"):
                wait_until_scraped(os.environ["{SCRAPED_BY_ENV}"])
            time.sleep({pause})
        reporter.report_final(loss=(x - 2) ** 2, accuracy=0.9)
        """
    )


class PrometheusServer:
    """One `prometheus` process with its own storage directory; stopped by `stop()`.

    `scrape_configs` is the list Prometheus reads under that key; `scrape_interval` is short
    so tests see samples quickly. The lifecycle API is on, so `reload()` applies a changed
    configuration.
    """

    def __init__(
        self,
        workdir: Path,
        scrape_configs: list[dict[str, Any]] | None = None,
        scrape_interval: str = "1s",
        rule_files: list[Path] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.log_path = workdir / "prometheus.log"
        self.scrape_interval = scrape_interval
        self.rule_files = list(rule_files or [])
        self.process: subprocess.Popen[bytes] | None = None
        self.write_config(scrape_configs or [])

    def write_config(self, scrape_configs: list[dict[str, Any]]) -> None:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": scrape_configs,
        }
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        storage = self.workdir / "data"
        storage.mkdir(exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={storage}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = self.process

        def ready() -> bool:  # polling a process that offers no readiness notification
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        eventually(ready, timeout=STARTUP_TIMEOUT_S, message=f"prometheus ready on {self.url}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def reload(self) -> None:
        httpx.post(f"{self.url}/-/reload", timeout=10.0).raise_for_status()

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query; a bad query raises with Prometheus's error."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10.0)
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"{promql!r}: {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(
        self,
        promql: str,
        accept: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Query until the result satisfies `accept` (by default: at least one series); polled,
        as Prometheus has no push notification of new samples."""

        def accepted() -> tuple[list[dict[str, Any]]]:
            result = self.query(promql)
            assert accept(result), f"{promql!r} gave {result}"
            return (result,)  # truthy even when the accepted result is no series

        (result,) = eventually(accepted, timeout=timeout, interval=0.2, message=repr(promql))
        return result


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    """A started Prometheus with no scrape targets; configure with write_config + reload."""
    server = PrometheusServer(tmp_path / "prometheus-fixture")
    server.start()
    yield server
    server.stop()

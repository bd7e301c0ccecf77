"""The metrics endpoints of running pods, published for Prometheus's file-based service
discovery (file_sd_configs): one `<namespace>_<pod>.json` per pod, removed when it ends."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kubetune_localcluster.environment import scrape_targets
from kubetune_localcluster.pod_status import AdmittedPod


class ScrapeTargetFiles:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        """Where the files are written; None: nothing is published."""

    def _file(self, pod: AdmittedPod) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{pod.namespace}_{pod.name}.json"

    def publish(self, pod: AdmittedPod) -> None:
        """Write the pod's metrics endpoints for file_sd (atomically: Prometheus watches the
        folder and must never read half a file)."""
        path = self._file(pod)
        groups = scrape_targets(pod.obj, pod.host_ports)
        if path is None or not groups:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(groups, indent=2))
        os.replace(partial, path)

    def unpublish(self, pod: AdmittedPod) -> None:
        path = self._file(pod)
        if path is not None:
            path.unlink(missing_ok=True)

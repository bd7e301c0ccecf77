"""The studies `kubetune up` runs: read as kubectl reads YAML, checked with the operator's own
rules, and the node that fits them all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from kubetune.spec.manifests import ManifestLoader, parse_study, validate_files
from kubetune_localcluster.cluster import DEFAULT_CAPACITY
from kubetune_localcluster.quantities import parse_quantity, pod_requests


class UpError(Exception):
    """Something the user must fix (a manifest) or know (the operator died), said plainly."""


def key_of(document: Mapping[str, Any]) -> tuple[str, str]:
    metadata = document["metadata"]
    return metadata.get("namespace") or "default", metadata["name"]


def load_studies(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The TuningStudy documents of the files, checked with the operator's own rules first.

    Read as kubectl reads YAML (`1e-5` is a number, an unquoted `y` a boolean), so that what
    is applied means what `kubectl apply -f` would have sent.
    """
    problems = [
        f"{report.source}: {problem}"
        for report in validate_files(paths)
        for problem in report.problems
    ]
    if problems:
        raise UpError("\n".join(problems))
    documents: list[dict[str, Any]] = []
    for path in paths:
        loaded = yaml.load_all(path.read_text(encoding="utf-8"), Loader=ManifestLoader)
        documents.extend(document for document in loaded if document is not None)
    seen: set[tuple[str, str]] = set()
    for document in documents:
        key = key_of(document)
        if key in seen:
            raise UpError(f"two manifests define the study {key[0]}/{key[1]}: rename one")
        seen.add(key)
    return documents


def refuse_jobs_without_a_job_controller(
    studies: Sequence[Mapping[str, Any]], binaries: Path | None
) -> None:
    """UpError for a study whose trials are Jobs on the embedded plane, which has no job
    controller: its Jobs would wait forever, so it is refused with the way out."""
    if binaries is not None:
        return
    for document in studies:
        study, _ = parse_study(document)
        if study is not None and study.spec.trial_template.job is not None:
            raise UpError(
                f"study {study.metadata.name}: its trials are Jobs (spec.trialTemplate.job), "
                "and the embedded control plane has no job controller to run them: run it on "
                "the real one, `kubetune up --binaries DIR` (DIR from scripts/kube-binaries)"
            )


def capacity_for(studies: Sequence[Mapping[str, Any]], gpus: int | None = None) -> dict[str, str]:
    """A node big enough for every study to run `parallelism` trials at once, each with all of
    its pods (and at least
    the default cpu and memory); `gpus` sets its nvidia.com/gpu instead, to try scarcity."""
    needed: dict[str, Fraction] = {}
    for document in studies:
        study, _ = parse_study(document)
        assert study is not None  # load_studies checked them
        requests = pod_requests(document["spec"]["trialTemplate"].get("spec") or {})
        requests.pop("pods", None)  # the node's pod count is not the limit here
        for name, amount in requests.items():
            pods = study.spec.budget.parallelism * study.spec.trial_template.pods_at_once
            needed[name] = needed.get(name, Fraction(0)) + amount * pods
    capacity = dict(DEFAULT_CAPACITY)
    for name, amount in needed.items():
        if name not in capacity or parse_quantity(capacity[name]) < amount:
            capacity[name] = _quantity(amount)
    if gpus is not None:
        capacity["nvidia.com/gpu"] = str(gpus)
    return capacity


def _quantity(amount: Fraction) -> str:
    if amount.denominator == 1:
        return str(amount.numerator)
    return f"{math.ceil(amount * 1000)}m"

"""What may change once a study exists: the immutable spec fields are fingerprinted when the
study starts (status.specFingerprints) and a later change to one is a Problem, the CRD's CEL
transition rules in code."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from pydantic.alias_generators import to_camel

from kubetune.spec.problems import Problem
from kubetune.spec.study import IMMUTABLE_SPEC_FIELDS, TuningStudySpec

FIELDS_ADDED_SINCE_FIRST_RELEASE: Final = {"trial_template": ("job", "primary_container")}
"""Optional fields added to an immutable field's model: left out of its fingerprint while unset,
so that a study started by an older operator keeps its fingerprints after an upgrade."""


def spec_fingerprints(spec: TuningStudySpec) -> dict[str, str]:
    """A short hash of each immutable spec field (camelCase keys). The controller records them
    in status.specFingerprints when a study starts, so a later change is caught even after an
    operator restart, when the old spec is no longer at hand."""
    fingerprints = {}
    for name in IMMUTABLE_SPEC_FIELDS:
        value = getattr(spec, name)
        if isinstance(value, list):
            dumped: Any = [item.model_dump(mode="json") for item in value]
        else:
            dumped = value.model_dump(mode="json") if value is not None else None
            for added in FIELDS_ADDED_SINCE_FIRST_RELEASE.get(name, ()):
                if isinstance(dumped, dict) and dumped.get(added) is None:
                    dumped.pop(added, None)
        text = json.dumps(dumped, sort_keys=True)
        fingerprints[to_camel(name)] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return fingerprints


def immutable_changes(recorded: Mapping[str, str], new: TuningStudySpec) -> list[Problem]:
    """The immutable fields that changed since `recorded` (spec_fingerprints of the spec the
    study started with): the CRD's CEL transition rules, in code."""
    current = spec_fingerprints(new)
    return [
        Problem(
            f"spec.{field}",
            "changed, but it is immutable once the study exists: the trials already run would "
            "no longer be comparable",
            "revert it (budget and parallelism may change; these may not), or create a new study",
        )
        for field, fingerprint in current.items()
        if recorded.get(field, fingerprint) != fingerprint
    ]

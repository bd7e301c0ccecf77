"""What a study's daemon reads instead of asking the API server each time: the objects kopf's
watches deliver (kopf indexes), merged with the operator's own writes that the watches have
not delivered yet (read-your-writes), and each TuningTrial parsed once per version.

Without the writes, a reconcile that runs before the watch catches up would not see the trial
it just created or the outcome it just recorded, and would decide again (a trial asked twice,
an outcome told twice). An object's newer version wins, by resourceVersion: Kubernetes calls
it opaque, but within one resource it is etcd's revision, an integer that only grows (as in
the embedded control plane); a version that is not an integer is never taken as newer.

Pure: no kopf, no client. `kubetune.handlers` feeds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubetune.k8s.fields import as_mapping
from kubetune.spec.trial import TuningTrial

Object = Mapping[str, Any]


def resource_version(obj: Object) -> int:
    """The object's resourceVersion as a number; -1 when it has none or it is not a number."""
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", ""))
    except ValueError:
        return -1


def without_managed_fields(obj: Object) -> dict[str, Any]:
    """The object as the operator keeps it in an index: without metadata.managedFields, the
    API server's record of which client wrote which field, which the operator never reads
    and which grows with every writer of the object."""
    metadata = {k: v for k, v in as_mapping(obj.get("metadata")).items() if k != "managedFields"}
    return {**obj, "metadata": metadata}


def _name(obj: Object) -> str:
    return str(obj["metadata"]["name"])


class OwnWrites:
    """The objects one kind of the operator's writes returned, by name, kept until the watch
    delivers the same version or a newer one, or a deletion (`deleted`, from the watch's
    DELETED events): an index forgets a deleted object, and the write must not outlive it."""

    def __init__(self) -> None:
        self._written: dict[str, Object] = {}
        self._deleted: dict[str, int] = {}

    def remember(self, obj: Object) -> None:
        name = _name(obj)
        version = resource_version(obj)
        if self._deleted.get(name, -1) >= version:
            return  # the watch saw it deleted before this write's response came back
        known = self._written.get(name)
        if known is None or version > resource_version(known):
            self._written[name] = obj

    def deleted(self, obj: Object) -> None:
        """The watch delivered the object's deletion (its last version)."""
        name = _name(obj)
        self._deleted[name] = max(self._deleted.get(name, -1), resource_version(obj))
        known = self._written.get(name)
        if known is not None and resource_version(known) <= self._deleted[name]:
            del self._written[name]

    def holds(self, observed: Object) -> bool:
        """Whether this version of the object, or a newer one, is the operator's own write:
        the watch delivering it (the echo of the write) tells the writer nothing new."""
        written = self._written.get(_name(observed))
        version = resource_version(observed)
        return written is not None and version >= 0 and resource_version(written) >= version

    def merged(self, observed: Iterable[Object]) -> list[Object]:
        """The observed objects, each replaced by the operator's newer write of it, plus the
        written ones not observed yet. Writes the watch has caught up with are forgotten."""
        result: dict[str, Object] = {}
        for obj in observed:
            name = _name(obj)
            written = self._written.get(name)
            if written is not None and resource_version(written) > resource_version(obj):
                result[name] = written
            else:
                self._written.pop(name, None)
                result[name] = obj
        for name, written in self._written.items():
            result.setdefault(name, written)
        return list(result.values())

    def newest(self, observed: Object) -> Object:
        """One observed object, or the operator's newer write of it."""
        return self.merged([observed])[0]

    def __len__(self) -> int:
        return len(self._written)


class ParsedTrials:
    """TuningTrial models by object, parsed once per resourceVersion: a study reconciles many
    times per trial, and parsing every trial each time grows with the square of its trials."""

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[int, TuningTrial]] = {}

    def parse(self, objects: Iterable[Object]) -> tuple[list[TuningTrial], dict[str, str]]:
        """The trials that parse, and the error of each that does not (by name)."""
        trials: list[TuningTrial] = []
        errors: dict[str, str] = {}
        seen: set[str] = set()
        for obj in objects:
            name = _name(obj)
            seen.add(name)
            version = resource_version(obj)
            cached = self._parsed.get(name)
            if cached is not None and cached[0] == version >= 0:
                trials.append(cached[1])
                continue
            try:
                trial = TuningTrial.model_validate(obj)
            except ValueError as error:
                errors[name] = str(error)
                continue
            self._parsed[name] = (version, trial)
            trials.append(trial)
        for gone in set(self._parsed) - seen:
            del self._parsed[gone]
        return trials, errors

"""Keeps a SnapshotStorage in step with the cluster: a list+watch of TuningStudies and of
TuningTrials (one namespace or all), and a study's snapshot rebuilt on each change of it or of
one of its trials. A watch resumes from the last resourceVersion it saw and lists again when the
API server says that version is gone (410)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from kubetune.spec.study import TuningStudy
from kubetune.spec.trial import TuningTrial

from .storage import SnapshotStorage, snapshot_of

GROUP, VERSION = "kubetune.io", "v1alpha1"
WATCH_SECONDS = 300
"""How long one watch request lasts before it is renewed (from the same resourceVersion)."""

logger = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, study name)."""


class Feed:
    """The cluster's studies and trials as last seen, and the storage they feed."""

    def __init__(
        self, api: client.CustomObjectsApi, storage: SnapshotStorage, namespace: str | None
    ) -> None:
        self._api = api
        self._storage = storage
        self._namespace = namespace
        self._lock = threading.Lock()
        self._studies: dict[Key, dict[str, Any]] = {}
        self._trials: dict[Key, dict[str, dict[str, Any]]] = {}
        self.listed = threading.Event()
        """Set once both kinds were listed: the storage shows what the cluster held then."""
        self._listed_kinds: set[str] = set()

    def start(self) -> None:
        """Watch both kinds in daemon threads."""
        for plural in ("tuningstudies", "tuningtrials"):
            threading.Thread(
                target=self._watch_forever, args=(plural,), name=f"feed-{plural}", daemon=True
            ).start()

    # --- Kubernetes I/O ---------------------------------------------------------------------

    def _list_call(self, plural: str) -> Callable[..., Any]:
        if self._namespace is None:
            return lambda **kw: self._api.list_cluster_custom_object(GROUP, VERSION, plural, **kw)
        namespace = self._namespace
        return lambda **kw: self._api.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, **kw
        )

    def _watch_forever(self, plural: str) -> None:
        list_call = self._list_call(plural)
        while True:
            try:
                listing = list_call()
                version = listing["metadata"]["resourceVersion"]
                self._replace_all(plural, listing.get("items", []))
                for event_type, obj in self._events(plural, version):
                    self._apply(plural, event_type, obj)
            except _GoneError:
                logger.info("%s: resourceVersion expired; listing again", plural)
            except Exception:
                # The API server restarting or a network blip: list again after a pause.
                logger.exception("%s: watch failed; listing again", plural)
                threading.Event().wait(2.0)

    def _events(self, plural: str, version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events from `version` on, renewing the watch; _GoneError when the version expired."""
        list_call = self._list_call(plural)
        while True:
            stream = watch.Watch().stream(
                list_call, resource_version=version, timeout_seconds=WATCH_SECONDS
            )
            try:
                for event in stream:
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        if obj.get("code") == 410:
                            raise _GoneError
                        raise RuntimeError(f"watch error: {obj}")
                    version = obj["metadata"]["resourceVersion"]
                    yield event["type"], obj
            except ApiException as error:
                if error.status == 410:
                    raise _GoneError from error
                raise

    # --- the caches and the storage ----------------------------------------------------------

    def _replace_all(self, plural: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            if plural == "tuningstudies":
                before = set(self._studies)
                self._studies = {_study_key(o): o for o in items}
                touched = before | set(self._studies)
            else:
                before = set(self._trials)
                self._trials = {}
                for obj in items:
                    self._trials.setdefault(_trial_key(obj), {})[_name(obj)] = obj
                touched = before | set(self._trials)
            self._listed_kinds.add(plural)
            for key in touched:
                self._refresh(key)
            if len(self._listed_kinds) == 2:
                self.listed.set()

    def _apply(self, plural: str, event_type: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if plural == "tuningstudies":
                key = _study_key(obj)
                if event_type == "DELETED":
                    self._studies.pop(key, None)
                else:
                    self._studies[key] = obj
            else:
                key = _trial_key(obj)
                trials = self._trials.setdefault(key, {})
                if event_type == "DELETED":
                    trials.pop(_name(obj), None)
                else:
                    trials[_name(obj)] = obj
            self._refresh(key)

    def _refresh(self, key: Key) -> None:
        name = f"{key[0]}/{key[1]}"
        document = self._studies.get(key)
        if document is None:
            self._storage.remove(name)
            return
        try:
            study = TuningStudy.model_validate(document)
            trials = [TuningTrial.model_validate(t) for t in self._trials.get(key, {}).values()]
        except ValidationError as error:
            # An object this version cannot read: keep showing what was last readable.
            logger.warning("%s: not shown as it is now: %s", name, error)
            return
        self._storage.replace(snapshot_of(study, trials, self._storage.study_id(name)))


class _GoneError(Exception):
    """The watch's resourceVersion is too old: list again."""


def _name(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def _study_key(obj: dict[str, Any]) -> Key:
    return str(obj["metadata"].get("namespace", "")), _name(obj)


def _trial_key(obj: dict[str, Any]) -> Key:
    return str(obj["metadata"].get("namespace", "")), str(obj.get("spec", {}).get("study", ""))

"""The kopf handlers of the operator: thin, they only wire cluster events to the controller.

One daemon per TuningStudy runs its reconcile loop: it reads the study, its TuningTrials and
its pods, asks kubetune.controller for a Plan (in a worker thread: Optuna work stays off the
event loop), and carries the plan out through kubetune.k8s.api. The daemon is the study's one
lock: reconciles of a study never overlap, and studies never wait for each other. Events on
its trials and pods, and changes of the study's spec or deletion, wake the daemon at once (a
reaction, not a polling interval); a plan's requeue_after wakes it for timeouts. The study's
own status writes do not wake it: they would make every reconcile cause the next.

Reads cost no request: the study is kopf's live body, its trials and pods come from kopf
indexes fed by the watches (kopf starts no daemon before their first listing is complete),
and the operator's own writes are merged in until the watches deliver them (kubetune.k8s.cache).

Importing this module registers the handlers with kopf's default registry; `kubetune operator`
imports it and runs kopf.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import kopf

from kubetune.controller import StudyController
from kubetune.k8s.api import KubeApi
from kubetune.k8s.cache import OwnWrites, ParsedTrials
from kubetune.k8s.pods import observe_pod, pod_essentials
from kubetune.k8s.prometheus import observe_source
from kubetune.metrics import METRICS
from kubetune.spec import api

FINALIZER = f"{api.GROUP}/finalizer"
RETRY_SECONDS = 5.0
"""How soon a reconcile that failed (API error, ...) is tried again."""

StudyKey = tuple[str, str]
"""(namespace, name) of a study."""
IndexKey = tuple[str | None, str | None]
"""(namespace, study label) of a trial or pod, as the indexes key them."""

# Per study: set when something about it changed.
_wakeups: defaultdict[StudyKey, asyncio.Event] = defaultdict(asyncio.Event)


@dataclass
class StudyView:
    """What a study's daemon keeps between reconciles to read without requests."""

    trial_writes: OwnWrites = field(default_factory=OwnWrites)
    pod_writes: OwnWrites = field(default_factory=OwnWrites)
    study_writes: OwnWrites = field(default_factory=OwnWrites)
    parsed: ParsedTrials = field(default_factory=ParsedTrials)


# Per study: the spec generation last seen, so that status-only changes wake nobody.
_generations: dict[StudyKey, int | None] = {}
# Per study with a running daemon: what it keeps between reconciles.
_views: dict[StudyKey, StudyView] = {}


def _wake(namespace: str | None, study: str | None) -> None:
    # Called from async handlers only: asyncio.Event must be set on the event loop's thread
    # (sync kopf handlers run in a thread pool).
    if namespace and study:
        _wakeups[(namespace, study)].set()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's bookkeeping under kubetune.io names; the API client the handlers share."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    memo.api = KubeApi.from_environment()


@kopf.on.event(api.GROUP, api.VERSION, api.STUDY_PLURAL)
async def study_changed(namespace: str | None, name: str | None, meta: kopf.Meta, **_: Any) -> None:
    """Wake the study's daemon when its spec changed or it is being deleted; a change of its
    status alone (the daemon's own writes, mostly) wakes nobody."""
    if not namespace or not name:
        return
    key = (namespace, name)
    generation = meta.get("generation")
    if meta.get("deletionTimestamp") or _generations.get(key) != generation:
        _generations[key] = generation
        _wake(namespace, name)


@kopf.index(api.GROUP, api.VERSION, api.TRIAL_PLURAL)
async def trials_by_study(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[IndexKey, dict[str, Any]]:
    return {(namespace, labels.get(api.STUDY_LABEL)): dict(body)}


@kopf.index("", "v1", "pods", labels={api.STUDY_LABEL: kopf.PRESENT})
async def pods_by_study(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[IndexKey, dict[str, Any]]:
    return {(namespace, labels.get(api.STUDY_LABEL)): pod_essentials(body)}


@kopf.on.event(api.GROUP, api.VERSION, api.TRIAL_PLURAL)
async def trial_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    _wake(namespace, labels.get(api.STUDY_LABEL))  # the index already has the new version


@kopf.on.event("", "v1", "pods", labels={api.STUDY_LABEL: kopf.PRESENT})
async def pod_changed(
    namespace: str | None, labels: kopf.Labels, type: str | None, body: kopf.Body, **_: Any
) -> None:
    study = labels.get(api.STUDY_LABEL)
    view = _views.get((namespace or "", study or ""))
    if type == "DELETED" and view is not None:
        view.pod_writes.deleted(dict(body))  # the index forgot it; so must the writes
    _wake(namespace, study)


@kopf.daemon(api.GROUP, api.VERSION, api.STUDY_PLURAL, cancellation_timeout=10)
async def run_study(
    name: str,
    namespace: str | None,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    body: kopf.Body,
    logger: kopf.Logger,
    **indices: Any,
) -> None:
    """Reconcile the study whenever it, a trial or a pod changes, or a timeout is due."""
    # kopf passes every index by its handler's name.
    trials_by_study: kopf.Index[IndexKey, dict[str, Any]] = indices["trials_by_study"]
    pods_by_study: kopf.Index[IndexKey, dict[str, Any]] = indices["pods_by_study"]
    kube: KubeApi = memo.api
    controller = StudyController()
    assert namespace is not None  # TuningStudy is namespaced
    view = _views[(namespace, name)] = StudyView()
    wakeup = _wakeups[(namespace, name)]

    async def reconcile_now() -> float | None:
        key = (namespace, name)
        trials = list(trials_by_study.get(key, []))
        pods = list(pods_by_study.get(key, []))
        return await reconcile(kube, controller, view, body, trials, pods, logger)

    stop = asyncio.ensure_future(stopped.wait())
    try:
        while not stopped:
            wakeup.clear()
            try:
                with METRICS.handler("reconcile"):
                    requeue_after = await reconcile_now()
            except Exception as error:  # shown to the user as an event, then retried
                logger.exception("reconcile failed")
                kopf.event(
                    body, type="Warning", reason="ReconcileFailed", message=str(error)[:1024]
                )
                requeue_after = RETRY_SECONDS
            woken = asyncio.ensure_future(wakeup.wait())
            await asyncio.wait({woken, stop}, timeout=requeue_after, return_when="FIRST_COMPLETED")
            woken.cancel()
    finally:
        stop.cancel()
        _wakeups.pop((namespace, name), None)
        _generations.pop((namespace, name), None)
        _views.pop((namespace, name), None)
        METRICS.forget_study(namespace, name)  # deleted, or no longer run by this replica


async def reconcile(
    kube: KubeApi,
    controller: StudyController,
    view: StudyView,
    body: kopf.Body,
    trial_objects: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    logger: kopf.Logger,
) -> float | None:
    """One reconcile: read, decide, act. Returns when to look again with nothing changing."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    study = dict(view.study_writes.newest(dict(body)))
    if study["metadata"].get("deletionTimestamp"):
        return None
    trials, unreadable = view.parsed.parse(view.trial_writes.merged(trial_objects))
    for trial_name, error in unreadable.items():
        logger.warning(f"ignoring unreadable trial {trial_name}: {error}")
    observations = {
        pod["metadata"]["name"]: observe_pod(pod) for pod in view.pod_writes.merged(pods)
    }
    # A study with a Prometheus metrics source: the reads the controller asks for (polls of
    # running trials every pollInterval, final reads) become the pods' readings.
    observations = await observe_source(
        controller,
        study,
        trials,
        observations,
        datetime.now(UTC),
        partial(kube.read_object, namespace),
    )
    plan = await asyncio.to_thread(
        controller.reconcile, study, trials, observations, datetime.now(UTC)
    )
    written = await kube.apply(plan, study)
    for trial in written.trials:
        view.trial_writes.remember(trial)
    for pod in written.pods:
        view.pod_writes.remember(pod_essentials(pod))
    if written.study is not None:
        view.study_writes.remember(written.study)
    METRICS.observe_plan(namespace, name, study, trials, plan, datetime.now(UTC))
    for event in plan.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
    return plan.requeue_after


@kopf.on.delete(api.GROUP, api.VERSION, api.STUDY_PLURAL)
async def study_deleted(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Stop the study's running pods at once; owner references remove trials and pods."""
    kube: KubeApi = memo.api
    with METRICS.handler("delete"):
        await kube.delete_study_pods(namespace or "", name)

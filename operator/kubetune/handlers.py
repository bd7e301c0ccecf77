"""The kopf handlers of the operator: thin, they only wire cluster events to the controller.

One daemon per TuningStudy runs its reconcile loop: it reads the study, its TuningTrials and
its pods, asks kubetune.controller for a Plan (in a worker thread: Optuna work stays off the
event loop), and carries the plan out through kubetune.k8s.api. The daemon is the study's one
lock: reconciles of a study never overlap, and studies never wait for each other. Events on
the study, its trials and its pods wake the daemon at once (a reaction, not a polling
interval); a plan's requeue_after wakes it for timeouts.

Importing this module registers the handlers with kopf's default registry; `kubetune operator`
imports it and runs kopf.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import kopf

from kubetune.controller import StudyController
from kubetune.k8s.api import KubeApi
from kubetune.k8s.pods import observe_pod
from kubetune.k8s.prometheus import object_reader, observe_source
from kubetune.metrics import METRICS
from kubetune.spec import api
from kubetune.spec.trial import TuningTrial

FINALIZER = f"{api.GROUP}/finalizer"
RETRY_SECONDS = 5.0
"""How soon a reconcile that failed (API error, ...) is tried again."""

# Per study: set when something about it changed. Keyed by (namespace, name).
_wakeups: defaultdict[tuple[str, str], asyncio.Event] = defaultdict(asyncio.Event)


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
async def study_changed(namespace: str | None, name: str | None, **_: Any) -> None:
    _wake(namespace, name)


@kopf.on.event(api.GROUP, api.VERSION, api.TRIAL_PLURAL)
async def trial_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    _wake(namespace, labels.get(api.STUDY_LABEL))


@kopf.on.event("", "v1", "pods", labels={api.STUDY_LABEL: kopf.PRESENT})
async def pod_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    _wake(namespace, labels.get(api.STUDY_LABEL))


@kopf.daemon(api.GROUP, api.VERSION, api.STUDY_PLURAL, cancellation_timeout=10)
async def run_study(
    name: str,
    namespace: str | None,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    body: kopf.Body,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Reconcile the study whenever it, a trial or a pod changes, or a timeout is due."""
    kube: KubeApi = memo.api
    controller = StudyController()
    assert namespace is not None  # TuningStudy is namespaced
    wakeup = _wakeups[(namespace, name)]
    stop = asyncio.ensure_future(stopped.wait())
    try:
        while not stopped:
            wakeup.clear()
            try:
                with METRICS.handler("reconcile"):
                    requeue_after = await reconcile(kube, controller, body, logger)
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
        METRICS.forget_study(namespace, name)  # deleted, or no longer run by this replica


async def reconcile(
    kube: KubeApi,
    controller: StudyController,
    body: kopf.Body,
    logger: kopf.Logger,
) -> float | None:
    """One reconcile: read, decide, act. Returns when to look again with nothing changing."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    study = await kube.get_study(namespace, name)
    if study is None or study["metadata"].get("deletionTimestamp"):
        return None
    trial_objects = await kube.list_study_trials(namespace, name)
    pods = await kube.list_study_pods(namespace, name)
    trials = []
    for item in trial_objects:
        try:
            trials.append(TuningTrial.model_validate(item))
        except ValueError as error:
            logger.warning(f"ignoring unreadable trial {item['metadata'].get('name')}: {error}")
    observations = {pod["metadata"]["name"]: observe_pod(pod) for pod in pods}
    # A study with a Prometheus metrics source: the reads the controller asks for (polls of
    # running trials every pollInterval, final reads) become the pods' readings.
    reader = object_reader(kube.core, namespace)
    observations = await observe_source(
        controller, study, trials, observations, datetime.now(UTC), reader
    )
    plan = await asyncio.to_thread(
        controller.reconcile, study, trials, observations, datetime.now(UTC)
    )
    await kube.apply(plan, study)
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

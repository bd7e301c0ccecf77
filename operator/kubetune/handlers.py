"""The kopf handlers of the operator: thin, they only wire cluster events to the controller.

One daemon per TuningStudy runs its reconcile loop: it reads the study, its TuningTrials and
its pods, asks kubetune.controller for a Plan, and carries the plan out through
kubetune.k8s.api. The daemon is the study's one lock: reconciles of a study never overlap, and
studies never wait for each other. Each study decides in a thread of its own (parsing its
trials and pods, Optuna's ask, importances), so a slow study holds one thread, never a pool
that the other studies or the API calls (KubeApi's own pool) need. A study whose reconcile
keeps raising is backed off (kubetune.k8s.backoff) and marked with a ReconcileFailed
condition naming the error. Events on its trials and pods (their index handlers wake it),
and changes of the study's spec or deletion, wake the daemon at once (a reaction, not a
polling interval); a plan's requeue_after wakes it for timeouts. The study's own writes do
not wake it (its status, and the watch's echo of its trial, pod and Job writes): they would
make every reconcile cause the next, to decide nothing new. A study that has not
started is also woken by changes of the studies it warm-starts from
(spec.warmStart.fromStudies) and of their trials: it may be waiting for their searches to end.

Reads cost no request: the study is kopf's live body, its trials and pods come from kopf
indexes fed by the watches (kopf starts no daemon before their first listing is complete),
and the operator's own writes are merged in until the watches deliver them (kubetune.k8s.cache).

Importing this module registers the handlers with kopf's default registry; `kubetune operator`
imports it and runs kopf.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import kopf
import kubernetes

from kubetune.controller import PodObservation, StudyController
from kubetune.controller.metrics_source import REFUSE_ALL
from kubetune.controller.observation import SourceReading
from kubetune.controller.warm_start import SourceStudy, source_names, study_essentials
from kubetune.k8s.api import KubeApi, StaleViewError, Written
from kubetune.k8s.backoff import Backoff, first_line
from kubetune.k8s.cache import OwnWrites, ParsedTrials, resource_version, without_managed_fields
from kubetune.k8s.jobs import job_essentials, observe_job
from kubetune.k8s.leader import NotLeadingError
from kubetune.k8s.pods import observe_pod, pod_essentials
from kubetune.k8s.prometheus import read_source
from kubetune.metrics import METRICS
from kubetune.spec import api
from kubetune.spec.trial import TuningTrial

FINALIZER = f"{api.GROUP}/finalizer"
RECONCILE_FAILED = "ReconcileFailed"
"""The study condition (and event reason) of a reconcile that raised."""
DELETE_RETRIES = 5
"""Tries of the delete handler on a transient error before the deletion goes ahead anyway."""
SWITCH_INTERVAL_SECONDS = 0.0005
"""How often a thread that holds the GIL is asked to hand it over (Python's default: 5 ms)."""
STALE_RETRY_SECONDS = 1.0
"""How soon a study whose plan met a newer version of its objects decides again, at the latest
(the watch's delivery of that version wakes it first, a study event included)."""

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
    job_writes: OwnWrites = field(default_factory=OwnWrites)
    study_writes: OwnWrites = field(default_factory=OwnWrites)
    parsed: ParsedTrials = field(default_factory=ParsedTrials)
    source_trials: ParsedTrials = field(default_factory=ParsedTrials)
    """The trials of the studies it warm-starts from."""
    readings: dict[str, SourceReading] = field(default_factory=dict)
    """The metrics source's readings of the reads the last plan asked for, by trial name: the
    next reconcile's input."""
    stale: bool = False
    """The last plan met a newer version of an object it was decided on (StaleViewError): any
    event of the study is news then, such as kopf's own writes of a new study."""


# Per study: the spec generation last seen, so that status-only changes wake nobody.
_generations: dict[StudyKey, int | None] = {}
# Per study with a running daemon: what it keeps between reconciles.
_views: dict[StudyKey, StudyView] = {}
# Per study: the studies that warm-start from it and have not started yet (they may be
# waiting for it), woken by its changes and its trials'.
_importers: defaultdict[StudyKey, set[str]] = defaultdict(set)


def _wake(namespace: str | None, study: str | None) -> None:
    # Called from async handlers only: asyncio.Event must be set on the event loop's thread
    # (sync kopf handlers run in a thread pool).
    if namespace and study:
        _wakeups[(namespace, study)].set()


class StudyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base, kept for studies only. kopf builds it (a deep copy of the object) for
    every event of every watched kind, but only studies have handlers that read it (the daemon,
    the deletion handler): for trials, pods and Jobs the copy was 13 % of the operator's CPU
    at 50 busy studies (bench/operator_cost.py busy, py-spy). They get an empty essence,
    which diffs as no change."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if body.get("kind") != api.STUDY_KIND:
            return cast(kopf.BodyEssence, {})
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") != api.STUDY_KIND:
            return cast(kopf.BodyEssence, {})
        return super().fetch(body=body)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's bookkeeping under kubetune.io names; the API client the handlers share."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = StudyDiffBase(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    # A thread that computes holds the GIL for up to the switch interval each time the event
    # loop wants it back (after every socket read): at the 5 ms default, six studies deciding
    # at once slowed every other study's API calls 40-fold. 0.5 ms hands it back sooner.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    # With --leader-elect, `kubetune operator` puts the lease's fence in the memo.
    memo.api = KubeApi.from_environment(memo.get("fence") or (lambda: None))


@kopf.on.event(api.GROUP, api.VERSION, api.STUDY_PLURAL)
async def study_changed(namespace: str | None, name: str | None, meta: kopf.Meta, **_: Any) -> None:
    """Wake the study's daemon when its spec changed or it is being deleted; a change of its
    status alone (the daemon's own writes, mostly) wakes nobody, unless its last plan was
    refused for a stale view (kopf's own writes of a new study race its first plan)."""
    if not namespace or not name:
        return
    key = (namespace, name)
    generation = meta.get("generation")
    view = _views.get(key)
    if meta.get("deletionTimestamp") or _generations.get(key) != generation:
        _generations[key] = generation
        _wake(namespace, name)
    elif view is not None and view.stale:
        _wake(namespace, name)  # the version its refused write wanted, perhaps
    for importer in _importers.get(key, ()):
        _wake(namespace, importer)  # a source's phase is in its status


@kopf.index(api.GROUP, api.VERSION, api.STUDY_PLURAL)
async def studies_by_name(
    namespace: str | None, name: str | None, body: kopf.Body, **_: Any
) -> dict[StudyKey, dict[str, Any]]:
    """What a study that warm-starts from this one reads of it."""
    return {(namespace or "", name or ""): study_essentials(body)}


# The index handlers run for every event but a deletion, and they wake the study too. The
# woken daemon reads the new version: kopf (1.45, indexing.index_resource) stores a handler's
# result in the index in the same step of the event loop as the handler returns, and the
# daemon runs only after that step. One on.event handler per kind would cost a second pass of kopf's
# handler machinery for each event (7 % of the operator's CPU at 50 busy studies); the
# on.event handlers below run for deletions only, which the index handlers never see.


def _wake_unless_echo(
    namespace: str | None,
    study: str | None,
    body: kopf.Body,
    writes: Callable[[StudyView], OwnWrites],
) -> None:
    """Wake the study, unless the event delivers what its daemon wrote itself (`writes`: which
    of the view's): the plan that wrote it was decided on it already (the view merges the
    operator's writes), so waking for it would only reconcile again to decide nothing. Most
    trial events and a pod's first are such echoes."""
    view = _views.get((namespace or "", study or ""))
    if view is None or not writes(view).holds(body):
        _wake(namespace, study)


def _wake_importers(namespace: str | None, study: str | None) -> None:
    """Wake the studies that warm-start from this one: they may be waiting for its trials
    (and they read its trials from the index alone, so its own writes are news to them)."""
    for importer in _importers.get((namespace or "", study or ""), ()):
        _wake(namespace, importer)


@kopf.index(api.GROUP, api.VERSION, api.TRIAL_PLURAL)
async def trials_by_study(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[IndexKey, dict[str, Any]]:
    study = labels.get(api.STUDY_LABEL)
    _wake_unless_echo(namespace, study, body, lambda view: view.trial_writes)
    _wake_importers(namespace, study)
    return {(namespace, study): without_managed_fields(body)}


@kopf.index("", "v1", "pods", labels={api.STUDY_LABEL: kopf.PRESENT})
async def pods_by_study(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[IndexKey, dict[str, Any]]:
    study = labels.get(api.STUDY_LABEL)
    _wake_unless_echo(namespace, study, body, lambda view: view.pod_writes)
    return {(namespace, study): pod_essentials(body)}


@kopf.index("batch", "v1", "jobs", labels={api.STUDY_LABEL: kopf.PRESENT})
async def jobs_by_study(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[IndexKey, dict[str, Any]]:
    """The Jobs of studies whose trials are Jobs (a cluster that serves no batch/v1, such as
    the embedded plane, leaves this index empty: kopf watches only what is served)."""
    study = labels.get(api.STUDY_LABEL)
    _wake_unless_echo(namespace, study, body, lambda view: view.job_writes)
    return {(namespace, study): job_essentials(body)}


def _is_deletion(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(api.GROUP, api.VERSION, api.TRIAL_PLURAL, when=_is_deletion)
async def trial_deleted(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    study = labels.get(api.STUDY_LABEL)
    _wake(namespace, study)
    _wake_importers(namespace, study)


def _workload_deleted(
    namespace: str | None,
    labels: kopf.Labels,
    body: kopf.Body,
    writes: Callable[[StudyView], OwnWrites],
) -> None:
    """A trial's pod or Job is gone: wake its study, and end the study's own write of it
    (`writes`: which of the view's): the index forgot it; so must the writes."""
    study = labels.get(api.STUDY_LABEL)
    view = _views.get((namespace or "", study or ""))
    if view is not None:
        writes(view).deleted(dict(body))
    _wake(namespace, study)


@kopf.on.event("", "v1", "pods", labels={api.STUDY_LABEL: kopf.PRESENT}, when=_is_deletion)
async def pod_deleted(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> None:
    _workload_deleted(namespace, labels, body, lambda view: view.pod_writes)


@kopf.on.event("batch", "v1", "jobs", labels={api.STUDY_LABEL: kopf.PRESENT}, when=_is_deletion)
async def job_deleted(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> None:
    _workload_deleted(namespace, labels, body, lambda view: view.job_writes)


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
    jobs_by_study: kopf.Index[IndexKey, dict[str, Any]] = indices["jobs_by_study"]
    studies_by_name: kopf.Index[StudyKey, dict[str, Any]] = indices["studies_by_name"]
    kube: KubeApi = memo.api
    # kubetune operator --allow-prometheus (none: no study may read Prometheus) and
    # --trial-service-account (none: any).
    controller = StudyController(memo.get("prometheus") or REFUSE_ALL, memo.get("service_accounts"))
    assert namespace is not None  # TuningStudy is namespaced
    view = _views[(namespace, name)] = StudyView()
    wakeup = _wakeups[(namespace, name)]
    backoff = Backoff()
    # The study's own thread for its decisions: a slow one delays this study only.
    worker = ThreadPoolExecutor(1, thread_name_prefix=f"kubetune-study-{name[:20]}")

    async def reconcile_now() -> float | None:
        key = (namespace, name)
        trials = list(trials_by_study.get(key, []))
        pods = list(pods_by_study.get(key, []))
        jobs = list(jobs_by_study.get(key, []))
        sources: dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]] = {}
        started = bool((body.get("status") or {}).get("startTime"))
        for source in source_names(body):
            found = list(studies_by_name.get((namespace, source), []))
            source_trials = list(trials_by_study.get((namespace, source), []))
            sources[source] = (found[0] if found else None, source_trials)
            waiters = _importers[(namespace, source)]
            if started:
                waiters.discard(name)
            else:
                waiters.add(name)
        return await reconcile(
            kube, controller, view, body, trials, pods, logger, worker, sources, jobs
        )

    loop = asyncio.get_running_loop()
    stop = asyncio.ensure_future(stopped.wait())
    try:
        while not stopped:
            wakeup.clear()
            try:
                with METRICS.handler("reconcile"):
                    requeue_after = await reconcile_now()
                backoff.succeeded()
            except Exception as error:
                requeue_after = await _reconcile_failed(kube, view, body, backoff, error, logger)
            deadline = None if requeue_after is None else loop.time() + requeue_after
            while not stopped:
                woken = asyncio.ensure_future(wakeup.wait())
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                await asyncio.wait({woken, stop}, timeout=timeout, return_when="FIRST_COMPLETED")
                woken.cancel()
                meta = body.metadata
                if not wakeup.is_set() or meta.get("deletionTimestamp"):
                    break
                if not backoff.holds(meta.get("generation")):
                    break
                wakeup.clear()  # a trial or pod changed: a failing study still waits its turn
    finally:
        stop.cancel()
        worker.shutdown(wait=False, cancel_futures=True)
        _wakeups.pop((namespace, name), None)
        _generations.pop((namespace, name), None)
        _views.pop((namespace, name), None)
        for (importers_namespace, _), waiters in _importers.items():
            if importers_namespace == namespace:
                waiters.discard(name)
        METRICS.forget_study(namespace, name)  # deleted, or no longer run by this replica


async def _reconcile_failed(
    kube: KubeApi,
    view: StudyView,
    body: kopf.Body,
    backoff: Backoff,
    error: Exception,
    logger: kopf.Logger,
) -> float:
    """A reconcile raised: back off, and on a new error say so once (log with the traceback,
    a Warning event, the study's ReconcileFailed condition). Returns the delay to wait."""
    reason = first_line(error)
    delay, is_new = backoff.failed(reason, body.metadata.get("generation"))
    if not is_new:
        logger.warning(f"reconcile failed again ({reason}); next try in {delay:.0f} s")
        return delay
    logger.exception(f"reconcile failed; next try in {delay:.0f} s")
    kopf.event(body, type="Warning", reason=RECONCILE_FAILED, message=reason[:1024])
    study = view.study_writes.newest(dict(body))
    conditions = [c for c in _conditions(study) if c.get("type") != RECONCILE_FAILED]
    conditions.append(
        {
            "type": RECONCILE_FAILED,
            "status": "True",
            "reason": type(error).__name__,
            "message": reason,
            "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "observedGeneration": body.metadata.get("generation"),
        }
    )
    try:
        written = await kube.patch_study_status(
            body.metadata.namespace or "", body.metadata.name or "", {"conditions": conditions}
        )
    except Exception as patch_error:  # the API itself may be what fails: the event says it
        logger.warning(f"could not mark the study {RECONCILE_FAILED}: {first_line(patch_error)}")
    else:
        if written is not None:
            view.study_writes.remember(written)
    return delay


def _conditions(study: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = study.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return []
    return [c for c in conditions if isinstance(c, Mapping)]


def _without_failure_mark(study: Mapping[str, Any]) -> dict[str, Any]:
    """The study as the controller reads it: without the ReconcileFailed condition, which is
    the daemon's and not the controller's, so the plan's status drops it once a reconcile
    succeeds."""
    conditions = _conditions(study)
    kept = [c for c in conditions if c.get("type") != RECONCILE_FAILED]
    if len(kept) == len(conditions):
        return dict(study)
    return {**study, "status": {**study["status"], "conditions": kept}}


def _read(
    parsed: ParsedTrials,
    trial_objects: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]] | None,
    container: str | None,
) -> tuple[list[TuningTrial], dict[str, str], dict[str, PodObservation]]:
    """The trials parsed (and the errors of those that do not parse) and their workloads
    observed, by trial name (and the errors of those that cannot be: a pod without containers
    is no trial's pod). `jobs` is None for a study whose trials are pods; `container`: its
    primary container (None: the first)."""
    trials, unreadable = parsed.parse(trial_objects)
    observations: dict[str, PodObservation] = {}
    if jobs is None:
        for pod in pods:
            pod_name = str(pod["metadata"]["name"])
            try:
                observations[pod_name] = observe_pod(pod, container)
            except ValueError as error:
                unreadable[pod_name] = str(error)
        return trials, unreadable, observations
    by_trial: defaultdict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for pod in pods:
        by_trial[str((pod["metadata"].get("labels") or {}).get(api.TRIAL_LABEL, ""))].append(pod)
    jobs_by_name = {str(job["metadata"]["name"]): job for job in jobs}
    for trial_name in {*jobs_by_name, *by_trial} - {""}:
        try:
            observations[trial_name] = observe_job(
                jobs_by_name.get(trial_name), by_trial.get(trial_name, []), container
            )
        except ValueError as error:
            unreadable[trial_name] = str(error)
    return trials, unreadable, observations


def _workload_of(study: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Whether a study's trials are Jobs, and its primary container, from the manifest as it
    is (the controller parses and checks it; a wrong shape reads as a pod trial's)."""
    spec = study.get("spec")
    template = spec.get("trialTemplate") if isinstance(spec, Mapping) else None
    if not isinstance(template, Mapping):
        return False, None
    container = template.get("primaryContainer")
    return template.get("job") is not None, container if isinstance(container, str) else None


def _read_sources(
    parsed: ParsedTrials,
    sources: Mapping[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]],
    logger: kopf.Logger,
) -> dict[str, SourceStudy]:
    """The studies a study warm-starts from, with their trials parsed (once per version)."""
    trials, unreadable = parsed.parse([t for _, objects in sources.values() for t in objects])
    for object_name, error in unreadable.items():
        logger.warning(f"ignoring unreadable {object_name}: {error}")
    by_study: dict[str, list[TuningTrial]] = defaultdict(list)
    for trial in trials:
        by_study[trial.spec.study].append(trial)
    return {
        name: SourceStudy(name, document, tuple(by_study.get(name, ())))
        for name, (document, _) in sources.items()
        if document is not None
    }


async def reconcile(
    kube: KubeApi,
    controller: StudyController,
    view: StudyView,
    body: kopf.Body,
    trial_objects: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    logger: kopf.Logger,
    worker: ThreadPoolExecutor,
    sources: Mapping[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]] | None = None,
    jobs: list[dict[str, Any]] | None = None,
) -> float | None:
    """One reconcile: read, decide, act. Returns when to look again with nothing changing.
    The parsing and the decision run in `worker` (the study's thread), the API calls in
    KubeApi's pool; only merging the operator's own writes runs on the event loop.
    `sources`: each study named in spec.warmStart.fromStudies as the index has it (None:
    there is no such study), with its trial objects. `jobs`: the study's Jobs as the index has
    them (for a study whose trials are Jobs)."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    study = dict(view.study_writes.newest(dict(body)))
    if study["metadata"].get("deletionTimestamp"):
        return None
    loop = asyncio.get_running_loop()
    decided_trials = view.trial_writes.merged(trial_objects)
    is_job, container = _workload_of(study)
    trials, unreadable, observations = await loop.run_in_executor(
        worker,
        _read,
        view.parsed,
        decided_trials,
        view.pod_writes.merged(pods),
        view.job_writes.merged(jobs or []) if is_job else None,
        container,
    )
    for object_name, error in unreadable.items():
        logger.warning(f"ignoring unreadable {object_name}: {error}")
    decided_on = _without_failure_mark(study)
    warm_start: dict[str, SourceStudy] = {}
    if sources:
        warm_start = await loop.run_in_executor(
            worker, _read_sources, view.source_trials, sources, logger
        )
    now = datetime.now(UTC)
    readings, view.readings = view.readings, {}
    plan = await loop.run_in_executor(
        worker, controller.reconcile, decided_on, trials, observations, now, warm_start, readings
    )
    # The status writes are conditional on the versions this plan was decided on.
    versions = {t["metadata"]["name"]: t["metadata"]["resourceVersion"] for t in decided_trials}
    written = Written()
    view.stale = False
    try:
        await kube.apply(plan, study, versions, written)
    except StaleViewError as error:
        logger.info(f"the plan was based on a stale view ({error}); deciding again")
        view.stale = True
        if resource_version(body) > resource_version(study):
            return 0.0  # a newer study came while the plan was written: decide on it now
        return STALE_RETRY_SECONDS
    except NotLeadingError as error:
        logger.error(f"not carrying out the plan: {error}")
        return None  # the process is leaving (kubetune.cli), with nothing more written
    finally:
        _remember(view, written)  # what a stopped plan wrote as well
    METRICS.record_plan(namespace, name, study, trials, plan, now)
    for event in plan.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
    if plan.source_reads is not None:
        # The reads are the plan's last effect (polls of running trials every pollInterval,
        # final reads); the next reconcile, at once (requeue_after 0), decides on the readings.
        view.readings = await read_source(plan.source_reads, partial(kube.read_object, namespace))
    return plan.requeue_after


def _remember(view: StudyView, written: Written) -> None:
    """Keep a plan's writes until the watches deliver them (kubetune.k8s.cache.OwnWrites)."""
    for trial in written.trials:
        view.trial_writes.remember(trial)
    for pod in written.pods:
        view.pod_writes.remember(pod_essentials(pod))
    for job in written.jobs:
        view.job_writes.remember(job_essentials(job))
    if written.study is not None:
        view.study_writes.remember(written.study)


@kopf.on.delete(api.GROUP, api.VERSION, api.STUDY_PLURAL, retries=DELETE_RETRIES, backoff=5)
async def study_deleted(
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    body: kopf.Body,
    logger: kopf.Logger,
    retry: int,
    **_: Any,
) -> None:
    """Stop the study's running pods at once; owner references remove trials and pods. The
    deletion never hangs on this: an error the API will repeat (400, 403, 404, 422: a
    selector it refuses, say) or one that outlasts the retries is logged and shown as an event,
    and the finalizer goes (the pods then end with their trials, by owner reference)."""
    kube: KubeApi = memo.api
    with METRICS.handler("delete"):
        try:
            await kube.delete_study_pods(namespace or "", name, jobs=_workload_of(body)[0])
        except Exception as error:
            permanent = (
                isinstance(error, kubernetes.client.ApiException)
                and error.status is not None
                and 400 <= error.status < 500
                and error.status != 429
            )
            if not permanent and retry + 1 < DELETE_RETRIES:
                raise kopf.TemporaryError(first_line(error), delay=5) from error
            message = (
                f"could not stop the study's pods ({first_line(error)}); the deletion goes "
                "ahead and they are removed with their trials"
            )
            logger.warning(message)
            kopf.event(body, type="Warning", reason="DeleteFailed", message=message[:1024])

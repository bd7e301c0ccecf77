"""A Python client for Kubetune studies on a cluster: apply a TuningStudy, wait for its end,
read its trials, its trial logs, and the study as an `optuna.Study` for optuna.visualization.

    client = kubetune.client.connect()
    study = client.apply("examples/synthetic-quadratic.yaml")
    status = client.wait(study.metadata.name, timeout=600)
    optuna_study = client.to_optuna(study.metadata.name)

An adapter: it talks to the API server with the `kubernetes` client and returns the API's own
pydantic models (kubetune.spec.study, kubetune.spec.trial). `kubetune trials` and `kubetune logs`
read the cluster through it.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import kubernetes
import yaml

import kubetune.kubeconfig
from kubetune.spec import api
from kubetune.spec.study import TuningStudy
from kubetune.spec.study_status import StudyPhase, TuningStudyStatus
from kubetune.spec.trial import TuningTrial

if TYPE_CHECKING:
    import optuna

    from kubetune.spec.problems import Problem

FIELD_MANAGER = "kubetune-client"
"""The manager of the fields this client applies (metadata.managedFields)."""

ENDED_PHASES = frozenset({StudyPhase.COMPLETED, StudyPhase.FAILED, StudyPhase.INVALID})
"""The phases `wait` returns at: a study in one of them does not change any more."""


class ClientError(Exception):
    """Something the client cannot do, and why."""


class ConfigError(ClientError):
    """No cluster to talk to: the kubeconfig cannot be read, and this is not a pod."""


class InvalidStudyError(ClientError, ValueError):
    """A manifest that is not a valid TuningStudy; `problems` names each field and its fix."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.problems = problems
        listed = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{source} is not a valid TuningStudy:\n{listed}")


class NotFoundError(ClientError, LookupError):
    """No such study, or no such trial of it."""


class NoLogError(ClientError):
    """A trial that has no log to read (no pod yet, or its pod is gone)."""


class UnreadableTrialWarning(UserWarning):
    """A TuningTrial these models cannot read (written by an operator of another version)."""


def connect(kubeconfig: str | Path | None = None, namespace: str | None = None) -> Client:
    """A client of the cluster a kubeconfig names, or of the cluster this pod runs in.

    Without `kubeconfig`: $KUBECONFIG, else (in a pod) the service account, else
    ~/.kube/config. The namespace defaults to the kubeconfig context's, the pod's, or `default`.
    """
    try:
        connection = kubetune.kubeconfig.connect(kubeconfig)
    except kubetune.kubeconfig.KubeconfigError as error:
        raise ConfigError(str(error)) from error
    return Client(connection.api_client, namespace or connection.namespace)


class Client:
    """Kubetune's objects in one namespace of a cluster. Close it (or use it as a context
    manager) to release its connections."""

    def __init__(self, api_client: Any, namespace: str = "default") -> None:
        self.api_client = api_client
        self.namespace = namespace
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- studies ---------------------------------------------------------------------------

    def apply(self, manifest: str | Path | Mapping[str, Any] | TuningStudy) -> TuningStudy:
        """Create or update a TuningStudy (server-side apply) and return it as the API server
        stored it. `manifest` is a model, a mapping, a YAML file's path, or YAML text; it is
        validated first, with `kubetune validate`'s rules (InvalidStudyError lists the
        problems)."""
        from kubetune.spec.manifests import parse_study

        source, document = _document(manifest)
        study, problems = parse_study(document)
        if problems or study is None:
            raise InvalidStudyError(source, problems)
        name = study.metadata.name
        if not name:
            raise InvalidStudyError(
                source, [_problem("metadata.name", "is missing", "name the study")]
            )
        namespace = study.metadata.namespace or self.namespace
        body = {**document, "metadata": {**document["metadata"], "namespace": namespace}}
        applied = self._custom.patch_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            namespace,
            api.STUDY_PLURAL,
            name,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
            # Unparsed: the client decodes only a 200, and an apply that creates answers 201.
            _preload_content=False,
        )
        return TuningStudy.model_validate(json.loads(_data(applied)))

    def study(self, name: str) -> TuningStudy:
        """The TuningStudy `name`, as stored (status included)."""
        return TuningStudy.model_validate(self._get_study(name))

    def wait(self, name: str, timeout: float | None = None) -> TuningStudyStatus:
        """The final status of study `name`: it returns once the study is Completed, Failed
        or Invalid, watching it meanwhile. TimeoutError after `timeout` seconds, naming the
        phase it was still in."""
        deadline = None if timeout is None else time.monotonic() + timeout
        document = self._get_study(name)
        while True:
            status = TuningStudyStatus.model_validate(document.get("status") or {})
            if status.phase in ENDED_PHASES:
                return status
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(
                    f"TuningStudy {name} in namespace {self.namespace} is still "
                    f"{status.phase.value} after {timeout}s"
                    + (f": {status.message}" if status.message else "")
                )
            document = self._next_version(name, document, remaining)

    def _next_version(
        self, name: str, document: Mapping[str, Any], remaining: float | None
    ) -> dict[str, Any]:
        """The study once it changes after `document` (or as it is when the watch ends)."""
        watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        options: dict[str, Any] = {
            "field_selector": f"metadata.name={name}",
            "resource_version": document["metadata"].get("resourceVersion"),
            # Whole seconds: the server ends the watch then, and the loop checks the deadline.
            "timeout_seconds": 60 if remaining is None else max(1, int(remaining + 0.999)),
        }
        try:
            for event in watch.stream(  # type: ignore[no-untyped-call]
                self._custom.list_namespaced_custom_object,
                api.GROUP,
                api.VERSION,
                self.namespace,
                api.STUDY_PLURAL,
                **options,
            ):
                if event["type"] == "DELETED":
                    raise NotFoundError(
                        f"TuningStudy {name} was deleted from namespace {self.namespace} "
                        "before it ended"
                    )
                if event["type"] in ("ADDED", "MODIFIED"):
                    return dict(event["object"])
        except kubernetes.client.ApiException as error:
            if error.status != 410:  # 410 Gone: the version is too old; read it again
                raise
        finally:
            watch.stop()  # type: ignore[no-untyped-call]
        return self._get_study(name)

    def _get_study(self, name: str) -> dict[str, Any]:
        try:
            found: Any = self._custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, self.namespace, api.STUDY_PLURAL, name
            )
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                raise NotFoundError(
                    f"no TuningStudy {name} in namespace {self.namespace} "
                    f"(kubectl get tuningstudies -n {self.namespace} lists them)"
                ) from None
            raise
        return dict(found)

    # --- trials ----------------------------------------------------------------------------

    def trials(self, name: str) -> list[TuningTrial]:
        """The TuningTrials of study `name` (search trials and re-evaluation runs), by number,
        each search trial before its re-runs, those by repeat. A record these models cannot
        read is left out with an UnreadableTrialWarning naming it."""
        models = []
        for item in self._trial_items(name):
            try:
                models.append(TuningTrial.model_validate(item))
            except ValueError as error:
                trial = item["metadata"].get("name")
                warnings.warn(
                    f"skipping unreadable trial {trial}: {error}",
                    UnreadableTrialWarning,
                    stacklevel=2,
                )
        return sorted(models, key=_trial_order)

    def to_optuna(self, name: str) -> optuna.Study:
        """Study `name` as an in-memory `optuna.Study` named namespace/name: its search trials
        with their params, values, intermediate values and states; re-runs and held-out metrics
        as user attributes (kubetune.engine.export). For optuna.visualization, optuna.importance
        and `trials_dataframe()`."""
        from kubetune.engine.export import optuna_study

        study = self.study(name)
        return optuna_study(study.spec, f"{self.namespace}/{name}", self.trials(name))

    def _trial_items(self, name: str) -> list[dict[str, Any]]:
        listing: Any = self._custom.list_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            self.namespace,
            api.TRIAL_PLURAL,
            label_selector=f"{api.STUDY_LABEL}={name}",
        )
        items: list[dict[str, Any]] = listing["items"]
        return items

    # --- logs ------------------------------------------------------------------------------

    def logs(
        self,
        name: str,
        trial: int | str,
        container: str | None = None,
        tail: int | None = None,
        rank: int = 0,
    ) -> str:
        """What a trial's pod's container printed (running, finished or stopped). `trial` is
        its number or its TuningTrial's name; `container` defaults to the pod's first, `tail`
        keeps the last lines only; `rank`: for a trial that is a Job, the completion index of
        its pod (0, the primary, unless given). NoLogError says why a trial has none."""
        found = self._find_trial(name, str(trial))
        trial_name, number = found["metadata"]["name"], found["spec"]["number"]
        status = found.get("status") or {}
        state = status.get("state") or "Pending"
        pod_name = status.get("podName")
        if not pod_name and state == "Pending":
            raise NoLogError(
                f"trial {number} ({trial_name}) has no pod yet: it is Pending; its log exists "
                f"once its pod runs (kubectl get tuningtrial {trial_name} -n {self.namespace} "
                "shows its state)"
            )
        if not pod_name:
            why = status.get("message") or status.get("reason") or "no reason recorded"
            raise NoLogError(f"trial {number} ({trial_name}) ended {state} without a pod: {why}")
        try:
            pod = self._trial_pod(trial_name, pod_name, rank)
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
            why = status.get("message") or status.get("reason") or "none recorded"
            raise NoLogError(
                f"the pod {pod_name} of trial {number} ({trial_name}, {state}) no longer "
                "exists: pods of ended trials are removed by the study's pod retention rule "
                f"(spec.podRetention). The trial's status.message keeps why it ended: {why}"
            ) from None
        pod_name = pod["metadata"]["name"]
        spec = pod.get("spec") or {}
        names = [str(c.get("name")) for c in spec.get("containers") or []]
        every = names + [str(c.get("name")) for c in spec.get("initContainers") or []]
        chosen = container or names[0]
        if chosen not in every:
            raise NotFoundError(
                f"the pod {pod_name} of trial {number} has no container {chosen}: give one of "
                f"{', '.join(every)} (kubetune logs --container, or Client.logs(container=...))"
            )
        options: dict[str, Any] = {"container": chosen}
        if tail is not None:
            options["tail_lines"] = tail
        # Unparsed (_preload_content=False): the client would decode a log that happens to be
        # JSON into a dict.
        log = self._core.read_namespaced_pod_log(
            pod_name, self.namespace, _preload_content=False, **options
        )
        return _data(log).decode("utf-8", "replace")

    def _trial_pod(self, trial_name: str, pod_name: str, rank: int) -> dict[str, Any]:
        """The trial's pod: the one its status names, or for a trial that is a Job (whose
        status names the Job) its pod of completion index `rank`, the newest after a retry.
        An ApiException 404 when there is none."""
        listing = self._core.list_namespaced_pod(
            self.namespace,
            label_selector=f"{api.TRIAL_LABEL}={trial_name}",
            _preload_content=False,
        )
        pods: list[dict[str, Any]] = json.loads(_data(listing)).get("items") or []
        for pod in pods:
            if pod["metadata"]["name"] == pod_name:
                return pod
        of_rank = [
            pod
            for pod in pods
            if (pod["metadata"].get("annotations") or {}).get(api.JOB_COMPLETION_INDEX_ANNOTATION)
            == str(rank)
        ]
        if not of_rank:
            raise kubernetes.client.ApiException(status=404, reason=f"no pod of {trial_name}")
        return max(of_rank, key=lambda pod: str(pod["metadata"].get("creationTimestamp")))

    def _find_trial(self, name: str, trial: str) -> dict[str, Any]:
        """The TuningTrial of study `name` named `trial`, or numbered `trial`."""
        self._get_study(name)
        items = self._trial_items(name)
        wanted = int(trial) if trial.isdigit() else None
        # A search trial before the re-runs of its configuration, which share its number.
        for item in sorted(items, key=lambda i: "reevaluation" in (i.get("spec") or {})):
            number = (item.get("spec") or {}).get("number")
            if item["metadata"]["name"] == trial or (wanted is not None and number == wanted):
                return item
        numbers = [
            item["spec"]["number"]
            for item in items
            if isinstance((item.get("spec") or {}).get("number"), int)
        ]
        if not numbers:
            raise NotFoundError(f"TuningStudy {name} has no trials yet")
        raise NotFoundError(
            f"TuningStudy {name} has no trial {trial}: give a trial number "
            f"({number_ranges(numbers)}) or a TuningTrial name (kubetune trials {name} "
            "lists them)"
        )


def number_ranges(numbers: list[int]) -> str:
    """Trial numbers as ranges: [0, 1, 2, 5] -> "0-2, 5"."""
    ranges: list[str] = []
    ordered = sorted(set(numbers))
    start = previous = ordered[0]
    for number in [*ordered[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        ranges.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(ranges)


def _trial_order(trial: TuningTrial) -> tuple[int, int]:
    run = trial.spec.reevaluation
    return trial.spec.number, -1 if run is None else run.repeat


def _document(manifest: str | Path | Mapping[str, Any] | TuningStudy) -> tuple[str, Any]:
    """Where a manifest came from (for errors) and its one document."""
    if isinstance(manifest, TuningStudy):
        return f"TuningStudy {manifest.metadata.name}", manifest.to_manifest()
    if isinstance(manifest, Mapping):
        return "the manifest", dict(manifest)
    if isinstance(manifest, Path) or ("\n" not in manifest and Path(manifest).is_file()):
        path = Path(manifest)
        source, text = str(path), path.read_text()
    else:
        source, text = "the manifest", manifest
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise InvalidStudyError(
            source, [_problem("", f"is not YAML: {error}", "fix the YAML syntax")]
        ) from None
    if len(documents) != 1:
        raise InvalidStudyError(
            source,
            [
                _problem(
                    "",
                    f"holds {len(documents)} documents",
                    "give one TuningStudy per apply",
                )
            ],
        )
    return source, documents[0]


def _problem(path: str, message: str, fix: str) -> Problem:
    from kubetune.spec.problems import Problem

    return Problem(path, message, fix)


def _data(response: Any) -> bytes:
    """The body of a `kubernetes` client call made with _preload_content=False."""
    return bytes(response.data)

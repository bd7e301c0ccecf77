"""The `kubetune` command line: validation of manifests, the generated CRDs, local runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kubetune.spec.study_status import Recommendation, ReevaluationStatus, TuningStudyStatus
from kubetune.spec.trial import TuningTrial
from kubetune.summaries import (
    front_lines,
    held_out_lines,
    importance_lines,
    reevaluation_lines,
    reevaluation_of,
    trials_tables,
)

if TYPE_CHECKING:
    from kubetune.client import Client as KubetuneClient

app = typer.Typer(
    name="kubetune",
    help="Kubetune: hyperparameter tuning on Kubernetes with Optuna.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="TuningStudy manifests (YAML, multi-doc).")],
) -> None:
    """Check TuningStudy manifests offline, with the operator's own rules.

    Prints every problem with its field path and how to fix it; exits 1 when any is invalid.
    """
    from kubetune.spec.manifests import validate_files

    reports = validate_files(files)
    invalid = False
    for report in reports:
        if report.problems:
            invalid = True
            typer.echo(f"{report.source}: invalid")
            for problem in report.problems:
                typer.echo(f"  {problem}")
        else:
            typer.echo(f"{report.source}: valid")
    raise typer.Exit(code=1 if invalid else 0)


@app.command()
def crds(
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Write one file per CRD here instead."),
    ] = None,
) -> None:
    """Print the CustomResourceDefinitions generated from the API models."""
    from kubetune.spec.crd import crd_files

    files = crd_files()
    if output_dir is None:
        typer.echo("---\n".join(files.values()), nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (output_dir / name).write_text(text)
        typer.echo(f"wrote {output_dir / name}")


@app.command("run-local", hidden=True)
def run_local(
    file: Annotated[Path, typer.Argument(help="A TuningStudy manifest.")],
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where the operator's log and the pods' folders go."),
    ] = None,
) -> None:
    """Deprecated: `kubetune up FILE`, which this runs.

    run-local had a process runner of its own beside the local kubelet, with only the
    termination-message route; `kubetune up` runs the same study through the real operator
    and kubelet, with every route of the trial contract.
    """
    import tempfile

    typer.echo("kubetune run-local is now `kubetune up`; running that.", err=True)
    folder = workdir or Path(tempfile.mkdtemp(prefix="kubetune-up-"))
    up([file], workdir=folder, kubeconfig=folder / "kubeconfig")


def _print_trials(
    trials: list[TuningTrial],
    study: str | None = None,
    reevaluation: ReevaluationStatus | None = None,
    recommendation: Recommendation | None = None,
) -> None:
    """The trials' tables (kubetune.summaries.trials_tables), printed at least 120 wide."""
    from rich.console import Console

    console = Console()
    # Off a terminal rich assumes 80 columns, too narrow for the params.
    wide = Console(width=max(console.width, 120))
    for table in trials_tables(trials, study, reevaluation, recommendation):
        wide.print(table)


@app.command("operator")
def run_operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch these namespaces (default: all)."),
    ] = None,
    liveness: Annotated[
        str | None,
        typer.Option(help="Serve liveness at this URL, e.g. http://0.0.0.0:8080/healthz."),
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="Serve Prometheus metrics on /metrics at this port (0: off)."
        ),
    ] = 8000,
    metrics_bind_address: Annotated[
        str,
        typer.Option(
            help="Address the metrics server listens on: 127.0.0.1 (default) lets only this "
            "host scrape; in a pod give 0.0.0.0 and let a NetworkPolicy admit Prometheus only."
        ),
    ] = "127.0.0.1",
    leader_elect: Annotated[
        bool,
        typer.Option(
            help="Several replicas, one leader (HA): kopf starts once this replica holds a "
            "coordination.k8s.io/v1 Lease, and the process exits (status 1) if it loses it."
        ),
    ] = False,
    leader_elect_lease_duration: Annotated[
        float,
        typer.Option(
            min=1, help="Seconds a candidate waits after the lease last changed to take it."
        ),
    ] = 15.0,
    leader_elect_renew_deadline: Annotated[
        float,
        typer.Option(
            min=1, help="Seconds the leader keeps trying to renew before it stops leading."
        ),
    ] = 10.0,
    leader_elect_retry_period: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds between tries to acquire or renew the lease."),
    ] = 2.0,
    leader_elect_resource_name: Annotated[str, typer.Option(help="The Lease's name.")] = "kubetune",
    leader_elect_resource_namespace: Annotated[
        str | None,
        typer.Option(help="The Lease's namespace (default: the pod's own, else default)."),
    ] = None,
    peering: Annotated[
        str | None,
        typer.Option(
            help="kopf peering name (deprecated for HA: peering pauses a replica, it does "
            "not fence it; use --leader-elect)."
        ),
    ] = None,
    priority: Annotated[
        int | None,
        typer.Option(
            help="Peering priority: of the live replicas, the one with the highest acts "
            "(default with --peering: random, as replicas must differ; equal ones all pause)."
        ),
    ] = None,
    peering_lifetime: Annotated[
        int,
        typer.Option(
            min=1,
            help="Seconds a replica's peering keep-alive stays valid: a standby takes over "
            "this long after the active replica dies.",
        ),
    ] = 60,
    allow_prometheus: Annotated[
        list[str] | None,
        typer.Option(
            help="A Prometheus URL prefix studies may read (scheme, host, port and a path "
            "prefix; repeatable). Without one, studies with a Prometheus source are Invalid."
        ),
    ] = None,
    prometheus_namespace_label: Annotated[
        str | None,
        typer.Option(
            help="Send each query with this label set to the study's namespace as a query "
            "parameter, for a prom-label-proxy -label NAME in front of the allowed URLs."
        ),
    ] = None,
    trial_service_account: Annotated[
        list[str] | None,
        typer.Option(
            help="A ServiceAccount trial pods may run as (repeatable; default: any). A study "
            "whose pods name another is Invalid."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Log every handler call.")] = False,
) -> None:
    """Run the Kubetune operator against the current kubeconfig or in-cluster config."""
    import logging
    import secrets
    import sys

    # optuna.importance imports its fANOVA evaluator, which loads scikit-learn (and scipy)
    # whenever it is installed: 110 MiB and a second of start-up for what the operator never
    # calls (its importances are PED-ANOVA's). Marked absent, optuna's optional import of it
    # fails quietly; nothing in this process uses scikit-learn.
    sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]

    import kopf

    import kubetune.handlers  # noqa: F401 (registers the handlers)
    from kubetune.controller.metrics_source import PrometheusPolicy
    from kubetune.metrics import METRICS

    try:
        prometheus = PrometheusPolicy.of(allow_prometheus or [], prometheus_namespace_label)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--allow-prometheus") from error
    service_accounts = frozenset(trial_service_account) if trial_service_account else None

    if metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(metrics_port, metrics_bind_address, registry=METRICS.registry)
        except OSError as error:
            raise typer.BadParameter(
                f"cannot serve metrics on {metrics_bind_address} port {metrics_port}: {error}",
                param_hint="--metrics-port",
            ) from error
    kopf.configure(verbose=verbose)
    if not verbose:
        # kopf logs each handler call at INFO ("Handler 'pod_deleted' succeeded"), several per
        # trial: noise at scale, and a measurable share of the operator's CPU. What happens to
        # a study is in its Kubernetes events; warnings and errors still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = namespace or []
    settings = kopf.OperatorSettings()
    if leader_elect:
        if peering is not None:
            raise typer.BadParameter(
                "--leader-elect replaces kopf peering: give one of them", param_hint="--peering"
            )
        raise typer.Exit(
            _run_leading(
                namespaces,
                liveness,
                settings,
                lease_duration=leader_elect_lease_duration,
                renew_deadline=leader_elect_renew_deadline,
                retry_period=leader_elect_retry_period,
                name=leader_elect_resource_name,
                namespace=leader_elect_resource_namespace,
                memo=kopf.Memo(prometheus=prometheus, service_accounts=service_accounts),
            )
        )
    settings.peering.lifetime = peering_lifetime
    if peering is not None and priority is None:
        priority = secrets.randbelow(2**31 - 1) + 1
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
        peering_name=peering,
        standalone=peering is None,
        priority=priority,
        settings=settings,
        memo=kopf.Memo(prometheus=prometheus, service_accounts=service_accounts),
    )


def _run_leading(
    namespaces: list[str],
    liveness: str | None,
    settings: Any,
    *,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    name: str,
    namespace: str | None,
    memo: Any,
) -> int:
    """kopf under leader election (kubetune.k8s.leader.lead): its exit status."""
    import asyncio

    import kopf

    from kubetune.k8s import leader
    from kubetune.kubeconfig import pod_namespace

    try:
        leader.check_timing(lease_duration, renew_deadline, retry_period)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    store = leader.KubeLeaseStore.from_environment(namespace or pod_namespace(), name)
    elector = leader.LeaseElector(
        store,
        leader.default_identity(),
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
    )

    async def operate(stop: asyncio.Event) -> None:
        await kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            standalone=True,  # the lease decides who acts, not kopf's peering
            settings=settings,
            memo=kopf.Memo(memo, fence=elector.fence),
            stop_flag=stop,
        )

    return asyncio.run(leader.lead(elector, operate, liveness))


Binaries = Annotated[
    Path | None,
    typer.Option(
        help="Run on the real control plane (etcd, kube-apiserver, kube-controller-manager, "
        "kube-scheduler) from this folder, the last line of ./scripts/kube-binaries; "
        "default: the embedded API server."
    ),
]
"""The --binaries option of `kubetune up` and `kubetune cluster up`."""


@app.command()
def up(
    files: Annotated[list[Path], typer.Argument(help="TuningStudy manifests (YAML, multi-doc).")],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the final TuningStudy objects as JSON instead.")
    ] = False,
    keep: Annotated[
        bool, typer.Option(help="Leave everything running once the studies end, until Ctrl-C.")
    ] = False,
    kubeconfig: Annotated[
        Path, typer.Option(help="Where to write the kubeconfig for kubectl beside it.")
    ] = Path("kubetune.kubeconfig"),
    gpus: Annotated[
        int | None,
        typer.Option(help="nvidia.com/gpu the node offers (default: enough for every study)."),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Where the operator's log and the pods' folders go (default: a temp dir)."
        ),
    ] = None,
    prometheus: Annotated[
        bool,
        typer.Option(
            help="Also run Prometheus (the `prometheus` binary on PATH) scraping the operator "
            "and the trials' metrics ports; it prints its URL."
        ),
    ] = False,
    prometheus_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Port of that Prometheus on 127.0.0.1 (default: a free one); 9090 serves a "
            "study whose metricsSource.prometheus.url is http://127.0.0.1:9090.",
        ),
    ] = None,
    binaries: Binaries = None,
) -> None:
    """Run studies on this machine: a local control plane, the operator, live progress.

    Starts the embedded API server and kubelet (pods run as local processes), installs the
    CRDs, runs `kubetune operator` against them, applies the manifests and shows progress.
    With --prometheus, a real Prometheus scrapes the operator and the trials meanwhile.
    Exits when every study has ended: 0 when all completed, 1 when one failed or was invalid.
    """
    import asyncio
    import json
    import tempfile

    from rich.console import Console

    with _local_cluster("up"):
        from kubetune.up.manifests import (
            UpError,
            capacity_for,
            load_studies,
            refuse_jobs_without_a_job_controller,
        )
        from kubetune.up.prometheus import find_prometheus
        from kubetune.up.run import Up
        from kubetune_localcluster.real import ControlPlaneError

    if prometheus_port is not None and not prometheus:
        raise typer.BadParameter("it needs --prometheus", param_hint="--prometheus-port")
    try:
        studies = load_studies(files)
        refuse_jobs_without_a_job_controller(studies, binaries)
        prometheus_binary = find_prometheus() if prometheus else None
    except UpError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    # With --json, stdout carries the JSON alone; everything for people goes to stderr.
    console = Console(stderr=json_output)
    if not console.is_terminal:
        # Off a terminal rich assumes 80 columns, too narrow for the tables.
        console = Console(stderr=json_output, width=120)
    run = Up(
        studies=studies,
        kubeconfig=kubeconfig,
        workdir=workdir or Path(tempfile.mkdtemp(prefix="kubetune-up-")),
        capacity=capacity_for(studies, gpus),
        keep=keep,
        console=console,
        live=not json_output,
        prometheus=prometheus_binary,
        prometheus_port=prometheus_port,
        binaries=binaries,
    )
    try:
        outcome = asyncio.run(run.run())
    except (UpError, ControlPlaneError) as error:
        typer.echo(f"kubetune up: {error}", err=True)
        raise typer.Exit(code=1) from None
    if json_output:
        listing = {"apiVersion": "v1", "kind": "List", "items": outcome.studies}
        typer.echo(json.dumps(listing, indent=2))
    else:
        for study in outcome.studies:
            trials = []
            for item in outcome.trials.get(_key(study), []):
                with contextlib.suppress(ValueError):
                    trials.append(TuningTrial.model_validate(item))
            reevaluation, recommendation = reevaluation_of(study.get("status") or {})
            _print_trials(trials, study["metadata"]["name"], reevaluation, recommendation)
            _print_ending(study, trials)
    if outcome.interrupted and outcome.exit_code == 130:
        typer.echo("Interrupted before every study ended.", err=True)
    raise typer.Exit(code=outcome.exit_code)


def _key(study: dict[str, Any]) -> tuple[str, str]:
    return study["metadata"].get("namespace") or "default", study["metadata"]["name"]


def _print_ending(study: dict[str, Any], trials: list[TuningTrial]) -> None:
    """A study's phase, why it ended, its best trial (its parameters read from the trial
    itself, the record of what ran) and its held-out metrics, the top parameter importances
    and the re-evaluation's recommendation."""
    from kubetune.spec.values import format_params

    status = study.get("status") or {}
    name, phase = study["metadata"]["name"], status.get("phase") or "Pending"
    ending = next(
        (
            c
            for c in status.get("conditions") or []
            if c["type"] in ("Completed", "Failed") and c["status"] == "True"
        ),
        None,
    )
    why = f" ({ending['reason']}: {ending.get('message', '')})" if ending else ""
    typer.echo(f"Study {name}: {phase}{why}")
    best = status.get("bestTrial")
    if best:
        shown = best.get("value") if best.get("value") is not None else best.get("values")
        params = next(
            (t.spec.params for t in trials if t.spec.number == best["number"]), best["params"]
        )
        typer.echo(f"  best trial {best['number']}: {shown} with {format_params(params)}")
    else:
        typer.echo("  no trial completed")
    objective = (study.get("spec") or {}).get("objective") or {}
    if best:
        for line in held_out_lines(best["number"], trials, objective.get("additionalMetrics")):
            typer.echo(f"  {line}")
    if status.get("paretoFrontSize"):
        front = [(m["number"], m["values"]) for m in status.get("paretoFront") or []]
        metrics = objective.get("metrics") or []
        for line in front_lines(front, status["paretoFrontSize"], metrics):
            typer.echo(f"  {line}")
    for line in importance_lines(status.get("importances"), status.get("importancesTrials")):
        typer.echo(f"  {line}")
    for line in reevaluation_lines(*reevaluation_of(status), trials):
        typer.echo(f"  {line}")


StudyNamespace = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Its namespace (default: the context's)."),
]
Kubeconfig = Annotated[
    Path | None, typer.Option(help="The kubeconfig (default: $KUBECONFIG, ~/.kube/config).")
]


def _connect(command: str, kubeconfig: Path | None, namespace: str | None) -> KubetuneClient:
    """A kubetune.client Client from the kubeconfig, in the namespace given or the context's;
    exit 1 saying why when the kubeconfig cannot be read."""
    from kubetune.client import ConfigError, connect

    try:
        return connect(kubeconfig, namespace)
    except ConfigError as error:
        typer.echo(f"kubetune {command}: {error}", err=True)
        raise typer.Exit(code=1) from None


def _api_said(error: Any) -> str:
    """What the API server said in an ApiException: its Status message, else the reason."""
    import json

    try:
        said = json.loads(error.body or "{}").get("message") or error.reason
    except ValueError:
        said = error.body or error.reason
    return f"the API server said {error.status}: {said}"


@app.command()
def trials(
    study: Annotated[str, typer.Argument(help="The TuningStudy's name.")],
    namespace: StudyNamespace = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Print a study's trials as a table, from any cluster the kubeconfig reaches, then its
    best trial's additional metrics, the top parameter importances and the recommendation."""
    import warnings

    import kubernetes

    from kubetune.client import ClientError, UnreadableTrialWarning

    with _connect("trials", kubeconfig, namespace) as client:
        try:
            found = client.study(study)
            with warnings.catch_warnings(record=True) as skipped:
                warnings.simplefilter("always", UnreadableTrialWarning)
                models = client.trials(study)
        except ClientError as error:
            typer.echo(f"kubetune trials: {error}", err=True)
            raise typer.Exit(code=1) from None
        except kubernetes.client.ApiException as error:
            typer.echo(f"kubetune trials: {_api_said(error)}", err=True)
            raise typer.Exit(code=1) from None
        except ValueError as error:
            # A study these models cannot read: written by an operator of another version.
            typer.echo(f"kubetune trials: cannot read TuningStudy {study}: {error}", err=True)
            raise typer.Exit(code=1) from None
    for warning in skipped:
        typer.echo(f"kubetune trials: {warning.message}", err=True)
    if not models:
        typer.echo(f"TuningStudy {study} has no trials yet.")
        return
    status = found.status or TuningStudyStatus()
    _print_trials(models, study, status.reevaluation, status.recommendation)
    if status.best_trial is not None:
        additional = found.spec.objective.additional_metrics
        for line in held_out_lines(status.best_trial.number, models, additional):
            typer.echo(line)
    for line in importance_lines(status.importances, status.importances_trials):
        typer.echo(line)
    for line in reevaluation_lines(status.reevaluation, status.recommendation, models):
        typer.echo(line)


@app.command()
def logs(
    study: Annotated[str, typer.Argument(help="The TuningStudy's name.")],
    trial: Annotated[str, typer.Argument(help="The trial's number, or its TuningTrial's name.")],
    container: Annotated[
        str | None,
        typer.Option("--container", "-c", help="The container (default: the pod's first)."),
    ] = None,
    tail: Annotated[
        int | None, typer.Option(min=0, help="Only the last N lines of the log.")
    ] = None,
    rank: Annotated[
        int,
        typer.Option(min=0, help="A trial that is a Job: the completion index of its pod."),
    ] = 0,
    namespace: StudyNamespace = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Print a trial's log: what its pod's container printed, running, finished or stopped."""
    import kubernetes

    from kubetune.client import ClientError

    with _connect("logs", kubeconfig, namespace) as client:
        try:
            text = client.logs(study, trial, container, tail, rank)
        except ClientError as error:
            typer.echo(f"kubetune logs: {error}", err=True)
            raise typer.Exit(code=1) from None
        except kubernetes.client.ApiException as error:
            typer.echo(f"kubetune logs: {_api_said(error)}", err=True)
            raise typer.Exit(code=1) from None
    typer.echo(text, nl=False)


@app.command()
def dashboard(
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", "-n", help="Show this namespace's studies (default: all)."),
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to serve on.")] = 8080,
    host: Annotated[
        str, typer.Option(help="The address to bind (0.0.0.0 to serve beyond this machine).")
    ] = "127.0.0.1",
    kubeconfig: Kubeconfig = None,
) -> None:
    """Serve optuna-dashboard over the cluster's TuningStudies, read-only and live: one Optuna
    study per TuningStudy, named namespace/name. In a pod without --kubeconfig: in-cluster."""
    from kubetune.dashboard.serve import serve
    from kubetune.kubeconfig import KubeconfigError, connect

    try:
        connection = connect(kubeconfig)
    except KubeconfigError as error:
        typer.echo(f"kubetune dashboard: {error}", err=True)
        raise typer.Exit(code=1) from None
    try:
        serve(connection.api_client, namespace, host, port)
    except (RuntimeError, OSError) as error:
        typer.echo(f"kubetune dashboard: {error}", err=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        pass


cluster_app = typer.Typer(help="A local Kubernetes control plane, for trying Kubetune.")
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
def cluster_up(
    kubeconfig: Annotated[
        Path, typer.Option(help="Where to write the kubeconfig for kubectl and the operator.")
    ] = Path("kubetune.kubeconfig"),
    port: Annotated[int, typer.Option(help="API server port on 127.0.0.1 (0: any free).")] = 0,
    gpus: Annotated[int, typer.Option(help="nvidia.com/gpu the node offers.")] = 0,
    cpus: Annotated[str, typer.Option(help="CPU the node offers.")] = "8",
    memory: Annotated[str, typer.Option(help="Memory the node offers.")] = "16Gi",
    workdir: Annotated[
        Path | None, typer.Option(help="Where pods' folders (logs, files) go.")
    ] = None,
    crds: Annotated[bool, typer.Option(help="Install Kubetune's CRDs.")] = True,
    binaries: Binaries = None,
) -> None:
    """Start an API server and a kubelet on this machine, until Ctrl-C.

    Pods run as local processes (their command and args, or the entrypoint of the project's
    own images; images are not pulled). kubectl, the operator and the reporting helper reach
    the API server through the kubeconfig. With --binaries the API server is the real
    kube-apiserver, with etcd, kube-controller-manager and kube-scheduler beside it.
    """
    import asyncio

    asyncio.run(_cluster_up(kubeconfig, port, gpus, cpus, memory, workdir, crds, binaries))


async def _cluster_up(
    kubeconfig: Path,
    port: int,
    gpus: int,
    cpus: str,
    memory: str,
    workdir: Path | None,
    install_crds: bool,
    binaries: Path | None,
) -> None:
    import asyncio
    import signal

    from kubetune.spec.crd import crds

    with _local_cluster("cluster up"):
        from kubetune_localcluster.cluster import install_crds as install
        from kubetune_localcluster.cluster import make_cluster
        from kubetune_localcluster.real import ControlPlaneError

    capacity = {"cpu": cpus, "memory": memory, "nvidia.com/gpu": str(gpus)}
    cluster = make_cluster(binaries=binaries, port=port, capacity=capacity, workdir=workdir)
    try:
        await cluster.start()
    except ControlPlaneError as error:
        typer.echo(f"kubetune cluster up: {error}", err=True)
        raise typer.Exit(code=1) from None
    try:
        cluster.write_kubeconfig(kubeconfig)
        if install_crds:
            async with cluster.session() as session:
                await install(session, crds())
        plane = "kube-apiserver" if binaries else "API server"
        typer.echo(f"{plane} on {cluster.url}; node capacity {capacity}")
        typer.echo(f"Kubeconfig written to {kubeconfig}. In another shell:")
        typer.echo(f"  export KUBECONFIG={kubeconfig.resolve()}")
        typer.echo("  kubectl explain tuningstudy.spec.budget")
        typer.echo("  kubectl apply -f examples/synthetic-quadratic.yaml")
        typer.echo("  kubectl get tuningstudies,pods")
        typer.echo("Ctrl-C stops the cluster and every pod process.")
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()
    finally:
        await cluster.stop()
    typer.echo("Stopped.")


LOCAL_CLUSTER_INSTALL = (
    "pip install 'kubetune[local]' (from a clone of the repository: pip install ./localcluster)"
)


@contextlib.contextmanager
def _local_cluster(command: str) -> Iterator[None]:
    """Imports of the local cluster (kubetune-localcluster, a distribution of its own, which
    the operator's image does not carry): when it is missing, exit 1 saying how to install
    it."""
    try:
        yield
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("kubetune_localcluster"):
            raise
        typer.echo(
            f"kubetune {command} runs a local cluster, and kubetune-localcluster is not "
            f"installed: {LOCAL_CLUSTER_INSTALL}",
            err=True,
        )
        raise typer.Exit(code=1) from None


def main() -> None:
    import optuna

    # Optuna logs each study it creates at INFO; the engine creates one per rebuild.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    app()

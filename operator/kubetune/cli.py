"""The `kubetune` command line: offline validation of manifests and the generated CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    from kubetune.spec.validation import validate_files

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


def main() -> None:
    import optuna

    # Optuna logs each study it creates at INFO; the engine creates one per rebuild.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    app()

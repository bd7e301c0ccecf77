"""Reading TuningStudy manifests: YAML as kubectl reads it, one report per document, and
parse_study, the schema and then every rule a schema cannot express.

`kubetune validate` (offline) and the controller (before a study starts, and on each update) use
the same functions, so a manifest that validates here is one the operator accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kubetune.spec import api
from kubetune.spec.problems import Problem, problems_from_validation_error
from kubetune.spec.rules import check_from_studies, check_study_spec
from kubetune.spec.study import TuningStudy
from kubetune.spec.trial_template import MAX_JOB_STUDY_NAME_LENGTH

_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
"""A Service's name: a DNS label that begins with a letter."""


@dataclass(frozen=True)
class Report:
    """The problems of one document: `source` is the file, plus #N in a multi-document file."""

    source: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


class ManifestLoader(yaml.SafeLoader):
    """yaml.SafeLoader reading numbers as kubectl does, and refusing duplicate keys.

    PyYAML (YAML 1.1) reads `1e-5` as a string while kubectl's YAML reader reads a number; a
    learning rate choice written that way must mean the same here and in the cluster. kubectl's
    reader also takes y, Y, n and N for booleans (`- name: y` is not a string there). A key
    written twice silently keeps the last value in PyYAML; kubectl refuses it, and so do we.
    """

    bool_values = {**yaml.SafeLoader.bool_values, "y": True, "n": False}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^[yYnN]$"), list("yYnN")
)
ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def validate_files(paths: Iterable[Path]) -> list[Report]:
    """One report per TuningStudy document in the files (one per file when it cannot be read)."""
    reports: list[Report] = []
    for path in paths:
        reports.extend(validate_file(path))
    return reports


def validate_file(path: Path) -> list[Report]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [Report(source, [Problem("", "file not found", "check the path")])]
    except (OSError, UnicodeDecodeError) as error:
        return [Report(source, [Problem("", f"cannot read the file: {error}", "check the path")])]
    return validate_text(text, source)


def validate_text(text: str, source: str) -> list[Report]:
    """Reports for each non-empty document of a YAML stream; a syntax error ends the stream."""
    documents: list[tuple[int, Any]] = []
    syntax_error: Problem | None = None
    try:
        for number, document in enumerate(yaml.load_all(text, Loader=ManifestLoader), start=1):
            if document is not None:
                documents.append((number, document))
    except yaml.YAMLError as error:
        syntax_error = _yaml_problem(error)
    several = len(documents) + (syntax_error is not None) > 1
    reports = [
        Report(f"{source}#{number}" if several else source, parse_study(document)[1])
        for number, document in documents
    ]
    if syntax_error is not None:
        reports.append(Report(source, [syntax_error]))
    elif not reports:
        reports.append(
            Report(source, [Problem("", "the file holds no YAML document", "add a TuningStudy")])
        )
    return reports


def _yaml_problem(error: yaml.YAMLError) -> Problem:
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    detail = f"{context}: {problem}" if context else problem
    return Problem(
        "",
        f"YAML syntax error{where}: {detail}",
        "correct the YAML there (indentation, quoting, a missing colon or a duplicate key)",
    )


def parse_study(document: Mapping[str, Any]) -> tuple[TuningStudy | None, list[Problem]]:
    """The study and its problems: schema errors first; the semantic rules once it parses."""
    if not isinstance(document, Mapping):
        return None, [
            Problem(
                "",
                f"the document is a {type(document).__name__}, not a mapping",
                "write a TuningStudy manifest (apiVersion, kind, metadata, spec)",
            )
        ]
    kind = document.get("kind")
    if kind != api.STUDY_KIND:
        return None, [
            Problem(
                "kind",
                f"is {kind!r}, not {api.STUDY_KIND}"
                if kind is not None
                else "is missing (this document is not a TuningStudy)",
                f"set kind: {api.STUDY_KIND} and apiVersion: {api.API_VERSION}, or keep "
                "other kinds of objects out of the files given to kubetune validate",
            )
        ]
    try:
        study = TuningStudy.model_validate(document)
    except ValidationError as error:
        return None, problems_from_validation_error(error, TuningStudy)
    except (RecursionError, MemoryError, OverflowError, ArithmeticError) as error:
        return None, [_unchecked("", error)]
    problems: list[Problem] = []
    if not study.metadata.name and not (study.metadata.model_extra or {}).get("generateName"):
        problems.append(
            Problem("metadata.name", "is missing", "name the study: metadata.name: my-study")
        )
    elif len(study.metadata.name or "") > api.MAX_STUDY_NAME_LENGTH:
        problems.append(
            Problem(
                "metadata.name",
                f"has {len(study.metadata.name or '')} characters, more than "
                f"{api.MAX_STUDY_NAME_LENGTH}: it is the value of the {api.STUDY_LABEL} label on "
                "each trial and pod, and label values are limited to 63",
                f"choose a name of at most {api.MAX_STUDY_NAME_LENGTH} characters",
            )
        )
    problems.extend(_check_job_study_name(study))
    try:
        problems.extend(check_study_spec(study.spec))
        problems.extend(check_from_studies(study))
    except Exception as error:
        problems.append(_unchecked("spec", error))
    return study, problems


def _check_job_study_name(study: TuningStudy) -> list[Problem]:
    """A study whose trials are Jobs names their Jobs, headless Services and pod hostnames
    (`<trial>-<index>`): DNS labels, at most 63 characters, beginning with a letter."""
    name = study.metadata.name
    if study.spec.trial_template.job is None or name is None:
        return []
    if len(name) <= MAX_JOB_STUDY_NAME_LENGTH and _DNS_1035_LABEL.fullmatch(name):
        return []
    return [
        Problem(
            "metadata.name",
            f"{name!r} cannot name the Jobs of its trials: their pods' hostnames and headless "
            f"Services are DNS labels (`<study>-<trial>-<index>`, 63 characters at most)",
            f"choose a name of at most {MAX_JOB_STUDY_NAME_LENGTH} characters of lower-case "
            "letters, digits and '-' that begins with a letter",
        )
    ]


def _unchecked(path: str, error: BaseException) -> Problem:
    # Every rule should report its own limits; this says which one did not, instead of a crash.
    return Problem(
        path,
        f"could not be checked ({type(error).__name__}: {str(error)[:200]})",
        "keep values within the documented bounds (docs/study-spec.md); please report this",
    )

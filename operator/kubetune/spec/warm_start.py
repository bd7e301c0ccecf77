"""What a study learns from before its first suggestion (spec.warmStart): configurations to
try first, results of earlier runs, and other studies.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from kubetune.spec import api
from kubetune.spec.base import ApiModel
from kubetune.spec.bounds import MAX_OBJECTIVES, MAX_PARAMETERS, ParameterName, ParameterValue

MAX_WARM_START_STUDIES = 20
"""Studies one study warm-starts from at most (spec.warmStart.fromStudies)."""
STUDY_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A TuningStudy's name, as Kubernetes names objects (a DNS-1123 subdomain)."""
# The pattern is in the CRD; the validator says what is wrong in words.
StudyName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=api.MAX_STUDY_NAME_LENGTH,
        json_schema_extra={"pattern": STUDY_NAME_PATTERN},
    ),
]


class WarmStartResult(ApiModel):
    params: Annotated[dict[ParameterName, ParameterValue], Field(max_length=MAX_PARAMETERS)]
    """The parameters of a completed run."""
    values: Annotated[list[float], Field(min_length=1, max_length=MAX_OBJECTIVES)]
    """Its objective values, one per objective metric, in the same order."""


class WarmStart(ApiModel):
    configurations: Annotated[
        list[Annotated[dict[ParameterName, ParameterValue], Field(max_length=MAX_PARAMETERS)]],
        Field(max_length=1000),
    ] = []
    """Configurations to try first, in order (for example known good defaults). Parameters left
    out are sampled."""
    results: Annotated[list[WarmStartResult], Field(max_length=10000)] = []
    """Completed results from earlier runs, given to the algorithm before the first suggestion.
    They inform the search but are not run again and do not count toward maxTrials."""
    from_studies: Annotated[list[StudyName], Field(max_length=MAX_WARM_START_STUDIES)] = []
    """Other studies of this namespace to learn from (a smaller dataset's, say): the trials of
    their searches that succeeded are given to the algorithm like results, over the parameters
    this study searches too. Each must optimize the same objective metrics, in the same order
    and directions. This study starts once their searches have ended."""

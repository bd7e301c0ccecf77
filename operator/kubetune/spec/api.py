"""Names of the Kubernetes API that Kubetune defines: group, version, kinds and short names.

Every other module (CRD generation, the operator, the CLI) reads them here.
"""

from typing import Final

# The trial contract (docs/trial-contract.md), defined beside the reporting helper that
# follows it, re-exported (`X as X`) in one statement, which isort would split.
# isort: off
from kubetune_report.contract import (
    DEFAULT_TERMINATION_LOG as DEFAULT_TERMINATION_LOG,
    METRICS_ANNOTATION as METRICS_ANNOTATION,
    METRICS_LINGER_ENV as METRICS_LINGER_ENV,
    METRICS_PORT_ENV as METRICS_PORT_ENV,
    PARAM_ENV_PREFIX as PARAM_ENV_PREFIX,
    PARAM_PLACEHOLDER as PARAM_PLACEHOLDER,
    PARAMS_ENV as PARAMS_ENV,
    POD_NAME_ENV as POD_NAME_ENV,
    POD_NAMESPACE_ENV as POD_NAMESPACE_ENV,
    RESERVED_ENV_PREFIX as RESERVED_ENV_PREFIX,
    SEED_ENV as SEED_ENV,
    SEED_PLACEHOLDER as SEED_PLACEHOLDER,
    STUDY_ENV as STUDY_ENV,
    TERMINATION_LOG_ENV as TERMINATION_LOG_ENV,
    TRAINER_SETTINGS_ENV as TRAINER_SETTINGS_ENV,
    TRIAL_ENV as TRIAL_ENV,
    TRIAL_NUMBER_ENV as TRIAL_NUMBER_ENV,
)
# isort: on

GROUP: Final = "kubetune.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

STUDY_KIND: Final = "TuningStudy"
STUDY_PLURAL: Final = "tuningstudies"
STUDY_SINGULAR: Final = "tuningstudy"
# Katib owns "experiment", "trial" and "suggestion"; ours must not collide with them.
STUDY_SHORT_NAMES: Final = ("ts", "tstudy")

TRIAL_KIND: Final = "TuningTrial"
TRIAL_PLURAL: Final = "tuningtrials"
TRIAL_SINGULAR: Final = "tuningtrial"
TRIAL_SHORT_NAMES: Final = ("tt", "ttrial")

CATEGORY: Final = "kubetune"

# Labels and annotations put on the objects Kubetune creates, and read by the reporting helper.
STUDY_LABEL: Final = f"{GROUP}/study"
TRIAL_LABEL: Final = f"{GROUP}/trial"
TRIAL_NUMBER_LABEL: Final = f"{GROUP}/trial-number"
REEVALUATION_LABEL: Final = f"{GROUP}/reevaluation-of"
"""On a re-evaluation run's objects: the number of the search trial it repeats."""

MAX_STUDY_NAME_LENGTH: Final = 63
"""A study's name is the value of the STUDY_LABEL on each of its trials and pods, and label
values are at most 63 characters: a longer name is refused at apply (as Kubernetes limits CronJob
names to 52 characters for the Job suffix), so `-l kubetune.io/study=<name>` always works."""

# A trial that is a batch/v1 Job (spec.trialTemplate.job).
JOB_COMPLETION_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
"""Set by the job controller on each pod of an Indexed Job: its completion index."""
MASTER_ADDR_ENV: Final = "MASTER_ADDR"
MASTER_PORT_ENV: Final = "MASTER_PORT"
WORLD_SIZE_ENV: Final = "WORLD_SIZE"
RANK_ENV: Final = "RANK"
DISTRIBUTED_ENV: Final = (MASTER_ADDR_ENV, MASTER_PORT_ENV, WORLD_SIZE_ENV, RANK_ENV)
"""What every pod of a distributed trial receives (torch.distributed's env:// rendezvous)."""
RENDEZVOUS_PORT_NAME: Final = "rendezvous"
"""The name of the container port and Service port of a distributed trial's rendezvous."""

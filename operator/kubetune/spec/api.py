"""Names of the Kubernetes API that Kubetune defines: group, version, kinds and short names.

Every other module (CRD generation, the operator, the CLI) reads them here.
"""

from typing import Final

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
METRICS_ANNOTATION: Final = f"{GROUP}/metrics"

# The trial contract (docs/trial-contract.md): what a trial's containers receive.
PARAMS_ENV: Final = "KUBETUNE_PARAMS"
"""All parameters of a trial as one JSON object."""
PARAM_ENV_PREFIX: Final = "KUBETUNE_PARAM_"
"""Each parameter as KUBETUNE_PARAM_<NAME>, the name upper-cased."""
RESERVED_ENV_PREFIX: Final = "KUBETUNE_"
"""Every variable with this prefix is Kubetune's; a template may not set one."""
STUDY_ENV: Final = "KUBETUNE_STUDY"
TRIAL_ENV: Final = "KUBETUNE_TRIAL"
TRIAL_NUMBER_ENV: Final = "KUBETUNE_TRIAL_NUMBER"
SEED_ENV: Final = "KUBETUNE_SEED"
"""The trial's seed: stable for a search trial, new for each re-evaluation run."""
POD_NAME_ENV: Final = "KUBETUNE_POD_NAME"
POD_NAMESPACE_ENV: Final = "KUBETUNE_POD_NAMESPACE"
TERMINATION_LOG_ENV: Final = "KUBETUNE_TERMINATION_LOG"
"""Where the container writes its final metrics: its terminationMessagePath."""
DEFAULT_TERMINATION_LOG: Final = "/dev/termination-log"
METRICS_PORT_ENV: Final = "KUBETUNE_METRICS_PORT"
"""Port of the trainer's Prometheus route (set in the template's env; off when unset)."""
METRICS_LINGER_ENV: Final = "KUBETUNE_METRICS_LINGER"
"""Seconds report_final waits for Prometheus to scrape the final values (default 0)."""
TRAINER_SETTINGS_ENV: Final = (METRICS_PORT_ENV, METRICS_LINGER_ENV)
"""KUBETUNE_* variables the template itself may set: settings of the reporting helper."""
PARAM_PLACEHOLDER: Final = r"\$\{params\.([^}]*)\}"
"""`${params.<name>}` in command and args is replaced by the parameter's value."""
SEED_PLACEHOLDER: Final = "${trial.seed}"
"""Replaced in command and args by the trial's seed (as KUBETUNE_SEED)."""

MAX_STUDY_NAME_LENGTH: Final = 63
"""A study's name is the value of the STUDY_LABEL on each of its trials and pods, and label
values are at most 63 characters: a longer name is refused at apply (as Kubernetes limits CronJob
names to 52 characters for the Job suffix), so `-l kubetune.io/study=<name>` always works."""

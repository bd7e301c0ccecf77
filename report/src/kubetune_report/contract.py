"""The names of the trial contract (docs/trial-contract.md): what a trial's containers receive
and where the reporting helper sends its reports. The operator (kubetune.spec.api) reads them
here, so that the two sides cannot drift apart."""

from typing import Final

METRICS_ANNOTATION: Final = "kubetune.io/metrics"
"""The pod annotation that holds a trial's latest report."""

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

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
METRICS_ANNOTATION: Final = f"{GROUP}/metrics"

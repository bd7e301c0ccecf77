"""The mapping of a TuningStudy onto Optuna: ask, report, should_prune, tell, and rebuild.

Pure Python, no Kubernetes. `Engine` is the one entry point the controller uses; the modules
mirror Optuna's shape: `space` (distributions and asking params), `samplers`, `pruners`.
"""

from kubetune.engine.study import (
    STUDY_ATTR_PREFIX,
    Engine,
    ImportCount,
    ImportedTrial,
    Suggestion,
)

__all__ = ["STUDY_ATTR_PREFIX", "Engine", "ImportCount", "ImportedTrial", "Suggestion"]

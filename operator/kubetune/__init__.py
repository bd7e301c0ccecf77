"""Kubetune: a Kubernetes operator that tunes hyperparameters with Optuna."""

__version__ = "0.1.0"

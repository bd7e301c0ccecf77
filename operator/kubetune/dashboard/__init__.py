"""optuna-dashboard over the cluster's TuningStudies, read-only and live (`kubetune dashboard`).

`storage` is an Optuna storage that serves snapshots and refuses writes; `feed` keeps the
snapshots in step with the cluster through a watch; `serve` puts both behind optuna-dashboard.
"""

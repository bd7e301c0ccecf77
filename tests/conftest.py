"""Test-wide settings."""

import optuna

# As in `kubetune` itself (cli.main): the engine creates an Optuna study per rebuild, and
# Optuna logs each one at INFO.
optuna.logging.set_verbosity(optuna.logging.WARNING)

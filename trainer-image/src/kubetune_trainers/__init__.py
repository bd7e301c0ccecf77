"""Kubetune's example trainers: real PyTorch training runs that follow the trial contract
(docs/trial-contract.md). Run them as `python -m kubetune_trainers.digits` and
`python -m kubetune_trainers.charlm`; each reads its hyperparameters from KUBETUNE_PARAM_*
(or --flags) and reports through kubetune_report."""

__version__ = "0.1.0"

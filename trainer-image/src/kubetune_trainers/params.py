"""Hyperparameters of a trainer, read the way the trial contract delivers them.

Sources, later ones winning: each parameter's default, KUBETUNE_SEED (for the parameter named
`seed` only), KUBETUNE_PARAMS (all parameters as one JSON object), KUBETUNE_PARAM_<NAME> (one
variable each), then `--name=value` flags for local runs. A name the trainer does not know is
an error, so a typo in a study's search space fails the first trial loudly instead of being
silently ignored.

The operator sets KUBETUNE_SEED in every trial pod: one seed per search trial, a new one for
each re-evaluation run of a trial. It is only the default of `seed`, so a study that searches
or fixes `seed` still decides it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PARAMS_ENV = "KUBETUNE_PARAMS"
PARAM_ENV_PREFIX = "KUBETUNE_PARAM_"
SEED_ENV = "KUBETUNE_SEED"
SEED_PARAM = "seed"
"""The parameter that KUBETUNE_SEED sets when nothing more explicit does."""
MAX_SEED = 2**32 - 1
"""The widest range every seeded library here accepts (scikit-learn's random_state: 32 bits);
the operator's seeds go up to 2**31 - 1."""


class ParameterError(ValueError):
    """A hyperparameter the trainer cannot use: the message names it, its source and the fix."""


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type, default, and the values it accepts."""

    name: str
    kind: type  # int, float or str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """Whether `low` itself is excluded (a learning rate of 0 learns nothing)."""

    def convert(self, value: object, source: str) -> Any:
        """The value as this parameter's type, or ParameterError naming `source`."""
        where = f"parameter {self.name}={value!r} (from {source})"
        if self.kind is str:
            text = str(value).strip().lower()
            if self.choices and text not in self.choices:
                raise ParameterError(f"{where} is not one of {', '.join(self.choices)}")
            return text
        number: float = _whole(value, where) if self.kind is int else _number(value, where)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            relation = ">" if self.low_open else ">="
            raise ParameterError(f"{where} must be {relation} {self._shown(self.low)}")
        if self.high is not None and number > self.high:
            raise ParameterError(f"{where} must be <= {self._shown(self.high)}")
        return number

    def _shown(self, bound: float) -> str:
        return str(int(bound)) if self.kind is int else f"{bound:g}"


def _whole(value: object, where: str) -> int:
    """An int parameter's value, exact: a seed of 2**31 - 1 must not pass through a float."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    number = _number(value, where)
    if not number.is_integer():
        raise ParameterError(f"{where} must be a whole number")
    return int(number)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise ParameterError(f"{where} must be a number, not a boolean")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ParameterError(f"{where} must be a number") from None
    if not math.isfinite(number):
        raise ParameterError(f"{where} must be a finite number")
    return number


def run_seed(text: str, param: Param) -> int:
    """KUBETUNE_SEED as a value of `param`, or a ParameterError naming the variable."""
    try:
        seed = int(text.strip())
        param.convert(seed, SEED_ENV)
    except ValueError:  # ParameterError included: out of the parameter's range
        low = 0 if param.low is None else int(param.low)
        high = MAX_SEED if param.high is None else int(param.high)
        raise ParameterError(
            f"{SEED_ENV}={text!r} is not a seed: it must be a whole number from {low} to "
            f"{high}. Kubetune sets it in trial pods; outside one, unset it or fix its value"
        ) from None
    return seed


def read_params(
    params: Sequence[Param],
    environ: Mapping[str, str],
    argv: Sequence[str] = (),
    *,
    prog: str,
    description: str,
    checks: Sequence[Callable[[Mapping[str, Any]], str | None]] = (),
) -> tuple[dict[str, Any], argparse.Namespace]:
    """The trainer's hyperparameters and its non-tuning options (--device). `checks` look at
    all values together and return a problem (with its fix) or None."""
    by_name = {param.name: param for param in params}
    values = {param.name: param.default for param in params}
    if SEED_ENV in environ and SEED_PARAM in by_name:
        values[SEED_PARAM] = run_seed(environ[SEED_ENV], by_name[SEED_PARAM])
    accepted = ", ".join(by_name)

    def unknown(name: str, source: str) -> ParameterError:
        return ParameterError(
            f"{prog} has no hyperparameter {name!r} (from {source}); it accepts {accepted}"
        )

    if environ.get(PARAMS_ENV):
        try:
            document = json.loads(environ[PARAMS_ENV])
        except json.JSONDecodeError as error:
            raise ParameterError(f"{PARAMS_ENV} is not JSON: {error}") from None
        if not isinstance(document, dict):
            raise ParameterError(f"{PARAMS_ENV} must be a JSON object of name to value")
        for name, value in document.items():
            if name not in by_name:
                raise unknown(name, PARAMS_ENV)
            values[name] = by_name[name].convert(value, PARAMS_ENV)
    upper = {name.upper(): name for name in by_name}
    for variable, value in environ.items():
        if variable.startswith(PARAM_ENV_PREFIX):
            key = variable.removeprefix(PARAM_ENV_PREFIX)
            if key not in upper:
                raise unknown(key.lower(), variable)
            values[upper[key]] = by_name[upper[key]].convert(value, variable)

    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    for param in params:
        flags = dict.fromkeys([f"--{param.name}", f"--{param.name.replace('_', '-')}"])
        parser.add_argument(
            *flags,
            dest=param.name,
            metavar=param.kind.__name__.upper(),
            help=f"{param.help} (default {param.default})",
        )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where to train: auto picks CUDA when available (default auto)",
    )
    options = parser.parse_args(list(argv))
    for param in params:
        flag = getattr(options, param.name)
        if flag is not None:
            values[param.name] = param.convert(flag, f"--{param.name}")
    for check in checks:
        if problem := check(values):
            raise ParameterError(problem)
    return values, options

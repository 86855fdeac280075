"""Continual-training methods, registered by name (see docs/METHODS.md and methods/base.py).

    get_method("cumulative-exp", seed=3)      # a fresh Method object
    list_methods()                            # names, in table order
    method_params("ewc")                      # {"lam": 100.0, "gamma": 1.0, ...}
    check_method_params("ewc", {"lambda": "5"}, source="experiment.yaml: method_params.ewc")

Each method declares its parameters as a nested ``Params`` schema; strings given on a command line
or in YAML are coerced by it (numbers, booleans, comma-separated number lists like "0,0.5,1").
"""

from __future__ import annotations

from ticlip.methods.base import (BufferSource, Method, MethodContext, PoolSource, StepBudgetFacts, StepCost,
                                 StepOutcome, StepPlan, StepSource)
from ticlip.methods.cumulative import (CumulativeAll, CumulativeEqual, CumulativeExp, CumulativeFifo,
                                      CumulativeReservoir)
from ticlip.methods.ewc import EWC
from ticlip.methods.from_scratch import Oracle, Restart
from ticlip.methods.lwf import LwF
from ticlip.methods.merge import Merge
from ticlip.methods.mixture import DataMixture
from ticlip.methods.params import ALIASES, MethodError, param_defaults, resolve_params
from ticlip.methods.patching import EmaMerge, Patching
from ticlip.methods.sequential import Sequential

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (Oracle, Restart, Sequential, CumulativeAll, CumulativeExp, CumulativeEqual, Patching, LwF, EWC,
                EmaMerge, CumulativeReservoir, CumulativeFifo, DataMixture, Merge)
}


def list_methods() -> list[str]:
    return list(METHODS)


def _lookup(name: str, source: str = "") -> type[Method]:
    key = str(name).strip().lower().replace("_", "-")
    if key not in METHODS:
        prefix = f"{source}: " if source else ""
        raise MethodError(f"{prefix}unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[key]


def method_params(name: str) -> dict:
    """The parameters ``name`` accepts, with their defaults."""
    return param_defaults(_lookup(name))


def check_method_params(name: str, params: dict | None, *, source: str) -> dict:
    """``params`` of method ``name`` validated by its schema: the resolved parameters (defaults
    included). Raises ``MethodError`` (a ``ticlip.schema.ConfigError``, one line naming ``source``)."""
    return resolve_params(_lookup(name, source), params, source=source)


def get_method(name: str, **params) -> Method:
    """A new ``Method`` by name; the resolved parameters (defaults included) are in ``method.params``."""
    return _lookup(name)(**params)


__all__ = [
    "ALIASES", "METHODS", "BufferSource", "Method", "MethodContext", "MethodError", "PoolSource", "StepBudgetFacts",
    "StepCost", "StepOutcome", "StepPlan", "StepSource", "check_method_params", "get_method", "list_methods",
    "method_params",
]

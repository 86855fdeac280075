"""Method parameters: each method declares them as a nested ``Params`` schema (``ticlip.schema.Schema``);
this module validates a mapping of parameters against it.

Strings (from a command line or YAML) are coerced by the schema: numbers, booleans ("true"/"false"),
comma-separated number lists ("0,0.5,1"). ``lambda`` and ``λ`` are accepted for ``lam``; ``-`` in a
key reads as ``_``. An unknown key is an error naming the method, the key and what it accepts.
"""

from __future__ import annotations

from typing import Any, Mapping

from ticlip.schema import ConfigError

ALIASES = {"lambda": "lam", "λ": "lam"}


class MethodError(ConfigError):
    """Unknown method name or parameter, or a parameter value of the wrong type."""


def param_defaults(cls) -> dict:
    """The parameters of method class ``cls`` with their defaults."""
    return {k: f.get_default(call_default_factory=True) for k, f in cls.Params.model_fields.items()}


def resolve_params(cls, params: Mapping[str, Any] | None, *, source: str = "") -> dict:
    """``params`` validated by ``cls.Params``: the full resolved mapping (defaults included).
    Raises ``MethodError`` (a ``ConfigError``) with one line naming ``source``, the key and the fix."""
    prefix = f"{source}: " if source else ""
    if params is not None and not isinstance(params, Mapping):
        raise MethodError(f"{prefix}parameters of method {cls.name} must be a mapping of names to values, "
                          f"got {params!r}")
    data: dict = {}
    for key, value in (params or {}).items():
        data[ALIASES.get(str(key), str(key)).replace("-", "_")] = value
    fields = cls.Params.model_fields
    unknown = [k for k in data if k not in fields]
    if unknown:
        accepted = ", ".join(f"{k}={v!r}" for k, v in param_defaults(cls).items()) or "none"
        raise MethodError(f"{prefix}method {cls.name} has no parameter {unknown[0]!r}; it accepts: {accepted}")
    try:
        return cls.Params.load(data, source=f"{prefix}method {cls.name} parameter").to_dict()
    except ConfigError as e:
        raise MethodError(str(e).replace("\n", "; ").replace("(top level): ", "")) from None


def float_list(value):
    """A ``before`` validator: "0, 0.5,1" -> ["0", "0.5", "1"] (the schema then makes them floats)."""
    if isinstance(value, str):
        from ticlip.schema import csv_list

        return csv_list(value)
    return value


__all__ = ["ALIASES", "MethodError", "float_list", "param_defaults", "resolve_params"]

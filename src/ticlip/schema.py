"""One schema per configuration, and everything derived from it.

Every configuration of ticlip (training, stream building, evaluation, experiments, task-table entries,
method parameters) is a subclass of :class:`Schema`, a pydantic v2 model that forbids unknown keys.
From that one class come:

- mappings and YAML in and out (``Schema.load``, ``from_yaml``, ``to_dict``, ``to_yaml``);
- ``--set a.b=c`` overrides on nested mappings (``apply_overrides``, one KEY=VALUE parser: ``parse_kv``);
- command-line flags with their help text and defaults (``add_schema_arguments`` + ``given_flags``);
- error messages naming the file or flag, the key, the bad value and what is accepted (``ConfigError``).

Why pydantic: typed fields with defaults and descriptions in one place, coercion of YAML/CLI strings
(YAML 1.1 reads ``3.4e18`` as a string), and structured errors we can turn into one line each.
"""

from __future__ import annotations

import argparse
import math
import os
import types
import typing
from typing import Any, Iterable, Literal, TypeVar, get_args, get_origin

import pydantic
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ticlip.atomic import write_text_atomic
from ticlip.errors import TiclipError

__all__ = [
    "ConfigError", "Field", "Schema", "add_schema_arguments", "apply_overrides", "coerce_numbers", "given_flags",
    "number", "parse_kv", "read_yaml_mapping", "set_key", "csv_list",
]

S = TypeVar("S", bound="Schema")


class ConfigError(TiclipError, ValueError):
    """A configuration value or file is invalid (the message names the source, key, value and fix)."""


# --------------------------------------------------------------------------- errors
def _accepted(cls: type[BaseModel], loc: tuple) -> str:
    """What the value at ``loc`` accepts, for error messages ('' when unknown)."""
    ann: Any = cls
    for part in loc:
        sub = _schema_class(ann)
        if sub is not None and isinstance(part, str):
            f = sub.model_fields.get(part)
            if f is None:
                return ""
            ann = f.annotation
            continue
        args = [a for a in get_args(ann) if a is not type(None) and a is not Ellipsis]
        if get_origin(ann) in (typing.Union, types.UnionType):
            ann = next((a for a in args if get_origin(a) in (list, tuple, dict)), ann)
            args = [a for a in get_args(ann) if a is not type(None) and a is not Ellipsis]
        if get_origin(ann) is dict and len(args) == 2:
            ann = args[1]
        elif get_origin(ann) in (list, tuple) and args:
            ann = args[0]
        else:
            return ""
    return _describe_type(ann)


def _describe_type(ann) -> str:
    origin = get_origin(ann)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(ann))
    if origin in (typing.Union, types.UnionType):
        parts = [_describe_type(a) for a in get_args(ann) if a is not type(None)]
        return " or ".join(p for p in parts if p) + (" or null" if type(None) in get_args(ann) else "")
    if origin in (list, tuple):
        inner = [a for a in get_args(ann) if a is not Ellipsis]
        return f"a list (each {_describe_type(inner[0])})" if inner and _describe_type(inner[0]) else "a list"
    if origin is dict:
        return "a mapping"
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    if ann in names:
        return names[ann]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "a mapping"
    return ""


def _schema_class(ann) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in get_args(ann):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


_MEMBER_TAGS = {"str", "int", "float", "bool", "dict", "list", "tuple", "none", "constrained-int", "constrained-float",
                "constrained-str"}


def _is_member_tag(part) -> bool:
    """Whether a location part names a union member or validator (``list[str]``, ``function-after[...]``)
    rather than a key or index."""
    return isinstance(part, str) and ("[" in part or part.startswith("function-") or part in _MEMBER_TAGS)


def format_validation_error(err: ValidationError, cls: type[BaseModel], source: str) -> str:
    """One line per problem: ``SOURCE: key a.b: bad value 'x' (accepted: ...)``."""
    lines: list[str] = []
    union_lines: dict[str, int] = {}  # key -> index in lines: one line per key for union members
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not _is_member_tag(p))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if key in union_lines and e["type"] != "extra_forbidden":
            continue  # a union's other members failed too: the first member's line stands for the key
        if e["type"] == "extra_forbidden":
            parent = loc[:-1]
            sub = cls
            for p in parent:
                f = sub.model_fields.get(p) if isinstance(p, str) else None
                sub = _schema_class(f.annotation) if f is not None else None
                if sub is None:
                    break
            known = ", ".join(sorted(sub.model_fields)) if sub is not None else ""
            lines.append(f"{source}: unknown key {key!r}" + (f"; known keys: {known}" if known else ""))
            continue
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        value = e.get("input")
        accepted = _accepted(cls, loc)
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        hint = f"; accepted: {accepted}" if accepted and e["type"] not in ("literal_error", "value_error") else ""
        union_lines[key] = len(lines)
        lines.append(f"{source}: {key}: {msg}{shown}{hint}")
    return "\n".join(lines) if lines else f"{source}: {err}"


# --------------------------------------------------------------------------- the base class
class Schema(BaseModel):
    """Base of every ticlip configuration: unknown keys are errors; '-' in keys reads as '_'."""

    model_config = ConfigDict(extra="forbid", validate_default=False, protected_namespaces=())

    @classmethod
    def load(cls: type[S], data: Any, *, source: str = "config") -> S:
        """Validate a mapping (from YAML, flags or code); ConfigError with one line per problem."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__} {data!r}")
        data = coerce_numbers(cls, _dashes_to_underscores(data))
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, cls, source)) from None

    @classmethod
    def from_dict(cls: type[S], data: Any, *, source: str = "config") -> S:
        return cls.load(data, source=source)

    @classmethod
    def from_yaml(cls: type[S], path: str) -> S:
        return cls.load(read_yaml_mapping(path), source=path)

    def to_dict(self) -> dict:
        return self.model_dump(mode="python")

    def to_yaml(self, path: str | None = None) -> str:
        """The configuration as YAML; written atomically to ``path`` when given."""
        import yaml

        text = yaml.safe_dump(_plain(self.model_dump(mode="json")), sort_keys=False, allow_unicode=True)
        if path is not None:
            write_text_atomic(path, text)
        return text

    def replace(self: S, **changes) -> S:
        """A validated copy with ``changes`` applied (errors as ConfigError)."""
        return type(self).load({**self.to_dict(), **changes}, source=type(self).__name__)


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _dashes_to_underscores(d: dict) -> dict:
    return {(k.replace("-", "_") if isinstance(k, str) else k): v for k, v in d.items()}


def _numeric_kind(ann) -> str | None:
    """'int' or 'float' when the field holds a number (optionally None), else None."""
    args = [a for a in get_args(ann) if a is not type(None)] if get_origin(ann) in (typing.Union, types.UnionType) \
        else [ann]
    if any(a is str for a in args):
        return None
    if float in args:
        return "float"
    if int in args and bool not in args:
        return "int"
    return None


def coerce_numbers(cls: type[BaseModel], data: dict) -> dict:
    """Numbers written as strings (YAML 1.1 reads ``3.4e18`` as one; ``1_000`` from a flag) become
    numbers for numeric fields; ``1e3`` is accepted for a whole-number field. Nested schemas too."""
    out = dict(data)
    for key, value in data.items():
        f = cls.model_fields.get(key) if isinstance(key, str) else None
        if f is None:
            continue
        sub = _schema_class(f.annotation)
        if sub is not None and isinstance(value, dict) and get_origin(f.annotation) is dict:
            # a mapping of names to sections (e.g. an experiment's variants): the names stay as written
            out[key] = {k: coerce_numbers(sub, _dashes_to_underscores(v)) if isinstance(v, dict) else v
                        for k, v in value.items()}
            continue
        if sub is not None and isinstance(value, dict):
            out[key] = coerce_numbers(sub, _dashes_to_underscores(value))
            continue
        kind = _numeric_kind(f.annotation)
        if kind is None or isinstance(value, bool):
            continue
        if isinstance(value, str):
            try:
                value = float(value.replace("_", ""))
            except ValueError:
                continue  # pydantic names the key and the bad value
        if kind == "int" and isinstance(value, float) and value.is_integer() and math.isfinite(value):
            value = int(value)
        out[key] = value
    return out


# --------------------------------------------------------------------------- YAML and overrides
def read_yaml_mapping(path: str) -> dict:
    """A YAML file holding a mapping (an empty file is an empty mapping); ConfigError otherwise."""
    import yaml

    if not os.path.exists(path):
        raise ConfigError(f"config file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            d = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return d


def parse_kv(text: str, *, flag: str = "--set") -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML (numbers, booleans, lists, mappings), else kept as text."""
    import yaml

    if "=" not in str(text):
        raise ConfigError(f"{flag} {text!r} must look like KEY=VALUE (e.g. train.lr=5e-4)")
    key, value = str(text).split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{flag} {text!r} has an empty key")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def set_key(d: dict, dotted: str, value: Any, *, flag: str = "--set") -> None:
    """Set ``a.b.c = value`` in nested mappings, creating sections as needed."""
    def key(mapping: dict, part: str) -> str:
        # a key as written when the mapping has it (names like 'cumulative-all' under method_params or a
        # variant's name), else with dashes as underscores (settings: train.warmup-later = warmup_later)
        return part if part in mapping else part.replace("-", "_")

    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        k = key(cur, p)
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{flag} {dotted}: {p!r} is not a section (it holds {nxt!r})")
        cur = nxt
    cur[key(cur, parts[-1])] = value


def apply_overrides(d: dict, overrides: Iterable[str] | None, *, flag: str = "--set") -> dict:
    """``d`` with every ``a.b=c`` of ``overrides`` applied (in order); ``d`` itself is changed."""
    for item in overrides or []:
        key, value = parse_kv(item, flag=flag)
        set_key(d, key, value, flag=flag)
    return d


# --------------------------------------------------------------------------- argparse types
def number(text: str) -> float:
    """An argparse type: a finite float, written as 3.4e18, 3.4E18 or 3_400_000."""
    try:
        value = float(str(text).replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def whole_number(text: str) -> int:
    """An argparse type: an integer, also written as 1e3 or 1_000."""
    value = number(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(value)


def csv_list(text: str) -> list[str]:
    """An argparse type: a comma-separated list (``a,b,c``), empty items dropped."""
    return [part.strip() for part in str(text).split(",") if part.strip()]


# --------------------------------------------------------------------------- flags from a schema
def _flag_type(ann):
    """(argparse type, kind) for a field annotation; kind is 'bool', 'list', 'dict' or 'scalar'."""
    args = [a for a in get_args(ann) if a is not type(None)] if get_origin(ann) in (typing.Union, types.UnionType) \
        else [ann]
    base = args[0] if len(args) == 1 else None
    if base is bool:
        return None, "bool"
    if get_origin(base) in (list, tuple):
        inner = [a for a in get_args(base) if a is not Ellipsis]
        kind = inner[0] if inner else str
        if kind in (int, float):
            conv = whole_number if kind is int else number
            return (lambda text: [conv(v) for v in csv_list(text)]), "list"
        return csv_list, "list"
    if get_origin(base) is dict or (isinstance(base, type) and issubclass(base, BaseModel)):
        return None, "dict"
    if float in args and str not in args:
        return number, "scalar"
    if int in args and str not in args:
        return whole_number, "scalar"
    return str, "scalar"


def _default_text(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is None or value == "" or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def add_schema_arguments(
    parser, cls: type[BaseModel], fields: Iterable[str] | None = None, *, groups: dict[str, str] | None = None,
    metavars: dict[str, str] | None = None,
) -> None:
    """Add ``--field-name`` flags for ``fields`` of ``cls`` (all scalar/list/bool fields by default).

    Help text is the field's ``description``, followed by its schema default; flags default to
    ``argparse.SUPPRESS`` so that ``given_flags`` returns only what the user typed. Booleans get
    ``--name`` / ``--no-name``. ``groups`` maps a field name to an argument-group title."""
    names = list(fields) if fields is not None else list(cls.model_fields)
    made_groups: dict[str, Any] = {}
    for name in names:
        f = cls.model_fields[name]
        conv, kind = _flag_type(f.annotation)
        if kind == "dict":
            continue
        title = (groups or {}).get(name)
        target = parser
        if title:
            target = made_groups.get(title) or made_groups.setdefault(title, parser.add_argument_group(title))
        flag = "--" + name.replace("_", "-")
        desc = (f.description or "").rstrip(".")
        default = _default_text(f)
        if kind == "bool":
            helptext = desc + (f" (default {default})" if default else "")
            target.add_argument(flag, dest=name, action="store_true", default=argparse.SUPPRESS, help=helptext)
            target.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false",
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            continue
        choices = get_args(f.annotation) if get_origin(f.annotation) is Literal else None
        helptext = desc
        if choices:
            helptext += ("; " if helptext else "") + "one of " + ", ".join(str(c) for c in choices)
        if default:
            helptext += f" (default {default})"
        target.add_argument(flag, dest=name, type=conv, default=argparse.SUPPRESS, help=helptext or None,
                            metavar=(metavars or {}).get(name))


def given_flags(args: argparse.Namespace, cls: type[BaseModel]) -> dict:
    """The schema fields the user gave on the command line (flags made by ``add_schema_arguments``)."""
    return {k: v for k, v in vars(args).items() if k in cls.model_fields}


# re-exported for schema authors
model_validator = pydantic.model_validator
field_validator = pydantic.field_validator

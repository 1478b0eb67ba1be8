"""Run configs in and out: YAML files, ``--set`` overrides, dotted keys, clear errors."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from ..errors import InputError
from .schema import RunConfig, fields_of

#: pydantic's error types -> what the key expects, in the words of the message.
_EXPECTED = {
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"), "int"),
    **dict.fromkeys(("float_type", "float_parsing"), "float"),
    **dict.fromkeys(("bool_type", "bool_parsing"), "bool"),
    "string_type": "str",
    **dict.fromkeys(("list_type", "tuple_type"), "a list"),
    **dict.fromkeys(("model_type", "model_attributes_type", "dataclass_type"), "a mapping"),
}
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")


def _section(cls: type, keys: list[str]) -> tuple[list[str], type]:
    """The longest leading part of ``keys`` that names a section, and that section's class."""
    path: list[str] = []
    for k in keys:
        tp = fields_of(cls).get(k)
        if not (
            isinstance(tp, type) and (issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp))
        ):
            break
        path.append(k)
        cls = tp
    return path, cls


def _input_error(cls: type, err: ValidationError, where: str) -> InputError:
    """The first problem pydantic found, as an :class:`InputError` naming the key at fault, what
    is wrong and what is allowed."""
    errors = err.errors(include_url=False)
    e = errors[0]
    keys = [p for p in e["loc"] if isinstance(p, str)]
    path, section = _section(cls, keys)
    at = ".".join([where, *path])
    if e["type"] in _UNKNOWN:
        unknown = sorted(
            str(x["loc"][-1])
            for x in errors
            if x["type"] in _UNKNOWN and list(x["loc"][:-1]) == path
        )
        return InputError(at, f"unknown key(s) {unknown}; valid: {list(fields_of(section))}")
    if e["type"] == "strict_scalar":  # a dataclass section's scalar of the wrong kind
        ctx = e["ctx"]
        return InputError(f"{at}.{ctx['key']}", f"expected {ctx['expected']}, got {ctx['got']!r}")
    if e["type"] in ("value_error", "assertion_error"):  # our checks: they name the key
        return InputError(at, str(e.get("ctx", {}).get("error", e["msg"])))
    at, got = ".".join([where, *keys]), e.get("input")
    if e["type"] in _EXPECTED:
        return InputError(at, f"expected {_EXPECTED[e['type']]}, got {got!r}")
    leaf = keys[len(path)] if len(keys) > len(path) else None
    sizes = typing.get_args(fields_of(section).get(leaf))
    if e["type"] in ("too_long", "missing") and sizes and Ellipsis not in sizes:  # a short tuple
        return InputError(at, f"expected {len(sizes)} values, got {got!r}")
    return InputError(at, f"{e['msg']}, got {got!r}")


def from_dict(cls: type[BaseModel], d: Any, where: str = "config") -> Any:
    """Validate a plain dict into ``cls`` (e.g. :class:`RunConfig`), refusing unknown keys
    (listing the valid ones) and bad values with an :class:`InputError` that starts ``where``."""
    try:
        return cls.model_validate(d)
    except ValidationError as e:
        raise _input_error(cls, e, where) from None


def valid_keys() -> list[str]:
    """Every dotted key of the run config (``data.sources``, ..., ``train.seed``)."""
    return [
        f"{section}.{key}" for section, tp in fields_of(RunConfig).items() for key in fields_of(tp)
    ]


def check_key(key: str, where: str | Path) -> str:
    """Raise :class:`InputError` (listing the valid keys) unless ``key`` is a run-config key."""
    valid = valid_keys()
    if key not in valid:
        raise InputError(where, f"unknown config key {key!r}; valid keys: {', '.join(valid)}")
    return key


def comparable(d: Any, ignore: tuple[str, ...] = ()) -> dict | None:
    """A run config dict read back through :class:`RunConfig` (so one written before an option
    existed gets its default), without the dotted keys in ``ignore``; None where ``d`` is not a
    readable run config. Two runs are the same run where these are equal."""
    if not isinstance(d, dict):
        return None
    try:
        out = to_dict(from_dict(RunConfig, d, "run config"))
    except (ValueError, TypeError):  # InputError included
        return None
    for key in ignore:
        section, name = key.split(".")
        out.get(section, {}).pop(name, None)
    return out


def to_dict(cfg: BaseModel) -> dict:
    """Plain, YAML-safe dict of a config or a section (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg.model_dump())


def parse_override(item: str, where: str | Path = "--set") -> tuple[str, Any]:
    """``"key.sub=value"`` -> ``("key.sub", value)``, the value parsed as YAML."""
    if not isinstance(item, str) or "=" not in item:
        raise InputError(where, f"expected key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise InputError(where, f"{key}: value {raw!r} is not valid YAML ({e})") from None


def set_dotted(d: dict, key: str, value: Any, where: str | Path = "--set") -> dict:
    """Set ``d[a][b] = value`` for ``key = "a.b"``, creating sections as needed; in place."""
    node = d
    *sections, leaf = key.split(".")
    for p in sections:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise InputError(where, f"{key!r}: {p!r} is not a section")
    node[leaf] = value
    return d


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        set_dotted(d, *parse_override(item))
    return d


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults), apply ``--set`` overrides, validate."""
    d: dict = {}
    if path is not None:
        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise InputError(path, "config file not found") from None
        except yaml.YAMLError as e:
            raise InputError(path, f"not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise InputError(path, "a config must be a mapping of sections")
    apply_overrides(d, overrides or [])
    return from_dict(RunConfig, d, str(path) if path else "config")


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path

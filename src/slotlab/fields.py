"""Typed settings: the field types of every config dataclass, and the one function that checks values against them.

Enum-like settings are ``Literal`` types; numbers carry their range as ``Annotated[int, Range(...)]`` (aliases below).
:func:`build` turns a mapping (YAML, JSON, overrides) into a dataclass, converting where lossless (``1`` -> ``1.0``,
YAML 1.1's ``"1e-3"`` -> ``0.001``) and refusing anything else with one line that names the key and what it allows::

    model.num_slots = 0 is out of range: must be >= 1
    model.slot_init = 'fixed' is not allowed: use one of 'gaussian', 'learned'
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from slotlab.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Allowed interval of a number: ``lo <= x`` (``lo < x`` if ``lo_open``) and likewise for ``hi``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def check(self, value: float, where: str) -> None:
        if not math.isfinite(value):
            raise ConfigError(f"{where} = {value!r} is not a finite number")
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low or high:
            raise ConfigError(f"{where} = {value!r} is out of range: must be {self.describe()}")

    def describe(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_num(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_num(self.hi)}")
        return " and ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
SEED_MAX = 2**31 - 1  # every generator takes a seed up to it, with room for offsets
Seed = Annotated[int, Range(0, SEED_MAX)]
PositiveFloat = Annotated[float, Range(0, lo_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]  # a probability or weight in [0, 1]
OpenFraction = Annotated[float, Range(0, 1, lo_open=True, hi_open=True)]  # (0, 1), e.g. an EMA decay
UnitInterval = Annotated[float, Range(0, 1, lo_open=True)]  # (0, 1], e.g. a decay rate


def build(cls: type, values: Any, where: str = "") -> Any:
    """An instance of the dataclass ``cls`` from ``values`` (a mapping), every field checked against its type.

    Unknown keys and wrong values raise :class:`ConfigError` naming the dotted key (``where`` is the prefix, e.g.
    ``"model"``). Keys starting with ``_`` (records such as ``_class_name``) are ignored."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {values!r}")
    hints = get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: v for k, v in values.items() if not (isinstance(k, str) and k.startswith("_"))}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(map(str, unknown))} in {where or 'config'}; expected some of {sorted(names)}"
        )
    kwargs = {key: check_value(hints[key], value, f"{where}.{key}".lstrip(".")) for key, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a __post_init__ that refuses a combination of values
        raise ConfigError(f"{where or 'config'}: {e}") from None


def check_value(typ: Any, value: Any, where: str) -> Any:
    """``value`` checked (and where lossless, converted) against the annotated type ``typ``."""
    if dataclasses.is_dataclass(typ) and isinstance(typ, type):
        return build(typ, value, where)
    ranges = []
    while get_origin(typ) is Annotated:
        typ, *meta = get_args(typ)
        ranges += [m for m in meta if isinstance(m, Range)]
    if get_origin(typ) in (Union, UnionType):
        options = list(get_args(typ))
    else:
        options = [typ]
    if value is None:
        if type(None) in options or typ is Any:
            return None
        raise ConfigError(f"{where} must not be null")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            out = _check_one(option, value, where)
        except ConfigError as e:
            errors.append(e)
            continue
        for r in ranges:
            r.check(out, where)
        return out
    if len(errors) == 1 or all(str(e) == str(errors[0]) for e in errors):
        raise errors[0]
    raise ConfigError(f"{where} = {value!r} is not a valid {_type_name(typ)}")


def _check_one(typ: Any, value: Any, where: str) -> Any:
    origin = get_origin(typ)
    if typ is Any:
        return value
    if get_origin(typ) is Annotated or origin in (Union, UnionType):
        return check_value(typ, value, where)
    if origin is Literal:
        allowed = get_args(typ)
        if isinstance(value, bool) or value not in allowed:
            raise ConfigError(f"{where} = {value!r} is not allowed: use one of {', '.join(map(repr, allowed))}")
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r} is not true or false")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r} is not an integer")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{where} = {value!r} is not a number")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r} is not a string")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} = {value!r} is not a list")
        (item,) = get_args(typ)
        return [check_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r} is not a mapping")
        if not get_args(typ):
            return dict(value)
        key_type, value_type = get_args(typ)
        return {
            check_value(key_type, k, f"{where} key"): check_value(value_type, v, f"{where}.{k}")
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(typ) and isinstance(typ, type):
        return build(typ, value, where)
    raise ConfigError(f"{where}: unsupported setting type {typ!r}")  # a programming error, said plainly


def _type_name(typ: Any) -> str:
    if get_origin(typ) in (Union, UnionType):
        return " or ".join(_type_name(t) for t in get_args(typ) if t is not type(None))
    if get_origin(typ) is Literal:
        return "one of " + ", ".join(map(repr, get_args(typ)))
    return getattr(typ, "__name__", None) or str(typ)


def allowed_values(typ: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` type (through ``Annotated`` and ``Optional``)."""
    while get_origin(typ) is Annotated:
        typ = get_args(typ)[0]
    if get_origin(typ) in (Union, UnionType):
        return tuple(v for t in get_args(typ) for v in allowed_values(t))
    return get_args(typ) if get_origin(typ) is Literal else ()

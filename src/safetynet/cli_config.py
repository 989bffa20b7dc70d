"""Command-line flags generated from a config dataclass, and the config back from parsed flags.

One flag per field: ``--field-name`` (or ``field(metadata={"flag": ...})``), its type from the
annotation, its default the dataclass default and its help ``field(metadata={"help": ...})``:

====================================  =============================================================
annotation                            flag
====================================  =============================================================
``int``, ``float``, ``str``           ``type=int`` / ``float`` / ``str``
``bool``                              ``--name`` / ``--no-name`` (``BooleanOptionalAction``)
``list[X]``                           ``nargs="+"``, each item an ``X``
``X | None``                          as ``X``, default ``None`` (the help says what None means)
``Literal[...]``, ``metadata["choices"]``  ``choices``
``dict``                              a JSON object
anything else (e.g. ``nn.Module | str``)  ``str``
====================================  =============================================================

A field without a default is a required flag, or a positional argument with
``metadata={"positional": True}``. Values argparse can check (types, choices) exit 2 as usage
errors; the config's own ``validate()`` reports the rest (:mod:`safetynet.exit_codes`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union

__all__ = ["POOL_HELP", "HelpFormatter", "add_config_flags", "config_from_args", "config_fields", "field_default",
           "flag_name", "pool_size", "setting"]

T = TypeVar("T")

#: ``--pool`` (demo) and ``--detector-pool`` (robustness) mean this; only their defaults differ.
POOL_HELP = "average-pool conv maps to POOLxPOOL per channel before quantizing; 0 = all units"


def pool_size(pool: int | None) -> int | None:
    """A config's pool setting: 0 and None both mean all units (None); a negative size is an InputError."""
    from .errors import InputError

    if pool is not None and (isinstance(pool, bool) or not isinstance(pool, int) or pool < 0):
        raise InputError(f"pool must be an integer >= 0 (0 = all units), got {pool!r}")
    return pool or None


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
            **metadata: Any) -> Any:
    """A dataclass field whose metadata carries its command-line ``help`` (and ``flag``, ``choices``,
    ``positional``); ``factory`` for mutable defaults. Imports nothing heavy: configs stay cheap."""
    meta = {"help": help, **metadata}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_name(f: dataclasses.Field) -> str:
    """The option string of a config field: ``--field-name`` unless ``metadata["flag"]`` says otherwise."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def config_fields(cls: type, skip: typing.Collection[str] = ()) -> list[dataclasses.Field]:
    """The fields of ``cls`` that become flags (init fields not in ``skip``)."""
    return [f for f in dataclasses.fields(cls) if f.init and f.name not in skip]


def field_default(f: dataclasses.Field) -> Any:
    """The dataclass default of ``f`` (a fresh one for ``default_factory``), or ``dataclasses.MISSING``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"needs a JSON object like '{{\"key\": 1}}', got {text!r}")
    return value


def _strip_none(tp: Any) -> Any:
    """``X | None`` -> ``X``; a union of several types (``nn.Module | str``) -> ``str``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _scalar(tp: Any) -> dict[str, Any]:
    tp = _strip_none(tp)
    if typing.get_origin(tp) is Literal:
        choices = list(typing.get_args(tp))
        return {"type": type(choices[0]), "choices": choices}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if tp in (int, float, str):
        return {"type": tp}
    if tp is dict or typing.get_origin(tp) is dict:
        return {"type": _json_object, "metavar": "JSON"}
    return {"type": str}


def _argument(f: dataclasses.Field, annotation: Any) -> dict[str, Any]:
    tp = _strip_none(annotation)
    if typing.get_origin(tp) in (list, tuple):
        item = (typing.get_args(tp) or (str,))[0]
        kw = {**_scalar(item), "nargs": "+"}
    else:
        kw = _scalar(tp)
    if "choices" in f.metadata:
        kw["choices"] = list(f.metadata["choices"])
    kw["help"] = f.metadata.get("help", "").replace("%", "%%")
    kw["dest"] = f.name
    default = field_default(f)
    if default is dataclasses.MISSING:
        kw["required"] = True
    else:
        kw["default"] = default
    return kw


def add_config_flags(parser: argparse.ArgumentParser, cls: type, skip: typing.Collection[str] = ()) -> None:
    """Add one flag (or positional argument) per field of the dataclass ``cls`` to ``parser``."""
    hints = typing.get_type_hints(cls)
    for f in config_fields(cls, skip):
        kw = _argument(f, hints[f.name])
        if f.metadata.get("positional"):
            dest = kw.pop("dest")
            kw.pop("required", None)
            if "default" in kw:
                kw["nargs"] = "?"
            parser.add_argument(dest, metavar=dest.upper(), **kw)
        else:
            parser.add_argument(flag_name(f), **kw)


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The config ``cls`` from parsed flags (fields the namespace lacks keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in config_fields(cls) if hasattr(args, f.name)}
    return cls(**values)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless the help already names its default or it is None
    (the help says what None means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "(default" in text or not action.option_strings or default in (None, "") or default is argparse.SUPPRESS
                or action.required or isinstance(default, bool) and not isinstance(action, argparse.BooleanOptionalAction)):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()

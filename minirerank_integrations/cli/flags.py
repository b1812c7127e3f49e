"""Command-line flags generated from a settings model's fields, so that no default or description is typed twice.

One flag per field: ``--queries-per-step`` for ``queries_per_step``, its default and help read from the field.
A field's ``json_schema_extra`` may name its flag (``{"flag": "--no-profile"}`` turns off a field that is on by
default), its choices (``{"choices": [...]}``), its placeholder in ``--help`` (``{"metavar": "DIR"}``) and how a command line spells ``None`` inside a sequence
(``{"none": "all"}``). Reading the flags back builds the model, so a bad value is the model's
:class:`~minirerank_integrations.errors.ConfigError`, reworded to name the flags as typed.
"""

from __future__ import annotations

import argparse
import re
import types
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..errors import ConfigError

__all__ = ["add_settings_flags", "flag_name", "settings_from_flags"]

Settings = TypeVar("Settings", bound=BaseModel)


def flag_name(name: str, field: FieldInfo) -> str:
    """The flag of field ``name``: its ``json_schema_extra["flag"]``, else ``--`` and the name with dashes."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = extra.get("flag")
    return flag if isinstance(flag, str) else "--" + name.replace("_", "-")


def add_settings_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """Add one flag per field of ``model`` to ``parser`` (``dest`` is the field's name, the default the field's)."""
    for name, field in model.model_fields.items():
        flag = flag_name(name, field)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        described = (field.description or "").replace("%", "%%")  # argparse formats help with %
        default = field.default
        shown = "" if default is None else f" (default: {_spelled(default, extra)})"
        annotation = _without_none(field.annotation)
        if annotation is bool:
            if default is True and flag.startswith("--no-"):
                parser.add_argument(flag, dest=name, action="store_false", default=True, help="off: " + described)
            elif default is False:
                parser.add_argument(flag, dest=name, action="store_true", default=False, help=described)
            else:
                parser.add_argument(
                    flag, dest=name, action=argparse.BooleanOptionalAction, default=default, help=described
                )
            continue
        sequence = get_origin(annotation) is tuple
        item = _without_none(get_args(annotation)[0]) if sequence else annotation
        listed = extra.get("choices")
        choices = listed if isinstance(listed, list) else list(get_args(item)) if get_origin(item) is Literal else None
        none = extra.get("none") if sequence and _allows_none(get_args(annotation)[0]) else None
        base = _base(item)
        kind = _parser(base, none if isinstance(none, str) else None)
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            nargs="+" if sequence else None,
            choices=choices,
            default=default,
            metavar=None if choices else _metavar(extra.get("metavar"), base),
            help=described + shown,
        )


def settings_from_flags(args: argparse.Namespace, model: type[Settings]) -> Settings:
    """The ``model`` the parsed flags describe (checked: a bad value is a ``ConfigError`` naming the flag)."""
    values = {}
    for name in model.model_fields:
        value = getattr(args, name)
        values[name] = tuple(value) if isinstance(value, list) else value
    try:
        return model(**values)
    except ConfigError as error:
        message = str(error)
        for name, field in model.model_fields.items():
            message = re.sub(rf"(?<![\w-]){name}(?=[\[:])", flag_name(name, field), message)
        raise ConfigError(message) from None


#: Placeholders in ``--help`` by the type a flag's values are parsed with.
_METAVARS: dict[Callable[[str], Any], str] = {int: "N", float: "X", str: "VALUE"}


def _without_none(annotation: Any) -> Any:
    """``int`` for ``int | None`` (the other arms of a union with None, when only one is left)."""
    if get_origin(annotation) in (Union, types.UnionType):
        arms = [arm for arm in get_args(annotation) if arm is not type(None)]
        if len(arms) == 1:
            return _plain(arms[0])
    return _plain(annotation)


def _allows_none(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def _plain(annotation: Any) -> Any:
    """The type under ``Annotated[...]`` constraints."""
    metadata = getattr(annotation, "__metadata__", None)
    return get_args(annotation)[0] if metadata is not None else annotation


def _base(item: Any) -> Callable[[str], Any]:
    """``int``, ``float`` or ``str``: what parses one value of a field whose (item) type is ``item``."""
    kinds = set(get_args(item)) | {item}
    return int if int in kinds else float if float in kinds else str


def _parser(base: Callable[[str], Any], none: str | None) -> Callable[[str], Any]:
    """``base``, or ``base`` that reads the spelling ``none`` as None."""
    if none is None:
        return base

    def parse(text: str) -> Any:
        return None if text == none else base(text)

    parse.__name__ = base.__name__  # argparse names the type in its error: "invalid int value"
    return parse


def _metavar(named: object, base: Callable[[str], Any]) -> str:
    """A field's placeholder in ``--help``: the one it names, else N (an integer), X (a number) or VALUE."""
    return named if isinstance(named, str) else _METAVARS[base]


def _spelled(value: object, extra: dict[str, Any]) -> str:
    """A default as a command line spells it: a sequence's items separated by spaces, None as ``extra["none"]``."""
    if isinstance(value, tuple):
        return " ".join(str(extra.get("none")) if v is None else str(v) for v in value)
    return str(value)

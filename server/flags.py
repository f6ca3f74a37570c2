"""Command-line flags generated from :class:`~.config.Settings`, one per field.

A field's description is its ``--help`` text (with the default and the env variable
appended); ``json_schema_extra`` may set ``flag`` (``--adapter`` for the list field
``adapters``) and ``metavar``. A flag that is not given is left out, so the env variable
or the default applies: flag > env > default, the precedence pydantic-settings gives.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ByteSize, SecretStr, ValidationError
from rich.console import Console

from .config import Settings

err = Console(stderr=True)


def settings_command(*fields: str) -> Callable[[Callable[[Settings], None]], Callable[..., None]]:
    """Turn ``func(settings)`` into a typer command with one flag per named field."""

    def decorate(func: Callable[[Settings], None]) -> Callable[..., None]:
        def command(**given: Any) -> None:
            func(load_settings(given))

        params = [_parameter(name) for name in fields]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__, command.__doc__ = func.__name__, func.__doc__
        return command

    return decorate


def load_settings(given: dict[str, Any]) -> Settings:
    """Settings from the flags given (None / [] = not given), env and defaults; exit 2
    with one line per invalid value."""
    values = {k: v for k, v in given.items() if v is not None and v != []}
    try:
        return Settings(**values)
    except ValidationError as exc:
        for e in exc.errors():
            where = f"{flag_name(str(e['loc'][0]))}: " if e["loc"] else ""
            # A model validator's message reads "Value error, ...": the reason is enough.
            msg = str(e["msg"]).removeprefix("Value error, ")
            err.print(f"[red]error:[/red] {where}{msg}")
        raise typer.Exit(2) from None


def flag_name(field: str) -> str:
    if field not in Settings.model_fields:  # an env alias (HOTSWAP_API_KEY)
        return field
    extra = _extra(field)
    return str(extra.get("flag", "--" + field.replace("_", "-")))


def _parameter(field: str) -> inspect.Parameter:
    extra = _extra(field)
    cli_type = _cli_type(Settings.model_fields[field].annotation)
    flag = flag_name(field)
    decl = f"{flag}/--no-{flag[2:]}" if cli_type is bool else flag
    option = typer.Option(decl, help=_help(field), metavar=extra.get("metavar"),
                          show_default=False)
    return inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[cli_type | None, option])


def _cli_type(annotation: Any) -> Any:
    """The type typer parses a field's flag as; Settings validates the rest."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _cli_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _cli_type(args[0])
    if origin is list:
        return list[_cli_type(typing.get_args(annotation)[0])]  # type: ignore[misc]
    if origin is typing.Literal or annotation in (ByteSize, SecretStr):
        return str
    if annotation in (str, int, float, bool, Path):
        return annotation
    raise TypeError(f"no command-line type for {annotation!r}")


def _help(field: str) -> str:
    info = Settings.model_fields[field]
    default = info.get_default(call_default_factory=True)
    if isinstance(default, ByteSize):
        default = default.human_readable()
    shown = "" if default in (None, []) else f" Default: {default}."
    choices = typing.get_args(info.annotation) if typing.get_origin(
        info.annotation) is typing.Literal else ()
    listed = f" One of: {', '.join(map(str, choices))}." if choices else ""
    env = _extra(field).get("env", f"HOTSWAP_{field.upper()}")
    # Escaped: rich would read "[env: ...]" as markup and drop it.
    return f"{info.description}{listed}{shown} \\[env: {env}]"


def _extra(field: str) -> dict[str, Any]:
    extra = Settings.model_fields[field].json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}

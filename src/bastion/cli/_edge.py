"""The CLI's edge: options, reading the environment, opening Bastion, and reporting errors.

Owns: the one place the CLI reads ``os.environ``, the per-command ``Bastion`` session, JSON
argument parsing, and printing every expected ``BastionError`` as ``error[code]: message`` plus a
``hint:`` line with exit code 2 (the user's input or config) or 1 (anything else).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from bastion.app import Bastion
from bastion.config import Settings
from bastion.core.errors import BastionError, UserError

#: Markup is off: runs carry user and model text, and "[/b]" in an order note must print as is
#: (styles are applied with Text and ``style=``). Piped output gets 120 columns, not 80.
console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 120)


@dataclass(frozen=True, kw_only=True)
class Options:
    """Global options, kept on the root click context."""

    config: Path | None


def safe_url(url: str) -> str:
    """A URL with its password hidden."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def fail(exc: BastionError) -> NoReturn:
    """Print an expected error as one line plus its hint, and exit (2 for the user's errors)."""
    typer.echo(f"error[{exc.code}]: {exc.message}", err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)
    raise typer.Exit(2 if isinstance(exc, UserError) else 1)


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Turn expected errors into ``fail``; unexpected ones keep their traceback (they are bugs)."""
    try:
        yield
    except BastionError as exc:
        fail(exc)


def config_path(ctx: typer.Context) -> str | None:
    options = ctx.find_root().obj
    path = options.config if isinstance(options, Options) else None
    return str(path) if path is not None else None


def settings_for(ctx: typer.Context) -> Settings:
    return Settings.load(config_path(ctx), env=os.environ)


@contextlib.contextmanager
def session(ctx: typer.Context) -> Iterator[Bastion]:
    """A started Bastion (on its own loop thread) for one command; errors are reported."""
    with reported():
        bastion = Bastion.from_config(config_path(ctx), env=os.environ)
        try:
            yield bastion.start_sync()
        finally:
            bastion.close_sync()


def parse_json(value: str, option: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        fail(UserError(f"{option} is not valid JSON: {exc}", hint=f"Quote it: {option} '{{...}}'"))


def parse_object(value: str, option: str) -> dict[str, Any]:
    parsed = parse_json(value, option)
    if not isinstance(parsed, dict):
        fail(UserError(f"{option} must be a JSON object, not {type(parsed).__name__}"))
    return parsed


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))

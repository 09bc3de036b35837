"""The typer application and the error handling shared by every command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from lmforge import __version__
from lmforge.errors import LMForgeError, UsageError

__all__ = ["app", "fail", "friendly"]

app = typer.Typer(
    name="lmforge",
    help="Compile, run, evaluate and deploy language-model programs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error to stderr and exit with ``code`` (1 runtime, 2 usage)."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def friendly(func: F) -> F:
    """Turn lmforge errors into one-line messages: exit 2 for usage mistakes, 1 otherwise."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            fail(str(exc), 2)
        except LMForgeError as exc:
            fail(f"{type(exc).__name__}: {exc}", 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lmforge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """lmforge: declarative programs for language models."""

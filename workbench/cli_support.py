"""What every `dictamesh` command group shares: the consoles and the error handler."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from workbench.errors import DictaMeshError, SettingsError

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(func: F) -> F:
    """Print a workbench error as one line with its remedy, and exit non-zero (2 for settings)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DictaMeshError as exc:
            err.print(f"[bold red]error[/] ({exc.kind}): {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, SettingsError) else 1) from None

    return wrapper  # type: ignore[return-value]

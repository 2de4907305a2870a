"""One exception hierarchy for the whole workbench.

Every error says what was wrong (with the offending value), what to do about it, and whether
retrying can help: ``transient`` errors (a component still starting, a network blip) may succeed
on retry, ``terminal`` ones (bad configuration, corrupted data) will not until something changes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import ClassVar


class DictaMeshError(Exception):
    """Base class of every error the workbench raises on purpose."""

    transient: ClassVar[bool] = False

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        if self.remedy:
            return f"{self.message} Remedy: {self.remedy}"
        return self.message

    @property
    def kind(self) -> str:
        return "transient" if self.transient else "terminal"


class TransientError(DictaMeshError):
    """Retrying later may succeed."""

    transient = True


class TerminalError(DictaMeshError):
    """Retrying will not help until the cause is fixed."""


class SettingsError(TerminalError):
    """A DICTAMESH_* setting has a value the workbench cannot use."""


class StackError(TerminalError):
    """The embedded stack could not be started, inspected or stopped."""


class PortInUseError(StackError):
    """A port the embedded stack wants is taken by another process."""


class StalePidFileError(StackError):
    """A pid file points at a process that is gone or is not ours."""


class CorruptDataDirError(StackError):
    """A component's data directory is damaged."""


class ComponentUnavailableError(TransientError):
    """A component did not answer (yet)."""


class MigrationError(TerminalError):
    """A schema migration could not be applied or reverted."""


class MissingDependencyError(TerminalError):
    """An optional dependency is not installed; the message names the pip command."""

    def __init__(self, feature: str, extra: str, *, module: str) -> None:
        super().__init__(
            f"{feature} needs the optional dependency {module!r}, which is not installed.",
            remedy=f"pip install 'dictamesh-workbench[{extra}]'",
        )
        self.extra = extra
        self.module = module


class UnknownNameError(TerminalError):
    """A name (command, report, component, field) that does not exist."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        suggestion = did_you_mean(name, known)
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(
            f"Unknown {kind} {name!r}.{hint}",
            remedy=f"Use one of: {', '.join(known)}." if known else None,
        )
        self.name = name
        self.suggestion = suggestion


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """The closest known name, when one is close enough to be a likely typo."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None

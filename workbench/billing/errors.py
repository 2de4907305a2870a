"""Errors of the billing package: bad input names the row and the field."""

from __future__ import annotations

from typing import Any

from workbench.errors import TerminalError


class BillingError(TerminalError):
    """A billing operation cannot be carried out as asked."""


class BillingInputError(BillingError):
    """A row of billing input (an interval, a usage event, a price) is invalid.

    ``row`` is the 0-based position in the input (or an identifier such as an event id), ``field``
    the column at fault and ``value`` what was found there.
    """

    def __init__(self, row: Any, field: str, value: Any, problem: str, *, remedy: str) -> None:
        shown = _short(value)
        super().__init__(f"Row {row}, field {field!r} = {shown}: {problem}.", remedy=remedy)
        self.row = row
        self.field = field
        self.value = value


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return "<unprintable>"
    return text if len(text) <= 80 else text[:77] + "..."

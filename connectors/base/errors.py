"""Errors of connectors: transient (retry may help) and terminal (fix something first)."""

from __future__ import annotations

from collections.abc import Iterable

from workbench.errors import TerminalError, TransientError


class SourceUnavailableError(TransientError):
    """The source did not answer usefully (429, 5xx, timeout, broken body); retrying may help."""

    def __init__(
        self, message: str, *, status: int | None = None, remedy: str | None = None
    ) -> None:
        super().__init__(
            message,
            remedy=remedy or "retry later; `dictamesh sync NAME` resumes from the last cursor.",
        )
        self.status = status


class SourceRequestError(TerminalError):
    """The source refused the request (4xx other than 429); retrying will not help."""

    def __init__(
        self, message: str, *, status: int | None = None, remedy: str | None = None
    ) -> None:
        super().__init__(message, remedy=remedy or "check the connector's configuration.")
        self.status = status


class CircuitOpenError(SourceUnavailableError):
    """The circuit breaker is open after repeated failures; calls are refused for a while."""


class ConnectorConfigError(TerminalError):
    """A connector's configuration is missing a field or has a value it cannot use."""


class UnsupportedCapabilityError(TerminalError):
    """A call the connector does not declare among its capabilities."""

    def __init__(self, connector: str, capability: str, declared: Iterable[str]) -> None:
        known = sorted(declared)
        super().__init__(
            f"Connector {connector!r} does not support {capability!r}; it declares "
            f"{', '.join(known) or 'nothing'}.",
            remedy=f"use a connector with the {capability!r} capability, or one of its declared "
            "operations.",
        )
        self.connector = connector
        self.capability = capability


class WebhookVerificationError(TerminalError):
    """A webhook delivery whose signature or shape does not verify; no event was published."""


class SyncFailedError(TerminalError):
    """A sync run ended in the failed state; its committed cursor is where a rerun resumes."""


class SyncInProgressError(TransientError):
    """Another process is syncing the same connector right now."""

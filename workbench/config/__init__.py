"""Centralized configuration: hierarchy, validation, versions, secrets, audit, watchers, approvals.

Names load on first use, so the command line starts without importing the whole package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.config.model import (
        SYSTEM,
        Actor,
        ConfigChange,
        ConfigError,
        ConfigVersion,
        ConflictError,
        Explanation,
        InvalidValueError,
        KeyInfo,
        NotFoundError,
        PermissionDeniedError,
        Proposal,
        Scope,
    )
    from workbench.config.secrets import (
        MasterKeyError,
        MasterKeyProvider,
        SecretIntegrityError,
        SecretValue,
    )
    from workbench.config.store import Config

_WHERE = {
    **dict.fromkeys(
        [
            "SYSTEM",
            "Actor",
            "ConfigChange",
            "ConfigError",
            "ConfigVersion",
            "ConflictError",
            "Explanation",
            "InvalidValueError",
            "KeyInfo",
            "NotFoundError",
            "PermissionDeniedError",
            "Proposal",
            "Scope",
        ],
        "workbench.config.model",
    ),
    **dict.fromkeys(
        ["MasterKeyError", "MasterKeyProvider", "SecretIntegrityError", "SecretValue"],
        "workbench.config.secrets",
    ),
    "Config": "workbench.config.store",
}

__all__ = [
    "SYSTEM",
    "Actor",
    "Config",
    "ConfigChange",
    "ConfigError",
    "ConfigVersion",
    "ConflictError",
    "Explanation",
    "InvalidValueError",
    "KeyInfo",
    "MasterKeyError",
    "MasterKeyProvider",
    "NotFoundError",
    "PermissionDeniedError",
    "Proposal",
    "Scope",
    "SecretIntegrityError",
    "SecretValue",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'workbench.config' has no attribute {name!r}")

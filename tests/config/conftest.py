"""Fixtures for the configuration tests: the real embedded stack, unique key names per test."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.dashboards.test_overview_browser import browser, server  # noqa: F401 - fixtures
from workbench.config import SYSTEM, Config

pytestmark = pytest.mark.stack


@pytest.fixture
def config(workbench: Any) -> Config:
    """`wb.config` acting as the local user."""
    cfg: Config = workbench.config
    return cfg


@pytest.fixture
def admin(config: Config) -> Config:
    return config.as_actor(SYSTEM)


@pytest.fixture
def ns() -> str:
    """A unique prefix, so tests sharing the session's database never see each other's keys."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def approval_env(admin: Config, ns: str) -> str:
    name = f"{ns}-prod"
    admin.add_environment(name, description="approval test", requires_approval=True)
    return name

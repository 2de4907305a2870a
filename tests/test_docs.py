"""Public settings, commands and pages must be documented; these fail when one is not."""

from __future__ import annotations

import re
from typing import Any

import typer

from tests.helpers import REPO
from workbench.cli import app
from workbench.settings import Settings, env_name


def _commands(group: Any, prefix: str = "dictamesh") -> list[str]:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group, whichever click flavour built it
            found.extend(_commands(command, f"{prefix} {name}"))
        else:
            found.append(f"{prefix} {name}")
    return found


def test_every_setting_is_documented() -> None:
    documented = (REPO / "docs" / "configuration.md").read_text()
    missing = [env_name(f) for f in Settings.model_fields if f"`{env_name(f)}`" not in documented]
    assert missing == [], f"document these in docs/configuration.md: {missing}"


def test_no_documented_setting_is_stale() -> None:
    documented = set(
        re.findall(r"`(DICTAMESH_[A-Z_]+)`", (REPO / "docs" / "configuration.md").read_text())
    )
    known = {env_name(f) for f in Settings.model_fields}
    assert documented - known == set()


def test_every_command_is_documented() -> None:
    documented = (REPO / "docs" / "cli.md").read_text()
    commands = _commands(typer.main.get_command(app))  # type: ignore[arg-type]
    assert len(commands) >= 10
    missing = [c for c in commands if f"`{c}" not in documented]
    assert missing == [], f"document these in docs/cli.md: {missing}"


def test_readme_begins_with_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```", 2)[1]
    assert "make demo" in first_block
    assert "make test" in first_block
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci

"""The command line as users type it: suggestions, exit codes, parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from tests.helpers import run_cli
from workbench import __version__
from workbench.cli import _parse_parameters


def test_unknown_command_gets_a_suggestion() -> None:
    result = run_cli("stauts")
    assert result.returncode == 2
    assert "Did you mean 'status'?" in result.stderr


def test_unknown_option_gets_a_suggestion() -> None:
    result = run_cli("status", "--jsn")
    assert result.returncode == 2
    assert "--json" in result.stderr


def test_unknown_migrate_subcommand_gets_a_suggestion() -> None:
    result = run_cli("migrate", "histroy")
    assert result.returncode == 2
    assert "Did you mean 'history'?" in result.stderr


def test_invalid_settings_exit_2_naming_the_variable() -> None:
    result = run_cli("status", env={"DICTAMESH_KAFKA_BOOTSTRAP": "nowhere"})
    assert result.returncode == 2
    assert "DICTAMESH_KAFKA_BOOTSTRAP='nowhere'" in result.stderr
    assert "HOST:PORT" in result.stderr


def test_version() -> None:
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


def test_serve_refuses_to_run_without_a_login(tmp_path: Path) -> None:
    result = run_cli("serve", env={"DICTAMESH_HOME": str(tmp_path)})
    assert not (tmp_path / "run").exists(), "nothing may be started before the refusal"
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "No dashboard login is configured" in message
    assert "DICTAMESH_DASHBOARD_USERS" in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (["-p", "title", "Weekly"], {"title": "Weekly"}),
        (["-p", "a", "1", "--parameter", "b", "x y"], {"a": "1", "b": "x y"}),
        (["-p", "month=2026-10"], {"month": "2026-10"}),
    ],
)
def test_report_parameters_parse_like_papermill(args: list[str], expected: dict[str, str]) -> None:
    assert _parse_parameters(args) == expected


@pytest.mark.parametrize("args", [["-p", "only-key"], ["--verbose"], ["-p"]])
def test_malformed_report_parameters_are_refused(args: list[str]) -> None:
    with pytest.raises(typer.BadParameter):
        _parse_parameters(args)

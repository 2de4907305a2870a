from __future__ import annotations

from workbench.errors import (
    ComponentUnavailableError,
    MissingDependencyError,
    SettingsError,
    UnknownNameError,
    did_you_mean,
)


def test_unknown_name_suggests_the_closest_known_one() -> None:
    error = UnknownNameError("report", "overveiw", ["overview", "catalog", "billing"])
    assert str(error).startswith("Unknown report 'overveiw'. Did you mean 'overview'?")
    assert "billing, catalog, overview" in str(error)
    assert error.suggestion == "overview"


def test_no_suggestion_when_nothing_is_close() -> None:
    assert did_you_mean("zzz", ["overview"]) is None
    assert "Did you mean" not in str(UnknownNameError("report", "zzz", ["overview"]))


def test_missing_dependency_names_the_pip_command() -> None:
    error = MissingDependencyError("Reports", "reports", module="papermill")
    assert "pip install 'dictamesh-workbench[reports]'" in str(error)
    assert error.kind == "terminal"


def test_transient_and_terminal_are_marked() -> None:
    assert ComponentUnavailableError("x").transient
    assert not SettingsError("x").transient
    assert str(SettingsError("bad", remedy="fix it")) == "bad Remedy: fix it"

"""Import/export as YAML, JSON and .env; the `dictamesh config` commands as a user runs them."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from tests.helpers import run_cli
from workbench.config import Config, InvalidValueError
from workbench.config.io import env_name, export, import_text, key_from_env_name
from workbench.errors import UnknownNameError

pytestmark = pytest.mark.stack


def _seed(config: Config, ns: str) -> None:
    config.define(f"{ns}.port", schema={"type": "integer", "maximum": 65535})
    config.set(f"{ns}.port", 8080, environment="staging")
    config.set(f"{ns}.port", 9090, environment="staging", service="api")
    config.set(f"{ns}.name", "svc one", environment="staging", service="api", component="web")
    config.set(f"{ns}.pw", "p@ss w0rd", environment="staging", secret=True)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_then_import_round_trips(config: Config, admin: Config, ns: str, fmt: str) -> None:
    _seed(admin, ns)
    text = export(config, "staging", fmt=fmt)  # type: ignore[arg-type]
    assert "p@ss w0rd" not in text and "••••••" in text
    doc = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    assert doc["values"][f"{ns}.port"] == 8080
    assert doc["services"]["api"]["values"][f"{ns}.port"] == 9090
    assert doc["services"]["api"]["components"]["web"]["values"][f"{ns}.name"] == "svc one"
    assert f"{ns}.pw" in doc["secrets"]

    doc["environment"] = "dev"
    doc = {  # only this test's keys
        "environment": "dev",
        "values": {k: v for k, v in doc["values"].items() if k.startswith(ns)},
        "services": {"api": doc["services"]["api"]},
        "secrets": doc["secrets"],
    }
    doc["services"]["api"]["values"] = {
        k: v for k, v in doc["services"]["api"]["values"].items() if k.startswith(ns)
    }
    doc["services"]["api"].pop("components", None)
    plan = import_text(config, json.dumps(doc), fmt="json", dry_run=True)
    assert plan.counts == {"added": 2, "skipped": 1}, "the masked secret is skipped"
    assert config.get(f"{ns}.port", environment="dev", default=None) is None, "dry run"
    done = import_text(config, json.dumps(doc), fmt="json", reason="copy staging")
    assert len(done.applied) == 2
    assert config.get(f"{ns}.port", environment="dev", service="api") == 9090
    again = import_text(config, json.dumps(doc), fmt="json")
    assert again.counts == {"unchanged": 2, "skipped": 1} and again.applied == []


def test_env_format_is_schema_aware(config: Config, admin: Config, ns: str) -> None:
    _seed(admin, ns)
    text = export(admin, "staging", service="api", component="web", fmt="env", include_secrets=True)
    lines = {
        line.split("=", 1)[0]: line.split("=", 1)[1] for line in text.splitlines() if "=" in line
    }
    assert lines[env_name(f"{ns}.port")] == "9090"
    assert lines[env_name(f"{ns}.name")] == '"svc one"'
    assert lines[env_name(f"{ns}.pw")] == '"p@ss w0rd"'
    assert key_from_env_name(env_name(f"{ns}.port"), [f"{ns}.port"]) == f"{ns}.port"
    config.define(f"{ns}.zip", schema={"type": "string"})
    body = f"{env_name(f'{ns}.zip')}=01234\n{env_name(f'{ns}.port')}=81\n# comment\n"
    import_text(config, body, fmt="env", environment="dev", service="api")
    assert config.get(f"{ns}.zip", environment="dev", service="api") == "01234"
    assert config.get(f"{ns}.port", environment="dev", service="api") == 81


def test_bad_import_files_apply_nothing(config: Config, ns: str) -> None:
    config.define(f"{ns}.port", schema={"type": "integer", "maximum": 65535})
    good, bad = f"{ns}.good", f"{ns}.port"
    doc = {"environment": "dev", "values": {good: 1, bad: 70000}}
    with pytest.raises(InvalidValueError, match="'maximum'"):
        import_text(config, json.dumps(doc), fmt="json")
    assert config.get(good, environment="dev", default=None) is None, "all or nothing"
    with pytest.raises(InvalidValueError, match=r"not valid JSON: .*line 1"):
        import_text(config, "{nope", fmt="json")
    with pytest.raises(InvalidValueError, match="not valid YAML at line 3"):
        import_text(config, "values:\n  a: [1, 2\n", fmt="yaml")
    with pytest.raises(InvalidValueError, match="line 1 is not NAME=VALUE"):
        import_text(config, "not an assignment", fmt="env", environment="dev")
    with pytest.raises(UnknownNameError, match="prod"):
        import_text(config, json.dumps({"environment": "prd", "values": {good: 1}}), fmt="json")


def test_cli_set_get_history_diff_rollback(config: Config, ns: str) -> None:
    key = f"{ns}.cli.retries"
    first = run_cli("config", "set", key, "3", "--env", "dev", "--service", "api", "-m", "start")
    assert first.returncode == 0, first.stderr
    assert "version #" in first.stdout
    version = int(first.stdout.split("#", 1)[1].split(":", 1)[0])
    assert run_cli("config", "set", key, "5", "--env", "dev", "--service", "api").returncode == 0
    got = run_cli("config", "get", key, "--env", "dev", "--service", "api", "--component", "x")
    assert got.returncode == 0 and got.stdout.strip() == "5"
    explained = run_cli("config", "get", key, "--env", "dev", "--service", "api", "--explain")
    assert "wins" in explained.stdout
    history = run_cli("config", "history", key, "--json")
    assert [row["new_value"] for row in json.loads(history.stdout)] == ["5", "3"]
    assert run_cli("config", "diff", "--version", str(version)).returncode == 0
    rolled = run_cli("config", "rollback", key, "--to-version", str(version), "-m", "undo")
    assert rolled.returncode == 0, rolled.stderr
    assert config.get(key, environment="dev", service="api") == 3
    config.set(key, 4, environment="staging", service="api")
    diff = run_cli("config", "diff", "--env", "dev", "--to", "staging", "--service", "api")
    assert diff.returncode == 0 and key in diff.stdout and "changed" in diff.stdout


def test_cli_refuses_bad_input_with_one_line(ns: str) -> None:
    bad_json = run_cli("config", "set", f"{ns}.x", "{oops", "--env", "dev")
    assert bad_json.returncode == 1 and "not valid JSON" in bad_json.stderr
    unknown = run_cli("config", "set", f"{ns}.x", "1", "--env", "prd")
    assert unknown.returncode == 1 and "Did you mean 'prod'?" in unknown.stderr
    as_text = run_cli("config", "set", f"{ns}.x", "plain words", "--env", "dev", "--string")
    assert as_text.returncode == 0, as_text.stderr


def test_cli_secrets_validate_export_import_and_rotate(
    config: Config, admin: Config, ns: str, tmp_path: Path
) -> None:
    key = f"{ns}.cli.token"
    made = run_cli("config", "set", key, '"tok-123456"', "--env", "dev", "--secret")
    assert made.returncode == 0, made.stderr and "tok-123456" not in made.stdout
    masked = run_cli("config", "get", key, "--env", "dev")
    assert "tok-123456" not in masked.stdout and "••••••" in masked.stdout
    denied = run_cli("config", "get", key, "--env", "dev", "--reveal")
    assert denied.returncode == 1 and "may not read secret" in denied.stderr
    assert "tok-123456" not in denied.stderr + denied.stdout
    admin.grant(getpass.getuser(), "secrets:read", keys=key, environments="dev")
    shown = run_cli("config", "get", key, "--env", "dev", "--reveal")
    assert shown.returncode == 0 and "tok-123456" in shown.stdout

    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "integer", "minimum": 1}')
    defined = run_cli(
        "config", "set", f"{ns}.cli.n", "2", "--env", "dev", "--schema-file", str(schema)
    )
    assert defined.returncode == 0, defined.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"environment: dev\nvalues:\n  {ns}.cli.n: 0\n")
    checked = run_cli("config", "validate", str(bad))
    assert checked.returncode == 1 and "'minimum'" in checked.stderr
    good = tmp_path / "good.yaml"
    good.write_text(f"environment: dev\nvalues:\n  {ns}.cli.n: 7\n")
    assert "valid" in run_cli("config", "validate", str(good)).stdout
    assert config.get(f"{ns}.cli.n", environment="dev") == 2
    imported = run_cli("config", "import", str(good), "-m", "from file")
    assert imported.returncode == 0, imported.stderr
    assert config.get(f"{ns}.cli.n", environment="dev") == 7
    out = tmp_path / "dev.env"
    exported = run_cli("config", "export", "--env", "dev", "--format", "env", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert f"{env_name(ns + '.cli.n')}=7" in out.read_text()
    assert "tok-123456" not in out.read_text()

    rotated = run_cli("config", "rotate-key", "--generate")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped" in rotated.stdout
    # this process's provider re-reads the file: the secret opens with the new key
    fresh = Config(
        config.engine,
        postgres_url=config._shared.postgres_url,
        keys=lambda: __import__("workbench.config.secrets", fromlist=["x"]).provider_from_settings(
            __import__("workbench.settings", fromlist=["x"]).load_settings()
        ),
        actor=admin.actor,
    )
    assert fresh.reveal(key, environment="dev") == "tok-123456"


def test_cli_scope_rollback_and_approvals(
    config: Config, admin: Config, approval_env: str, ns: str
) -> None:
    svc = f"{ns}-svc"
    config.set(f"{ns}.a", 1, environment="dev", service=svc)
    with config.engine.connect() as connection:
        then = connection.execute(text("SELECT now()")).scalar_one()
    config.set(f"{ns}.a", 2, environment="dev", service=svc)
    rolled = run_cli(
        "config",
        "rollback",
        "--env",
        "dev",
        "--service",
        svc,
        "--as-of",
        then.isoformat(),
        "-m",
        "bad deploy",
    )
    assert rolled.returncode == 0, rolled.stderr
    assert "restored 1 key(s)" in rolled.stdout
    assert config.get(f"{ns}.a", environment="dev", service=svc) == 1

    proposal = config.as_actor("dev-fay").set(f"{ns}.b", 5, environment=approval_env)
    listed = run_cli("config", "proposals", "--env", approval_env)
    assert listed.returncode == 0 and f"{ns}.b" in listed.stdout
    refused = run_cli("config", "approve", str(proposal.id))
    assert refused.returncode == 1 and "may not review" in refused.stderr
    admin.grant(getpass.getuser(), "approve", environments=approval_env)
    approved = run_cli("config", "approve", str(proposal.id), "--comment", "ok")
    assert approved.returncode == 0, approved.stderr
    assert config.get(f"{ns}.b", environment=approval_env) == 5

"""Hierarchy, validation, versions, rollback, history, as-of reads and feature flags."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import polars as pl
import pytest
from sqlalchemy import text

from workbench.config import (
    Config,
    ConfigError,
    ConfigVersion,
    InvalidValueError,
    NotFoundError,
)
from workbench.config.store import parse_json_value
from workbench.errors import UnknownNameError

pytestmark = pytest.mark.stack


def test_most_specific_level_wins_and_explain_says_which(config: Config, ns: str) -> None:
    key = f"{ns}.db.pool_size"
    config.set(key, 10, environment="prod", reason="baseline")
    config.set(key, 20, environment="prod", service="api", reason="api is busier")
    config.set(key, 40, environment="prod", service="api", component="worker", reason="batch")

    assert config.get(key, environment="prod") == 10
    assert config.get(key, environment="prod", service="billing") == 10
    assert config.get(key, environment="prod", service="api") == 20
    assert config.get(key, environment="prod", service="api", component="web") == 20
    assert config.get(key, environment="prod", service="api", component="worker") == 40
    with pytest.raises(NotFoundError, match="no value in dev"):
        config.get(key, environment="dev")
    assert config.get(key, environment="dev", default=3) == 3

    explained = config.explain(key, environment="prod", service="api", component="worker")
    assert explained.value == 40
    assert explained.winner is not None and explained.winner.level == "component"
    assert [level.value for level in explained.overridden] == [20, 10]
    shown = str(explained)
    assert "wins" in shown and "overridden" in shown
    assert "component" in repr(explained)
    assert "<table>" in explained._repr_html_()


def test_values_are_json_and_objects_round_trip(config: Config, ns: str) -> None:
    key = f"{ns}.limits"
    value = {"rps": 100, "burst": [1, 2.5, None], "on": True, "name": "ünïcode"}
    config.set(key, value, environment="dev")
    assert config.get(key, environment="dev") == value


def test_unknown_environment_suggests_the_close_one(config: Config, ns: str) -> None:
    with pytest.raises(UnknownNameError) as caught:
        config.set(f"{ns}.x", 1, environment="prd")
    assert caught.value.suggestion == "prod"
    assert "Did you mean 'prod'?" in str(caught.value)
    with pytest.raises(UnknownNameError, match="prod"):
        config.get(f"{ns}.x", environment="prd")
    assert config.history(f"{ns}.x").height == 0, "nothing applied"


def test_invalid_json_text_is_refused_with_position(config: Config, ns: str) -> None:
    with pytest.raises(InvalidValueError, match=r"not valid JSON: .* line 1 column") as caught:
        parse_json_value(f"{ns}.x", "{'single': quotes}")
    assert caught.value.rule == "json"
    with pytest.raises(InvalidValueError, match="is not JSON"):
        config.set(f"{ns}.x", {1, 2}, environment="dev")
    with pytest.raises(InvalidValueError, match="is not JSON"):
        config.set(f"{ns}.x", float("nan"), environment="dev")
    assert config.history(f"{ns}.x").height == 0


def test_schema_violation_names_key_value_and_rule(config: Config, ns: str) -> None:
    key = f"{ns}.http.port"
    config.define(
        key,
        schema={"type": "integer", "minimum": 1, "maximum": 65535},
        description="listen port",
        tags=["network"],
        owners=["platform-team"],
    )
    config.set(key, 8080, environment="dev")
    with pytest.raises(InvalidValueError) as caught:
        config.set(key, 70000, environment="dev")
    message = str(caught.value)
    assert key in message and "70000" in message and "'maximum'" in message
    assert caught.value.rule == "maximum"
    with pytest.raises(InvalidValueError, match="'type'"):
        config.set(key, "eighty", environment="dev")
    assert config.get(key, environment="dev") == 8080, "nothing applied"
    info = config.key_info(key)
    assert info is not None and info.tags == ["network"] and info.owners == ["platform-team"]
    keys = config.keys(f"{ns}.*")
    assert keys["description"].to_list() == ["listen port"]


def test_a_new_schema_must_accept_existing_values(config: Config, ns: str) -> None:
    key = f"{ns}.mode"
    config.set(key, "fast", environment="dev")
    with pytest.raises(InvalidValueError, match="'enum'"):
        config.define(key, schema={"enum": ["safe", "slow"]})
    with pytest.raises(InvalidValueError, match="not a valid schema"):
        config.define(key, schema={"type": "no-such-type"})
    config.define(key, schema={"enum": ["fast", "safe"]})


def test_every_change_is_a_version_with_author_reason_and_diff(config: Config, ns: str) -> None:
    key = f"{ns}.timeout"
    first = config.set(key, 5, environment="staging", service="api", reason="initial")
    second = config.set(key, 7, environment="staging", service="api", reason="slow upstream")
    assert isinstance(first, ConfigVersion) and isinstance(second, ConfigVersion)
    assert second.id > first.id
    assert second.author == config.actor.name and second.author_type == "user"
    assert second.reason == "slow upstream"
    assert "-5" in second.diff and "+7" in second.diff
    same = config.set(key, 7, environment="staging", service="api")
    assert isinstance(same, ConfigVersion) and same.id == second.id, "unchanged: no new version"

    history = config.history(key)
    assert history["version"].to_list() == [second.id, first.id]
    assert history["reason"].to_list() == ["slow upstream", "initial"]
    by_service = config.history(environment="staging", service="api")
    assert set(by_service["key"].to_list()) >= {key}

    with config.engine.begin() as connection, pytest.raises(Exception, match="append-only"):
        connection.execute(
            text("UPDATE dictamesh_config_versions SET reason = 'x' WHERE id = :id"),
            {"id": first.id},
        )


def test_rollback_is_a_new_version_and_as_of_reads_the_past(config: Config, ns: str) -> None:
    key = f"{ns}.replicas"
    v1 = config.set(key, 2, environment="dev", service="api")
    assert isinstance(v1, ConfigVersion)
    with config.engine.connect() as connection:
        between = connection.execute(text("SELECT now()")).scalar_one()
    config.set(key, 9, environment="dev", service="api", reason="load test")
    assert config.get(key, environment="dev", service="api", as_of=between) == 2
    assert config.snapshot("dev", "api", as_of=between)[key] == 2
    assert config.snapshot("dev", "api")[key] == 9

    rolled = config.rollback(key, to_version=v1.id, reason="load test over")
    assert isinstance(rolled, ConfigVersion)
    assert rolled.action == "rollback" and rolled.rollback_of == v1.id and rolled.id > v1.id
    assert config.get(key, environment="dev", service="api") == 2
    assert config.history(key).height == 3

    config.set(key, 4, environment="dev", service="api")
    back = config.rollback(key, as_of=between, environment="dev", service="api")
    assert isinstance(back, ConfigVersion) and back.rollback_of == v1.id
    assert config.get(key, environment="dev", service="api") == 2

    before_key_existed = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert (
        config.get(key, environment="dev", service="api", as_of=before_key_existed, default=None)
        is None
    )
    with pytest.raises(ConfigError, match="exactly one"):
        config.rollback(key)


def test_delete_falls_back_to_less_specific_level(config: Config, ns: str) -> None:
    key = f"{ns}.level"
    config.set(key, "env", environment="dev")
    config.set(key, "svc", environment="dev", service="api")
    config.delete(key, environment="dev", service="api", reason="use the default")
    assert config.get(key, environment="dev", service="api") == "env"
    with pytest.raises(NotFoundError):
        config.delete(key, environment="dev", service="api")


def test_diff_between_environments(config: Config, ns: str) -> None:
    config.set(f"{ns}.a", 1, environment="dev", service="svc")
    config.set(f"{ns}.a", 2, environment="staging", service="svc")
    config.set(f"{ns}.b", True, environment="dev", service="svc")
    config.set(f"{ns}.c", "same", environment="dev", service="svc")
    config.set(f"{ns}.c", "same", environment="staging", service="svc")
    frame = config.diff("dev", "staging", service="svc").filter(pl.col("key").str.starts_with(ns))
    assert dict(zip(frame["key"], frame["status"], strict=True)) == {
        f"{ns}.a": "changed",
        f"{ns}.b": "only_left",
        f"{ns}.c": "same",
    }


def test_feature_flags_are_typed_booleans_per_environment(config: Config, ns: str) -> None:
    flag = f"{ns}.new_checkout"
    config.define_flag(flag, description="the new checkout flow", owners=["payments"])
    config.set_flag(flag, True, environment="dev")
    config.set_flag(flag, False, environment="prod")
    assert config.flag(flag, environment="dev") is True
    assert config.flag(flag, environment="prod", cached=False) is False
    assert config.flag(flag, environment="staging") is False, "unset means off"
    with pytest.raises(InvalidValueError, match="'type'"):
        config.set(flag, "yes", environment="dev")
    row = config.flags().filter(pl.col("flag") == flag).to_dicts()[0]
    assert row["dev"] is True and row["prod"] is False and row["staging"] is None


def test_bad_names_are_refused(config: Config) -> None:
    with pytest.raises(ConfigError, match="key name"):
        config.set("bad key!", 1, environment="dev")
    with pytest.raises(ConfigError, match="needs a service"):
        config.set("ok.key", 1, environment="dev", component="worker")


def test_audit_rows_for_changes(config: Config, ns: str, workbench: Any) -> None:
    key = f"{ns}.audited"
    service_actor = config.as_actor(
        "billing-svc", "service", request_id="req-123", address="10.0.0.7", user_agent="billing/1.2"
    )
    service_actor.set(key, 1, environment="dev", reason="deploy")
    row = config.audit(key=key).to_dicts()[0]
    assert row["actor"] == "billing-svc" and row["actor_type"] == "service"
    assert row["request_id"] == "req-123" and row["address"] == "10.0.0.7"
    assert row["user_agent"] == "billing/1.2" and row["action"] == "set"
    assert row["at"] is not None


def test_changes_are_announced_through_the_outbox(admin: Config, ns: str) -> None:
    with admin.engine.connect() as connection:
        if not connection.execute(text("SELECT to_regclass('dictamesh_outbox')")).scalar():
            pytest.skip("the transactional outbox (migration 0007) is not installed")
    plain = admin.set(f"{ns}.announced", {"n": 1}, environment="dev", reason="outbox")
    secret = admin.set(f"{ns}.announced_pw", "pw-not-in-events", environment="dev", secret=True)
    assert isinstance(plain, ConfigVersion) and isinstance(secret, ConfigVersion)
    with admin.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT topic, record_value FROM dictamesh_outbox WHERE topic = "
                "'dictamesh.config.changed' AND convert_from(record_value, 'UTF8') LIKE :ns"
            ),
            {"ns": f"%{ns}.announced%"},
        ).all()
    bodies = [json.loads(bytes(row[1])) for row in rows]
    by_key = {body["key"]: body for body in bodies}
    assert by_key[f"{ns}.announced"]["value"] == {"n": 1}
    assert by_key[f"{ns}.announced"]["version"] == plain.id
    assert by_key[f"{ns}.announced_pw"]["is_secret"] is True
    assert "value" not in by_key[f"{ns}.announced_pw"]
    assert all("pw-not-in-events" not in bytes(row[1]).decode() for row in rows)


def test_concurrent_writers_each_get_a_version_and_a_consistent_chain(
    config: Config, ns: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = f"{ns}.counter"
    config.set(key, -1, environment="dev")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: config.set(key, i, environment="dev"), range(24)))
    history = config.history(key).sort("version")
    assert history.height == 25
    olds = [json.loads(v) for v in history["old_value"].to_list()[1:]]
    news = [json.loads(v) for v in history["new_value"].to_list()[:-1]]
    assert olds == news, "each version's old value is the previous version's new value"
    assert config.get(key, environment="dev") == json.loads(history["new_value"][-1])


def test_a_whole_service_rolls_back_to_a_time_in_one_change_set(admin: Config, ns: str) -> None:
    svc = f"{ns}-svc"
    admin.set(f"{ns}.a", 1, environment="staging", service=svc)
    admin.set(f"{ns}.pw", "old-pw", environment="staging", service=svc, secret=True)
    with admin.engine.connect() as connection:
        then = connection.execute(text("SELECT now()")).scalar_one()
    admin.set(f"{ns}.a", 2, environment="staging", service=svc)
    admin.set(f"{ns}.pw", "new-pw", environment="staging", service=svc)
    admin.set(f"{ns}.added_later", True, environment="staging", service=svc)
    admin.set(f"{ns}.env_level", "untouched", environment="staging")

    restored = admin.rollback_scope(
        environment="staging", service=svc, as_of=then, reason="bad deploy"
    )
    assert {v.key for v in restored} == {f"{ns}.a", f"{ns}.pw", f"{ns}.added_later"}
    assert admin.get(f"{ns}.a", environment="staging", service=svc) == 1
    assert admin.reveal(f"{ns}.pw", environment="staging", service=svc) == "old-pw"
    assert admin.get(f"{ns}.added_later", environment="staging", service=svc, default=None) is None
    assert admin.get(f"{ns}.env_level", environment="staging", service=svc) == "untouched"
    assert admin.rollback_scope(environment="staging", service=svc, as_of=then) == []

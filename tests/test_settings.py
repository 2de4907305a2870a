from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workbench.errors import SettingsError
from workbench.settings import ACCEPTED_FORMS, Settings, load_settings, redact_url


def test_defaults_embed_every_component(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DICTAMESH_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings()
    assert settings.home == tmp_path / ".dictamesh"
    assert not any(settings.is_external(c) for c in ("postgres", "broker", "redis"))
    assert settings.master_key_file == tmp_path / ".dictamesh" / "secrets" / "master.key"
    assert settings.dashboard_users == {}


def test_urls_make_components_external(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICTAMESH_POSTGRES_URL", "postgresql://u:p@db:5432/x")
    monkeypatch.setenv("DICTAMESH_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    settings = load_settings()
    assert settings.is_external("postgres")
    assert settings.is_external("broker")
    assert not settings.is_external("redis")


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DICTAMESH_LOG_FORMAT=json\nDICTAMESH_REDIS_PORT=6390\n")
    settings = load_settings()
    assert settings.log_format == "json"
    assert settings.redis_port == 6390


@pytest.mark.parametrize(
    ("variable", "value", "expected_form"),
    [
        (
            "DICTAMESH_POSTGRES_URL",
            "mysql://root@db/x",
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME",
        ),
        ("DICTAMESH_KAFKA_BOOTSTRAP", "localhost", "HOST:PORT[,HOST:PORT...]"),
        ("DICTAMESH_KAFKA_BOOTSTRAP", "a:9092,b:99999", "HOST:PORT[,HOST:PORT...]"),
        ("DICTAMESH_REDIS_URL", "http://cache:6379", "redis://"),
        ("DICTAMESH_REDIS_PORT", "70000", "a TCP port 1-65535, or 0"),
        ("DICTAMESH_MASTER_KEY_SOURCE", "vault", "'env' (key in DICTAMESH_MASTER_KEY)"),
        ("DICTAMESH_DASHBOARD_USERS", "admin", "USER:PASSWORD"),
        ("DICTAMESH_DASHBOARD_USERS", "admin:short", "USER:PASSWORD"),
        ("DICTAMESH_LOG_FORMAT", "xml", "'console' or 'json'"),
        ("DICTAMESH_API_TOKENS", "tiny", "TOKEN[,TOKEN...]"),
    ],
)
def test_invalid_values_name_the_variable_and_the_accepted_form(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected_form: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message
    assert expected_form in message
    assert caught.value.remedy


def test_secrets_never_appear_in_errors_or_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICTAMESH_POSTGRES_URL", "mysql://root:hunter2-secret@db/x")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter2-secret" not in str(caught.value)
    assert "mysql://root:***@db/x" in str(caught.value)

    monkeypatch.setenv("DICTAMESH_POSTGRES_URL", "postgresql://u:hunter2-secret@db/x")
    monkeypatch.setenv("DICTAMESH_DASHBOARD_USERS", "ada:correct-horse")
    settings = load_settings()
    assert "hunter2-secret" not in repr(settings)
    assert "correct-horse" not in repr(settings)
    assert settings.dashboard_users["ada"].get_secret_value() == "correct-horse"


def test_several_problems_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICTAMESH_LOG_LEVEL", "LOUD")
    monkeypatch.setenv("DICTAMESH_KAFKA_PORT", "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "DICTAMESH_LOG_LEVEL='LOUD'" in str(caught.value)
    assert "DICTAMESH_KAFKA_PORT='-1'" in str(caught.value)


def test_every_setting_with_a_syntax_documents_its_form() -> None:
    for name in ACCEPTED_FORMS:
        assert name in Settings.model_fields, f"ACCEPTED_FORMS names unknown setting {name}"


@given(
    user=st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
    password=st.text(
        st.characters(blacklist_characters="@/:#?[]", blacklist_categories=("Cs", "Cc", "Zs")),
        min_size=1,
        max_size=30,
    ),
    host=st.sampled_from(["db", "127.0.0.1", "pg.internal"]),
)
def test_redact_url_never_shows_the_password(user: str, password: str, host: str) -> None:
    url = f"postgresql://{user}:{password}@{host}:5432/dictamesh"
    redacted = redact_url(url)
    assert redacted == f"postgresql://{user}:***@{host}:5432/dictamesh"

"""Envelope encryption, permission-checked and audited reads, masking, rotation, tampering."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from workbench.config import (
    SYSTEM,
    Config,
    InvalidValueError,
    MasterKeyError,
    PermissionDeniedError,
    SecretIntegrityError,
    SecretValue,
)
from workbench.config.secrets import (
    EnvKeyProvider,
    FileKeyProvider,
    StaticKeyProvider,
    generate_master_key,
    key_id,
    parse_master_key,
)

pytestmark = pytest.mark.stack
PLAIN = "hunter2-correct-horse"


def _other_config(config: Config, provider: Any, actor: Any = SYSTEM) -> Config:
    return Config(
        config.engine,
        postgres_url=config._shared.postgres_url,
        keys=provider,
        actor=actor,
    )


def _stored(config: Config, key: str) -> dict[str, Any]:
    with config.engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT s.* FROM dictamesh_config_secrets s JOIN dictamesh_config_values v "
                "ON v.secret_id = s.id WHERE v.key = :k"
            ),
            {"k": key},
        ).one()
    return dict(row._mapping)


def test_secret_is_encrypted_at_rest_with_its_own_data_key(admin: Config, ns: str) -> None:
    key = f"{ns}.db.password"
    admin.set(key, PLAIN, environment="dev", secret=True, reason="rotate db creds")
    admin.set(f"{ns}.other", PLAIN, environment="dev", secret=True)
    one, two = _stored(admin, key), _stored(admin, f"{ns}.other")
    assert PLAIN.encode() not in bytes(one["ciphertext"])
    assert one["wrapped_key"] != two["wrapped_key"], "a data key per secret"
    assert one["algorithm"] == "AES-256-GCM"
    with admin.engine.connect() as connection:
        dumped = connection.execute(
            text("SELECT row_to_json(t)::text FROM dictamesh_config_values t WHERE key = :k"),
            {"k": key},
        ).scalar_one()
        versions = connection.execute(
            text(
                "SELECT string_agg(row_to_json(t)::text, '') FROM dictamesh_config_versions t "
                "WHERE key = :k"
            ),
            {"k": key},
        ).scalar_one()
    assert PLAIN not in dumped and PLAIN not in versions
    assert admin.reveal(key, environment="dev") == PLAIN


def test_secrets_are_masked_everywhere(admin: Config, ns: str, caplog: Any) -> None:
    key = f"{ns}.api_token"
    caplog.set_level(logging.DEBUG)
    version = admin.set(key, PLAIN, environment="dev", secret=True)
    value = admin.get(key, environment="dev")
    assert isinstance(value, SecretValue)
    for shown in (
        repr(value),
        str(value),
        f"{value}",
        repr(version),
        version.diff,
        str(admin.explain(key, environment="dev")),
        admin.explain(key, environment="dev")._repr_html_(),
        str(admin.history(key).to_dicts()),
        str(admin.snapshot("dev")),
        str(admin.values("dev").to_dicts()),
        str(admin.audit(key=key).to_dicts()),
    ):
        assert PLAIN not in shown
    assert PLAIN not in caplog.text
    admin.define(f"{ns}.pin", kind="secret", schema={"type": "string", "minLength": 30})
    with pytest.raises(InvalidValueError) as caught:
        admin.set(f"{ns}.pin", PLAIN, environment="dev")
    assert PLAIN not in str(caught.value) and "minLength" in str(caught.value)
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(value)


def test_reader_without_permission_gets_nothing_and_is_audited(
    admin: Config, config: Config, ns: str
) -> None:
    key = f"{ns}.stripe_key"
    admin.set(key, PLAIN, environment="prod", secret=True)
    admin.set(key, PLAIN, environment="dev")
    reader = config.as_actor(
        "mallory", "user", request_id="req-denied", address="203.0.113.9", user_agent="curl/8"
    )
    with pytest.raises(PermissionDeniedError) as caught:
        reader.reveal(key, environment="prod")
    assert PLAIN not in str(caught.value) and "mallory" in str(caught.value)
    denied = admin.audit(key=key, action="secret.read").to_dicts()[0]
    assert denied["outcome"] == "denied" and denied["actor"] == "mallory"
    assert denied["address"] == "203.0.113.9" and denied["user_agent"] == "curl/8"
    assert denied["request_id"] == "req-denied"

    admin.grant("alice", "secrets:read", keys=f"{ns}.*", environments="prod")
    alice = config.as_actor("alice", "user", request_id="req-ok")
    assert alice.reveal(key, environment="prod") == PLAIN
    with pytest.raises(PermissionDeniedError):
        alice.reveal(key, environment="dev")  # granted for prod only
    reads = admin.audit(key=key, action="secret.read").to_dicts()
    read = next(r for r in reads if r["outcome"] == "ok")
    assert read["outcome"] == "ok" and read["actor"] == "alice" and read["request_id"] == "req-ok"
    # granting needs admin
    with pytest.raises(PermissionDeniedError):
        reader.grant("mallory", "secrets:read")


def test_wrong_master_key_is_a_clear_error_revealing_nothing(admin: Config, ns: str) -> None:
    key = f"{ns}.wrong_master"
    admin.set(key, PLAIN, environment="dev", secret=True)
    stranger = _other_config(admin, StaticKeyProvider(b"\x01" * 32, name="wrong"))
    with pytest.raises(MasterKeyError) as caught:
        stranger.reveal(key, environment="dev")
    message = str(caught.value)
    assert "does not hold" in message and "Nothing was decrypted" in message
    assert PLAIN not in message


@pytest.mark.parametrize("column", ["ciphertext", "wrapped_key", "nonce"])
def test_tampered_ciphertext_fails_the_gcm_tag(admin: Config, ns: str, column: str) -> None:
    key = f"{ns}.tamper_{column}"
    admin.set(key, PLAIN, environment="dev", secret=True)
    stored = _stored(admin, key)
    altered = bytearray(stored[column])
    altered[0] ^= 0x01
    with admin.engine.begin() as connection:
        connection.execute(
            text(f"UPDATE dictamesh_config_secrets SET {column} = :v WHERE id = :id"),
            {"v": bytes(altered), "id": stored["id"]},
        )
    try:
        with pytest.raises(SecretIntegrityError) as caught:
            admin.reveal(key, environment="dev")
        assert "integrity check" in str(caught.value) and PLAIN not in str(caught.value)
        if column == "wrapped_key":  # rotation unwraps data keys, so it notices this one
            new_key = parse_master_key(generate_master_key(), where="test")
            both = StaticKeyProvider(new_key, *admin._keys().keys())
            with pytest.raises(SecretIntegrityError, match="nothing was re-wrapped"):
                _other_config(admin, both).rotate_master_key()
            assert _stored(admin, key)["master_key_id"] == stored["master_key_id"]
    finally:  # a corrupt secret stops rotations; leave none behind for the other tests
        with admin.engine.begin() as connection:
            connection.execute(
                text(f"UPDATE dictamesh_config_secrets SET {column} = :v WHERE id = :id"),
                {"v": stored[column], "id": stored["id"]},
            )
    assert admin.reveal(key, environment="dev") == PLAIN


def test_swapping_ciphertexts_between_secrets_fails(admin: Config, ns: str) -> None:
    admin.set(f"{ns}.a", "aaa", environment="dev", secret=True)
    admin.set(f"{ns}.b", "bbb", environment="dev", secret=True)
    b = _stored(admin, f"{ns}.b")
    with admin.engine.begin() as connection:
        connection.execute(
            text("UPDATE dictamesh_config_values SET secret_id = :id WHERE key = :k"),
            {"id": b["id"], "k": f"{ns}.a"},
        )
    with pytest.raises(SecretIntegrityError):
        admin.reveal(f"{ns}.a", environment="dev")


def test_rotation_rewraps_every_data_key_in_one_transaction(admin: Config, ns: str) -> None:
    old = admin._keys()
    key = f"{ns}.rotated"
    admin.set(key, PLAIN, environment="dev", secret=True)
    new_key = parse_master_key(generate_master_key(), where="test")
    # During the rotation a process holding both keys (new first) keeps reading.
    both = StaticKeyProvider(new_key, *old.keys(), name="both")
    rotating = _other_config(admin, both)
    assert rotating.reveal(key, environment="dev") == PLAIN
    count = rotating.rotate_master_key()
    assert count >= 1
    assert _stored(admin, key)["master_key_id"] == key_id(new_key)
    assert rotating.reveal(key, environment="dev") == PLAIN
    only_new = _other_config(admin, StaticKeyProvider(new_key, name="new"))
    assert only_new.reveal(key, environment="dev") == PLAIN
    # put everything back under the session's key so other tests keep working
    assert _other_config(admin, both).rotate_master_key(old) >= 1
    assert admin.reveal(key, environment="dev") == PLAIN


def test_rollback_restores_a_secret_without_reencrypting(admin: Config, ns: str) -> None:
    key = f"{ns}.rolled_secret"
    first = admin.set(key, "first", environment="dev", secret=True)
    admin.set(key, "second", environment="dev", secret=True)
    admin.rollback(key, to_version=first.id)
    assert admin.reveal(key, environment="dev") == "first"


def test_providers_parse_and_refuse_keys(tmp_path: Path) -> None:
    text_key = generate_master_key()
    raw = parse_master_key(text_key, where="t")
    assert len(raw) == 32 and parse_master_key(raw.hex(), where="t") == raw
    with pytest.raises(MasterKeyError, match="not 32 bytes") as caught:
        parse_master_key("too-short-secret", where="DICTAMESH_MASTER_KEY")
    assert "too-short-secret" not in str(caught.value)
    with pytest.raises(MasterKeyError, match="not set"):
        EnvKeyProvider(None).keys()
    assert EnvKeyProvider(f"{text_key},{generate_master_key()}").primary() == raw
    path = tmp_path / "secrets" / "master.key"
    with pytest.raises(MasterKeyError, match="does not exist"):
        FileKeyProvider(path).keys()
    created = FileKeyProvider(path, create=True).keys()
    assert len(created) == 1 and (path.stat().st_mode & 0o777) == 0o600
    assert FileKeyProvider(path).keys() == created

"""Envelope encryption of configuration secrets (AES-256-GCM).

Every secret value gets its own random 256-bit data key. The value is encrypted with the data key;
the data key is encrypted ("wrapped") with the master key. Only wrapped data keys are stored, each
with the id (a fingerprint) of the master key that wrapped it, so rotating the master key re-wraps
small data keys and never touches the values themselves.

Master keys come from a `MasterKeyProvider`: the environment (``DICTAMESH_MASTER_KEY``) or a file
(``HOME/secrets/master.key`` or ``file:PATH``). A provider may hold several keys, newest first:
the first encrypts, all decrypt, which is what lets a rotation happen without downtime. A KMS-style
provider implements the same three methods.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets as _random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from workbench.errors import TerminalError

if TYPE_CHECKING:
    from workbench.settings import Settings

ALGORITHM = "AES-256-GCM"
KEY_BYTES = 32
NONCE_BYTES = 12
MASK = "••••••"


class SecretError(TerminalError):
    """A secret could not be encrypted or decrypted; the message never holds the secret."""


class MasterKeyError(SecretError):
    """The master key is missing, malformed, or not the one that wrapped a secret."""


class SecretIntegrityError(SecretError):
    """Authenticated decryption failed: the ciphertext or its wrapped key was altered."""


def key_id(key: bytes) -> str:
    """A short public fingerprint of a master key (never the key)."""
    return "mk-" + hashlib.sha256(b"dictamesh-master-key:" + key).hexdigest()[:16]


def generate_master_key() -> str:
    """A new random master key in the text form providers read (URL-safe base64 of 32 bytes)."""
    return base64.urlsafe_b64encode(_random.token_bytes(KEY_BYTES)).decode()


def parse_master_key(text: str, *, where: str) -> bytes:
    """32 bytes from base64 (standard or URL-safe) or 64 hex digits; the error hides the text."""
    text = text.strip()
    candidates: list[bytes] = []
    if len(text) == 64:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(text))
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            candidates.append(decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            continue
    for candidate in candidates:
        if len(candidate) == KEY_BYTES:
            return candidate
    raise MasterKeyError(
        f"The master key in {where} is not 32 bytes in base64 or hex (it has {len(text)} "
        "characters; the value is not shown).",
        remedy='generate one with `python -c "from workbench.config.secrets import '
        'generate_master_key as g; print(g())"` or `dictamesh config rotate-key --generate`.',
    )


class MasterKeyProvider(ABC):
    """Where master keys come from. The first key encrypts; every key may decrypt."""

    name: str = "provider"

    @abstractmethod
    def keys(self) -> list[bytes]:
        """Every usable master key, newest (the one that encrypts) first."""

    def primary(self) -> bytes:
        return self.keys()[0]

    def find(self, wanted_id: str) -> bytes | None:
        return next((k for k in self.keys() if key_id(k) == wanted_id), None)

    def ids(self) -> list[str]:
        return [key_id(k) for k in self.keys()]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class StaticKeyProvider(MasterKeyProvider):
    """Keys given in memory (tests, a KMS provider's decrypted cache)."""

    def __init__(self, *keys: bytes, name: str = "static") -> None:
        if not keys or any(len(k) != KEY_BYTES for k in keys):
            raise MasterKeyError("A static key provider needs one or more 32-byte keys.")
        self._keys = list(keys)
        self.name = name

    def keys(self) -> list[bytes]:
        return list(self._keys)


class EnvKeyProvider(MasterKeyProvider):
    """``DICTAMESH_MASTER_KEY``: one key, or several separated by commas, newest first."""

    name = "env DICTAMESH_MASTER_KEY"

    def __init__(self, value: str | None) -> None:
        self._value = value

    def keys(self) -> list[bytes]:
        if not self._value or not self._value.strip():
            raise MasterKeyError(
                "DICTAMESH_MASTER_KEY_SOURCE=env but DICTAMESH_MASTER_KEY is not set.",
                remedy="set DICTAMESH_MASTER_KEY to a base64 32-byte key, or use "
                "DICTAMESH_MASTER_KEY_SOURCE=file.",
            )
        parts = [p for p in self._value.split(",") if p.strip()]
        return [parse_master_key(p, where="DICTAMESH_MASTER_KEY") for p in parts]


class FileKeyProvider(MasterKeyProvider):
    """A 0600 file with one key per line, newest first (``#`` starts a comment)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self.create = create
        self.name = f"file {path}"
        self._cached: tuple[tuple[int, int, int], list[bytes]] | None = None

    def keys(self) -> list[bytes]:
        if not self.path.exists():
            if not self.create:
                raise MasterKeyError(
                    f"The master key file {self.path} does not exist.",
                    remedy="restore it, point DICTAMESH_MASTER_KEY_SOURCE=file:PATH at the right "
                    "file, or create one with `dictamesh config rotate-key --generate`.",
                )
            self.write([generate_master_key()])
        # Re-read when the file changes: running processes follow a rotation without a restart.
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._cached is not None and self._cached[0] == stamp:
            return list(self._cached[1])
        lines = [
            line.strip()
            for line in self.path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        if not lines:
            raise MasterKeyError(f"The master key file {self.path} holds no key.")
        keys = [parse_master_key(line, where=str(self.path)) for line in lines]
        self._cached = (stamp, keys)
        return list(keys)

    def write(self, keys: list[str]) -> None:
        """Replace the file atomically, readable by its owner only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("# DictaMesh master keys, newest first; keep older ones until rotated\n")
            handle.write("\n".join(keys) + "\n")
        os.replace(tmp, self.path)


def provider_from_settings(settings: Settings) -> MasterKeyProvider:
    """The provider `DICTAMESH_MASTER_KEY_SOURCE` names."""
    if settings.master_key_source == "env":
        value = settings.master_key.get_secret_value() if settings.master_key else None
        return EnvKeyProvider(value)
    path = settings.master_key_file
    assert path is not None  # noqa: S101 - settings guarantee a path for file sources
    # The default file is created on first use; an explicit path must already exist.
    return FileKeyProvider(path, create=settings.master_key_source == "file")


@dataclass(frozen=True)
class Sealed:
    """One encrypted secret as stored; `repr` shows only the key id."""

    id: str
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    key_nonce: bytes = field(repr=False)
    wrapped_key: bytes = field(repr=False)
    master_key_id: str


def _aad(secret_id: str, key: str, part: str) -> bytes:
    # Binds each ciphertext to its row and key: swapping ciphertexts between secrets fails the tag.
    return f"dictamesh-config/{part}/{secret_id}/{key}".encode()


def seal(provider: MasterKeyProvider, secret_id: str, key: str, plaintext: bytes) -> Sealed:
    master = provider.primary()
    data_key = AESGCM.generate_key(bit_length=256)
    nonce, key_nonce = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _aad(secret_id, key, "value"))
    wrapped = AESGCM(master).encrypt(key_nonce, data_key, _aad(secret_id, key, "data-key"))
    return Sealed(secret_id, nonce, ciphertext, key_nonce, wrapped, key_id(master))


def unwrap(provider: MasterKeyProvider, sealed: Sealed, key: str) -> bytes:
    master = provider.find(sealed.master_key_id)
    if master is None:
        raise MasterKeyError(
            f"The secret {key!r} was wrapped by master key {sealed.master_key_id}, which "
            f"{provider.name} does not hold (it offers {', '.join(provider.ids())}). "
            "Nothing was decrypted.",
            remedy="configure the master key this installation was set up with; during a "
            "rotation keep the old key after the new one until `dictamesh config rotate-key` ran.",
        )
    try:
        return AESGCM(master).decrypt(
            sealed.key_nonce, sealed.wrapped_key, _aad(sealed.id, key, "data-key")
        )
    except InvalidTag:
        raise SecretIntegrityError(
            f"The wrapped data key of secret {key!r} failed its AES-GCM integrity check: it was "
            "altered or belongs to another secret. Nothing was decrypted.",
            remedy="restore the secret from a backup or set it again.",
        ) from None


def open_sealed(provider: MasterKeyProvider, sealed: Sealed, key: str) -> bytes:
    data_key = unwrap(provider, sealed, key)
    try:
        return AESGCM(data_key).decrypt(
            sealed.nonce, sealed.ciphertext, _aad(sealed.id, key, "value")
        )
    except InvalidTag:
        raise SecretIntegrityError(
            f"The ciphertext of secret {key!r} failed its AES-GCM integrity check (tag mismatch): "
            "it was altered. Nothing was decrypted.",
            remedy="restore the secret from a backup or set it again.",
        ) from None


def rewrap(
    old: MasterKeyProvider, new_master: bytes, sealed: Sealed, key: str
) -> tuple[bytes, bytes, str]:
    """The data key wrapped under `new_master`: (key_nonce, wrapped_key, master_key_id)."""
    data_key = unwrap(old, sealed, key)
    key_nonce = os.urandom(NONCE_BYTES)
    wrapped = AESGCM(new_master).encrypt(key_nonce, data_key, _aad(sealed.id, key, "data-key"))
    return key_nonce, wrapped, key_id(new_master)


class SecretValue:
    """A decrypted secret that will not show itself by accident (repr, str, logs, f-strings)."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def reveal(self) -> object:
        return self._value

    def __repr__(self) -> str:
        return f"SecretValue({MASK})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and _random.compare_digest(
            repr(sorted([str(self._value)])), repr(sorted([str(other._value)]))
        )

    def __hash__(self) -> int:
        return hash("SecretValue")

    def __reduce__(self) -> str:
        raise TypeError("SecretValue cannot be pickled")

"""Who may use the served surfaces, and how a request proves it.

The dashboards use a login form (Panel's basic-auth flow, with constant-time password checks) or
OAuth. Machine endpoints (``/metrics``, ``/api/...``) accept the same signed session cookie, an API
token (``Authorization: Bearer ...``, from ``DICTAMESH_API_TOKENS``) or HTTP Basic credentials.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import SettingsError
from workbench.observability import get_logger
from workbench.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class Credentials:
    """The logins and tokens a server accepts; `repr` hides them."""

    users: dict[str, str] = field(repr=False)
    api_tokens: tuple[str, ...] = field(repr=False)
    cookie_secret: str = field(repr=False)
    demo: bool = False

    def check_password(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        # Compare against a dummy for unknown users too, so timing does not reveal who exists.
        ok = hmac.compare_digest((expected or secrets.token_hex(16)).encode(), password.encode())
        return ok and expected is not None

    def check_token(self, token: str) -> bool:
        return any(hmac.compare_digest(token.encode(), known.encode()) for known in self.api_tokens)

    def check_authorization_header(self, header: str) -> str | None:
        """The principal an ``Authorization`` header proves, or None."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.check_token(value.strip()):
            return "api-token"
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            username, _, password = decoded.partition(":")
            if self.check_password(username, password):
                return username
        return None


def _private_secret(path: Path, nbytes: int = 32) -> str:
    """A random secret kept in a 0600 file, so every server process of one home shares it."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


DEMO_USER = "demo"


def load_credentials(settings: Settings, *, demo: bool = False) -> Credentials:
    """The server's credentials; with no login configured only the demo may invent one."""
    users = {name: secret.get_secret_value() for name, secret in settings.dashboard_users.items()}
    if not users and settings.dashboard_auth == "basic":
        if not demo:
            raise SettingsError(
                "No dashboard login is configured, and the dashboards never run without one.",
                remedy="set DICTAMESH_DASHBOARD_USERS=USER:PASSWORD (8+ characters), or run "
                "`dictamesh serve --demo` for a generated demo login.",
            )
        users = {DEMO_USER: _private_secret(settings.home / "secrets" / "demo-password", 12)}
    if settings.dashboard_auth == "oauth" and not (
        settings.oauth_provider and settings.oauth_key and settings.oauth_secret
    ):
        raise SettingsError(
            "DICTAMESH_DASHBOARD_AUTH=oauth needs DICTAMESH_OAUTH_PROVIDER, DICTAMESH_OAUTH_KEY "
            "and DICTAMESH_OAUTH_SECRET.",
            remedy="set all three, or use DICTAMESH_DASHBOARD_AUTH=basic.",
        )
    cookie_secret = (
        settings.cookie_secret.get_secret_value()
        if settings.cookie_secret
        else _private_secret(settings.home / "secrets" / "cookie-secret")
    )
    return Credentials(
        users=users,
        api_tokens=tuple(t.get_secret_value() for t in settings.api_tokens),
        cookie_secret=cookie_secret,
        demo=demo and not settings.dashboard_users,
    )

"""The Chatwoot connector: DictaMesh's reference connector, faithful to Chatwoot's APIs.

Streams (sync): inboxes, teams, agents, contacts, conversations and messages become catalog
entities of the ``support`` domain (configurable) with their relationships:

- conversation -> inbox (``in_inbox``), contact (``with_contact``), agent (``assigned_to``),
  team (``assigned_team``);
- message -> conversation (``in_conversation``), and its sender contact or agent (``sent_by``);
- contact -> inbox (``reachable_in``, many to many, from its contact inboxes).

Incremental syncs follow ``last_activity_at``: conversations are listed newest first (Chatwoot's
order) until the committed cursor, then handed to the engine oldest first so every committed
cursor is a safe place to resume. Messages are re-read for conversations active since the
cursor. Resources (labels, custom attributes, canned responses, reports, the Platform and Client
APIs) are available through `platform`, `app` and `client`, and `list`/`get`/`search`/
`create`/`update`/`delete`.

Webhooks: deliveries are verified with the webhook's secret (``X-Chatwoot-Signature: sha256=``
HMAC-SHA256 of ``"{X-Chatwoot-Timestamp}.{body}"``, timestamps older than five minutes refused)
and become a ``dictamesh.adapter.event`` CloudEvent (the Chatwoot event in its subject and data)
plus the entity changes they carry.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import Field, SecretStr

from connectors.base.capabilities import (
    Capability,
    EntityRecord,
    Link,
    ResourceAdapter,
    ResourcePage,
    Stream,
    WebhookAdapter,
    WebhookEvent,
)
from connectors.base.config import ConnectorConfig
from connectors.base.errors import ConnectorConfigError, WebhookVerificationError
from connectors.base.http import ApiKeyAuth, HttpClient, RateLimiter, RetryPolicy
from connectors.chatwoot.api import ApplicationAPI, ClientAPI, PlatformAPI, _payload
from workbench.errors import UnknownNameError

SIGNATURE_TOLERANCE = 300  # seconds

STREAMS = [
    Stream("inboxes", "inbox", "id", None, "Inboxes (channels) of the account"),
    Stream("teams", "team", "id", None, "Teams of agents"),
    Stream("agents", "agent", "id", None, "Agents of the account"),
    Stream("contacts", "contact", "id", "last_activity_at", "Contacts, by last activity"),
    Stream("conversations", "conversation", "id", "last_activity_at", "Conversations"),
    Stream("messages", "message", "id", "last_activity_at", "Messages of active conversations"),
]
RESOURCES = (
    "inboxes",
    "teams",
    "agents",
    "contacts",
    "conversations",
    "labels",
    "canned_responses",
    "custom_attributes",
)


class ChatwootConfig(ConnectorConfig):
    base_url: str = Field(pattern=r"^https?://", description="e.g. https://app.chatwoot.com")
    account_id: int = Field(ge=1, description="The account to sync (Application API).")
    api_access_token: SecretStr | None = Field(
        default=None, description="A user's access token (Application API)."
    )
    platform_token: SecretStr | None = Field(
        default=None, description="A platform app's access token (Platform API)."
    )
    inbox_identifier: str | None = Field(
        default=None, description="An API inbox's identifier (Client API)."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="The webhook's secret, to verify deliveries."
    )
    domain: str = "support"
    conversation_status: str = Field(
        default="all", pattern=r"^(all|open|resolved|pending|snoozed)$"
    )
    requests_per_second: float = Field(default=10.0, gt=0)
    timeout: float = Field(default=15.0, gt=0)
    retries: int = Field(default=5, ge=1, le=20)
    max_pages: int = Field(default=10_000, ge=1)


class ChatwootConnector(ResourceAdapter[ChatwootConfig], WebhookAdapter[ChatwootConfig]):
    """Chatwoot (Platform, Application and Client APIs) with verified webhooks."""

    name = "chatwoot"
    version = "0.1.0"
    description = "Chatwoot conversations, messages, contacts, inboxes, teams; webhooks."
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.READ,
            Capability.WRITE,
            Capability.SEARCH,
            Capability.PAGINATION,
            Capability.WEBHOOKS,
            Capability.BATCH,
        }
    )
    config_class = ChatwootConfig

    def __init__(self, config: ChatwootConfig, *, instance: str | None = None) -> None:
        super().__init__(config, instance=instance)
        self._http: dict[str, HttpClient] = {}
        # Called with every response of every client (conformance checks, metrics).
        self.on_response: list[Callable[[httpx.Response], None]] = []

    # -- clients ----------------------------------------------------------------------------
    def _client(self, kind: str, token: SecretStr | None) -> HttpClient:
        if kind not in self._http:
            self._http[kind] = HttpClient(
                self.config.base_url,
                name=f"chatwoot {kind} API",
                auth=ApiKeyAuth(token, name="api_access_token") if token else None,
                timeout=self.config.timeout,
                retry=RetryPolicy(attempts=self.config.retries),
                rate_limit=RateLimiter(self.config.requests_per_second, burst=5),
                on_response=[self._notify],
            )
        return self._http[kind]

    def _notify(self, response: httpx.Response) -> None:
        for hook in self.on_response:
            hook(response)

    @property
    def app(self) -> ApplicationAPI:
        if self.config.api_access_token is None:
            raise ConnectorConfigError(
                f"Connector {self.instance!r} has no api_access_token for the Application API.",
                remedy="set api_access_token (a user's token from the Chatwoot profile page).",
            )
        return ApplicationAPI(
            self._client("application", self.config.api_access_token),
            self.config.account_id,
            max_pages=self.config.max_pages,
        )

    @property
    def platform(self) -> PlatformAPI:
        if self.config.platform_token is None:
            raise ConnectorConfigError(
                f"Connector {self.instance!r} has no platform_token for the Platform API.",
                remedy="set platform_token (a platform app's token from the super admin).",
            )
        return PlatformAPI(self._client("platform", self.config.platform_token))

    @property
    def client(self) -> ClientAPI:
        if not self.config.inbox_identifier:
            raise ConnectorConfigError(
                f"Connector {self.instance!r} has no inbox_identifier for the Client API.",
                remedy="set inbox_identifier (from an API channel inbox's settings).",
            )
        return ClientAPI(self._client("client", None), self.config.inbox_identifier)

    def check(self) -> None:
        self.app.account()

    def shutdown(self) -> None:
        for http in self._http.values():
            http.close()
        self._http.clear()
        super().shutdown()

    # -- sync -------------------------------------------------------------------------------
    def streams(self) -> list[Stream]:
        return list(STREAMS)

    def read(self, stream: Stream, *, cursor: Any = None) -> Iterator[dict[str, Any]]:
        app = self.app
        since = float(cursor) if cursor is not None else None
        if stream.name == "inboxes":
            yield from app.inboxes()
        elif stream.name == "teams":
            yield from app.teams()
        elif stream.name == "agents":
            yield from app.agents()
        elif stream.name == "contacts":
            contacts = [
                c
                for c in app.contacts(sort="last_activity_at")
                if _after(c, "last_activity_at", since)
            ]
            yield from sorted(contacts, key=lambda c: (_number(c.get("last_activity_at")), c["id"]))
        elif stream.name == "conversations":
            yield from self._active_conversations(since)
        elif stream.name == "messages":
            for conversation in self._active_conversations(since):
                activity = _number(conversation.get("last_activity_at"))
                for message in app.messages(int(conversation["id"])):
                    yield {**message, "_conversation_activity": activity}

    def _active_conversations(self, since: float | None) -> list[dict[str, Any]]:
        """Conversations active at or after `since`, oldest activity first."""
        found = []
        for conversation in self.app.conversations(status=self.config.conversation_status):
            if not _after(conversation, "last_activity_at", since):
                break  # newest first: everything after this is older
            found.append(conversation)
        return sorted(found, key=lambda c: (_number(c.get("last_activity_at")), c["id"]))

    def map_record(self, stream: Stream, record: dict[str, Any]) -> EntityRecord:
        mapper = {
            "inbox": self.map_inbox,
            "team": self.map_team,
            "agent": self.map_agent,
            "contact": self.map_contact,
            "conversation": self.map_conversation,
            "message": self.map_message,
        }[stream.entity_type]
        return mapper(record)

    def map_inbox(self, inbox: dict[str, Any]) -> EntityRecord:
        attributes = _pick(
            inbox,
            "name",
            "channel_type",
            "website_url",
            "enable_auto_assignment",
            "greeting_enabled",
            "working_hours_enabled",
            "csat_survey_enabled",
        )
        return EntityRecord("inbox", str(inbox["id"]), attributes, inbox.get("name"))

    def map_team(self, team: dict[str, Any]) -> EntityRecord:
        attributes = _pick(team, "name", "description", "allow_auto_assign")
        return EntityRecord("team", str(team["id"]), attributes, team.get("name"))

    def map_agent(self, agent: dict[str, Any]) -> EntityRecord:
        attributes = _pick(
            agent, "name", "available_name", "email", "role", "confirmed", "availability_status"
        )
        return EntityRecord("agent", str(agent["id"]), attributes, agent.get("name"))

    def map_contact(self, contact: dict[str, Any]) -> EntityRecord:
        attributes = _pick(
            contact,
            "name",
            "email",
            "phone_number",
            "identifier",
            "blocked",
            "additional_attributes",
            "custom_attributes",
            "created_at",
            "last_activity_at",
        )
        links = [
            Link("reachable_in", "inbox", str(ci["inbox"]["id"]), "many_to_many")
            for ci in contact.get("contact_inboxes") or []
            if isinstance(ci, dict) and isinstance(ci.get("inbox"), dict) and "id" in ci["inbox"]
        ]
        return EntityRecord(
            "contact",
            str(contact["id"]),
            attributes,
            contact.get("name") or contact.get("email"),
            links,
            cursor=_number(contact.get("last_activity_at")),
        )

    def map_conversation(self, conversation: dict[str, Any]) -> EntityRecord:
        attributes = _pick(
            conversation,
            "uuid",
            "status",
            "priority",
            "labels",
            "muted",
            "unread_count",
            "custom_attributes",
            "additional_attributes",
            "created_at",
            "timestamp",
            "last_activity_at",
            "first_reply_created_at",
            "waiting_since",
            "snoozed_until",
        )
        raw_meta = conversation.get("meta")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        links = []
        if conversation.get("inbox_id") is not None:
            links.append(Link("in_inbox", "inbox", str(conversation["inbox_id"])))
        sender = meta.get("sender")
        if isinstance(sender, dict) and sender.get("id") is not None:
            links.append(Link("with_contact", "contact", str(sender["id"])))
        assignee = meta.get("assignee")
        if isinstance(assignee, dict) and assignee.get("id") is not None:
            links.append(Link("assigned_to", "agent", str(assignee["id"])))
        team = meta.get("team")
        if isinstance(team, dict) and team.get("id") is not None:
            links.append(Link("assigned_team", "team", str(team["id"])))
        elif conversation.get("team_id") is not None:
            links.append(Link("assigned_team", "team", str(conversation["team_id"])))
        channel = meta.get("channel")
        if channel:
            attributes["channel"] = channel
        return EntityRecord(
            "conversation",
            str(conversation["id"]),
            attributes,
            f"Conversation #{conversation['id']}",
            links,
            tags=[str(label) for label in conversation.get("labels") or []],
            cursor=_number(conversation.get("last_activity_at")),
        )

    def map_message(self, message: dict[str, Any]) -> EntityRecord:
        attributes = _pick(
            message,
            "content",
            "content_type",
            "message_type",
            "private",
            "status",
            "source_id",
            "created_at",
            "content_attributes",
            "sender_type",
        )
        links = []
        if message.get("conversation_id") is not None:
            links.append(Link("in_conversation", "conversation", str(message["conversation_id"])))
        sender = message.get("sender")
        sender_id = sender.get("id") if isinstance(sender, dict) else message.get("sender_id")
        sender_type = str(message.get("sender_type") or "")
        if sender_id is not None and sender_type in {"Contact", "User"}:
            target = "contact" if sender_type == "Contact" else "agent"
            links.append(Link("sent_by", target, str(sender_id)))
        content = str(message.get("content") or "")
        return EntityRecord(
            "message",
            str(message["id"]),
            attributes,
            content[:80] or f"Message #{message['id']}",
            links,
            cursor=message.get("_conversation_activity", _number(message.get("created_at"))),
        )

    # -- resources --------------------------------------------------------------------------
    def _list(self, resource: str, *, page: Any, page_size: int, **filters: Any) -> ResourcePage:
        app = self.app
        number = int(page or 1)
        if resource == "conversations":
            document = app.conversations_page(number, **filters)
            records = _payload(document)
            return ResourcePage(records, number + 1 if records else None)
        if resource == "contacts":
            records = _payload(app.contacts_page(number, **filters))
            return ResourcePage(records, number + 1 if records else None)
        listing = {
            "inboxes": app.inboxes,
            "teams": app.teams,
            "agents": app.agents,
            "labels": app.labels,
            "canned_responses": app.canned_responses,
            "custom_attributes": app.custom_attributes,
        }
        if resource not in listing:
            raise UnknownNameError("Chatwoot resource", resource, RESOURCES)
        return ResourcePage(listing[resource](), None)

    def _get(self, resource: str, id: str | int) -> dict[str, Any]:
        app = self.app
        getters = {
            "conversations": app.conversation,
            "contacts": app.contact,
            "inboxes": app.inbox,
            "teams": app.team,
        }
        if resource not in getters:
            raise UnknownNameError("Chatwoot resource", resource, getters)
        return getters[resource](int(id))

    def _search(self, resource: str, query: str, **filters: Any) -> list[dict[str, Any]]:
        if resource != "contacts":
            raise UnknownNameError("searchable Chatwoot resource", resource, ["contacts"])
        return self.app.search_contacts(query, **filters)

    def _create(self, resource: str, data: Mapping[str, Any]) -> dict[str, Any]:
        app = self.app
        fields = dict(data)
        if resource == "contacts":
            return app.create_contact(int(fields.pop("inbox_id")), **fields)
        if resource == "labels":
            return app.create_label(str(fields.pop("title")), **fields)
        if resource == "teams":
            return app.create_team(str(fields.pop("name")), **fields)
        if resource == "canned_responses":
            return app.create_canned_response(str(fields["short_code"]), str(fields["content"]))
        if resource == "messages":
            conversation = int(fields.pop("conversation_id"))
            return app.create_message(conversation, str(fields.pop("content")), **fields)
        raise UnknownNameError(
            "creatable Chatwoot resource",
            resource,
            ["contacts", "labels", "teams", "canned_responses", "messages"],
        )

    def _update(self, resource: str, id: str | int, data: Mapping[str, Any]) -> dict[str, Any]:
        if resource == "contacts":
            return self.app.update_contact(int(id), **dict(data))
        if resource == "conversations" and "status" in data:
            return self.app.toggle_status(int(id), data["status"])
        raise UnknownNameError(
            "updatable Chatwoot resource", resource, ["contacts", "conversations"]
        )

    def _delete(self, resource: str, id: str | int) -> None:
        if resource == "contacts":
            self.app.delete_contact(int(id))
            return
        raise UnknownNameError("deletable Chatwoot resource", resource, ["contacts"])

    # -- webhooks ---------------------------------------------------------------------------
    def _verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> None:
        secret = self.config.webhook_secret
        if secret is None:
            raise WebhookVerificationError(
                f"Connector {self.instance!r} has no webhook_secret, so deliveries cannot be "
                "verified; none is accepted.",
                remedy="set webhook_secret to the secret Chatwoot shows for the webhook.",
            )
        signature = headers.get("x-chatwoot-signature", "")
        stamp = headers.get("x-chatwoot-timestamp", "")
        if not signature or not stamp.isdigit():
            raise WebhookVerificationError(
                "The delivery has no X-Chatwoot-Signature / X-Chatwoot-Timestamp headers.",
                remedy="enable signing on the Chatwoot webhook.",
            )
        if abs(time.time() - int(stamp)) > SIGNATURE_TOLERANCE:
            raise WebhookVerificationError(
                f"The delivery's timestamp {stamp} is more than {SIGNATURE_TOLERANCE} s away "
                "from now (a replay, or a clock problem).",
                remedy="check the clocks of both hosts.",
            )
        if not hmac.compare_digest(signature, sign(secret.get_secret_value(), stamp, body)):
            raise WebhookVerificationError(
                "The delivery's signature does not match its body.",
                remedy="check webhook_secret; the delivery was not accepted.",
            )

    def _parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise WebhookVerificationError("The delivery's body is not JSON.") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
            raise WebhookVerificationError("The delivery has no `event` name.")
        event = payload["event"]
        records: list[EntityRecord] = []
        if event.startswith("message_"):
            message = dict(payload)
            conversation = payload.get("conversation")
            if isinstance(conversation, dict):
                message.setdefault("conversation_id", conversation.get("id"))
                if conversation.get("id") is not None and "inbox_id" in conversation:
                    records.append(self.map_conversation(conversation))
            if message.get("id") is not None:
                records.append(self.map_message(message))
        elif event.startswith("conversation_") and payload.get("id") is not None:
            records.append(self.map_conversation(payload))
        elif event.startswith("contact_") and payload.get("id") is not None:
            contact = self.map_contact(payload)
            contact.deleted = event == "contact_deleted"
            records.append(contact)
        stamp = headers.get("x-chatwoot-timestamp", "")
        occurred = datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else None
        return WebhookEvent(event, records, payload, occurred)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Chatwoot's webhook signature: ``sha256=`` + HMAC-SHA256 of ``"{timestamp}.{body}"``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _after(record: dict[str, Any], field: str, since: float | None) -> bool:
    return since is None or _number(record.get(field)) >= since


def _pick(record: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: record[name] for name in names if name in record}

"""Chatwoot's three HTTP APIs, one method per operation of the official OpenAPI specs.

- `PlatformAPI` (``/platform/api/v1``, a platform app's ``api_access_token``): accounts, account
  users, agent bots, users.
- `ApplicationAPI` (``/api/v1/accounts/{account_id}`` and ``/api/v2`` reports, a user's
  ``api_access_token``): conversations (list with filters, filter, details, status, assignments,
  labels), messages, contacts (list, search, filter, merge, labels), inboxes, teams, agents,
  labels, custom attributes, canned responses, webhooks, reports.
- `ClientAPI` (``/public/api/v1/inboxes/{inbox_identifier}``, no token): the widget's contacts,
  conversations and messages.

Path parameters and bodies follow the specs' types (integer ids, enums); the conformance tests
send every call through a mock that validates requests against those specs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from connectors.base.http import HttpClient

ConversationStatus = Literal["all", "open", "resolved", "pending", "snoozed"]
AssigneeType = Literal["me", "unassigned", "all", "assigned"]
ContactSort = Literal[
    "name",
    "email",
    "phone_number",
    "last_activity_at",
    "-name",
    "-email",
    "-phone_number",
    "-last_activity_at",
]
ReportType = Literal["account", "agent", "inbox", "label", "team"]


def _payload(document: Any) -> list[dict[str, Any]]:
    """The records of a response: a bare list, ``payload``, or ``data.payload``."""
    if isinstance(document, list):
        return [r for r in document if isinstance(r, dict)]
    if isinstance(document, dict):
        if isinstance(document.get("data"), dict):
            return _payload(document["data"])
        payload = document.get("payload")
        if isinstance(payload, list):
            return [r for r in payload if isinstance(r, dict)]
    return []


def _object(document: Any) -> dict[str, Any]:
    """A response's object; operations answering 204 or a bare value give an empty one."""
    return dict(document) if isinstance(document, dict) else {}


def _pages(fetch: Any, *, max_pages: int) -> Iterator[dict[str, Any]]:
    """Records of ``page=1, 2, ...`` until a page is empty or brings no record not seen yet.

    The second stop protects against servers (and mocks) that ignore ``page``.
    """
    seen: set[Any] = set()
    for page in range(1, max_pages + 1):
        records = _payload(fetch(page))
        fresh = [r for r in records if r.get("id") not in seen]
        if not fresh:
            return
        for record in fresh:
            seen.add(record.get("id"))
            yield record


class _Root:
    """Requests relative to one API root (`base`): the plumbing the three APIs share."""

    http: HttpClient

    @property
    def base(self) -> str:
        raise NotImplementedError

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.http.get_json(f"{self.base}{path}", params=params)

    def _send(
        self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None
    ) -> Any:
        """A call whose answer is a JSON document."""
        return self.http.request_json(method, f"{self.base}{path}", params=params, json=body)

    def _call(
        self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None
    ) -> None:
        """A call whose answer carries nothing to read (204, or a body the spec leaves open)."""
        self.http.request(method, f"{self.base}{path}", params=params, json=body)


class PlatformAPI(_Root):
    """``/platform/api/v1``: provisioning with a platform app token."""

    base = "/platform/api/v1"

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    def __repr__(self) -> str:
        return "PlatformAPI()"

    def create_account(self, name: str, **fields: Any) -> dict[str, Any]:
        return _object(self._send("POST", "/accounts", {"name": name, **fields}))

    def get_account(self, account_id: int) -> dict[str, Any]:
        return _object(self._get(f"/accounts/{int(account_id)}"))

    def update_account(self, account_id: int, **fields: Any) -> dict[str, Any]:
        return _object(self._send("PATCH", f"/accounts/{int(account_id)}", fields))

    def delete_account(self, account_id: int) -> None:
        self._call("DELETE", f"/accounts/{int(account_id)}")

    def account_users(self, account_id: int) -> list[dict[str, Any]]:
        return _payload(self._get(f"/accounts/{int(account_id)}/account_users"))

    def add_account_user(self, account_id: int, user_id: int, role: str) -> dict[str, Any]:
        body = {"user_id": int(user_id), "role": role}
        return _object(self._send("POST", f"/accounts/{int(account_id)}/account_users", body))

    def remove_account_user(self, account_id: int, user_id: int) -> None:
        # The spec declares no request body for this DELETE (a body is refused with 415), so
        # `user_id` travels in the query string, which Chatwoot's Rails params also read.
        self._call(
            "DELETE",
            f"/accounts/{int(account_id)}/account_users",
            params={"user_id": int(user_id)},
        )

    def agent_bots(self) -> list[dict[str, Any]]:
        return _payload(self._get("/agent_bots"))

    def create_agent_bot(self, name: str, **fields: Any) -> dict[str, Any]:
        return _object(self._send("POST", "/agent_bots", {"name": name, **fields}))

    def get_agent_bot(self, bot_id: int) -> dict[str, Any]:
        return _object(self._get(f"/agent_bots/{int(bot_id)}"))

    def update_agent_bot(self, bot_id: int, **fields: Any) -> dict[str, Any]:
        return _object(self._send("PATCH", f"/agent_bots/{int(bot_id)}", fields))

    def delete_agent_bot(self, bot_id: int) -> None:
        self._call("DELETE", f"/agent_bots/{int(bot_id)}")

    def create_user(self, name: str, email: str, password: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "email": email, "password": password, **fields}
        return _object(self._send("POST", "/users", body))

    def get_user(self, user_id: int) -> dict[str, Any]:
        return _object(self._get(f"/users/{int(user_id)}"))

    def update_user(self, user_id: int, **fields: Any) -> dict[str, Any]:
        return _object(self._send("PATCH", f"/users/{int(user_id)}", fields))

    def delete_user(self, user_id: int) -> None:
        self._call("DELETE", f"/users/{int(user_id)}")

    def user_login_url(self, user_id: int) -> str:
        document = self._get(f"/users/{int(user_id)}/login")
        return str(document.get("url", "")) if isinstance(document, dict) else ""


class ApplicationAPI(_Root):
    """``/api/v1/accounts/{account_id}``: an agent's or administrator's view of one account."""

    def __init__(self, http: HttpClient, account_id: int, *, max_pages: int = 1000) -> None:
        self.http = http
        self.account_id = int(account_id)
        self.max_pages = max_pages

    def __repr__(self) -> str:
        return f"ApplicationAPI(account_id={self.account_id})"

    @property
    def base(self) -> str:
        return f"/api/v1/accounts/{self.account_id}"

    # account
    def account(self) -> dict[str, Any]:
        return _object(self._get(""))

    # conversations
    def conversations_page(
        self,
        page: int = 1,
        *,
        status: ConversationStatus = "all",
        assignee_type: AssigneeType = "all",
        inbox_id: int | None = None,
        team_id: int | None = None,
        labels: Sequence[str] | None = None,
        q: str | None = None,
    ) -> Any:
        params: dict[str, Any] = {
            "page": int(page),
            "status": status,
            "assignee_type": assignee_type,
            "inbox_id": inbox_id,
            "team_id": team_id,
            "q": q,
        }
        if labels:
            params["labels"] = list(labels)  # form style, exploded, as the spec declares
        return self._get("/conversations", params)

    def conversations(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every conversation matching the filters, newest activity first (Chatwoot's order)."""
        return _pages(
            lambda page: self.conversations_page(page, **filters), max_pages=self.max_pages
        )

    def conversation_counts(self, *, status: ConversationStatus = "all") -> dict[str, Any]:
        document = self._get("/conversations/meta", {"status": status})
        return _object(document.get("meta", {})) if isinstance(document, dict) else {}

    def filter_conversations(
        self, conditions: Sequence[Mapping[str, Any]], page: int = 1
    ) -> list[dict[str, Any]]:
        """``POST conversations/filter`` with Chatwoot's filter payload (see `condition`)."""
        body = {"payload": [dict(c) for c in conditions]}
        return _payload(
            self._send("POST", "/conversations/filter", body, params={"page": int(page)})
        )

    def conversation(self, conversation_id: int) -> dict[str, Any]:
        return _object(self._get(f"/conversations/{int(conversation_id)}"))

    def create_conversation(self, source_id: str, inbox_id: int, **fields: Any) -> dict[str, Any]:
        body = {"source_id": source_id, "inbox_id": int(inbox_id), **fields}
        return _object(self._send("POST", "/conversations", body))

    def toggle_status(
        self, conversation_id: int, status: Literal["open", "resolved", "pending", "snoozed"]
    ) -> dict[str, Any]:
        return _object(
            self._send(
                "POST", f"/conversations/{int(conversation_id)}/toggle_status", {"status": status}
            )
        )

    def toggle_priority(
        self, conversation_id: int, priority: Literal["urgent", "high", "medium", "low", "none"]
    ) -> None:
        path = f"/conversations/{int(conversation_id)}/toggle_priority"
        self._call("POST", path, {"priority": priority})

    def assign(
        self, conversation_id: int, *, assignee_id: int | None = None, team_id: int | None = None
    ) -> Any:
        body = {k: v for k, v in {"assignee_id": assignee_id, "team_id": team_id}.items() if v}
        return self._send("POST", f"/conversations/{int(conversation_id)}/assignments", body)

    def conversation_labels(self, conversation_id: int) -> list[str]:
        document = self._get(f"/conversations/{int(conversation_id)}/labels")
        return [str(x) for x in document.get("payload", [])] if isinstance(document, dict) else []

    def set_conversation_labels(self, conversation_id: int, labels: Sequence[str]) -> Any:
        return self._send(
            "POST", f"/conversations/{int(conversation_id)}/labels", {"labels": list(labels)}
        )

    # messages
    def messages_page(
        self, conversation_id: int, *, before: int | None = None, after: int | None = None
    ) -> Any:
        return self._get(
            f"/conversations/{int(conversation_id)}/messages",
            {"before": before, "after": after},
        )

    def messages(self, conversation_id: int) -> Iterator[dict[str, Any]]:
        """Every message of a conversation: pages of the newest, then ``before`` the oldest."""
        seen: set[Any] = set()
        before: int | None = None
        for _ in range(self.max_pages):
            records = _payload(self.messages_page(conversation_id, before=before))
            fresh = [r for r in records if r.get("id") not in seen]
            if not fresh:
                return
            for record in fresh:
                seen.add(record.get("id"))
                yield record
            ids = [int(r["id"]) for r in fresh if isinstance(r.get("id"), int | float)]
            if not ids:
                return
            before = min(ids)

    def create_message(
        self,
        conversation_id: int,
        content: str,
        *,
        message_type: Literal["outgoing", "incoming"] = "outgoing",
        private: bool = False,
        **fields: Any,
    ) -> dict[str, Any]:
        body = {"content": content, "message_type": message_type, "private": private, **fields}
        return _object(self._send("POST", f"/conversations/{int(conversation_id)}/messages", body))

    def delete_message(self, conversation_id: int, message_id: int) -> None:
        self._call("DELETE", f"/conversations/{int(conversation_id)}/messages/{int(message_id)}")

    # contacts
    def contacts_page(self, page: int = 1, *, sort: ContactSort | None = None) -> Any:
        return self._get("/contacts", {"page": int(page), "sort": sort})

    def contacts(self, *, sort: ContactSort | None = None) -> Iterator[dict[str, Any]]:
        return _pages(lambda page: self.contacts_page(page, sort=sort), max_pages=self.max_pages)

    def contact(self, contact_id: int) -> dict[str, Any]:
        document = self._get(f"/contacts/{int(contact_id)}")
        payload = document.get("payload") if isinstance(document, dict) else None
        return _object(payload) if isinstance(payload, dict) else dict(document)

    def search_contacts(
        self, q: str, *, page: int = 1, sort: ContactSort | None = None
    ) -> list[dict[str, Any]]:
        return _payload(self._get("/contacts/search", {"q": q, "page": int(page), "sort": sort}))

    def filter_contacts(
        self, conditions: Sequence[Mapping[str, Any]], page: int = 1
    ) -> list[dict[str, Any]]:
        body = {"payload": [dict(c) for c in conditions]}
        return _payload(self._send("POST", "/contacts/filter", body, params={"page": int(page)}))

    def create_contact(self, inbox_id: int, **fields: Any) -> dict[str, Any]:
        return _object(self._send("POST", "/contacts", {"inbox_id": int(inbox_id), **fields}))

    def update_contact(self, contact_id: int, **fields: Any) -> dict[str, Any]:
        return _object(self._send("PUT", f"/contacts/{int(contact_id)}", fields))

    def delete_contact(self, contact_id: int) -> None:
        self._call("DELETE", f"/contacts/{int(contact_id)}")

    def merge_contacts(self, base_contact_id: int, mergee_contact_id: int) -> dict[str, Any]:
        """Merge `mergee` into `base`; Chatwoot deletes the mergee."""
        body = {
            "base_contact_id": int(base_contact_id),
            "mergee_contact_id": int(mergee_contact_id),
        }
        return _object(self._send("POST", "/actions/contact_merge", body))

    def contact_conversations(self, contact_id: int) -> list[dict[str, Any]]:
        return _payload(self._get(f"/contacts/{int(contact_id)}/conversations"))

    def contact_labels(self, contact_id: int) -> list[str]:
        document = self._get(f"/contacts/{int(contact_id)}/labels")
        return [str(x) for x in document.get("payload", [])] if isinstance(document, dict) else []

    def set_contact_labels(self, contact_id: int, labels: Sequence[str]) -> Any:
        return self._send("POST", f"/contacts/{int(contact_id)}/labels", {"labels": list(labels)})

    # inboxes, teams, agents, labels, custom attributes, canned responses, webhooks
    def inboxes(self) -> list[dict[str, Any]]:
        return _payload(self._get("/inboxes"))

    def inbox(self, inbox_id: int) -> dict[str, Any]:
        return _object(self._get(f"/inboxes/{int(inbox_id)}"))

    def inbox_members(self, inbox_id: int) -> list[dict[str, Any]]:
        return _payload(self._get(f"/inbox_members/{int(inbox_id)}"))

    def teams(self) -> list[dict[str, Any]]:
        return _payload(self._get("/teams"))

    def team(self, team_id: int) -> dict[str, Any]:
        return _object(self._get(f"/teams/{int(team_id)}"))

    def create_team(self, name: str, **fields: Any) -> dict[str, Any]:
        return _object(self._send("POST", "/teams", {"name": name, **fields}))

    def team_members(self, team_id: int) -> list[dict[str, Any]]:
        return _payload(self._get(f"/teams/{int(team_id)}/team_members"))

    def agents(self) -> list[dict[str, Any]]:
        return _payload(self._get("/agents"))

    def labels(self) -> list[dict[str, Any]]:
        return _payload(self._get("/labels"))

    def create_label(self, title: str, **fields: Any) -> dict[str, Any]:
        return _object(self._send("POST", "/labels", {"title": title, **fields}))

    def custom_attributes(
        self, model: Literal["conversation", "contact"] = "conversation"
    ) -> list[dict[str, Any]]:
        code = "0" if model == "conversation" else "1"
        return _payload(self._get("/custom_attribute_definitions", {"attribute_model": code}))

    def canned_responses(self) -> list[dict[str, Any]]:
        return _payload(self._get("/canned_responses"))

    def create_canned_response(self, short_code: str, content: str) -> dict[str, Any]:
        body = {"short_code": short_code, "content": content}
        return _object(self._send("POST", "/canned_responses", body))

    def webhooks(self) -> list[dict[str, Any]]:
        document = self._get("/webhooks")
        if isinstance(document, dict) and isinstance(document.get("payload"), dict):
            return _payload(document["payload"].get("webhooks", []))
        return _payload(document)

    def create_webhook(self, url: str, subscriptions: Sequence[str]) -> dict[str, Any]:
        body = {"url": url, "subscriptions": list(subscriptions)}
        return _object(self._send("POST", "/webhooks", body))

    # reports (v2)
    def report_summary(
        self,
        since: int,
        until: int,
        *,
        type: ReportType = "account",
        id: str | None = None,
    ) -> dict[str, Any]:
        return _object(
            self.http.get_json(
                f"/api/v2/accounts/{self.account_id}/reports/summary",
                params={"type": type, "id": id, "since": str(since), "until": str(until)},
            )
        )

    def conversation_metrics(self, type: Literal["account"] = "account") -> Any:
        return self.http.get_json(
            f"/api/v2/accounts/{self.account_id}/reports/conversations", params={"type": type}
        )


def condition(
    attribute_key: str,
    values: Sequence[str],
    *,
    operator: Literal["equal_to", "not_equal_to", "contains", "does_not_contain"] = "equal_to",
    query_operator: Literal["AND", "OR"] | None = None,
) -> dict[str, Any]:
    """One condition of a conversations/contacts filter payload."""
    built: dict[str, Any] = {
        "attribute_key": attribute_key,
        "filter_operator": operator,
        "values": [str(v) for v in values],
    }
    if query_operator is not None:
        built["query_operator"] = query_operator
    return built


class ClientAPI(_Root):
    """``/public/api/v1/inboxes/{inbox_identifier}``: what the website widget calls."""

    def __init__(self, http: HttpClient, inbox_identifier: str) -> None:
        self.http = http
        self.inbox_identifier = inbox_identifier

    def __repr__(self) -> str:
        return "ClientAPI()"

    @property
    def base(self) -> str:
        return f"/public/api/v1/inboxes/{self.inbox_identifier}"

    @staticmethod
    def _conversation(contact_identifier: str, conversation_id: int) -> str:
        return f"/contacts/{contact_identifier}/conversations/{int(conversation_id)}"

    def create_contact(self, **fields: Any) -> dict[str, Any]:
        return _object(self._send("POST", "/contacts", fields))

    def contact(self, contact_identifier: str) -> dict[str, Any]:
        return _object(self._get(f"/contacts/{contact_identifier}"))

    def update_contact(self, contact_identifier: str, **fields: Any) -> dict[str, Any]:
        return _object(self._send("PATCH", f"/contacts/{contact_identifier}", fields))

    def create_conversation(
        self, contact_identifier: str, *, custom_attributes: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {"custom_attributes": dict(custom_attributes or {})}
        return _object(self._send("POST", f"/contacts/{contact_identifier}/conversations", body))

    def conversations(self, contact_identifier: str) -> list[dict[str, Any]]:
        return _payload(self._get(f"/contacts/{contact_identifier}/conversations"))

    def conversation(self, contact_identifier: str, conversation_id: int) -> dict[str, Any]:
        return _object(self._get(self._conversation(contact_identifier, conversation_id)))

    def resolve_conversation(self, contact_identifier: str, conversation_id: int) -> Any:
        path = self._conversation(contact_identifier, conversation_id)
        return self._send("POST", f"{path}/toggle_status")

    def toggle_typing(
        self, contact_identifier: str, conversation_id: int, typing_status: Literal["on", "off"]
    ) -> None:
        self._call(
            "POST",
            f"{self._conversation(contact_identifier, conversation_id)}/toggle_typing",
            {"typing_status": typing_status},  # the spec declares it in the body
            params={"typing_status": typing_status},  # and requires it in the query
        )

    def update_last_seen(self, contact_identifier: str, conversation_id: int) -> None:
        path = self._conversation(contact_identifier, conversation_id)
        self._call("POST", f"{path}/update_last_seen")

    def create_message(
        self, contact_identifier: str, conversation_id: int, content: str, **fields: Any
    ) -> dict[str, Any]:
        path = self._conversation(contact_identifier, conversation_id)
        return _object(self._send("POST", f"{path}/messages", {"content": content, **fields}))

    def messages(self, contact_identifier: str, conversation_id: int) -> list[dict[str, Any]]:
        path = self._conversation(contact_identifier, conversation_id)
        return _payload(self._get(f"{path}/messages"))

    def update_message(
        self,
        contact_identifier: str,
        conversation_id: int,
        message_id: int,
        submitted_values: Mapping[str, Any],
    ) -> dict[str, Any]:
        path = self._conversation(contact_identifier, conversation_id)
        body = {"submitted_values": dict(submitted_values)}
        return _object(self._send("PATCH", f"{path}/messages/{int(message_id)}", body))

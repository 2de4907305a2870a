"""The Chatwoot connector against Chatwoot's official OpenAPI spec, served by prism.

prism runs in mock mode with ``--errors``: a request that violates the spec is answered with an
error status and an ``sl-violations`` header, and logged. Every response of every client is
inspected, and prism's log too; any violation fails the test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from connectors.base.errors import SourceRequestError, WebhookVerificationError
from connectors.base.sync import SyncEngine
from connectors.chatwoot import ChatwootConfig, ChatwootConnector, condition, sign
from tests.connectors.conftest import Prism
from workbench.events.producer import wait_for_all


def connector(prism: Prism, instance: str = "chatwoot-test", **extra: Any) -> ChatwootConnector:
    config = ChatwootConfig(
        base_url=prism.url,
        account_id=1,
        api_access_token="user-token",
        platform_token="platform-token",
        inbox_identifier="widget-inbox-1",
        webhook_secret="hook-secret",
        retries=1,
        requests_per_second=200,
        **extra,
    )
    adapter = ChatwootConnector(config, instance=instance)

    def record(response: httpx.Response) -> None:
        if "sl-violations" in response.headers:
            prism.violations.append(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.headers['sl-violations']}"
            )

    adapter.on_response.append(record)
    return adapter


@pytest.fixture
def chatwoot(prism: Prism) -> Iterator[ChatwootConnector]:
    prism.violations.clear()
    before = len(prism.log_violations())
    adapter = connector(prism)
    yield adapter
    adapter.shutdown()
    assert prism.violations == [], "requests violating Chatwoot's spec"
    assert prism.log_violations()[before:] == []


def test_sync_reads_conform(chatwoot: ChatwootConnector) -> None:
    for stream in chatwoot.streams():
        records = list(chatwoot.read(stream))
        assert records, stream.name
        mapped = [chatwoot.map_record(stream, r) for r in records]
        assert all(m.entity_type == stream.entity_type for m in mapped)
    # Incremental reads pass the cursor only to the connector's own filtering.
    assert list(chatwoot.read(chatwoot.streams()[4], cursor=10**12)) == []


def test_application_api_calls_conform(chatwoot: ChatwootConnector) -> None:
    app = chatwoot.app
    app.account()
    list(app.conversations(status="open", assignee_type="assigned", inbox_id=1, team_id=2))
    app.conversations_page(1, labels=["billing", "vip"], q="refund")
    app.conversation_counts(status="pending")
    app.filter_conversations(
        [
            condition("status", ["open"], query_operator="AND"),
            condition("browser_language", ["en"], operator="not_equal_to"),
        ]
    )
    app.conversation(7)
    app.create_conversation("source-1", 1, contact_id=3, status="open", message={"content": "hi"})
    app.toggle_status(7, "resolved")
    app.toggle_priority(7, "high")
    app.assign(7, assignee_id=2)
    app.assign(7, team_id=1)
    app.conversation_labels(7)
    app.set_conversation_labels(7, ["billing"])
    list(app.messages(7))
    app.create_message(7, "Thanks, we are on it", private=True)
    app.delete_message(7, 99)
    list(app.contacts(sort="-last_activity_at"))
    app.contact(3)
    app.search_contacts("alice@example.com", sort="name")
    app.filter_contacts([condition("email", ["alice@example.com"], operator="contains")])
    app.create_contact(1, name="Alice", email="alice@example.com")
    app.update_contact(3, name="Alice B.")
    app.delete_contact(4)
    app.merge_contacts(3, 4)
    app.contact_conversations(3)
    app.contact_labels(3)
    app.set_contact_labels(3, ["vip"])
    app.inboxes()
    app.inbox(1)
    app.inbox_members(1)
    app.teams()
    app.team(1)
    app.create_team("Tier 2", description="escalations", allow_auto_assign=True)
    app.team_members(1)
    app.agents()
    app.labels()
    app.create_label("vip", color="#ff0000", show_on_sidebar=True)
    app.custom_attributes("conversation")
    app.custom_attributes("contact")
    app.canned_responses()
    app.create_canned_response("thanks", "Thank you!")
    app.webhooks()
    app.create_webhook("https://example.com/hook", ["message_created", "conversation_created"])
    now = int(time.time())
    app.report_summary(now - 86400, now, type="agent", id="2")
    app.conversation_metrics()


def test_platform_api_calls_conform(chatwoot: ChatwootConnector) -> None:
    platform = chatwoot.platform
    platform.create_account("Acme", locale="en", status="active")
    platform.get_account(1)
    platform.update_account(1, name="Acme Inc")
    platform.account_users(1)
    platform.add_account_user(1, 5, "agent")
    platform.remove_account_user(1, 5)
    platform.agent_bots()
    platform.create_agent_bot("triage", outgoing_url="https://bot.example.com")
    platform.get_agent_bot(2)
    platform.update_agent_bot(2, description="routes tickets")
    platform.delete_agent_bot(2)
    platform.create_user("Ada", "ada@example.com", "Secret-Passw0rd!")
    platform.get_user(5)
    platform.update_user(5, display_name="Ada L.")
    platform.user_login_url(5)
    platform.delete_user(5)
    platform.delete_account(1)


def test_client_api_calls_conform(chatwoot: ChatwootConnector) -> None:
    client = chatwoot.client
    client.create_contact(name="Visitor", email="visitor@example.com")
    client.contact("contact-src-1")
    client.update_contact("contact-src-1", name="Visitor 2")
    client.create_conversation("contact-src-1", custom_attributes={"plan": "pro"})
    client.conversations("contact-src-1")
    client.conversation("contact-src-1", 7)
    client.create_message("contact-src-1", 7, "Hello", echo_id="e-1")
    client.messages("contact-src-1", 7)
    client.update_message("contact-src-1", 7, 99, {"email": "visitor@example.com"})
    client.toggle_typing("contact-src-1", 7, "on")
    client.update_last_seen("contact-src-1", 7)
    client.resolve_conversation("contact-src-1", 7)


def test_resource_operations_conform(chatwoot: ChatwootConnector) -> None:
    assert chatwoot.list("conversations", status="open").records
    assert chatwoot.list("labels").records
    chatwoot.get("contacts", 3)
    chatwoot.search("contacts", "alice")
    chatwoot.create("messages", {"conversation_id": 7, "content": "hello"})
    chatwoot.update("conversations", 7, {"status": "pending"})
    chatwoot.delete("contacts", 3)


def test_the_mock_does_refuse_violations(prism: Prism) -> None:
    """A negative control: without it, the tests above could pass against a lax mock."""
    adapter = connector(prism)
    seen: list[str] = []
    adapter.on_response.append(lambda r: seen.append(r.headers.get("sl-violations", "")))
    with pytest.raises(SourceRequestError):
        adapter.app.http.get_json(
            "/api/v1/accounts/1/conversations", params={"status": "not-a-status"}
        )
    assert any("status" in v for v in seen)
    anonymous = connector(prism)
    anonymous.config = anonymous.config.model_copy(update={"api_access_token": None})
    with pytest.raises(SourceRequestError) as caught:
        anonymous._client("raw", None).get_json("/api/v1/accounts/1/inboxes")
    assert caught.value.status == 401
    prism.violations.clear()


def test_webhook_verification(prism: Prism) -> None:
    adapter = connector(prism)
    body = orjson.dumps(
        {
            "event": "message_created",
            "id": 501,
            "content": "Where is my order?",
            "message_type": "incoming",
            "sender_type": "Contact",
            "sender": {"id": 12, "name": "Alice"},
            "conversation": {"id": 77, "inbox_id": 3, "status": "open", "last_activity_at": 5},
        }
    )
    stamp = str(int(time.time()))
    good = {"X-Chatwoot-Timestamp": stamp, "X-Chatwoot-Signature": sign("hook-secret", stamp, body)}
    delivery = adapter.receive(body, good)
    assert delivery.event == "message_created"
    kinds = {(r.entity_type, r.source_id) for r in delivery.records}
    assert kinds == {("conversation", "77"), ("message", "501")}
    with pytest.raises(WebhookVerificationError, match="does not match"):
        adapter.receive(body + b" ", good)
    old = str(int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError, match="more than 300 s"):
        adapter.receive(
            body,
            {"X-Chatwoot-Timestamp": old, "X-Chatwoot-Signature": sign("hook-secret", old, body)},
        )
    with pytest.raises(WebhookVerificationError, match="no X-Chatwoot-Signature"):
        adapter.receive(body, {})


@pytest.mark.stack
def test_sync_and_webhooks_reach_the_catalog(prism: Prism, workbench: Any, workers: Any) -> None:
    instance = f"chatwoot-{uuid.uuid4().hex[:8]}"
    adapter = connector(prism, instance)
    engine = SyncEngine(workbench.engine, workbench.producer, progress=False)
    result = engine.sync(adapter, full=True)
    assert result.status == "succeeded" and result.records_published == 6
    wait_for_all(result.handles, timeout=60)
    types = set(workbench.catalog.entities(source_system=instance)["entity_type"].to_list())
    assert types == {"inbox", "team", "agent", "contact", "conversation", "message"}
    edges = workbench.catalog.relationships(instance, "conversation", "0", direction="out")
    assert {"in_inbox", "with_contact", "assigned_to"} <= set(edges["relationship_type"])
    message_edges = workbench.catalog.relationships(instance, "message", "0", direction="out")
    assert "in_conversation" in set(message_edges["relationship_type"])
    conversation = workbench.catalog.get(instance, "conversation", "0")
    assert conversation is not None and conversation.domain == "support"

    body = orjson.dumps(
        {
            "event": "conversation_status_changed",
            "id": 0,
            "inbox_id": 0,
            "status": "resolved",
            "last_activity_at": 9,
        }
    )
    stamp = str(int(time.time()))
    headers = {
        "x-chatwoot-timestamp": stamp,
        "x-chatwoot-signature": sign("hook-secret", stamp, body),
    }
    handles = workbench.connectors.engine_for(False).apply_webhook(
        adapter, adapter.receive(body, headers)
    )
    assert handles[0].event.type == "dictamesh.adapter.event"  # a seed topic's type is its name
    assert handles[0].event.data["event"] == "conversation_status_changed"
    assert handles[0].event.subject.endswith("/webhook/conversation_status_changed")
    wait_for_all(handles[1:], timeout=60)
    updated = workbench.catalog.get(instance, "conversation", "0")
    assert updated is not None and updated.attributes["status"] == "resolved"
    assert updated.version == 2
    assert prism.violations == []


@pytest.mark.stack
def test_incremental_sync_from_the_sandbox(workbench: Any, workers: Any) -> None:
    """Against varying data: only what changed since the cursor is read and published."""
    from connectors.chatwoot.sandbox import ChatwootSandbox, generate

    data = generate(seed=3, conversations=40)
    instance = f"cw-{uuid.uuid4().hex[:8]}"
    engine = SyncEngine(workbench.engine, workbench.producer, progress=False)
    with ChatwootSandbox(data, token="t0ken") as url:
        config = ChatwootConfig(base_url=url, account_id=1, api_access_token="t0ken", batch_size=50)
        first = engine.sync(ChatwootConnector(config, instance=instance), full=True)
        messages = sum(len(thread) for thread in data.messages.values())
        assert first.records_published == 3 + 2 + 5 + 20 + 40 + messages
        wait_for_all(first.handles, timeout=120)
        conversation = data.conversations[0]
        edges = workbench.catalog.relationships(
            instance, "conversation", str(conversation["id"]), direction="out"
        )
        assert set(edges["relationship_type"]) == {
            "in_inbox",
            "with_contact",
            "assigned_to",
            "assigned_team",
        }
        assert all(edges["target_known"].to_list())

        # A customer writes again: one conversation becomes the most recent.
        newest = max(c["last_activity_at"] for c in data.conversations) + 60
        conversation["last_activity_at"] = newest
        conversation["status"] = "open"
        thread = data.messages[conversation["id"]]
        thread.append({**thread[0], "id": 99_999, "content": "Still waiting", "created_at": newest})
        second = engine.sync(ChatwootConnector(config, instance=instance))
        assert second.records_published == 2  # the conversation and its new message
        wait_for_all(second.handles, timeout=60)
    updated = workbench.catalog.get(instance, "conversation", str(conversation["id"]))
    assert updated is not None and updated.version == 2
    message = workbench.catalog.get(instance, "message", "99999")
    assert message is not None and message.display_name == "Still waiting"


@pytest.mark.stack
def test_demo_loads_through_the_connector(workbench: Any) -> None:
    from tests.helpers import run_cli

    instance = f"demo-{uuid.uuid4().hex[:6]}"
    result = run_cli(
        "connectors", "demo", "--conversations", "12", "--instance", instance, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"through the '{instance}' Chatwoot connector" in result.stdout
    types = set(workbench.catalog.entities(source_system=instance, limit=1000)["entity_type"])
    assert types == {"inbox", "team", "agent", "contact", "conversation", "message"}

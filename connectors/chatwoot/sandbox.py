"""A local Chatwoot: the Application API's read endpoints over seeded data, for demos and tests.

It answers in the shapes of Chatwoot's OpenAPI spec (``payload`` lists, ``data.meta`` counts,
pages of 25 conversations newest activity first, pages of 15 contacts, 20 messages per page with
``before=``) and requires an ``api_access_token`` header, so the Chatwoot connector syncs from it
exactly as from a real installation. `dictamesh connectors demo` loads the demo organisation
through it.
"""

from __future__ import annotations

import json
import random
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONVERSATIONS_PAGE = 25
CONTACTS_PAGE = 15
MESSAGES_PAGE = 20

_NAMES = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Katherine",
    "Linus",
    "Margaret",
    "Dennis",
    "Frances",
    "Radia",
    "Ken",
    "Sophie",
    "Hedy",
    "Claude",
]
_SURNAMES = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Perlman",
    "Thompson",
    "Wilson",
]
_SUBJECTS = [
    "Refund for a damaged parcel",
    "Cannot log in after password reset",
    "Invoice shows the wrong VAT number",
    "Upgrade to the annual plan",
    "Delivery is two weeks late",
    "API returns 500 on export",
    "Cancel my subscription",
    "Two-factor codes never arrive",
]
_LABELS = ["billing", "bug", "vip", "shipping", "account"]


@dataclass
class SandboxData:
    account_id: int = 1
    inboxes: list[dict[str, Any]] = field(default_factory=list)
    teams: list[dict[str, Any]] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    conversations: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


def generate(seed: int = 7, conversations: int = 60) -> SandboxData:
    """A support organisation: 3 inboxes, 2 teams, 5 agents, contacts, conversations, messages."""
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not secrets
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    data = SandboxData()
    channels = [
        ("Website", "Channel::WebWidget"),
        ("Email", "Channel::Email"),
        ("WhatsApp", "Channel::Whatsapp"),
    ]
    for number, (name, channel) in enumerate(channels, start=1):
        data.inboxes.append(
            {
                "id": number,
                "name": name,
                "channel_type": channel,
                "enable_auto_assignment": True,
                "greeting_enabled": False,
            }
        )
    data.teams = [
        {
            "id": 1,
            "name": "Tier 1",
            "description": "first line",
            "allow_auto_assign": True,
            "account_id": 1,
            "is_member": True,
        },
        {
            "id": 2,
            "name": "Billing",
            "description": "money matters",
            "allow_auto_assign": False,
            "account_id": 1,
            "is_member": False,
        },
    ]
    for number in range(1, 6):
        name = f"{_NAMES[number]} {_SURNAMES[number]}"
        data.agents.append(
            {
                "id": number,
                "account_id": 1,
                "name": name,
                "available_name": name,
                "email": f"agent{number}@example.com",
                "role": "agent",
                "confirmed": True,
                "availability_status": "online",
            }
        )
    for number in range(1, max(conversations // 2, 1) + 1):
        name = f"{rng.choice(_NAMES)} {rng.choice(_SURNAMES)}"
        inbox = data.inboxes[rng.randrange(len(data.inboxes))]
        created = start + timedelta(hours=rng.randrange(24 * 30))
        data.contacts.append(
            {
                "id": 100 + number,
                "name": name,
                "email": f"{name.lower().replace(' ', '.')}.{number}@example.com",
                "phone_number": f"+4415550{number:05d}",
                "identifier": f"cust-{number}",
                "blocked": False,
                "additional_attributes": {},
                "custom_attributes": {},
                "created_at": int(created.timestamp()),
                "last_activity_at": int(created.timestamp()),
                "contact_inboxes": [{"source_id": f"src-{number}", "inbox": {"id": inbox["id"]}}],
            }
        )
    message_id = 1000
    for number in range(1, conversations + 1):
        contact = rng.choice(data.contacts)
        inbox_id = contact["contact_inboxes"][0]["inbox"]["id"]
        agent = rng.choice(data.agents)
        team = rng.choice(data.teams)
        opened = datetime.fromtimestamp(contact["created_at"], UTC) + timedelta(
            minutes=rng.randrange(600)
        )
        thread = []
        moment = opened
        for turn in range(rng.randrange(2, 8)):
            message_id += 1
            incoming = turn % 2 == 0
            moment += timedelta(minutes=rng.randrange(3, 240))
            thread.append(
                {
                    "id": message_id,
                    "content": rng.choice(_SUBJECTS)
                    if turn == 0
                    else ("Any news?" if incoming else "We are looking into it."),
                    "account_id": 1,
                    "inbox_id": inbox_id,
                    "conversation_id": number,
                    "message_type": 0 if incoming else 1,
                    "content_type": "text",
                    "private": False,
                    "status": "sent",
                    "created_at": int(moment.timestamp()),
                    "sender_type": "Contact" if incoming else "User",
                    "sender": {"id": contact["id"] if incoming else agent["id"]},
                }
            )
        contact["last_activity_at"] = max(contact["last_activity_at"], int(moment.timestamp()))
        data.messages[number] = thread
        data.conversations.append(
            {
                "id": number,
                "account_id": 1,
                "uuid": f"00000000-0000-4000-8000-{number:012d}",
                "inbox_id": inbox_id,
                "status": rng.choice(["open", "resolved", "pending"]),
                "priority": rng.choice([None, "low", "medium", "high"]),
                "labels": rng.sample(_LABELS, rng.randrange(0, 3)),
                "muted": False,
                "unread_count": 0,
                "custom_attributes": {},
                "additional_attributes": {},
                "created_at": int(opened.timestamp()),
                "timestamp": int(opened.timestamp()),
                "last_activity_at": int(moment.timestamp()),
                "meta": {
                    "sender": {"id": contact["id"], "name": contact["name"]},
                    "assignee": {"id": agent["id"], "name": agent["name"]},
                    "team": {"id": team["id"], "name": team["name"]},
                    "channel": next(i["channel_type"] for i in data.inboxes if i["id"] == inbox_id),
                },
            }
        )
    return data


class ChatwootSandbox:
    """Serves `data` on a loopback port: ``with ChatwootSandbox(data, token=t) as url: ...``."""

    def __init__(self, data: SandboxData, *, token: str) -> None:
        self.data = data
        self.token = token
        self.url = ""
        self._server: ThreadingHTTPServer | None = None

    def __repr__(self) -> str:
        return f"ChatwootSandbox(url={self.url!r}, conversations={len(self.data.conversations)})"

    def answer(  # noqa: PLR0911 - one answer per endpoint
        self, path: str, query: dict[str, list[str]]
    ) -> tuple[int, Any]:
        data = self.data
        base = f"/api/v1/accounts/{data.account_id}"
        if path == base:
            return 200, {"id": data.account_id, "name": "Sandbox", "locale": "en"}
        if not path.startswith(base + "/"):
            return 404, {"error": "Resource could not be found"}
        rest = path[len(base) :]
        page = int(query.get("page", ["1"])[0])
        if rest == "/inboxes":
            return 200, {"payload": data.inboxes}
        if rest == "/teams":
            return 200, data.teams
        if rest == "/agents":
            return 200, data.agents
        if rest == "/contacts":
            ordered = sorted(data.contacts, key=lambda c: (c["last_activity_at"], c["id"]))
            chunk = ordered[(page - 1) * CONTACTS_PAGE : page * CONTACTS_PAGE]
            return 200, {"meta": {"count": len(ordered), "current_page": page}, "payload": chunk}
        if rest == "/conversations":
            status = query.get("status", ["open"])[0]
            chosen = [c for c in data.conversations if status == "all" or c["status"] == status]
            chosen.sort(key=lambda c: (-c["last_activity_at"], -c["id"]))
            chunk = chosen[(page - 1) * CONVERSATIONS_PAGE : page * CONVERSATIONS_PAGE]
            meta = {
                "all_count": len(chosen),
                "mine_count": 0,
                "assigned_count": len(chosen),
                "unassigned_count": 0,
            }
            return 200, {"data": {"meta": meta, "payload": chunk}}
        found = re.fullmatch(r"/conversations/(\d+)/messages", rest)
        if found:
            thread = data.messages.get(int(found.group(1)))
            if thread is None:
                return 404, {"error": "Resource could not be found"}
            before = query.get("before")
            older = [m for m in thread if before is None or m["id"] < int(before[0])]
            return 200, {"meta": {}, "payload": older[-MESSAGES_PAGE:]}
        return 404, {"error": "Resource could not be found"}

    def start(self) -> str:
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("api_access_token") != sandbox.token:
                    status, body = (
                        401,
                        {"error": "You need to sign in or sign up before continuing."},
                    )
                else:
                    parts = urlsplit(self.path)
                    status, body = sandbox.answer(parts.path, parse_qs(parts.query))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

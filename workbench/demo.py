"""Demo data: a small support organisation, published through the real pipeline.

Everything here becomes CloudEvents on the entity topics; the catalog projector applies them like
any connector's events. The data is generated from a seed, so every load is the same.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from workbench.catalog.model import EntityChange, EntityRef, RelationshipChange
from workbench.events import topics

SOURCE = "dictamesh://demo/chatwoot"
SYSTEM = "chatwoot"
DOMAIN = "support"

_FIRST = [
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
    "John",
    "Radia",
    "Ken",
    "Sophie",
    "Tim",
    "Hedy",
    "Claude",
]
_LAST = [
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
    "Backus",
    "Perlman",
    "Thompson",
    "Wilson",
    "Berners-Lee",
]
_SUBJECTS = [
    "Refund for a damaged parcel",
    "Cannot reset my password",
    "Invoice shows the wrong VAT",
    "Upgrade to the annual plan",
    "Delivery is two weeks late",
    "API returns 429 errors",
    "Export of my data as CSV",
    "Two-factor codes never arrive",
    "Cancel my subscription",
    "Webhook deliveries failing",
    "Change the billing e-mail",
    "Missing items in order",
]
_INBOXES = [
    ("1", "Website chat", "Channel::WebWidget"),
    ("2", "Support e-mail", "Channel::Email"),
    ("3", "WhatsApp", "Channel::Whatsapp"),
]
_TEAMS = [("1", "Billing"), ("2", "Technical support"), ("3", "Logistics")]


@dataclass(frozen=True)
class DemoChange:
    topic: str
    change: EntityChange


def _ref(entity_type: str, source_id: str) -> EntityRef:
    return EntityRef(source_system=SYSTEM, entity_type=entity_type, source_id=source_id)


def _change(
    entity_type: str,
    source_id: str,
    version: int,
    attributes: dict[str, object],
    display_name: str,
    relationships: list[RelationshipChange] | None = None,
    tags: list[str] | None = None,
) -> EntityChange:
    return EntityChange(
        domain=DOMAIN,
        source_system=SYSTEM,
        entity_type=entity_type,
        source_id=source_id,
        version=version,
        attributes=attributes,
        display_name=display_name,
        relationships=relationships,
        owners=["support-ops"],
        tags=tags or [],
    )


def demo_changes(seed: int = 7, conversations: int = 60) -> Iterator[DemoChange]:
    """Inboxes, teams, contacts, conversations and messages, then a round of updates."""
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not secrets
    start = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
    for source_id, name, channel in _INBOXES:
        yield DemoChange(
            topics.ENTITY_CREATED,
            _change("inbox", source_id, 1, {"name": name, "channel_type": channel}, name),
        )
    for source_id, name in _TEAMS:
        yield DemoChange(
            topics.ENTITY_CREATED,
            _change("team", source_id, 1, {"name": name, "allow_auto_assign": True}, name),
        )
    contacts = []
    for number in range(1, conversations // 2 + 1):
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        email = f"{name.lower().replace(' ', '.')}{number}@example.com"
        contacts.append(str(number))
        yield DemoChange(
            topics.ENTITY_CREATED,
            _change(
                "contact",
                str(number),
                1,
                {
                    "name": name,
                    "email": email,
                    "phone_number": f"+4420{rng.randint(10**7, 10**8 - 1)}",
                    "country": rng.choice(["GB", "DE", "FR", "NL", "US"]),
                },
                name,
                tags=["pii"],
            ),
        )
    message_id = 0
    for number in range(1, conversations + 1):
        contact = rng.choice(contacts)
        inbox = rng.choice(_INBOXES)[0]
        team = rng.choice(_TEAMS)[0]
        subject = rng.choice(_SUBJECTS)
        opened = start + timedelta(hours=number * 5)
        links = [
            RelationshipChange(type="started_by", target=_ref("contact", contact)),
            RelationshipChange(type="received_in", target=_ref("inbox", inbox)),
            RelationshipChange(type="assigned_to", target=_ref("team", team)),
        ]
        attributes: dict[str, object] = {
            "subject": subject,
            "status": "open",
            "priority": rng.choice(["low", "medium", "high"]),
            "created_at": opened.isoformat(),
            "messages_count": 0,
        }
        yield DemoChange(
            topics.ENTITY_CREATED,
            _change("conversation", str(number), 1, attributes, subject, links),
        )
        count = rng.randint(1, 5)
        for turn in range(count):
            message_id += 1
            yield DemoChange(
                topics.ENTITY_CREATED,
                _change(
                    "message",
                    str(message_id),
                    1,
                    {
                        "content": f"{subject} — message {turn + 1}",
                        "message_type": "incoming" if turn % 2 == 0 else "outgoing",
                        "created_at": (opened + timedelta(minutes=7 * turn)).isoformat(),
                    },
                    f"Message {message_id}",
                    [
                        RelationshipChange(
                            type="part_of",
                            target=_ref("conversation", str(number)),
                            cardinality="many_to_one",
                        )
                    ],
                ),
            )
        if rng.random() < 0.6:  # most conversations get resolved: version 2 of the entity
            resolved = {**attributes, "status": "resolved", "messages_count": count}
            yield DemoChange(
                topics.ENTITY_UPDATED,
                _change("conversation", str(number), 2, resolved, subject, links),
            )

"""The catalog report keeps every section to its domain and period, run as users run it.

Two domains share a source system; each has changes inside the period and either side of it,
schema versions and lineage edges. The report runs through `dictamesh report run catalog`, and
its HTML page is read section by section (the `##` headings) and table by table.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli
from workbench.catalog.model import EntityChange
from workbench.events import topics
from workbench.events.envelope import CloudEvent

pytestmark = pytest.mark.stack


# -- reading the rendered report -----------------------------------------------------------------
@dataclass
class Section:
    text: list[str] = field(default_factory=list)
    tables: list[list[dict[str, str]]] = field(default_factory=list)

    def rows(self) -> list[dict[str, str]]:
        """The rows of the section's one table (a DataFrame's output)."""
        assert len(self.tables) == 1, f"expected one table, found {len(self.tables)}"
        return self.tables[0]

    @property
    def prose(self) -> str:
        return " ".join("".join(self.text).split())


class ReportPage(HTMLParser):
    """The sections of an nbconvert page: the text and DataFrame tables under each `<h2>`."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, Section] = {"": Section()}
        self._current = self.sections[""]
        self._heading: list[str] | None = None
        self._part: str | None = None  # "thead" or "tbody" inside a table
        self._columns: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self._heading = []
        elif tag == "table":
            self._columns = []
            self._current.tables.append([])
        elif tag in {"thead", "tbody"}:
            self._part = tag
        elif tag == "tr":
            self._row = []
        elif tag in {"th", "td"}:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._heading is not None:
            name = "".join(self._heading).replace("¶", "").strip()
            self._current = self.sections.setdefault(name, Section())
            self._heading = None
        elif tag in {"th", "td"} and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip().strip('"'))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._part == "thead" and not self._columns:
                self._columns = self._row  # the second header row holds the dtypes
            elif self._part == "tbody":
                self._current.tables[-1].append(dict(zip(self._columns, self._row, strict=True)))
            self._row = None
        elif tag in {"thead", "tbody"}:
            self._part = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)
        elif self._cell is not None:
            self._cell.append(data)
        else:
            self._current.text.append(data)

    def __getitem__(self, name: str) -> Section:
        return self.sections[name]


def run_catalog_report(domain: str, start: date, end: date) -> ReportPage:
    """`dictamesh report run catalog -p domain D -p start S -p end E`, read from its HTML page."""
    result = run_cli(
        "report",
        "run",
        "catalog",
        "-p",
        "domain",
        domain,
        "-p",
        "start",
        start.isoformat(),
        "-p",
        "end",
        end.isoformat(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    found = re.search(r"^html: (.+\.html)$", result.stdout, re.MULTILINE)
    assert found, result.stdout
    return ReportPage(Path(found.group(1)).read_text(encoding="utf-8"))


def shown(moment: datetime) -> str:
    """A timestamp as the report's tables print it (UTC, to the second)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- the data: two domains, in and out of the period ---------------------------------------------
@dataclass(frozen=True)
class Fixture:
    tag: str
    domain: str  # the domain the report is run for
    other: str  # a second domain, sharing the source system crm<tag>
    start: date
    end: date  # the period's last day, given as a date-only end
    early: datetime  # the second before the period
    first: datetime  # the period's first moment
    last: datetime  # a moment of the period's last day after its midnight (the registration)
    after: datetime  # the midnight after the last day, just outside the period
    in_period: datetime  # well inside the period


def publish_entity(
    wb: Any,
    domain: str,
    source_system: str,
    entity_type: str,
    source_id: str,
    at: datetime,
    *,
    version: int = 1,
    deleted: bool = False,
) -> None:
    """Publish one entity change that happened at `at` and wait until the catalog applied it."""
    change = EntityChange(
        domain=domain,
        source_system=source_system,
        entity_type=entity_type,
        source_id=source_id,
        version=version,
        attributes={"name": source_id},
    )
    if deleted:
        topic = topics.ENTITY_DELETED
    else:
        topic = topics.ENTITY_CREATED if version == 1 else topics.ENTITY_UPDATED
    wb.events.publish(
        topic,
        CloudEvent(
            source="/tests/catalog-report",
            type=topic,
            time=at,
            subject=change.ref.key,
            partitionkey=change.ref.key,
            data=change.model_dump(mode="json", exclude_none=True),
        ),
    ).wait()


def record_edge(wb: Any, tag: str, source: str, target: str, at: datetime) -> None:
    """One job run at `at` reading dataset `source` and writing `target` (``namespace/name``)."""
    written = wb.catalog.record_lineage(
        {
            "eventType": "COMPLETE",
            "eventTime": at.isoformat(),
            "run": {"runId": str(uuid.uuid4())},
            "job": {"namespace": f"jobs{tag}", "name": f"{source}->{target}"},
            "inputs": [dict(zip(("namespace", "name"), source.split("/", 1), strict=True))],
            "outputs": [dict(zip(("namespace", "name"), target.split("/", 1), strict=True))],
        }
    )
    assert written >= 1


@pytest.fixture(scope="module")
def data(workbench: Any, workers: Any) -> Fixture:
    tag = uuid.uuid4().hex[:8]
    wb = workbench
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    # Schema versions are stamped with the time they are registered: the period ends today.
    registered = wb.schemas.register(f"sql/crm{tag}/account", schema)  # a connector's subject
    end = registered.created_at.astimezone(UTC).date()
    start = end - timedelta(days=20)
    first = datetime.combine(start, time(), UTC)
    after = datetime.combine(end + timedelta(days=1), time(), UTC)
    fixture = Fixture(
        tag=tag,
        domain=f"sales-{tag}",
        other=f"support-{tag}",
        start=start,
        end=end,
        early=first - timedelta(seconds=1),
        first=first,
        last=registered.created_at.astimezone(UTC),
        after=after,
        in_period=first + timedelta(days=3, hours=12),
    )
    assert fixture.first < fixture.last < fixture.after and fixture.last.date() == end
    crm, desk = f"crm{tag}", f"desk{tag}"
    sales, support = fixture.domain, fixture.other

    publish_entity(wb, sales, crm, "lead", "l-early", fixture.early)  # held, changed before
    publish_entity(wb, sales, crm, "account", "a-first", fixture.first)
    publish_entity(wb, sales, crm, "account", "a-last", fixture.last)
    publish_entity(wb, sales, crm, "invoice", "i-after", fixture.after)  # appears after
    # a-first is deleted after the period: at its end it was still live.
    publish_entity(
        wb,
        sales,
        crm,
        "account",
        "a-first",
        fixture.after + timedelta(days=1),
        version=2,
        deleted=True,
    )
    # The other domain, in the period: its own source system, and one shared with the domain.
    publish_entity(wb, support, desk, "ticket", "t-1", fixture.in_period)
    publish_entity(wb, support, crm, "contact", "c-1", fixture.in_period)

    wb.schemas.register(f"crm{tag}/lead", schema)  # named SOURCE_SYSTEM/ENTITY_TYPE
    wb.schemas.register(f"desk{tag}/ticket", schema)  # the other domain's
    wb.schemas.register(f"sql/crm{tag}/contact", schema)  # the other domain's, shared system
    wb.schemas.register(f"misc{tag}/notes", schema)  # no domain's

    in_period = fixture.in_period
    record_edge(wb, tag, f"{crm}/account", f"wh{tag}/accounts", in_period)
    record_edge(wb, tag, f"sql/{crm}/account", f"wh{tag}/account_facts", in_period)
    record_edge(wb, tag, f"erp{tag}/orders", f"{crm}/account", in_period)  # feeds the domain
    record_edge(wb, tag, f"{crm}/account", f"wh{tag}/before", fixture.early)
    record_edge(wb, tag, f"{crm}/account", f"wh{tag}/after", fixture.after)
    # A job that ran before the period and again after it: its edge was there all through.
    record_edge(wb, tag, f"{crm}/lead", f"wh{tag}/leads", fixture.early)
    record_edge(wb, tag, f"{crm}/lead", f"wh{tag}/leads", fixture.after)
    record_edge(wb, tag, f"{desk}/ticket", f"wh{tag}/tickets", in_period)
    record_edge(wb, tag, f"{crm}/contact", f"wh{tag}/contacts", in_period)
    record_edge(wb, tag, f"misc{tag}/a", f"misc{tag}/b", in_period)
    return fixture


@pytest.fixture(scope="module")
def report(data: Fixture) -> ReportPage:
    """The report for the domain, from the period's first day to its last, given as dates."""
    return run_catalog_report(data.domain, data.start, data.end)


@pytest.fixture(scope="module")
def report_to_day_before(data: Fixture) -> ReportPage:
    """The same report, with the period ending a day earlier."""
    return run_catalog_report(data.domain, data.start, data.end - timedelta(days=1))


# -- each section ----------------------------------------------------------------------------
def test_header_names_domain_and_whole_last_day(data: Fixture, report: ReportPage) -> None:
    header = report[""].prose
    assert f"Domain: {data.domain}" in header
    assert f"Period: {data.start} 00:00 to the end of {data.end} UTC" in header


def test_entities_are_the_domains_as_held_at_the_end_of_the_period(
    data: Fixture, report: ReportPage, report_to_day_before: ReportPage
) -> None:
    rows = {(r["source_system"], r["entity_type"]): r for r in report["Entities"].rows()}
    crm = f"crm{data.tag}"
    # Not the other domain's types (not even those of the shared source system), nor the
    # invoice that appeared after the period.
    assert set(rows) == {(crm, "account"), (crm, "lead")}
    assert {r["domain"] for r in rows.values()} == {data.domain}
    account, lead = rows[(crm, "account")], rows[(crm, "lead")]
    # a-first was deleted after the period: live at its end.
    assert (account["live"], account["deleted"], account["changed_in_period"]) == ("2", "0", "2")
    assert account["last_change"].startswith(shown(data.last))
    # Held all through the period, changed only before it.
    assert (lead["live"], lead["changed_in_period"]) == ("1", "0")

    earlier = {
        (r["source_system"], r["entity_type"]): r for r in report_to_day_before["Entities"].rows()
    }
    assert earlier[(crm, "account")]["live"] == "1"  # a-last came on the last day
    assert earlier[(crm, "account")]["last_change"].startswith(shown(data.first))


def test_changes_are_the_domains_within_the_period(data: Fixture, report: ReportPage) -> None:
    rows = report["Changes in the period"].rows()
    # a-first on the first day, a-last on the last: nothing from before or after the period
    # (the lead, the invoice, the delete), nor the other domain's changes in the middle of it.
    assert [r["day"] for r in rows] == [str(data.start), str(data.end)]
    assert [r[topics.ENTITY_CREATED] for r in rows] == ["1", "1"]
    assert topics.ENTITY_DELETED not in rows[0]


def test_freshness_is_the_domains_sources_within_the_period(
    data: Fixture, report: ReportPage, report_to_day_before: ReportPage
) -> None:
    section = report["Freshness"]
    crm = f"crm{data.tag}"
    rows = section.rows()
    assert [(r["source_system"], r["entity_type"], r["changes"]) for r in rows] == [
        (crm, "account", "2")
    ]
    assert rows[0]["last_change"].startswith(shown(data.last))
    # Not the consumer groups' lag: no topics, no groups.
    assert "group" not in rows[0] and "topic" not in rows[0]
    # The domain's source held through the period without a change is named as silent; the
    # other domain's are not, nor the invoice that appeared after the period.
    assert f"No change in the period from {crm}/lead." in section.prose
    assert f"desk{data.tag}" not in section.prose and "contact" not in section.prose
    assert "invoice" not in section.prose

    earlier = report_to_day_before["Freshness"].rows()
    assert [(r["entity_type"], r["changes"]) for r in earlier] == [("account", "1")]
    assert earlier[0]["last_change"].startswith(shown(data.first))


def test_schema_changes_are_the_domains_within_the_period(
    data: Fixture, report: ReportPage, report_to_day_before: ReportPage
) -> None:
    subjects = {r["subject"] for r in report["Schema changes"].rows()}
    # Registered today, the period's last day: in, named after the domain's entity types only.
    assert subjects == {f"sql/crm{data.tag}/account", f"crm{data.tag}/lead"}
    # With the period ending the day before, none of them.
    assert report_to_day_before["Schema changes"].rows() == []


def test_lineage_is_the_domains_edges_seen_in_the_period(
    data: Fixture, report: ReportPage, report_to_day_before: ReportPage
) -> None:
    tag = data.tag
    rows = {r["source_dataset"]: r for r in report["Lineage"].rows()}
    # Edges out of and into the domain's datasets seen in the period; not the edges seen only
    # before or only after it, nor the other domain's (the shared source system's included),
    # nor edges of no domain.
    assert set(rows) == {
        f"crm{tag}/account",
        f"sql/crm{tag}/account",
        f"erp{tag}/orders",
        f"crm{tag}/lead",
    }
    account = rows[f"crm{tag}/account"]
    assert (account["direct_downstream"], account["downstream"]) == ("1", f"wh{tag}/accounts")
    assert account["first_seen"].startswith(shown(data.in_period))
    assert account["last_seen"].startswith(shown(data.in_period))
    assert rows[f"sql/crm{tag}/account"]["downstream"] == f"wh{tag}/account_facts"
    assert rows[f"erp{tag}/orders"]["downstream"] == f"crm{tag}/account"
    # Run before the period and after it: there all along.
    lead = rows[f"crm{tag}/lead"]
    assert lead["downstream"] == f"wh{tag}/leads"
    assert lead["first_seen"].startswith(shown(data.early))
    assert lead["last_seen"].startswith(shown(data.after))
    assert "4 datasets feed others" in report["Lineage"].prose
    # With the period a day shorter, the same edges: none was first seen on its last day.
    earlier = {r["source_dataset"]: r["downstream"] for r in report_to_day_before["Lineage"].rows()}
    assert earlier == {name: row["downstream"] for name, row in rows.items()}


def test_a_date_only_end_counts_that_whole_day(data: Fixture, report: ReportPage) -> None:
    """`-p end 2026-10-31` takes in all of the 31st, up to (not including) the next midnight."""
    assert datetime.combine(data.end, time(), UTC) < data.last  # after the last day's midnight
    days = [r["day"] for r in report["Changes in the period"].rows()]
    assert days[-1] == str(data.end)
    freshness = report["Freshness"].rows()
    assert freshness[0]["last_change"].startswith(shown(data.last))
    assert f"sql/crm{data.tag}/account" in {r["subject"] for r in report["Schema changes"].rows()}
    # The invoice arrived at the next midnight exactly: out.
    assert "invoice" not in {r["entity_type"] for r in report["Entities"].rows()}

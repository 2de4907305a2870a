"""Billing: MRR waterfall, MRR and customers over time, churn and retention, cohorts, invoices.

The analytics are `wb.billing.analysis(...)` (ChartMogul definitions, docs/billing.md) over the
workbench's own subscriptions; charts are inline SVG so the page works offline.
"""

from __future__ import annotations

import html
import uuid
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import panel as pn
import polars as pl
from workbench.dashboards.layout import Page, table_data

from workbench.billing import charts
from workbench.billing.mrr import CHURN_RECOGNITION

if TYPE_CHECKING:
    from workbench.billing.service import Invoice
    from workbench.client import Workbench

INVOICE_STATUSES = ["all", "draft", "open", "paid", "void", "uncollectible"]


def _months_back(today: date, months: int) -> date:
    index = today.year * 12 + today.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def _organizations(workbench: Workbench) -> list[str]:
    frame = workbench.sql("SELECT id FROM dictamesh_billing_organizations ORDER BY id")
    return ["all", *[str(v) for v in frame["id"].to_list()]] if frame.height else ["all"]


def _kpis(metrics: pl.DataFrame) -> str:
    if metrics.height == 0:
        return "No subscriptions in this window."
    last = metrics.row(-1, named=True)

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    return (
        f"**MRR** {last['end_mrr']:,} {last['currency']} · **paying customers** "
        f"{last['customers_end']} · **net new MRR** {last['net_new_mrr']:,} · **logo churn** "
        f"{pct(last['logo_churn_rate'])} · **NRR** {pct(last['nrr'])} · **GRR** "
        f"{pct(last['grr'])} · **ARPA** {last['arpa'] if last['arpa'] is not None else 'n/a'}"
    )


def _invoice_detail(invoice: Invoice) -> str:
    """The drill-down of one invoice: lines, the tax of each rate, the coupons, the totals."""
    esc = html.escape
    lines = "".join(
        f"<tr><td>{esc(str(line['description']))}</td><td>{esc(str(line['kind']))}</td>"
        f"<td>{line['quantity']}</td><td>{line['amount']}</td><td>{line['discount']}</td>"
        f"<td>{line['tax']}</td><td>{line.get('tax_inclusive', 0)}</td></tr>"
        for line in invoice.lines
    )
    parts = [
        f"<h4>{esc(invoice.number or 'draft')} — {esc(invoice.status)}</h4>",
        '<table class="dm-billing-lines"><tr><th>line</th><th>kind</th><th>qty</th>'
        "<th>amount</th><th>discount</th><th>tax added</th><th>tax included</th></tr>"
        f"{lines}</table>",
    ]
    if invoice.tax_breakdown:
        taxes = "".join(
            f"<tr><td>{esc(str(rate['display_name']))}</td>"
            f"<td>{esc(str(rate['percentage']))} %</td>"
            f"<td>{'inclusive' if rate['inclusive'] else 'exclusive'}</td>"
            f"<td>{esc(str(rate['taxable_amount']))}</td><td>{esc(str(rate['amount']))}</td></tr>"
            for rate in invoice.tax_breakdown
        )
        parts.append(
            '<table class="dm-billing-tax"><tr><th>tax rate</th><th>rate</th><th>kind</th>'
            f"<th>taxable amount</th><th>tax</th></tr>{taxes}</table>"
        )
    if invoice.coupons:
        coupons = "".join(
            f"<tr><td>{esc(str(coupon['code']))}</td>"
            f"<td>{esc(str(coupon.get('amount') or ''))}</td></tr>"
            for coupon in invoice.coupons
        )
        parts.append(
            '<table class="dm-billing-coupons"><tr><th>coupon</th>'
            f"<th>amount off ({esc(invoice.currency)})</th></tr>{coupons}</table>"
        )
    included = f", of which tax included {invoice.tax_inclusive}" if invoice.tax_inclusive else ""
    parts.append(
        f"<p>subtotal {invoice.subtotal}, discount {invoice.discount}, tax {invoice.tax}"
        f"{included}, credits {invoice.credits_applied}, "
        f"<b>due {invoice.amount_due} {esc(invoice.currency)}</b>, paid {invoice.amount_paid}</p>"
    )
    return "".join(parts)


def build(workbench: Workbench) -> list[Any]:  # noqa: PLR0915 - one page, read top to bottom
    billing = workbench.billing
    today = datetime.now(UTC).date()
    organization = pn.widgets.Select(
        label="Organization", options=_organizations(workbench), value="all", width=180
    )
    currency = pn.widgets.TextInput(label="Reporting currency", value="USD", width=140)
    start = pn.widgets.DatePicker(label="From", value=_months_back(today, 11), width=150)
    end = pn.widgets.DatePicker(label="Until (exclusive)", value=_months_back(today, -1), width=150)
    churn = pn.widgets.Select(label="Churn recognition", options=list(CHURN_RECOGNITION), width=200)
    kpis = pn.pane.Markdown(css_classes=["dm-billing-kpis"], sizing_mode="stretch_width")
    waterfall = pn.pane.HTML(css_classes=["dm-billing-waterfall-pane"], sizing_mode="stretch_width")
    mrr_chart = pn.pane.HTML(css_classes=["dm-billing-mrr-pane"], sizing_mode="stretch_width")
    rates_chart = pn.pane.HTML(css_classes=["dm-billing-rates-pane"], sizing_mode="stretch_width")
    cohorts = pn.pane.HTML(css_classes=["dm-billing-cohort-pane"], sizing_mode="stretch_width")
    top = pn.widgets.Tabulator(
        pl.DataFrame().to_pandas(),
        disabled=True,
        show_index=False,
        height=300,
        css_classes=["dm-billing-top"],
    )
    metrics_table = pn.widgets.Tabulator(
        pl.DataFrame().to_pandas(), disabled=True, show_index=False, height=300
    )
    error = pn.pane.Alert(visible=False, alert_type="danger")

    status = pn.widgets.Select(label="Invoice status", options=INVOICE_STATUSES, width=160)
    customer_filter = pn.widgets.TextInput(label="Customer contains", width=200)
    invoices = pn.widgets.Tabulator(
        pl.DataFrame().to_pandas(),
        disabled=True,
        show_index=False,
        selectable=1,
        pagination="remote",
        page_size=20,
        css_classes=["dm-billing-invoices"],
    )
    detail = pn.pane.HTML(css_classes=["dm-billing-invoice-detail"], sizing_mode="stretch_width")

    def refresh_analytics(*_events: Any) -> None:
        error.visible = False
        try:
            analysis = billing.analysis(
                start=start.value,
                end=end.value,
                organization_id=None if organization.value == "all" else organization.value,
                reporting_currency=currency.value.strip().upper() or "USD",
                churn_recognition=churn.value,
            )
            metrics = analysis.metrics
        except Exception as exc:  # shown to the user, who can fix the inputs
            error.object = html.escape(str(exc))
            error.visible = True
            return
        kpis.object = _kpis(metrics)
        months = metrics["month"].to_list()
        waterfall.object = charts.waterfall(metrics)
        mrr_chart.object = charts.lines(
            months,
            {"MRR": [float(v) for v in metrics["end_mrr"]]},
            "MRR and paying customers",
            "dm-billing-mrr",
            right={"paying customers": [float(v) for v in metrics["customers_end"]]},
        )
        rates_chart.object = charts.lines(
            months,
            {
                "NRR": metrics["nrr"].to_list(),
                "GRR": metrics["grr"].to_list(),
                "logo churn": metrics["logo_churn_rate"].to_list(),
                "gross MRR churn": metrics["gross_mrr_churn_rate"].to_list(),
            },
            "Retention and churn rates (1 = 100 %)",
            "dm-billing-rates",
        )
        cohorts.object = charts.heatmap(analysis.cohort_matrix())
        top.value = table_data(analysis.customer_mrr(top=20))
        metrics_table.value = table_data(metrics)

    def refresh_invoices(*_events: Any) -> None:
        org = organization.value
        frames = [
            billing.invoices(o, status=None if status.value == "all" else status.value)
            for o in (_organizations(workbench)[1:] if org == "all" else [org])
        ]
        # newest first across organizations too
        frame = (
            pl.concat(frames).sort("created_at", descending=True, maintain_order=True)
            if frames
            else pl.DataFrame()
        )
        text = customer_filter.value.strip()
        if text and frame.height:
            frame = frame.filter(pl.col("customer").str.contains(text, literal=True))
        invoices.value = table_data(frame)
        detail.object = "Select an invoice to see its lines."

    def show_invoice(event: Any) -> None:
        rows = event.new
        if not rows or invoices.value is None or invoices.value.empty:
            return
        invoice_id = invoices.value.iloc[rows[0]]["id"]
        detail.object = _invoice_detail(billing.invoice(uuid.UUID(str(invoice_id))))

    for widget in (organization, currency, start, end, churn):
        widget.param.watch(refresh_analytics, "value")
    for widget in (organization, status, customer_filter):
        widget.param.watch(refresh_invoices, "value")
    invoices.param.watch(show_invoice, "selection")
    refresh_analytics()
    refresh_invoices()
    return [
        pn.Row(organization, currency, start, end, churn),
        error,
        kpis,
        waterfall,
        pn.Row(mrr_chart, rates_chart),
        pn.pane.Markdown("### Cohorts"),
        cohorts,
        pn.pane.Markdown("### Top customers by MRR"),
        top,
        pn.pane.Markdown("### Monthly metrics"),
        metrics_table,
        pn.pane.Markdown("### Invoices"),
        pn.Row(status, customer_filter),
        invoices,
        detail,
    ]


PAGE = Page(
    slug="billing",
    title="Billing",
    build=build,
    order=40,
    description="MRR movements, churn, retention, cohorts and invoices",
)

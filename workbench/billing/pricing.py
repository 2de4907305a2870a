"""The pricing engine: charge models, proration and invoice totals, all in `Decimal`.

Rounding (documented in docs/billing.md): intermediate results keep full precision; each invoice
line is rounded once to its currency's minor unit (USD cents, JPY yen, KWD fils) with
ROUND_HALF_UP, then discounts are allocated to lines in minor units (largest remainder), tax is
computed per line and per tax rate on its discounted amount and rounded the same way (inclusive
rates are contained in the amount, exclusive ones added), and credits are applied last. So
``amount_due = sum(line nets) + sum(exclusive line taxes) - credits_applied`` holds exactly.

Tiers follow Stripe: ``up_to`` is inclusive (None = infinity). *Graduated*: each unit is priced
by the tier it falls in and a tier's flat fee is added once any unit falls in it. *Volume*: all
units are priced by the tier the total falls in, plus that tier's flat fee. Zero usage costs
nothing in both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from workbench.billing.currencies import is_currency, minor_units
from workbench.billing.errors import BillingInputError

ZERO = Decimal(0)
ChargeModel = Literal["standard", "graduated", "volume", "package", "percentage", "flat_usage"]
CHARGE_MODELS: tuple[str, ...] = (
    "standard",
    "graduated",
    "volume",
    "package",
    "percentage",
    "flat_usage",
)


def quantum(currency: str) -> Decimal:
    """The smallest unit of `currency` as a Decimal exponent (USD: 0.01, JPY: 1)."""
    return Decimal(1).scaleb(-minor_units(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half up to `currency`'s minor unit."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)


def _dec(value: Decimal | int | str, field_name: str) -> Decimal:
    if isinstance(value, float):
        raise BillingInputError(
            "-",
            field_name,
            value,
            "is a float",
            remedy="pass money and quantities as Decimal, int or str.",
        )
    try:
        return Decimal(value)
    except Exception:
        raise BillingInputError(
            "-", field_name, value, "is not a number", remedy="pass a Decimal, int or str."
        ) from None


@dataclass(frozen=True)
class Tier:
    """One price tier. ``up_to`` is inclusive; None means no upper bound."""

    up_to: Decimal | None
    unit_amount: Decimal = ZERO
    flat_amount: Decimal = ZERO


@dataclass(frozen=True)
class Charge:
    """How a quantity (or, for ``percentage``, a transaction amount) turns into money.

    * ``standard``: quantity x ``unit_amount``
    * ``graduated`` / ``volume``: ``tiers`` (Stripe semantics)
    * ``package``: ``package_amount`` per started ``package_size`` units (rounded up)
    * ``percentage``: ``rate`` (e.g. 0.029) of the summed amounts plus ``fixed_amount`` per
      transaction (Lago's percentage charge)
    * ``flat_usage``: ``flat_amount`` per period plus ``usage`` (any of the above) on the quantity
    """

    model: ChargeModel
    unit_amount: Decimal = ZERO
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal = Decimal(1)
    package_amount: Decimal = ZERO
    rate: Decimal = ZERO
    fixed_amount: Decimal = ZERO
    flat_amount: Decimal = ZERO
    usage: Charge | None = None

    def __post_init__(self) -> None:
        if self.model not in CHARGE_MODELS:
            raise BillingInputError(
                "charge",
                "model",
                self.model,
                "is not a charge model",
                remedy=f"use one of {', '.join(CHARGE_MODELS)}.",
            )
        for name in ("unit_amount", "package_amount", "rate", "fixed_amount", "flat_amount"):
            if getattr(self, name) < 0:
                raise BillingInputError(
                    "charge", name, getattr(self, name), "is negative", remedy="use amounts >= 0."
                )
        if self.model == "package" and self.package_size <= 0:
            raise BillingInputError(
                "charge",
                "package_size",
                self.package_size,
                "must be positive",
                remedy="give the number of units in a package, e.g. 1000.",
            )
        if self.model in ("graduated", "volume"):
            _check_tiers(self.tiers)
        if (
            self.model == "flat_usage"
            and self.usage is not None
            and self.usage.model == "flat_usage"
        ):
            raise BillingInputError(
                "charge",
                "usage",
                self.usage.model,
                "cannot nest flat_usage",
                remedy="use a usage model such as standard or graduated.",
            )


def _check_tiers(tiers: Sequence[Tier]) -> None:
    if not tiers:
        raise BillingInputError(
            "charge", "tiers", tiers, "is empty", remedy="give at least one tier."
        )
    previous = ZERO
    for i, tier in enumerate(tiers):
        last = i == len(tiers) - 1
        if tier.up_to is None and not last:
            raise BillingInputError(
                f"tier {i}",
                "up_to",
                None,
                "only the last tier may be unbounded",
                remedy="give every tier but the last an up_to.",
            )
        if tier.up_to is not None and tier.up_to <= previous:
            raise BillingInputError(
                f"tier {i}",
                "up_to",
                tier.up_to,
                "must be greater than the previous tier's",
                remedy="order tiers by increasing up_to.",
            )
        if tier.unit_amount < 0 or tier.flat_amount < 0:
            raise BillingInputError(
                f"tier {i}",
                "unit_amount",
                tier.unit_amount,
                "is negative",
                remedy="use amounts >= 0.",
            )
        previous = tier.up_to if tier.up_to is not None else previous
    if tiers[-1].up_to is not None:
        raise BillingInputError(
            f"tier {len(tiers) - 1}",
            "up_to",
            tiers[-1].up_to,
            "the last tier must be unbounded (up_to=None)",
            remedy="end the tiers with up_to=None ('inf' in Stripe).",
        )


def _quantity(quantity: Decimal | int | str) -> Decimal:
    value = _dec(quantity, "quantity")
    if value < 0:
        raise BillingInputError(
            "-", "quantity", value, "is negative", remedy="usage quantities are >= 0."
        )
    return value


def graduated(quantity: Decimal | int | str, tiers: Sequence[Tier]) -> Decimal:
    """Each unit priced by its own tier; a tier's flat fee once any unit falls in it."""
    q = _quantity(quantity)
    _check_tiers(tiers)
    total, floor = ZERO, ZERO
    for tier in tiers:
        if q <= floor:
            break
        ceiling = q if tier.up_to is None else min(q, tier.up_to)
        units = ceiling - floor
        if units > 0:
            total += units * tier.unit_amount + tier.flat_amount
        floor = ceiling
    return total


def volume(quantity: Decimal | int | str, tiers: Sequence[Tier]) -> Decimal:
    """All units priced by the tier the total falls in, plus that tier's flat fee."""
    q = _quantity(quantity)
    _check_tiers(tiers)
    if q == 0:
        return ZERO
    for tier in tiers:
        if tier.up_to is None or q <= tier.up_to:
            return q * tier.unit_amount + tier.flat_amount
    raise AssertionError("unreachable: the last tier is unbounded")  # pragma: no cover


def package(quantity: Decimal | int | str, size: Decimal, amount: Decimal) -> Decimal:
    """`amount` per started package of `size` units."""
    q = _quantity(quantity)
    return Decimal(math.ceil(q / size)) * amount


def price(
    charge: Charge,
    quantity: Decimal | int | str = ZERO,
    *,
    amount: Decimal | int | str = ZERO,
    transactions: int = 0,
) -> Decimal:
    """The unrounded price of `quantity` units (or of `amount` for ``percentage``)."""
    q = _quantity(quantity)
    if charge.model == "standard":
        return q * charge.unit_amount
    if charge.model == "graduated":
        return graduated(q, charge.tiers)
    if charge.model == "volume":
        return volume(q, charge.tiers)
    if charge.model == "package":
        return package(q, charge.package_size, charge.package_amount)
    if charge.model == "percentage":
        base = _dec(amount, "amount")
        if base < 0:
            raise BillingInputError(
                "-", "amount", base, "is negative", remedy="sum transaction amounts >= 0."
            )
        return base * charge.rate + charge.fixed_amount * transactions
    usage = (
        ZERO
        if charge.usage is None
        else price(charge.usage, q, amount=amount, transactions=transactions)
    )
    return charge.flat_amount + usage


# -- proration ------------------------------------------------------------------------------------
def prorate(
    amount: Decimal, period_start: datetime, period_end: datetime, start: datetime, end: datetime
) -> Decimal:
    """The share of `amount` (per period) for ``[start, end)`` inside the period, to the second."""
    if not period_start < period_end:
        raise BillingInputError(
            "-",
            "period_end",
            period_end,
            f"is not after period_start {period_start.isoformat()}",
            remedy="give a non-empty billing period.",
        )
    lo, hi = max(start, period_start), min(end, period_end)
    if hi <= lo:
        return ZERO
    used = int((hi - lo).total_seconds())
    total = int((period_end - period_start).total_seconds())
    return amount * Decimal(used) / Decimal(total)


@dataclass(frozen=True)
class ProrationLines:
    """Stripe-style lines for a mid-period change: credit for unused time, charge for the rest."""

    credit: Decimal  # negative
    charge: Decimal  # positive

    @property
    def net(self) -> Decimal:
        return self.credit + self.charge


def proration_for_change(
    old_amount: Decimal,
    new_amount: Decimal,
    period_start: datetime,
    period_end: datetime,
    changed_at: datetime,
    currency: str,
) -> ProrationLines:
    """Credit the unused time on the old price, charge the remaining time on the new one."""
    if not period_start <= changed_at <= period_end:
        raise BillingInputError(
            "-",
            "changed_at",
            changed_at,
            "is outside the current period",
            remedy="changes are prorated within the period they happen in.",
        )
    credit = -round_money(
        prorate(old_amount, period_start, period_end, changed_at, period_end), currency
    )
    charge = round_money(
        prorate(new_amount, period_start, period_end, changed_at, period_end), currency
    )
    return ProrationLines(credit, charge)


# -- invoice totals -------------------------------------------------------------------------------
DURATIONS: tuple[str, ...] = ("once", "repeating", "forever")


@dataclass(frozen=True)
class LineInput:
    description: str
    amount: Decimal  # unrounded; rounded once here
    kind: str = "subscription"  # subscription, usage, proration, one_time, credit_note
    quantity: Decimal = Decimal(1)
    discountable: bool = True


@dataclass(frozen=True)
class Coupon:
    """A discount: ``percent_off`` (0-100] or ``amount_off`` in ``currency``, Stripe durations.

    ``duration`` is ``once`` (the first invoice), ``repeating`` (``duration_in_months``) or
    ``forever``; ``max_redemptions`` caps how often it can be applied and ``redeem_by`` is the
    last moment it can be applied. The pricing engine only reads the amounts; the stored
    coupons of `Billing.create_coupon` carry the rest.
    """

    code: str
    percent_off: Decimal | None = None
    amount_off: Decimal | None = None
    currency: str | None = None
    duration: str = "once"
    duration_in_months: int | None = None
    max_redemptions: int | None = None
    redeem_by: datetime | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if (self.percent_off is None) == (self.amount_off is None):
            raise BillingInputError(
                self.code,
                "percent_off",
                self.percent_off,
                "a coupon has exactly one of percent_off and amount_off",
                remedy="set one of them.",
            )
        if self.percent_off is not None:
            if not ZERO < self.percent_off <= 100:
                raise BillingInputError(
                    self.code,
                    "percent_off",
                    self.percent_off,
                    "is not in (0, 100]",
                    remedy="give a percentage such as 10 or 12.5.",
                )
            if self.currency is not None:
                raise BillingInputError(
                    self.code,
                    "currency",
                    self.currency,
                    "is only for amount_off coupons",
                    remedy="leave currency out of a percent_off coupon.",
                )
        if self.amount_off is not None:
            if self.amount_off <= 0:
                raise BillingInputError(
                    self.code, "amount_off", self.amount_off, "is not positive", remedy="use > 0."
                )
            if self.currency is None or not is_currency(self.currency):
                raise BillingInputError(
                    self.code,
                    "currency",
                    self.currency,
                    "an amount_off coupon needs an ISO 4217 currency",
                    remedy="pass currency='EUR' (the invoices' currency).",
                )
        if self.duration not in DURATIONS:
            raise BillingInputError(
                self.code,
                "duration",
                self.duration,
                "is not a coupon duration",
                remedy=f"use one of {', '.join(DURATIONS)}.",
            )
        if (self.duration == "repeating") != (self.duration_in_months is not None):
            raise BillingInputError(
                self.code,
                "duration_in_months",
                self.duration_in_months,
                "is required for duration='repeating' and only then",
                remedy="give duration_in_months with repeating, leave it out otherwise.",
            )
        for field_name, limit, remedy in (
            ("duration_in_months", 1200, "give a number of months from 1 to 1200."),
            ("max_redemptions", 2**31 - 1, "give a limit >= 1, or None for no limit."),
        ):
            value = getattr(self, field_name)
            if value is not None and not 1 <= value <= limit:
                raise BillingInputError(
                    self.code, field_name, value, f"is not between 1 and {limit}", remedy=remedy
                )


@dataclass(frozen=True)
class TaxRate:
    """A tax rate in percent (0-100). Exclusive rates add tax on top of the discounted amount;
    inclusive rates are contained in it (tax = amount - amount / (1 + rate))."""

    key: str
    display_name: str
    percentage: Decimal
    inclusive: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.percentage, float) or not ZERO <= self.percentage <= 100:
            raise BillingInputError(
                self.key,
                "percentage",
                self.percentage,
                "is not a Decimal in [0, 100]",
                remedy="give the rate in percent, e.g. Decimal('19') or Decimal('7.5').",
            )


@dataclass(frozen=True)
class Line:
    description: str
    kind: str
    quantity: Decimal
    amount: Decimal  # rounded, before discount
    discount: Decimal
    tax_rate: Decimal  # all rates of the line together, as a fraction (0.19 = 19 %)
    tax: Decimal  # exclusive tax, added to the line
    tax_inclusive: Decimal = ZERO  # inclusive tax, contained in the line's net

    @property
    def net(self) -> Decimal:
        return self.amount - self.discount


@dataclass(frozen=True)
class TaxAmount:
    """One tax rate's share of an invoice: its taxable amount and the tax."""

    key: str
    display_name: str
    percentage: Decimal
    inclusive: bool
    taxable_amount: Decimal
    amount: Decimal

    def to_json(self) -> dict[str, object]:
        return {
            "tax_rate_id": self.key,
            "display_name": self.display_name,
            "percentage": str(self.percentage),
            "inclusive": self.inclusive,
            "taxable_amount": str(self.taxable_amount),
            "amount": str(self.amount),
        }


@dataclass(frozen=True)
class InvoiceTotals:
    currency: str
    lines: tuple[Line, ...]
    subtotal: Decimal
    discount: Decimal
    tax: Decimal  # exclusive tax (added)
    total: Decimal
    credits_applied: Decimal
    amount_due: Decimal
    coupons: tuple[str, ...] = field(default=())
    coupon_amounts: tuple[Decimal, ...] = field(default=())
    tax_inclusive: Decimal = ZERO  # inclusive tax (contained in the lines)
    tax_breakdown: tuple[TaxAmount, ...] = field(default=())
    # a negative total (a downgrade's proration) is owed to the customer: nothing is due and it
    # goes to the customer's credit balance, as Stripe does
    credit_to_balance: Decimal = ZERO


def _allocate(amount: Decimal, weights: Sequence[Decimal], step: Decimal) -> list[Decimal]:
    """Split `amount` (a multiple of `step`) over `weights`, largest remainder first."""
    total = sum(weights, ZERO)
    if amount == 0 or total == 0:
        return [ZERO for _ in weights]
    units = int(amount / step)
    exact = [Decimal(units) * w / total for w in weights]
    shares = [int(e) for e in exact]
    left = units - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return [Decimal(s) * step for s in shares]


def invoice_totals(
    lines: Sequence[LineInput],
    currency: str,
    *,
    coupons: Sequence[Coupon] = (),
    tax_rates: Sequence[TaxRate] = (),
    credit_balance: Decimal = ZERO,
) -> InvoiceTotals:
    """Round lines, apply coupons (before tax), tax each line with every rate, apply credits.

    Coupons apply in order: a ``percent_off`` to what the earlier ones left, an ``amount_off``
    up to what is left. Each line's tax base is its net divided by (1 + the sum of the
    inclusive rates); every rate's tax is that base times the rate, rounded per line. Inclusive
    taxes are part of the net; exclusive taxes are added: ``total = subtotal - discount + tax``.
    """
    if not is_currency(currency):
        raise BillingInputError(
            "-", "currency", currency, "is not an ISO 4217 currency code", remedy="use e.g. USD."
        )
    if credit_balance < 0:
        raise BillingInputError(
            "-", "credit_balance", credit_balance, "is negative", remedy="credits are >= 0."
        )
    for coupon in coupons:
        if coupon.amount_off is not None and coupon.currency != currency:
            raise BillingInputError(
                coupon.code,
                "currency",
                coupon.currency,
                f"does not match the invoice currency {currency}",
                remedy="use a coupon in the invoice's currency or a percent_off coupon.",
            )
    step = quantum(currency)
    amounts = [round_money(line.amount, currency) for line in lines]
    subtotal = sum(amounts, ZERO)
    discountable = [
        a if line.discountable and a > 0 else ZERO for a, line in zip(amounts, lines, strict=True)
    ]
    base = sum(discountable, ZERO)
    discount = ZERO
    coupon_amounts = []
    for coupon in coupons:
        remaining = base - discount
        if coupon.percent_off is not None:
            off = round_money(remaining * coupon.percent_off / 100, currency)
        else:
            off = round_money(coupon.amount_off or ZERO, currency)
        off = min(off, remaining)
        coupon_amounts.append(off)
        discount += off
    shares = _allocate(discount, discountable, step)
    fractions = [rate.percentage / 100 for rate in tax_rates]
    combined = sum(fractions, ZERO)
    inclusive_sum = sum(
        (f for f, rate in zip(fractions, tax_rates, strict=True) if rate.inclusive), ZERO
    )
    taxable = [ZERO for _ in tax_rates]
    taxed = [ZERO for _ in tax_rates]
    built = []
    for line, amount, share in zip(lines, amounts, shares, strict=True):
        net = amount - share
        exclusive = inclusive = ZERO
        if net > 0 and tax_rates:
            tax_base = net / (1 + inclusive_sum)
            rounded_base = round_money(tax_base, currency)
            for i, (rate, fraction) in enumerate(zip(tax_rates, fractions, strict=True)):
                tax = round_money(tax_base * fraction, currency)
                taxable[i] += rounded_base
                taxed[i] += tax
                if rate.inclusive:
                    inclusive += tax
                else:
                    exclusive += tax
        built.append(
            Line(
                line.description,
                line.kind,
                line.quantity,
                amount,
                share,
                combined,
                exclusive,
                inclusive,
            )
        )
    tax_total = sum((line.tax for line in built), ZERO)
    inclusive_total = sum((line.tax_inclusive for line in built), ZERO)
    total = subtotal - discount + tax_total
    credits = min(credit_balance, max(total, ZERO))
    owed = max(-total, ZERO)
    return InvoiceTotals(
        currency=currency,
        lines=tuple(built),
        subtotal=subtotal,
        discount=discount,
        tax=tax_total,
        total=total,
        credits_applied=credits,
        amount_due=total - credits + owed,
        credit_to_balance=owed,
        coupons=tuple(c.code for c in coupons),
        coupon_amounts=tuple(coupon_amounts),
        tax_inclusive=inclusive_total,
        tax_breakdown=tuple(
            TaxAmount(r.key, r.display_name, r.percentage, r.inclusive, taxable[i], taxed[i])
            for i, r in enumerate(tax_rates)
        ),
    )


# -- serialisation (plans store their charges as JSON) -------------------------------------------
def charge_to_json(charge: Charge) -> dict[str, object]:
    """A JSON-safe dict of `charge`; amounts as strings so no precision is lost."""
    return {
        "model": charge.model,
        "unit_amount": str(charge.unit_amount),
        "tiers": [
            {
                "up_to": None if t.up_to is None else str(t.up_to),
                "unit_amount": str(t.unit_amount),
                "flat_amount": str(t.flat_amount),
            }
            for t in charge.tiers
        ],
        "package_size": str(charge.package_size),
        "package_amount": str(charge.package_amount),
        "rate": str(charge.rate),
        "fixed_amount": str(charge.fixed_amount),
        "flat_amount": str(charge.flat_amount),
        "usage": None if charge.usage is None else charge_to_json(charge.usage),
    }


def charge_from_json(data: dict[str, object]) -> Charge:
    """The inverse of `charge_to_json`."""
    tiers = data.get("tiers") or []
    usage = data.get("usage")
    return Charge(
        model=str(data["model"]),  # type: ignore[arg-type]
        unit_amount=Decimal(str(data.get("unit_amount", "0"))),
        tiers=tuple(
            Tier(
                None if t.get("up_to") is None else Decimal(str(t["up_to"])),
                Decimal(str(t.get("unit_amount", "0"))),
                Decimal(str(t.get("flat_amount", "0"))),
            )
            for t in tiers  # type: ignore[attr-defined]
        ),
        package_size=Decimal(str(data.get("package_size", "1"))),
        package_amount=Decimal(str(data.get("package_amount", "0"))),
        rate=Decimal(str(data.get("rate", "0"))),
        fixed_amount=Decimal(str(data.get("fixed_amount", "0"))),
        flat_amount=Decimal(str(data.get("flat_amount", "0"))),
        usage=None if usage is None else charge_from_json(usage),  # type: ignore[arg-type]
    )

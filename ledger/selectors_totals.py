"""Reads on money in total: what buyers paid, what agents earned, what is held, refunded and available.

Two bounded queries: balances per account kind (the cached `balance`, one row per account), and the
positive legs of the ledger per entry kind (one grouped pass over the entries). Amounts are Decimal,
quantized to the ledger's 4 places; the caller renders them as plain strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum

from ledger.models import Account, LedgerEntry

PLACES = Decimal("0.0001")


def _amount(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(PLACES)


def money_totals() -> dict[str, Decimal | int]:
    """Revenue (paid by buyers for completed tasks), payouts to agents, platform fees, held in escrow,
    refunds (holds released for failed tasks), buyer balances (available) and credits (money in)."""
    balances = {
        row["kind"]: row
        for row in Account.objects.values("kind")
        .annotate(total=Sum("balance"), accounts=Count("pk"))
        .order_by()
    }
    flows = {
        row["kind"]: _amount(row["total"])
        for row in LedgerEntry.objects.filter(amount__gt=0)
        .values("kind")
        .annotate(total=Sum("amount"))
        .order_by()
    }
    buyer_credits = LedgerEntry.objects.filter(
        Q(kind=LedgerEntry.Kind.CREDIT, amount__gt=0, account__kind=Account.Kind.BUYER)
    ).aggregate(total=Sum("amount"))["total"]
    payouts = flows.get(LedgerEntry.Kind.PAYOUT, _amount(0))
    fees = flows.get(LedgerEntry.Kind.FEE, _amount(0))
    return {
        "revenue": payouts + fees,
        "payouts": payouts,
        "platform_fees": fees,
        "held_in_escrow": _amount(balances.get(Account.Kind.ESCROW, {}).get("total")),
        "refunds": flows.get(LedgerEntry.Kind.RELEASE, _amount(0)),
        "buyer_balances": _amount(balances.get(Account.Kind.BUYER, {}).get("total")),
        "buyer_accounts": int(balances.get(Account.Kind.BUYER, {}).get("accounts") or 0),
        "credits": _amount(buyer_credits),
    }

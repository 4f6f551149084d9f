"""Money entering the system: operators credit buyers (service, command line, admin); ledger rows stay
read-only."""

from __future__ import annotations

from decimal import Decimal
from unittest import mock

import pytest
from django.core.management import CommandError, call_command

from core.exceptions import DomainError, NotFound
from ledger.admin import AccountAdmin
from ledger.models import Account, LedgerEntry
from ledger.selectors import balance_for
from ledger.services import buyer_credit
from users.models import User

pytestmark = pytest.mark.django_db


def _balance(user) -> Decimal:
    return balance_for(user_id=user.pk, kind=Account.Kind.BUYER)


@pytest.mark.parametrize(
    "amount", [Decimal("0"), Decimal("-1"), Decimal("0.00001"), Decimal("NaN"), Decimal("Infinity"), 5]
)
def test_it_refuses_a_credit_that_is_not_a_positive_four_place_decimal(buyer, amount):
    with pytest.raises(DomainError) as raised:
        buyer_credit(user_id=buyer.pk, amount=amount)
    assert raised.value.code == "invalid_amount"
    assert _balance(buyer) == Decimal("100.0000")


def test_it_refuses_a_credit_to_an_unknown_user(db):
    with pytest.raises(NotFound):
        buyer_credit(user_id=987654, amount=Decimal("1"))


def test_it_credits_a_buyer_from_the_command_line(buyer, capsys):
    call_command("credit", buyer.username, "25.50", "--memo", "welcome back")
    assert _balance(buyer) == Decimal("125.5000")
    entry = LedgerEntry.objects.filter(account__user=buyer, kind="credit").latest("id")
    assert entry.amount == Decimal("25.5000") and "welcome back" in entry.memo
    assert "125.5000" in capsys.readouterr().out
    funding = Account.objects.get(kind=Account.Kind.FUNDING)
    assert funding.balance == -(Decimal("125.5000"))


@pytest.mark.parametrize(
    ("username", "amount", "message"),
    [
        ("nobody", "10", "No user named 'nobody'"),
        ("buyer-one", "ten", "not a decimal amount"),
        ("buyer-one", "", "not a decimal amount"),
        ("buyer-one", "0", "positive"),
        ("buyer-one", "-5", "positive"),
        ("buyer-one", "1.23456", "4 decimal places"),
        ("buyer-one", "NaN", "not a decimal amount"),
        ("buyer-one", "1e12", "more than"),
    ],
)
def test_it_explains_a_bad_credit_command(buyer, username, amount, message):
    with pytest.raises(CommandError, match=message):
        call_command("credit", username, amount)
    assert _balance(buyer) == Decimal("100.0000")


@pytest.mark.parametrize(
    ("typed", "shown"), [("1E+2", "Credited 100.0000 to"), ("0.00000000", "got 0.00000000")]
)
def test_it_answers_the_credit_command_in_plain_decimals(buyer, capsys, typed, shown):
    try:
        call_command("credit", buyer.username, typed)
    except CommandError as exc:
        said = str(exc)
    else:
        said = capsys.readouterr().out
    assert shown in said and "E+" not in said and "E-" not in said


def test_it_credits_selected_buyers_from_the_admin_through_a_form(superuser_client, buyer, other_buyer):
    assert superuser_client.get("/admin/tasks/account/").status_code == 200
    accounts = Account.objects.filter(kind=Account.Kind.BUYER, user__in=[buyer, other_buyer])
    selection = {"action": "credit_buyers", "_selected_action": [str(a.pk) for a in accounts]}
    form_page = superuser_client.post("/admin/tasks/account/", {**selection, "index": "0"})
    assert form_page.status_code == 200 and b"Credit each selected buyer" in form_page.content

    bad = superuser_client.post("/admin/tasks/account/", {**selection, "apply": "1", "amount": "-3"})
    assert bad.status_code == 200 and _balance(buyer) == Decimal("100.0000")

    done = superuser_client.post(
        "/admin/tasks/account/", {**selection, "apply": "1", "amount": "7.25", "memo": "goodwill"}
    )
    assert done.status_code == 302
    assert _balance(buyer) == _balance(other_buyer) == Decimal("107.2500")
    entry = LedgerEntry.objects.filter(account__user=buyer, kind="credit").latest("id")
    assert "goodwill" in entry.memo and "root" in entry.memo


def test_it_keeps_ledger_rows_read_only_in_the_admin(superuser_client, buyer):
    entry = LedgerEntry.objects.filter(account__user=buyer).first()
    assert superuser_client.get("/admin/tasks/ledgerentry/").status_code == 200
    assert superuser_client.get("/admin/tasks/ledgerentry/add/").status_code == 403
    assert superuser_client.post(f"/admin/tasks/ledgerentry/{entry.pk}/delete/").status_code == 403
    superuser_client.post(f"/admin/tasks/ledgerentry/{entry.pk}/change/", {"amount": "1000"})
    entry_after = LedgerEntry.objects.get(pk=entry.pk)
    assert entry_after.amount == entry.amount
    account = Account.objects.get(kind=Account.Kind.BUYER, user=buyer)
    superuser_client.post(f"/admin/tasks/account/{account.pk}/change/", {"balance": "1000"})
    assert _balance(buyer) == Decimal("100.0000")


def test_it_does_not_offer_the_credit_action_to_non_staff(buyer, client):

    request = mock.Mock(user=buyer)
    assert not AccountAdmin(Account, mock.Mock()).has_credit_permission(request)


@pytest.fixture
def superuser_client(db, client):
    admin = User.objects.create_superuser(username="root", password="root-pass-123", email="r@x.io")
    client.force_login(admin)
    return client

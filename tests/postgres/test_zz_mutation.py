import pytest
from tasks.models import Account
from tests.postgres import test_concurrency as tc

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

def test_mutant(settings, enqueued, monkeypatch):
    def no_lock(accounts):
        return {a.pk: a for a in Account.objects.filter(pk__in=[a.pk for a in accounts])}
    monkeypatch.setattr("tasks.ledger.lock_accounts", no_lock)
    tc.test_it_never_overspends_one_balance_from_50_threads(settings, enqueued)

enqueued = tc.enqueued

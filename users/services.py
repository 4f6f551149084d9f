"""Writes on users."""

from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction

from agents.pricing import quantize_money
from core.exceptions import Conflict, DomainError
from ledger.services import buyer_accounts_open, buyer_credit
from users.models import User, new_webhook_secret


@transaction.atomic
def user_register(*, username: str, password: str) -> User:
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict("That username is taken.", code="username_taken", fields={"username": ["taken"]})
    candidate = User(username=username)
    try:
        password_validation.validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        raise DomainError(
            "The password is too weak.", code="invalid", fields={"password": list(exc.messages)}
        ) from exc
    return User.objects.create_user(username=username, password=password)


@transaction.atomic
def buyer_register(*, username: str, password: str) -> User:
    user = user_register(username=username, password=password)
    buyer_accounts_open(user_id=user.pk)
    if settings.AICP_SIGNUP_CREDIT:
        buyer_credit(
            user_id=user.pk, amount=quantize_money(settings.AICP_SIGNUP_CREDIT), memo="signup credit"
        )
    return user


@transaction.atomic
def user_rotate_webhook_secret(*, user_id: int) -> str:
    """A new webhook signing secret for the user; deliveries sent from now on are signed with it.

    Saved (not updated in bulk) so this process forgets the user rows it reuses (users.authentication);
    another process shows the new secret in GET /auth/me within AICP_RECENT_ROWS_S.
    """
    user = User.objects.select_for_update().get(pk=user_id)
    user.webhook_secret = new_webhook_secret()
    user.save(update_fields=["webhook_secret"])
    return user.webhook_secret

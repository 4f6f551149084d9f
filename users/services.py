"""Writes on users."""

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction

from core.exceptions import Conflict, DomainError
from users.models import User


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

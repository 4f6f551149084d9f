"""Refresh-token rotation that cannot fork: of concurrent refreshes of one token, exactly one wins.

simplejwt checks the blacklist, then blacklists the old token with get_or_create, then mints the new
pair: two requests that both pass the check both "blacklist" it (the second finds the first's row) and
both get a valid new pair (10 concurrent refreshes returned 5). Here the check and the blacklisting are
one INSERT into BlacklistedToken, whose one-to-one key on the outstanding token lets exactly one
transaction create it; every other one fails on that constraint and answers 401 token_not_valid.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import serializers
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from core.serializers import RejectUnknownKeysMixin


class TokenObtainPairSerializer(RejectUnknownKeysMixin, serializers.TokenObtainPairSerializer):
    """simplejwt's pair serializer; a key it does not know is a 400, as on every write."""


class TokenRefreshSerializer(RejectUnknownKeysMixin, serializers.TokenRefreshSerializer):
    """simplejwt's refresh serializer (same fields, same answers), rotating in one transaction."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        if not (api_settings.ROTATE_REFRESH_TOKENS and api_settings.BLACKLIST_AFTER_ROTATION):
            return super().validate(attrs)
        try:
            with transaction.atomic():
                return self._rotate(attrs["refresh"])
        except IntegrityError as exc:
            raise TokenError(_("Token is blacklisted")) from exc

    def _rotate(self, raw_token: str) -> dict[str, str]:
        refresh = RefreshToken(raw_token)  # signature, expiry, type and blacklist checked
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed(self.error_messages["no_active_account"], "no_active_account")
        outstanding, _created = OutstandingToken.objects.get_or_create(
            jti=refresh.payload[api_settings.JTI_CLAIM],
            defaults={
                "user": user,
                "created_at": refresh.current_time,
                "token": raw_token,
                "expires_at": datetime_from_epoch(refresh.payload["exp"]),
            },
        )
        # The one statement that decides the race: a second INSERT for this token violates the key.
        BlacklistedToken.objects.create(token=outstanding)
        data = {"access": str(refresh.access_token)}
        refresh.set_jti()
        refresh.set_exp()
        refresh.set_iat()
        refresh.outstand()
        data["refresh"] = str(refresh)
        return data

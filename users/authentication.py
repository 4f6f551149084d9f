"""JWT authentication that reuses the user row it read a moment ago (core/perf/recent.py)."""

from __future__ import annotations

from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import aware_utcnow

from core.perf.recent import RecentRows
from users.models import User

recent_users: RecentRows[User] = RecentRows()
# Decoding a token (HMAC, JSON, claims) cost as much as reading the user; a token seen a moment ago by
# this process is reused, with its expiry checked again on every request.
recent_tokens: RecentRows[Token] = RecentRows()


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's, with a token decoded and its user read and checked at most once per AICP_RECENT_ROWS_S.

    simplejwt reads the row and checks it (it exists, is active, its password is unchanged when
    CHECK_REVOKE_TOKEN is on); a row that passed is reused until it expires or a save or delete of any
    user in this process drops them all. So a user deactivated elsewhere is refused within that time.
    """

    def get_validated_token(self, raw_token: bytes) -> Token:
        token = recent_tokens.get(
            raw_token, lambda: super(JWTAuthentication, self).get_validated_token(raw_token)
        )
        try:
            token.check_exp(current_time=aware_utcnow())  # not the token's own clock: when it was decoded
        except TokenError:
            recent_tokens.forget(raw_token)
            return super().get_validated_token(raw_token)  # simplejwt's own error for an expired token
        return token

    def get_user(self, validated_token: Token) -> User:
        # The revocation claim is part of the key: a row checked for one password is not reused for
        # a token carrying another.
        key = (
            validated_token.get(api_settings.USER_ID_CLAIM),
            validated_token.get(api_settings.REVOKE_TOKEN_CLAIM),
        )
        if key[0] is None:
            return super().get_user(validated_token)  # simplejwt's "no recognizable user" error
        return recent_users.get(key, lambda: super(JWTAuthentication, self).get_user(validated_token))

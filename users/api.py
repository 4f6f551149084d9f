"""Auth endpoints: register a buyer, JWT pair, refresh with rotation, logout by blacklisting the refresh
token, and who am I (role, balance, held)."""

from django.contrib.auth import password_validation
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from core.exceptions import DomainError
from core.serializers import RejectUnknownKeysMixin, StrictJSONTypesMixin
from ledger.models import Account
from ledger.selectors import balance_for
from users.services import buyer_register, user_rotate_webhook_secret
from users.throttles import AtomicRateThrottle
from users.tokens import TokenObtainPairSerializer, TokenRefreshSerializer


def _minimum_password_length() -> int:
    validators = password_validation.get_default_password_validators()
    return max((getattr(validator, "min_length", 0) for validator in validators), default=1)


# Not entirely digits (NumericPasswordValidator), and no NUL (DRF's CharField).
_PASSWORD_PATTERN = r"^[^\x00]*[^\d\x00][^\x00]*$"


@extend_schema_field(
    {
        "type": "string",
        "writeOnly": True,
        "pattern": _PASSWORD_PATTERN,
        "description": "At least the minimum length, not entirely digits, not a common password, "
        "not too similar to the username.",
    }
)
class NewPasswordField(serializers.CharField):
    """A password being chosen. Never trimmed: the token endpoint does not trim it either, so a password
    with leading or trailing spaces must be stored as typed or its owner could never log in."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("min_length", _minimum_password_length())
        kwargs.setdefault("max_length", 128)
        kwargs.setdefault("write_only", True)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)


class TokenThrottle(AtomicRateThrottle):
    scope = "token"


class RegisterThrottle(AtomicRateThrottle):
    scope = "register"


class ThrottledTokenObtainPairView(TokenObtainPairView):
    serializer_class = TokenObtainPairSerializer
    throttle_classes = [TokenThrottle]


class ThrottledTokenRefreshView(TokenRefreshView):
    serializer_class = TokenRefreshSerializer  # rotation in one transaction: a token cannot fork
    throttle_classes = [TokenThrottle]


class LogoutApi(APIView):
    permission_classes = [IsAuthenticated]

    class InputSerializer(RejectUnknownKeysMixin, StrictJSONTypesMixin, serializers.Serializer):
        refresh = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            token = RefreshToken(serializer.validated_data["refresh"])
            if str(token.get("user_id")) != str(request.user.pk):
                raise DomainError("That refresh token belongs to someone else.", code="token_not_yours")
            token.blacklist()
        except TokenError as exc:
            # 401 like /auth/token/refresh answers the same token: one status for "that token is no good".
            raise InvalidToken(str(exc)) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    class OutputSerializer(serializers.Serializer):
        username = serializers.CharField()
        role = serializers.CharField()
        balance = serializers.DecimalField(max_digits=19, decimal_places=4, help_text="Available to spend.")
        held = serializers.DecimalField(
            max_digits=19, decimal_places=4, help_text="Held in escrow for unfinished tasks."
        )
        webhook_secret = serializers.CharField(
            help_text="Key of the HMAC-SHA256 in your webhooks' AICP-Signature header; POST "
            "/auth/webhook-secret rotates it."
        )

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        user = request.user
        return Response(
            self.OutputSerializer(
                {
                    "username": user.username,
                    "role": user.role,
                    "balance": balance_for(user_id=user.pk, kind=Account.Kind.BUYER),
                    "held": balance_for(user_id=user.pk, kind=Account.Kind.ESCROW),
                    "webhook_secret": user.webhook_secret,
                }
            ).data
        )


class WebhookSecretApi(APIView):
    """Rotates the caller's webhook signing secret; the answer carries the new one."""

    class InputSerializer(RejectUnknownKeysMixin, StrictJSONTypesMixin, serializers.Serializer):
        pass  # no fields: an empty body or {}; anything else is a 400 like on every other write

    class OutputSerializer(serializers.Serializer):
        webhook_secret = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def post(self, request: Request) -> Response:
        if int(request.META.get("CONTENT_LENGTH") or 0) > 0:
            if not (request.content_type or "").startswith("application/json"):
                raise UnsupportedMediaType(request.content_type or "(none)")
            data = request.data
        else:
            data = {}
        self.InputSerializer(data=data).is_valid(raise_exception=True)
        secret = user_rotate_webhook_secret(user_id=request.user.pk)
        return Response(self.OutputSerializer({"webhook_secret": secret}).data)


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [RegisterThrottle]

    class InputSerializer(RejectUnknownKeysMixin, StrictJSONTypesMixin, serializers.Serializer):
        username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
        password = NewPasswordField()

    class OutputSerializer(serializers.Serializer):
        username = serializers.CharField()
        role = serializers.CharField()
        balance = serializers.DecimalField(max_digits=19, decimal_places=4)

    @extend_schema(
        request=InputSerializer,
        responses={201: OutputSerializer, 409: OpenApiResponse(description="That username is taken.")},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = buyer_register(**serializer.validated_data)
        body = {
            "username": user.username,
            "role": user.role,
            "balance": balance_for(user_id=user.pk, kind=Account.Kind.BUYER),
        }
        return Response(self.OutputSerializer(body).data, status=status.HTTP_201_CREATED)

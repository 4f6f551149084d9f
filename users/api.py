"""Auth endpoints: JWT pair, refresh with rotation, logout by blacklisting the refresh token."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from aicp.exceptions import DomainError


class TokenThrottle(AnonRateThrottle):
    scope = "token"


class RegisterThrottle(AnonRateThrottle):
    scope = "register"


class ThrottledTokenObtainPairView(TokenObtainPairView):
    throttle_classes = [TokenThrottle]


class ThrottledTokenRefreshView(TokenRefreshView):
    throttle_classes = [TokenThrottle]


class LogoutApi(APIView):
    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
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
            raise DomainError(str(exc), code="token_not_valid") from exc
        return Response(status=status.HTTP_204_NO_CONTENT)

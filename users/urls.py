from django.urls import re_path

from users.api import (
    LogoutApi,
    MeApi,
    RegisterApi,
    ThrottledTokenObtainPairView,
    ThrottledTokenRefreshView,
    WebhookSecretApi,
)

urlpatterns = [
    re_path(r"^auth/register/?$", RegisterApi.as_view(), name="register"),
    re_path(r"^auth/me/?$", MeApi.as_view(), name="me"),
    re_path(r"^auth/token/?$", ThrottledTokenObtainPairView.as_view(), name="token-obtain"),
    re_path(r"^auth/token/refresh/?$", ThrottledTokenRefreshView.as_view(), name="token-refresh"),
    re_path(r"^auth/logout/?$", LogoutApi.as_view(), name="logout"),
    re_path(r"^auth/webhook-secret/?$", WebhookSecretApi.as_view(), name="webhook-secret"),
]

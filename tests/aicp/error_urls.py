"""The project's routes plus two that fail, for the JSON 500 tests."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from aicp.urls import handler404  # noqa: F401 — handler404 is used
from aicp.urls import urlpatterns as project_urlpatterns

LEAKED = "internal detail: postgres://admin:hunter2@10.0.0.5"


class FailingApi(APIView):
    permission_classes = [AllowAny]

    def get(self, request: Request) -> HttpResponse:
        raise RuntimeError(LEAKED)


def failing_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(LEAKED)


urlpatterns = [
    path("failing/api", FailingApi.as_view()),
    path("failing/plain", failing_view),
    path("dashboard/failing", failing_view),
    *project_urlpatterns,
]

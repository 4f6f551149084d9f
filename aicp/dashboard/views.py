"""The dashboard page and its JSON poll, both for operators only."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from aicp.dashboard.snapshot import dashboard_snapshot
from tasks.selectors_timeline import DEFAULT_WINDOW, WINDOWS

View = Callable[[HttpRequest], HttpResponse]


def _is_operator(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def operator_page(view: View) -> View:
    """Anyone but an operator goes to the admin login, which also explains a buyer's lack of access."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if not _is_operator(request):
            return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
        return view(request)

    return wrapper


def operator_json(view: View) -> View:
    """A poll gets a JSON error it can show (a redirect would hand fetch() the login page's HTML)."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse(
                {"error": {"code": "not_authenticated", "message": "Log in as an operator."}}, status=401
            )
        if not _is_operator(request):
            return JsonResponse(
                {"error": {"code": "permission_denied", "message": "Operators only."}}, status=403
            )
        return view(request)

    return wrapper


@require_GET
@never_cache
@operator_page
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard.html", {"snapshot": dashboard_snapshot(_window(request))})


@require_GET
@never_cache
@operator_json
def dashboard_data(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dashboard_snapshot(_window(request)))


def _window(request: HttpRequest) -> str:
    """`?window=hour|day|week`; anything else falls back to the default window."""
    value = request.GET.get("window", "")
    return value if value in WINDOWS else DEFAULT_WINDOW

"""The front page: where a newcomer finds the dashboard, the API docs, the admin and the health check."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def landing(request: HttpRequest) -> HttpResponse:
    # Public on purpose: it only links pages that ask for their own credentials.
    return render(request, "landing.html")

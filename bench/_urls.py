"""Benchmark-only URLs: the production URLconf plus one bare view that inserts a row (see bench/_site.py).

The view is what a Django write costs on this machine with nothing of ours in it: the same middleware,
no DRF, no authentication, one INSERT (a session row, an existing table).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from django.contrib.sessions.models import Session
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def bare_insert(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    row = Session.objects.create(
        session_key=uuid.uuid4().hex,
        session_data=json.dumps(body),
        expire_date=timezone.now() + timedelta(hours=1),
    )
    return JsonResponse({"id": row.session_key}, status=201)


urlpatterns = [
    path("bench/insert", bare_insert),
    path("", include("aicp.urls")),
]

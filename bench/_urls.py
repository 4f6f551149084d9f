"""Benchmark-only URLs: the production URLconf plus two reference views that insert a row (bench/_site.py).

``POST /bench/insert`` is what a Django write costs on this machine with nothing of ours in it: the
same middleware, no DRF, no authentication, one INSERT (a session row, an existing table).

``POST /bench/drf-insert`` is the least any endpoint of this stack does: a DRF view with the API's
authentication (JWT), parser, negotiation and renderer, a serializer validating the body POST /tasks
takes, and the same one INSERT. What POST /tasks does beyond it (quote, limits, escrow, ledger, the
task's row and its full representation) is the business's; what it costs beyond the bare view is the
framework's.
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
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tasks.api import MAX_COMPLEXITY, MAX_DESCRIPTION, MIN_COMPLEXITY


@csrf_exempt
def bare_insert(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    row = Session.objects.create(
        session_key=uuid.uuid4().hex,
        session_data=json.dumps(body),
        expire_date=timezone.now() + timedelta(hours=1),
    )
    return JsonResponse({"id": row.session_key}, status=201)


class DrfInsert(APIView):
    class InputSerializer(serializers.Serializer):
        description = serializers.CharField(max_length=MAX_DESCRIPTION)
        complexity = serializers.IntegerField(min_value=MIN_COMPLEXITY, max_value=MAX_COMPLEXITY)

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = Session.objects.create(
            session_key=uuid.uuid4().hex,
            session_data=json.dumps(serializer.validated_data),
            expire_date=timezone.now() + timedelta(hours=1),
        )
        return Response({"id": row.session_key}, status=201)


urlpatterns = [
    path("bench/insert", bare_insert),
    path("bench/drf-insert", DrfInsert.as_view()),
    path("", include("aicp.urls")),
]

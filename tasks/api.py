"""Task and account endpoints. Views validate and delegate; nothing here decides business rules."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from tasks.models import Account, Task
from tasks.selectors import balance_for, task_get_visible, task_list_visible
from tasks.services import TaskRequest, buyer_register, task_submit
from users.api import RegisterThrottle

MAX_DESCRIPTION = 8000
MAX_LABELS = 100
MAX_LABEL_LENGTH = 200


class SubmitThrottle(UserRateThrottle):
    scope = "submit"


class TaskOutputSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.name")
    executed_by = serializers.CharField(source="executed_by.name", allow_null=True, default=None)
    buyer = serializers.CharField(source="buyer.username")

    class Meta:
        model = Task
        fields = [
            "id",
            "buyer",
            "description",
            "complexity",
            "task_type",
            "labels",
            "requested_agent",
            "agent",
            "executed_by",
            "status",
            "result",
            "confidence",
            "price",
            "cost",
            "attempts",
            "error",
            "error_code",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "accepted",
            "correct_label",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class TaskSubmitInputSerializer(serializers.Serializer):
    description = serializers.CharField(max_length=MAX_DESCRIPTION, trim_whitespace=True)
    complexity = serializers.IntegerField(min_value=1, max_value=10)
    task_type = serializers.SlugField(max_length=64, required=False, allow_blank=True, default="")
    labels = serializers.ListField(
        child=serializers.CharField(max_length=MAX_LABEL_LENGTH, trim_whitespace=True),
        min_length=2,
        max_length=MAX_LABELS,
        required=False,
        allow_null=True,
        default=None,
    )
    agent = serializers.CharField(max_length=64, required=False, default="auto")

    def validate_complexity(self, value: int) -> int:
        # A JSON true/1.0/"3" would pass IntegerField's coercion; the contract says an integer.
        raw = self.initial_data.get("complexity")
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise serializers.ValidationError("Must be an integer from 1 to 10.")
        return value

    def validate_labels(self, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(set(value)) != len(value):
            raise serializers.ValidationError("Labels must be distinct.")
        return value

    def to_internal_value(self, data: object) -> dict:
        if isinstance(data, dict):
            server_computed = (set(data) & set(TaskOutputSerializer.Meta.fields)) - set(self.fields)
            if server_computed:
                # Price, status, result, buyer, executed_by … are the server's: say so rather than ignore it.
                raise serializers.ValidationError(
                    {
                        name: ["This field is computed by the server and cannot be set."]
                        for name in sorted(server_computed)
                    }
                )
        return super().to_internal_value(data)


class TaskListApi(APIView):
    def get_throttles(self) -> list:
        return [SubmitThrottle()] if self.request.method == "POST" else []

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=[choice for choice, _ in Task.Status.choices])],
        responses=TaskOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        status_filter = request.query_params.get("status")
        if status_filter and status_filter not in Task.Status.values:
            raise serializers.ValidationError(
                {"status": [f"Must be one of {', '.join(Task.Status.values)}."]}
            )
        tasks = task_list_visible(user=request.user, status=status_filter)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(tasks, request, view=self)
        return paginator.get_paginated_response(TaskOutputSerializer(page, many=True).data)

    @extend_schema(request=TaskSubmitInputSerializer, responses={201: TaskOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = TaskSubmitInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        task = task_submit(
            buyer=request.user,
            request=TaskRequest(
                description=data["description"],
                complexity=data["complexity"],
                task_type=data["task_type"],
                labels=tuple(data["labels"]) if data["labels"] else None,
                agent=data["agent"],
            ),
        )
        return Response(TaskOutputSerializer(task).data, status=status.HTTP_201_CREATED)


class TaskDetailApi(APIView):
    @extend_schema(responses=TaskOutputSerializer)
    def get(self, request: Request, task_id: str) -> Response:
        return Response(TaskOutputSerializer(task_get_visible(user=request.user, task_id=task_id)).data)


class MeApi(APIView):
    class OutputSerializer(serializers.Serializer):
        username = serializers.CharField()
        role = serializers.CharField()
        balance = serializers.DecimalField(max_digits=19, decimal_places=4)
        held = serializers.DecimalField(max_digits=19, decimal_places=4)

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
                }
            ).data
        )


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [RegisterThrottle]

    class InputSerializer(serializers.Serializer):
        username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
        password = serializers.CharField(max_length=128, write_only=True)

    class OutputSerializer(serializers.Serializer):
        username = serializers.CharField()
        role = serializers.CharField()
        balance = serializers.DecimalField(max_digits=19, decimal_places=4)

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
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

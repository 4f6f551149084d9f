"""Duke's model registry over HTTP: status for everyone signed in, training and promotion for operators."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from duke.models import ModelVersion
from duke.selectors import model_status, model_version_list, routing_status
from duke.services import model_promote, model_request_training


class VersionSummarySerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="number")
    validation_accuracy = serializers.FloatField(source="accuracy", allow_null=True)

    class Meta:
        model = ModelVersion
        fields = [
            "version",
            "status",
            "validation_accuracy",
            "macro_f1",
            "train_samples",
            "validation_samples",
            "created_at",
        ]
        read_only_fields = fields


class VersionDetailSerializer(VersionSummarySerializer):
    class Meta(VersionSummarySerializer.Meta):
        fields = [
            *VersionSummarySerializer.Meta.fields,
            "per_task_type",
            "thresholds",
            "promotion",
            "epoch",
            "epochs",
            "training_seconds",
            "artifact_path",
            "artifact_sha256",
            "error",
            "finished_at",
            "promoted_at",
        ]
        read_only_fields = fields


class TrainingProgressSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    epoch = serializers.IntegerField()
    epochs = serializers.IntegerField()


class ModelStatusSerializer(serializers.Serializer):
    production_version = serializers.IntegerField(allow_null=True)
    production_accuracy = serializers.FloatField(allow_null=True)
    production_macro_f1 = serializers.FloatField(allow_null=True)
    training_samples = serializers.IntegerField(help_text="Labeling samples collected (both splits).")
    samples_until_next_training = serializers.IntegerField()
    training_in_progress = TrainingProgressSerializer(allow_null=True)
    versions = VersionSummarySerializer(many=True, help_text="The 50 newest versions, newest first.")
    routing = serializers.DictField(help_text="Per task type: threshold, coverage, live agreement, savings.")


class ModelStatusApi(APIView):
    @extend_schema(responses=ModelStatusSerializer)
    def get(self, request: Request) -> Response:
        return Response(ModelStatusSerializer({**model_status(), "routing": routing_status()}).data)


class ModelTrainApi(APIView):
    """Operators: train now. 202 when queued; 409 while a training runs or below the minimums."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        request=None,
        responses={
            202: inline_serializer(
                "TrainingQueued",
                {
                    "status": serializers.CharField(),
                    "reason": serializers.CharField(),
                    "train_samples": serializers.IntegerField(),
                    "validation_samples": serializers.IntegerField(),
                },
            ),
            409: OpenApiResponse(
                description="`training_in_progress` (a version is training; retry when it has finished), "
                "`no_training_data` (no labeling sample collected yet) or `not_enough_samples` (below "
                "DUKE_MIN_SAMPLES, or fewer than 2 labels with 2 samples each; the message says which)."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        queued = model_request_training()
        return Response({"status": "queued", **queued.as_json()}, status=status.HTTP_202_ACCEPTED)


class ModelVersionListApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=VersionDetailSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(model_version_list().order_by("-number"), request, view=self)
        return paginator.get_paginated_response(VersionDetailSerializer(page, many=True).data)


class ModelVersionPromoteApi(APIView):
    """Operators: make a trained version production (a promotion or a rollback; nothing is retrained)."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        request=None,
        responses={
            200: VersionDetailSerializer,
            404: OpenApiResponse(description="`version_not_found`"),
            409: OpenApiResponse(
                description="`version_not_promotable` (failed or still training) or `artifact_invalid` "
                "(the artifact is missing or fails its checksum: it is never served)"
            ),
        },
    )
    def post(self, request: Request, number: str) -> Response:
        version = model_promote(number=int(number), by=request.user.get_username())
        return Response(VersionDetailSerializer(version).data)

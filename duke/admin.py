from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from core.exceptions import DomainError
from duke.models import ModelVersion, RoutingState, ServedTask, TrainingData, TrainingTrigger
from duke.services import model_promote, model_request_training


@admin.register(TrainingData)
class TrainingDataAdmin(admin.ModelAdmin):
    list_display = ("created_at", "task_type", "split", "source", "output", "correct_label", "has_embedding")
    list_filter = ("split", "source", "task_type")
    search_fields = ("input_text", "output", "task_id")
    readonly_fields = (
        "task_id",
        "input_text",
        "task_type",
        "complexity",
        "labels",
        "output",
        "split",
        "created_at",
    )

    @admin.display(boolean=True, description="embedding")
    def has_embedding(self, sample: TrainingData) -> bool:
        return sample.embedding is not None


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Read-only registry; operators promote or roll back with the action and train with the button."""

    list_display = (
        "number",
        "status",
        "accuracy",
        "macro_f1",
        "train_samples",
        "validation_samples",
        "progress",
        "training_seconds",
        "created_at",
    )
    list_filter = ("status",)
    readonly_fields = [field.name for field in ModelVersion._meta.fields]
    actions = ["promote_version"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        # A version's artifact and its place in the history must outlive any cleanup urge.
        return False

    @admin.display(description="epochs")
    def progress(self, version: ModelVersion) -> str:
        return f"{version.epoch} / {version.epochs}" if version.epochs else "—"

    def get_urls(self) -> list[URLPattern]:
        train = path(
            "train/",
            self.admin_site.admin_view(require_POST(self.train_view)),
            name="duke_modelversion_train",
        )
        return [train, *super().get_urls()]

    def train_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_staff:
            self.message_user(request, "Only operators can start a training.", messages.ERROR)
        else:
            try:
                queued = model_request_training()
            except DomainError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                self.message_user(
                    request,
                    f"Training queued on {queued.train_samples} samples "
                    f"({queued.validation_samples} more for validation).",
                    messages.SUCCESS,
                )
        return HttpResponseRedirect(reverse("admin:duke_modelversion_changelist"))

    @admin.action(description="Promote (or roll back to) the selected version")
    def promote_version(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        selected = list(queryset[:2])
        if len(selected) != 1:
            self.message_user(request, "Select exactly one version to promote.", messages.ERROR)
            return
        try:
            version = model_promote(number=selected[0].number, by=request.user.get_username())
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"Duke v{version.number} is now production.", messages.SUCCESS)


@admin.register(TrainingTrigger)
class TrainingTriggerAdmin(admin.ModelAdmin):
    list_display = ("sample_ordinal", "reason", "version", "created_at")


@admin.register(ServedTask)
class ServedTaskAdmin(admin.ModelAdmin):
    """Tasks Duke answered: what the LLM would have cost, and the live audit. Read-only: they are facts."""

    list_display = (
        "created_at",
        "task_type",
        "model_version",
        "label",
        "confidence",
        "price",
        "llm_price",
        "audit",
        "audit_label",
        "verdict",
    )
    list_filter = ("task_type", "model_version", "audit", "verdict")
    search_fields = ("task_id",)
    readonly_fields = [field.name for field in ServedTask._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(RoutingState)
class RoutingStateAdmin(admin.ModelAdmin):
    """Suspensions by live agreement; a new production version starts without any."""

    list_display = ("model_version", "task_type", "suspended", "suspended_at", "reason")
    list_filter = ("suspended",)
    readonly_fields = [field.name for field in RoutingState._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from core.admin import (
    admin_link,
    cost_text,
    displayed_fields,
    json_block,
    money_text,
    percent_text,
    seconds_text,
)
from core.exceptions import DomainError
from duke.models import ModelVersion, RoutingState, ServedTask, TrainingData, TrainingTrigger
from duke.services import model_promote, model_request_training


@admin.register(TrainingData)
class TrainingDataAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "task_type",
        "split",
        "source",
        "output",
        "correct_label",
        "has_embedding",
        "task_link",
    )
    list_filter = ("split", "source", "task_type")
    search_fields = ("input_text", "output", "task_id")
    readonly_fields = (
        "task_link",
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

    @admin.display(description="task")
    def task_link(self, sample: TrainingData) -> str:
        return _task_link(sample.task_id)


def _task_link(task_id: object) -> str:
    # By URL name: duke never imports tasks.
    return admin_link(reverse("admin:tasks_task_change", args=[task_id]), str(task_id)[:8])


def _version_link(number: int) -> str:
    version = ModelVersion.objects.filter(number=number).values_list("pk", flat=True).first()
    if version is None:
        return f"v{number}"
    return admin_link(reverse("admin:duke_modelversion_change", args=[version]), f"v{number}")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Read-only registry; operators promote or roll back with the action and train with the button."""

    list_display = (
        "number",
        "status",
        "accuracy_display",
        "macro_f1_display",
        "train_samples",
        "validation_samples",
        "progress",
        "seconds_display",
        "served_link",
        "created_at",
    )
    list_filter = ("status",)
    ordering = ("-number",)
    # Floats for people (93.1%, 2.3 s), not 0.9312345678901234: each shown through its display method.
    fields = displayed_fields(
        ModelVersion,
        {
            "accuracy": "accuracy_display",
            "macro_f1": "macro_f1_display",
            "training_seconds": "seconds_display",
            "per_task_type": "per_task_type_display",
            "thresholds": "thresholds_display",
            "promotion": "promotion_display",
        },
    )
    fields.insert(fields.index("status") + 1, "served_link")
    readonly_fields = [*fields]
    actions = ["promote_version"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="version", ordering="model_version")
    def version(self, state: RoutingState) -> str:
        return _version_link(state.model_version)

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        # A version's artifact and its place in the history must outlive any cleanup urge.
        return False

    @admin.display(description="epochs")
    def progress(self, version: ModelVersion) -> str:
        return f"{version.epoch} / {version.epochs}" if version.epochs else "—"

    @admin.display(description="accuracy", ordering="accuracy")
    def accuracy_display(self, version: ModelVersion) -> str:
        return percent_text(version.accuracy)

    @admin.display(description="macro-F1", ordering="macro_f1")
    def macro_f1_display(self, version: ModelVersion) -> str:
        return percent_text(version.macro_f1)

    @admin.display(description="per task type")
    def per_task_type_display(self, version: ModelVersion) -> str:
        return json_block(version.per_task_type)

    @admin.display(description="thresholds")
    def thresholds_display(self, version: ModelVersion) -> str:
        return json_block(version.thresholds)

    @admin.display(description="promotion")
    def promotion_display(self, version: ModelVersion) -> str:
        return json_block(version.promotion)

    @admin.display(description="training time", ordering="training_seconds")
    def seconds_display(self, version: ModelVersion) -> str:
        return seconds_text(version.training_seconds)

    @admin.display(description="served tasks")
    def served_link(self, version: ModelVersion) -> str:
        url = reverse("admin:duke_servedtask_changelist") + f"?model_version={version.number}"
        return admin_link(url, f"tasks v{version.number} served")

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
        "task_link",
        "task_type",
        "version_link",
        "label",
        "confidence_display",
        "price_display",
        "llm_price_display",
        "saved_display",
        "audit",
        "audit_label",
        "verdict",
    )
    list_filter = ("task_type", "model_version", "audit", "verdict")
    search_fields = ("task_id",)
    fields = displayed_fields(
        ServedTask,
        {
            "task_id": "task_link",
            "model_version": "version_link",
            "confidence": "confidence_display",
            "price": "price_display",
            "llm_price": "llm_price_display",
            "llm_cost_estimate": "llm_cost_display",
            "audit_cost": "audit_cost_display",
        },
    )
    readonly_fields = [*fields]

    @admin.display(description="task")
    def task_link(self, row: ServedTask) -> str:
        return _task_link(row.task_id)

    @admin.display(description="version", ordering="model_version")
    def version_link(self, row: ServedTask) -> str:
        return _version_link(row.model_version)

    @admin.display(description="confidence", ordering="confidence")
    def confidence_display(self, row: ServedTask) -> str:
        return percent_text(row.confidence)

    @admin.display(description="price", ordering="price")
    def price_display(self, row: ServedTask) -> str:
        return money_text(row.price)

    @admin.display(description="LLM quote", ordering="llm_price")
    def llm_price_display(self, row: ServedTask) -> str:
        return money_text(row.llm_price)

    @admin.display(description="saved")
    def saved_display(self, row: ServedTask) -> str:
        return money_text(row.saved)

    @admin.display(description="LLM cost avoided")
    def llm_cost_display(self, row: ServedTask) -> str:
        return cost_text(row.llm_cost_estimate)

    @admin.display(description="audit cost")
    def audit_cost_display(self, row: ServedTask) -> str:
        return cost_text(row.audit_cost)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="version", ordering="model_version")
    def version(self, state: RoutingState) -> str:
        return _version_link(state.model_version)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(RoutingState)
class RoutingStateAdmin(admin.ModelAdmin):
    """Suspensions by live agreement; a new production version starts without any."""

    list_display = ("version", "task_type", "suspended", "suspended_at", "reason")
    list_filter = ("suspended",)
    readonly_fields = [field.name for field in RoutingState._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="version", ordering="model_version")
    def version(self, state: RoutingState) -> str:
        return _version_link(state.model_version)

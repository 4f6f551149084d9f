from django.contrib import admin

from duke.models import ModelVersion, TrainingData, TrainingTrigger


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
    list_display = (
        "number",
        "status",
        "accuracy",
        "macro_f1",
        "train_samples",
        "validation_samples",
        "training_seconds",
        "created_at",
    )
    list_filter = ("status",)
    readonly_fields = [field.name for field in ModelVersion._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(TrainingTrigger)
class TrainingTriggerAdmin(admin.ModelAdmin):
    list_display = ("sample_ordinal", "reason", "created_at")

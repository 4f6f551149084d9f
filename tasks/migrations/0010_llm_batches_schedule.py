"""The Batch API collector runs every minute on the django-q2 scheduler (tasks.jobs.run_llm_batches)."""

from django.db import migrations


def schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="run-llm-batches",
        defaults={"func": "tasks.jobs.run_llm_batches", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="run-llm-batches").delete()


class Migration(migrations.Migration):
    dependencies = [("tasks", "0009_llm_batches"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(schedule, unschedule)]

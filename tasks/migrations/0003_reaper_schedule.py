"""The lease reaper runs every minute on the django-q2 scheduler."""

from django.db import migrations


def schedule_reaper(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="reap-expired-leases",
        defaults={"func": "tasks.jobs.reap_expired_leases", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def unschedule_reaper(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="reap-expired-leases").delete()


class Migration(migrations.Migration):
    dependencies = [("tasks", "0002_initial"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(schedule_reaper, unschedule_reaper)]

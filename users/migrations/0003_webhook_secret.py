"""Each user gets a webhook signing secret of their own (AddField alone would give existing rows one
shared value: the callable default is evaluated once for the whole table)."""

from django.db import migrations, models

import users.models


def give_each_user_a_secret(apps, schema_editor) -> None:
    User = apps.get_model("users", "User")
    for user in User.objects.only("pk").iterator():
        User.objects.filter(pk=user.pk).update(webhook_secret=users.models.new_webhook_secret())


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0002_throttle_counter"),
    ]

    operations = [
        migrations.AddField(
            model_name="user",
            name="webhook_secret",
            field=models.CharField(
                default=users.models.new_webhook_secret,
                help_text="Signs this buyer's webhooks (HMAC-SHA256).",
                max_length=80,
            ),
        ),
        migrations.RunPython(give_each_user_a_secret, migrations.RunPython.noop),
    ]

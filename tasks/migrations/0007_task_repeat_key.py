"""Exact repeat answers: a task's repeat key and the partial index the repeat store looks answers up by.

The column is added with a database default (``ALTER TABLE … ADD COLUMN … DEFAULT ''``) rather than by
AddField, which on SQLite copies the whole tasks table for a NOT NULL column with a default. Existing rows
get an empty key: tasks answered before this migration are not in the repeat store.
"""

from django.db import migrations, models

ADD_COLUMN = "ALTER TABLE tasks_task ADD COLUMN repeat_key varchar(64) NOT NULL DEFAULT ''"
DROP_COLUMN = "ALTER TABLE tasks_task DROP COLUMN repeat_key"


class Migration(migrations.Migration):
    dependencies = [("tasks", "0006_time_ordered_ids_fewer_indexes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(ADD_COLUMN, DROP_COLUMN)],
            state_operations=[
                migrations.AddField(
                    model_name="task",
                    name="repeat_key",
                    field=models.CharField(blank=True, default="", editable=False, max_length=64),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("repeat_key", ""), _negated=True),
                fields=["repeat_key", "-finished_at"],
                name="task_repeat_lookup",
            ),
        ),
    ]

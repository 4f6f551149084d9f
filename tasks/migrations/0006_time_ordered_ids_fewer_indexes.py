"""Task ids become time-ordered (UUID version 7), and two single-column indexes on tasks go.

Neither changes a column: the id default lives only in Python, and the indexes on ``buyer_id`` and on
``status`` alone duplicated the leading column of ``(buyer, -created_at)`` and ``(status, lease_until)``;
every submission wrote a page of each. So the database side is only the two DROP INDEX statements, not
AlterField's, which on SQLite copies the whole tasks table.
"""

import django.db.models.deletion
from django.apps.registry import Apps
from django.conf import settings
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

import core.ids

REDUNDANT_COLUMNS = (["buyer_id"], ["status"])


def _redundant_indexes(schema_editor: BaseDatabaseSchemaEditor, table: str) -> list[str]:
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return [
        name
        for name, info in constraints.items()
        if info["index"]
        and not info["unique"]
        and not info["primary_key"]
        and info["columns"] in REDUNDANT_COLUMNS
    ]


def drop_redundant_indexes(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    table = apps.get_model("tasks", "Task")._meta.db_table
    for name in _redundant_indexes(schema_editor, table):
        schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")


def create_single_column_indexes(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    task = apps.get_model("tasks", "Task")
    for field_name in ("buyer", "status"):
        field = task._meta.get_field(field_name)
        schema_editor.execute(schema_editor._create_index_sql(task, fields=[field]))
        create_like_index = getattr(schema_editor, "_create_like_index_sql", None)  # PostgreSQL only
        like_index = create_like_index(task, field) if create_like_index else None
        if like_index is not None:
            schema_editor.execute(like_index)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0005_drain_slots"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="task",
                    name="id",
                    field=models.UUIDField(
                        default=core.ids.time_ordered_uuid, editable=False, primary_key=True, serialize=False
                    ),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="buyer",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="tasks",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="status",
                    field=models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("running", "Running"),
                            ("completed", "Completed"),
                            ("failed", "Failed"),
                        ],
                        default="pending",
                        max_length=16,
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_redundant_indexes, create_single_column_indexes)],
        ),
    ]

"""The default agents every installation starts with."""

from decimal import Decimal

from django.db import migrations

DEFAULT_AGENTS = [
    {
        "name": "openai-gpt-4o-mini",
        "backend": "openai",
        "model": "gpt-4o-mini",
        "price_per_unit": Decimal("0.0200"),
        "prompt_token_price": Decimal("0.1500"),
        "completion_token_price": Decimal("0.6000"),
    },
    {
        "name": "openai-gpt-4o",
        "backend": "openai",
        "model": "gpt-4o",
        "price_per_unit": Decimal("0.1000"),
        "prompt_token_price": Decimal("2.5000"),
        "completion_token_price": Decimal("10.0000"),
    },
    {
        # Idle until a Duke version is in production; then it serves the tasks it is confident about.
        "name": "duke",
        "backend": "duke",
        "model": "duke-local",
        "price_per_unit": Decimal("0.0020"),
        "prompt_token_price": Decimal("0"),
        "completion_token_price": Decimal("0"),
    },
]


def seed(apps, schema_editor):
    Agent = apps.get_model("agents", "Agent")
    for fields in DEFAULT_AGENTS:
        Agent.objects.get_or_create(name=fields["name"], defaults=fields)


class Migration(migrations.Migration):
    dependencies = [("agents", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]

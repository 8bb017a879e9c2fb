"""Create the MAX_BATCH send slots once; Batch decides how many of them may be taken."""

from django.db import migrations

MAX_BATCH = 100  # notifications.models.MAX_BATCH at the time of this migration


def create_slots(apps, schema_editor):
    SendSlot = apps.get_model("notifications", "SendSlot")
    SendSlot.objects.bulk_create(
        [SendSlot(number=n) for n in range(1, MAX_BATCH + 1)], ignore_conflicts=True
    )


class Migration(migrations.Migration):
    dependencies = [("notifications", "0002_outbox")]

    operations = [migrations.RunPython(create_slots, migrations.RunPython.noop)]

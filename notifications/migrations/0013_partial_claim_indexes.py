"""The claim's indexes become partial: queued rows by (next_attempt_at, id), leased rows by
claimed_until. The new ones are built before the old ones go, so the workers' queries always
have one."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0012_fallback_server"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(("status", "queued")),
                fields=["next_attempt_at", "id"],
                name="notif_waiting_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(("status", "sending")),
                fields=["claimed_until"],
                name="notif_leased_idx",
            ),
        ),
        migrations.RemoveIndex(model_name="notification", name="notif_due_idx"),
        migrations.RemoveIndex(model_name="notification", name="notif_lease_idx"),
    ]

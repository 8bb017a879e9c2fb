"""The claim's indexes become partial: queued rows by (next_attempt_at, id), leased rows by
claimed_until. The new ones are built before the old ones go, so the workers' queries always
have one; on PostgreSQL they are built CONCURRENTLY, so a long delivery log does not hold up
notify() and the workers while they are built (hence a migration outside a transaction)."""

from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """AddIndex, with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL (Django's own
    ``AddIndexConcurrently`` is PostgreSQL-only, and the app also runs on SQLite)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            if schema_editor.connection.vendor == "postgresql":
                schema_editor.add_index(model, self.index, concurrently=True)
            else:
                schema_editor.add_index(model, self.index)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("notifications", "0012_fallback_server"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="notification",
            index=models.Index(
                condition=models.Q(("status", "queued")),
                fields=["next_attempt_at", "id"],
                name="notif_waiting_idx",
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
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

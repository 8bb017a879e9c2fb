"""Create the first administrator for development, once (``rundev`` says how to log in)."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser 'admin' with a generated password if no superuser exists yet."

    def handle(self, *args, **options) -> None:
        password_file = settings.VAR_DIR / "admin_password"
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "admin@localhost", password)
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        self.stdout.write(
            f"Created the administrator 'admin'; its password is in {password_file} "
            "(change it in the admin, then delete the file)."
        )

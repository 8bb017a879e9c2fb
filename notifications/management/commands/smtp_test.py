"""Send a test email with the stored SMTP settings (the primary's, or ``--server fallback``) and
print the stepwise diagnosis."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from config.logging import quiet
from notifications import diagnosis
from notifications.exceptions import NotificationsError
from notifications.models import Server, SmtpSettings
from notifications.redaction import printable
from notifications.smtp import DiagnosticReport, DiagnosticStep
from notifications.targets import Target
from notifications.validators import validate_recipient

ICONS = {"ok": "✓", "failed": "✗"}  # anything else (skipped, not run) is "–"
#: Logs each failed step at INFO for the server's log; here the table says it already.
SMTP_LOGGER = "notifications.smtp"


class Command(BaseCommand):
    help = (
        "Send a test email with the stored SMTP settings and show each step (DNS, connect, TLS, "
        "login, ...) with the server's replies. Exit status 0 only when the server accepted it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--to", metavar="ADDRESS", help="Who gets the test.")
        parser.add_argument(
            "--server",
            choices=Server.values,
            default=Server.PRIMARY,
            help="Test the primary server (default) or the fallback.",
        )
        parser.add_argument(
            "--connect-only",
            action="store_true",
            help="Connect, sign in and QUIT without a message; list the server's capabilities.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help=(
                "Print the report as JSON (ok, failed_step, hint, steps, transcript, and target: "
                "what was tested)."
            ),
        )

    def handle(self, *args, **options) -> None:
        connect_only = options["connect_only"]
        to = (options["to"] or "").strip()
        if not connect_only:
            if not to:
                raise CommandError(_("Give --to ADDRESS, or --connect-only to send no message."))
            try:
                validate_recipient(to)
            except ValidationError as error:
                raise CommandError(f"--to: {' '.join(error.messages)}") from None
        if options["server"] == Server.FALLBACK:
            settings = SmtpSettings.load_fallback()
            if settings is None:
                raise CommandError(
                    _(
                        "No fallback server is set: set one with `manage.py smtp_settings "
                        "--server fallback --host ... --from ...` (or in the admin), then test it."
                    )
                )
        else:
            settings = SmtpSettings.load()
        if not settings.is_configured:
            raise CommandError(
                _(
                    "The SMTP settings are not configured yet: set the host and From address in "
                    "the admin (SMTP settings) or with `manage.py smtp_settings`, then test again."
                )
            )
        try:
            with quiet(SMTP_LOGGER):
                report = diagnosis.run_test(settings=settings, to=to, connect_only=connect_only)
        except NotificationsError as error:  # e.g. the stored password cannot be decrypted
            raise CommandError(str(error)) from None
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
            if not report.ok:
                raise CommandError(diagnosis.outcome(report))
            return
        self._print(report)
        if not report.ok:  # the table above already gave the error and the hint
            raise CommandError(
                _("Failed at %(step)s.") % {"step": report.step(report.failed_step).label}
                if report.failed_step
                else diagnosis.outcome(report)
            )

    def _print(self, report: DiagnosticReport) -> None:
        target = Target.from_dict(report.target)
        if target is not None:  # the server's name and the login are the admin's, still escaped
            tested = _("Tested %(tested)s — %(values)s.") % {
                "tested": target,
                "values": target.values,
            }
            self.stdout.write(printable(tested))
        width = max(len(str(step.label)) for step in report.steps)
        for step in report.steps:
            self.stdout.write(self._line(step, width))
            if step.status == "failed":
                self.stdout.write(f"    {printable(step.error)}")
                self.stdout.write(self.style.WARNING(f"    {_('Hint:')} {step.hint}"))
        for key, label in (("before_tls", _("before TLS")), ("after_tls", _("after TLS"))):
            if key in report.capabilities:
                offered = printable(", ".join(report.capabilities[key])) or "-"
                self.stdout.write(
                    _("Server offers %(when)s: %(offered)s") % {"when": label, "offered": offered}
                )
        if report.ok:
            self.stdout.write(self.style.SUCCESS(diagnosis.outcome(report)))

    def _line(self, step: DiagnosticStep, width: int) -> str:
        icon = ICONS.get(step.status, "–")
        duration = "" if step.duration_ms is None else f"{step.duration_ms} ms"
        if step.status == "skipped":
            reply = str(step.detail.get("reason", ""))
        elif "version" in step.detail:  # TLS: what was negotiated, rather than EHLO's reply again
            reply = f"{step.detail['version']} {step.detail.get('subject', '')}".strip()
        else:
            # The first line only: EHLO's reply lists every extension on a line of its own.
            first_line = step.reply.splitlines()[0] if step.reply else ""
            reply = f"{step.code or ''} {first_line}".strip()
        # The server's words are escaped: a reply must not repaint the terminal ("Delivered").
        line = f"{icon} {step.label!s:<{width}}  {duration:>8}  {printable(reply)}".rstrip()
        if step.status == "ok":
            return self.style.SUCCESS(line)
        if step.status == "failed":
            return self.style.ERROR(line)
        return line

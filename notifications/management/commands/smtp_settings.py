"""Show the stored SMTP settings (password masked), or set them non-interactively; the primary
server's, or with ``--server fallback`` the fallback's (``--remove`` removes it)."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from notifications import services
from notifications.models import AuthMechanism, AuthMethod, Security, Server, SmtpSettings
from notifications.providers import PROVIDERS, get_provider

#: Command-line option → model field, for the flags that set a field as given.
FIELD_OPTIONS = {
    "host": "host",
    "port": "port",
    "security": "security",
    "username": "username",
    "from_address": "from_address",
    "skip_verify": "skip_verify",
    "timeout": "timeout",
    "allow_plaintext_login": "allow_plaintext_login",
    "batch": "batch",
    "auth_method": "auth_method",
    "auth_mechanism": "auth_mechanism",
    "tenant_id": "tenant_id",
    "client_id": "client_id",
    "token_url": "token_url",
    "scope": "scope",
    "secret_expires": "client_secret_expires",
    "rate_per_minute": "rate_per_minute",
    "rate_per_hour": "rate_per_hour",
    "rate_per_day": "rate_per_day",
    "messages_per_connection": "messages_per_connection",
}

#: Model field → the flag that sets it, to name it in errors.
FIELD_FLAGS = {
    **{field: "--" + option.replace("_", "-") for option, field in FIELD_OPTIONS.items()},
    "from_address": "--from",
    "password": "--password-stdin",
    "ca_pem": "--ca-file",
}

#: Where the model's message speaks of the form ("tick ..."), what to type instead.
CLI_HINTS = {
    "host_required": "give the SMTP server's name or IP address (--host smtp.example.com); "
    "an empty host would stop all sending.",
    "from_required": "give the sender address with --from name@example.com.",
    "password_required": "a login needs its password: pipe it in with --password-stdin, or "
    "pass --username '' for no login.",
    "plaintext_login": "a login over an unencrypted connection would send the password in clear "
    "text: use --security ssl or starttls, or --allow-plaintext-login for a trusted relay.",
}


#: Options that change a setting: with ``--remove``, none of them may be given.
SETTING_OPTIONS = (
    *FIELD_OPTIONS,
    "preset",
    "ca_file",
    "password_stdin",
    "client_secret_stdin",
    "service_account_file",
)


def _date(value: str) -> datetime.date | None:
    """YYYY-MM-DD, or '' for no date."""
    if not value:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(_("expected a date as YYYY-MM-DD")) from None


def _rates(settings: SmtpSettings) -> str:
    limits = [
        f"{limit}/{window}"
        for window, limit in (
            ("minute", settings.rate_per_minute),
            ("hour", settings.rate_per_hour),
            ("day", settings.rate_per_day),
        )
        if limit
    ]
    return ", ".join(limits) or "none"


class Command(BaseCommand):
    help = (
        "Without options, show the SMTP settings (the password masked). With options, change "
        "them; options not given keep their stored values."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--server",
            choices=Server.values,
            default=Server.PRIMARY,
            help="Which server the other flags set or show: the primary (default), or the "
            "fallback, used only while the primary cannot be reached or refuses to sign in.",
        )
        parser.add_argument(
            "--remove",
            action="store_true",
            help="With --server fallback: remove the fallback server.",
        )
        parser.add_argument(
            "--preset",
            choices=[p.key for p in PROVIDERS],
            help=(
                "Fill host, port, security and the published sending limits from a provider "
                "preset (other flags override)."
            ),
        )
        parser.add_argument("--host")
        parser.add_argument("--port", type=int)
        parser.add_argument("--security", choices=Security.values)
        parser.add_argument("--username", help="'' for no login.")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from standard input (an empty input removes it).",
        )
        parser.add_argument("--from", dest="from_address")
        # One or the other: given both, argparse refuses the command line with a one-line error.
        verification = parser.add_mutually_exclusive_group()
        verification.add_argument(
            "--skip-verify",
            dest="skip_verify",
            action=argparse.BooleanOptionalAction,
            help="--skip-verify skips TLS certificate verification (insecure); --no-skip-verify "
            "(or --verify) turns verification back on.",
        )
        verification.add_argument("--verify", dest="skip_verify", action="store_false")
        parser.add_argument(
            "--ca-file", type=Path, help="PEM file of an extra CA to trust ('' clears)."
        )
        parser.add_argument("--timeout", type=int)
        parser.add_argument(
            "--allow-plaintext-login", action=argparse.BooleanOptionalAction, default=None
        )
        parser.add_argument("--batch", type=int)
        parser.add_argument(
            "--auth-method",
            choices=AuthMethod.values,
            help="password (default), microsoft-oauth2 (client credentials) or google-oauth2 "
            "(service account); with OAuth2, --username is the mailbox to send as.",
        )
        parser.add_argument(
            "--auth-mechanism",
            choices=AuthMechanism.values,
            help="For passwords: auto, plain, login.",
        )
        parser.add_argument("--tenant-id", help="Microsoft: the Directory (tenant) ID.")
        parser.add_argument("--client-id", help="Microsoft: the Application (client) ID.")
        parser.add_argument(
            "--client-secret-stdin",
            action="store_true",
            help="Microsoft: read the client secret's Value from standard input (after the "
            "password, if --password-stdin is given too).",
        )
        parser.add_argument(
            "--secret-expires", type=_date, metavar="YYYY-MM-DD", help="When the secret expires."
        )
        parser.add_argument(
            "--service-account-file",
            type=Path,
            metavar="PATH",
            help="Google: the service account's JSON key file.",
        )
        parser.add_argument("--token-url", help="Override the token endpoint ('' for the default).")
        parser.add_argument("--scope", help="Override the scope ('' for the default).")
        for window in ("minute", "hour", "day"):
            parser.add_argument(
                f"--rate-per-{window}",
                type=int,
                metavar="N",
                help=f"Most messages in any rolling {window}, across all workers; 0: no limit.",
            )
        parser.add_argument(
            "--messages-per-connection",
            type=int,
            metavar="N",
            help="Close an SMTP session after this many messages and open a new one.",
        )
        parser.set_defaults(skip_verify=None)

    def handle(self, *args, **options) -> None:
        fallback = options["server"] == Server.FALLBACK
        if options["remove"]:
            self._remove(options, fallback)
            return
        if fallback:
            self._refuse_primary_only(options)
            settings = SmtpSettings.load_fallback() or SmtpSettings(pk=SmtpSettings.FALLBACK_PK)
        else:
            settings = SmtpSettings.load()
        changed = self._apply(settings, options)
        new_password = None
        if options["password_stdin"]:
            new_password = sys.stdin.readline().rstrip("\r\n")
        if options["client_secret_stdin"]:
            settings.set_client_secret(sys.stdin.readline().strip())
            changed = True
        if options["service_account_file"] is not None:
            self._read_service_account(settings, options["service_account_file"])
            changed = True
        if changed or new_password is not None:
            self._validate(settings, new_password)
            try:
                services.save_settings(settings, new_password=new_password, source="command")
            except ValidationError as error:
                raise CommandError(self._describe(error)) from None
            self.stdout.write(
                self.style.SUCCESS(
                    f"Saved the {settings.server} SMTP server's settings as version "
                    f"{settings.version}."
                )
            )
        if settings._state.adding:  # --server fallback alone, and none is set
            self.stdout.write(
                "No fallback server is set. Set one with --server fallback and the same flags "
                "as the primary's (--host, --port, --security, --username, --from, ...)."
            )
            return
        self._show(settings)

    def _remove(self, options: dict, fallback: bool) -> None:
        if not fallback:
            raise CommandError(
                "--remove removes the fallback server: give --server fallback --remove (the "
                "primary server can be changed, not removed)."
            )
        stdin = ("password_stdin", "client_secret_stdin")  # store_true: False is "not given"
        given = [
            self._flag(name)
            for name in SETTING_OPTIONS
            if (options[name] if name in stdin else options[name] is not None)
        ]
        if given:
            raise CommandError(
                f"--remove takes no other settings: {', '.join(given)} would be lost with the "
                "fallback server. Give either --remove or the settings."
            )
        if services.remove_fallback(source="command") is None:
            self.stdout.write("No fallback server is set: nothing to remove.")
        else:
            self.stdout.write(self.style.SUCCESS("Removed the fallback SMTP server."))

    def _refuse_primary_only(self, options: dict) -> None:
        given = [
            self._flag(name)
            for name in SmtpSettings.PRIMARY_ONLY_FIELDS
            if options[name] is not None
        ]
        if given:
            raise CommandError(
                f"{', '.join(given)}: Batch and the rate limits are the primary server's and cap "
                "both servers together; set them without --server fallback."
            )

    @staticmethod
    def _flag(option: str) -> str:
        field = FIELD_OPTIONS.get(option, option)
        return FIELD_FLAGS.get(field, "--" + option.replace("_", "-"))

    def _apply(self, settings: SmtpSettings, options: dict) -> bool:
        changed = False
        if options["preset"]:
            provider = get_provider(options["preset"])
            settings.provider = provider.key
            if provider.host:
                settings.host, settings.port, settings.security = (
                    provider.host,
                    provider.port,
                    provider.security,
                )
            if provider.host and not settings.is_fallback:  # the limits are the primary's
                settings.rate_per_minute, settings.rate_per_hour, settings.rate_per_day = (
                    provider.rate_per_minute,
                    0,
                    provider.rate_per_day,
                )
            changed = True
        method = options["auth_method"]
        if method is not None and method != settings.auth_method:
            # The overrides belong to one provider: another method starts from its defaults.
            settings.token_url, settings.scope = "", ""
        for option, field in FIELD_OPTIONS.items():
            if options[option] is not None:
                setattr(settings, field, options[option])
                changed = True
        if options["ca_file"] is not None:
            path = options["ca_file"]
            try:
                settings.ca_pem = path.read_text() if str(path) else ""
            except OSError as error:
                raise CommandError(f"Cannot read the CA file {path}: {error.strerror}.") from None
            changed = True
        return changed

    def _validate(self, settings: SmtpSettings, new_password: str | None) -> None:
        """The form's rules, every one at once: the model's, and a login needs a password."""
        problems: dict = {}
        for check in (settings.full_clean, lambda: settings.validate_password_change(new_password)):
            try:
                check()
            except ValidationError as error:
                problems = error.update_error_dict(problems)
        if problems:
            raise CommandError(self._describe(ValidationError(problems)))

    @staticmethod
    def _read_service_account(settings: SmtpSettings, path: Path) -> None:
        try:
            settings.set_service_account(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise CommandError(
                _("Cannot read the service-account key %(path)s: %(reason)s.")
                % {"path": path, "reason": error.strerror}
            ) from None
        except (ValueError, UnicodeError) as error:
            raise CommandError(f"--service-account-file: {error}") from None

    @staticmethod
    def _describe(error: ValidationError) -> str:
        """One line per problem, named by its flag, with the fix worded for the command line."""
        lines = ["The SMTP settings were not saved:"]
        for field, errors in error.error_dict.items():
            flag = FIELD_FLAGS.get(field, field)
            for item in errors:
                hint = CLI_HINTS.get(item.code)
                lines.append(f"  {flag}: {hint or ' '.join(item.messages)}")
        return "\n".join(lines)

    def _show(self, settings: SmtpSettings) -> None:
        rows = [
            ("provider", settings.provider or "custom"),
            ("host", settings.host or "(not set)"),
            ("port", settings.port),
            ("security", settings.security),
            ("sign-in method", settings.auth_method),
            ("username", settings.username or "(no login)"),
        ]
        if settings.auth_method == AuthMethod.PASSWORD:
            rows += [
                ("password", "******** (stored)" if settings.has_password else "(none)"),
                ("login mechanism", settings.auth_mechanism),
            ]
        else:
            rows += self._oauth_rows(settings)
        rows += [
            ("from", settings.from_address or "(not set)"),
            ("skip verify", "yes (INSECURE)" if settings.skip_verify else "no"),
            ("extra CA", "set" if settings.ca_pem else "none"),
            ("plaintext login", "allowed" if settings.allow_plaintext_login else "refused"),
            ("timeout", f"{settings.timeout} s"),
        ]
        if not settings.is_fallback:
            rows += [("batch", settings.batch), ("rate limits", _rates(settings))]
        rows += [
            ("per connection", f"{settings.messages_per_connection} messages"),
            ("version", settings.version),
        ]
        if settings.is_fallback:
            self.stdout.write("Fallback server (Batch and the rate limits are the primary's):")
        else:
            fallback = SmtpSettings.load_fallback()
            rows.append(("fallback", str(fallback) if fallback else "none"))
        if settings.paused_reason:
            rows.append(("PAUSED", settings.paused_reason))
        for name, value in rows:
            self.stdout.write(f"{name:>16}: {value}")

    @staticmethod
    def _oauth_rows(settings: SmtpSettings) -> list[tuple[str, object]]:
        if settings.auth_method == AuthMethod.MICROSOFT:
            secret = "******** (stored)" if settings.has_client_secret else "(none)"
            rows: list[tuple[str, object]] = [
                ("tenant ID", settings.tenant_id or "(not set)"),
                ("client ID", settings.client_id or "(not set)"),
                ("client secret", secret),
                ("secret expires", settings.client_secret_expires or "(not set)"),
            ]
        else:
            key = "(none)"
            if settings.has_service_account:
                key = f"******** (stored, {settings.client_id})"
            rows = [("service account", key)]
        return [
            *rows,
            ("token URL", settings.token_url or "(the provider's default)"),
            ("scope", settings.scope or "(the provider's default)"),
        ]

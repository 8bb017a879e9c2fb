"""Stored diagnoses (test reports, a notification's last error, the pause reason) are shown in the
language of whoever reads them, not of whoever (or whichever worker) wrote them."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext

import notifications
from notifications import diagnosis, phrases, services
from notifications.models import Notification, SmtpSettings, Status, TestKind, TestRun
from notifications.targets import Target
from tests.smtpserver import PASSWORD, USERNAME

pytestmark = pytest.mark.django_db

SETTINGS_URL = reverse("admin:notifications_smtpsettings_change", args=[1])
RECIPIENT_HINT = (
    "The server refused the recipient: check the address. Servers also refuse to relay to other "
    "domains without a login."
)
CERT_HINT = (
    "The certificate is issued for %(names)s, not for the IP address %(host)s: use one of those "
    "names as the host (or add the IP address to the certificate)."
)
LOGIN_HINT = "Check the username and password."


def chinese(msgid: str, **params) -> str:
    with translation.override("zh-hans"):
        translated = gettext(msgid)
    assert translated != msgid, f"not translated: {msgid}"
    return translated % params if params else translated


def page(client, url: str, language: str) -> str:
    return client.get(url, HTTP_ACCEPT_LANGUAGE=language).content.decode()


def failed_test_run(smtp_server_factory, configure_smtp, smtp_pki, language: str) -> TestRun:
    """A test whose certificate is issued for other names, run by an admin in ``language``."""
    server = smtp_server_factory("ssl", cert="wrong_host")
    record = configure_smtp(server, pki=smtp_pki)
    with translation.override(language):
        report = diagnosis.run_test(settings=record, to="rcpt@example.org")
    assert report.failed_step == "tls"
    return TestRun.objects.get()


@pytest.mark.parametrize(("ran_in", "read_in"), [("zh-hans", "en"), ("en", "zh-hans")])
def test_a_test_report_is_read_in_the_readers_language(
    admin_client, smtp_server_factory, configure_smtp, smtp_pki, ran_in: str, read_in: str
) -> None:
    run = failed_test_run(smtp_server_factory, configure_smtp, smtp_pki, ran_in)
    english_hint = CERT_HINT % {"names": "wrong.example", "host": "127.0.0.1"}
    chinese_hint = chinese(CERT_HINT, names="wrong.example", host="127.0.0.1")
    assert run.summary.startswith("Failed at TLS: " + english_hint)  # the text column: English

    urls = (
        reverse("admin:notifications_testrun_change", args=[run.pk]),
        reverse("admin:notifications_testrun_changelist"),
        SETTINGS_URL,  # the health panel's "Last test"
    )
    pages = [page(admin_client, url, read_in) for url in urls]

    shown, hidden = (
        (english_hint, chinese_hint) if read_in == "en" else (chinese_hint, english_hint)
    )
    for html in pages:
        assert shown in html
        assert hidden not in html
    # The certificate's own words stay as OpenSSL wrote them, in either language.
    assert "IP address mismatch" in pages[0]


def test_a_run_that_never_finished_says_so_in_the_readers_language(admin_client) -> None:
    with translation.override("zh-hans"):
        target = Target(
            host="smtp.example.com",
            port=587,
            security="starttls",
            auth_method="password",
            username="",
            saved=True,
            settings_version=None,
        )
        diagnosis._start(
            by=None,
            to="a@example.com",
            target=target,
            kind=TestKind.EMAIL,
            server="primary",
            digest="",
        )
    run = TestRun.objects.get()
    assert run.summary == "Started; the test did not finish."

    url = reverse("admin:notifications_testrun_change", args=[run.pk])
    assert "Started; the test did not finish." in page(admin_client, url, "en")
    assert chinese("Started; the test did not finish.") in page(admin_client, url, "zh-hans")


def test_a_failed_notification_reads_in_each_admins_language(
    admin_client, plain_smtp_server, configure_smtp
) -> None:
    configure_smtp(plain_smtp_server)
    plain_smtp_server.queue_replies("RCPT", "550 5.1.1 no such user")
    [row] = notifications.notify(recipients="gone@example.com", subject="s", body="b")
    with translation.override("zh-hans"):  # a worker whose language is Chinese
        services.deliver()
    row.refresh_from_db()
    assert row.status == Status.FAILED
    assert RECIPIENT_HINT in row.last_error  # logs, signals and the API get English
    assert row.last_error.startswith("[rcpt] 550")

    log = reverse("admin:notifications_notification_changelist")
    detail = reverse("admin:notifications_notification_change", args=[row.pk])
    for url in (log, detail, SETTINGS_URL):
        in_english, in_chinese = page(admin_client, url, "en"), page(admin_client, url, "zh-hans")
        assert RECIPIENT_HINT in in_english
        assert chinese(RECIPIENT_HINT) not in in_english
        assert chinese(RECIPIENT_HINT) in in_chinese
        assert RECIPIENT_HINT not in in_chinese
        for html in (in_english, in_chinese):  # the server's words are never translated
            assert "no such user" in html


def test_the_pause_reason_reads_in_each_admins_language_and_holds_no_secret(
    admin_client, smtp_server_factory, smtp_pki, configure_smtp
) -> None:
    server = smtp_server_factory("ssl")
    wrong = "wrong-Secret-9876"
    configure_smtp(server, pki=smtp_pki, username=USERNAME, password=wrong)
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    with translation.override("zh-hans"):
        services.deliver()
    record = SmtpSettings.load()
    assert record.paused_reason.startswith("[auth] 535")
    assert LOGIN_HINT in record.paused_reason
    assert wrong not in json.dumps(record.paused_detail) + record.paused_reason

    in_english = page(admin_client, SETTINGS_URL, "en")
    in_chinese = page(admin_client, SETTINGS_URL, "zh-hans")
    assert "Sending is paused: [auth] 535" in in_english
    assert LOGIN_HINT in in_english and chinese(LOGIN_HINT) not in in_english
    assert chinese(LOGIN_HINT) in in_chinese and LOGIN_HINT not in in_chinese

    services.save_settings(record, new_password=PASSWORD, source="test")
    assert SmtpSettings.load().paused_detail is None


def test_a_worker_refused_a_certificate_names_it_in_the_pause_reason(
    admin_client, smtp_server_factory, smtp_pki, configure_smtp
) -> None:
    server = smtp_server_factory("starttls", cert="wrong_host")
    configure_smtp(server, pki=smtp_pki)
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    with translation.override("zh-hans"):
        services.deliver()
    english_hint = CERT_HINT % {"names": "wrong.example", "host": "127.0.0.1"}

    assert english_hint in SmtpSettings.load().paused_reason
    assert english_hint in page(admin_client, SETTINGS_URL, "en")
    assert chinese(CERT_HINT, names="wrong.example", host="127.0.0.1") in page(
        admin_client, SETTINGS_URL, "zh-hans"
    )


def test_an_unreachable_server_is_explained_in_each_admins_language(
    admin_client, closed_port, configure_smtp, plain_smtp_server
) -> None:
    configure_smtp(plain_smtp_server, port=closed_port)
    notifications.notify(recipients="a@example.com", subject="s", body="b")
    with translation.override("zh-hans"):
        services.deliver()
    refused = "TCP connection: %(host)s refused the connection on port %(port)s."
    where = {"host": "127.0.0.1", "port": closed_port}

    in_english = page(admin_client, SETTINGS_URL, "en")
    in_chinese = page(admin_client, SETTINGS_URL, "zh-hans")

    assert refused % where in in_english
    assert chinese(refused, **where) in in_chinese
    assert refused % where not in in_chinese


def test_rows_without_phrases_and_rows_rewritten_as_text_show_their_text(admin_client) -> None:
    [old] = notifications.notify(recipients="a@example.com", subject="s", body="b")
    Notification.objects.filter(pk=old.pk).update(
        status=Status.FAILED, last_error="[rcpt] 550 written before phrases"
    )
    [cancelled] = notifications.notify(recipients="b@example.com", subject="s", body="b")
    stale = phrases.to_json(phrases.join("[rcpt]", phrases.phrase(RECIPIENT_HINT)))
    Notification.objects.filter(pk=cancelled.pk).update(
        status=Status.CANCELLED, last_error="Cancelled by admin.", last_error_detail=stale
    )

    html = page(admin_client, reverse("admin:notifications_notification_changelist"), "zh-hans")

    assert "[rcpt] 550 written before phrases" in html
    assert "Cancelled by admin." in html
    assert chinese(RECIPIENT_HINT) not in html  # the stale phrase no longer says what the row says

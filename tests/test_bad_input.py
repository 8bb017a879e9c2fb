"""Recipients the envelope could not carry as given, and messages too large: refused up front,
with the reason, and nothing stored (issue 15, items 5 and 6)."""

from __future__ import annotations

import pytest

import notifications
from notifications import services
from notifications.exceptions import InvalidNotification
from notifications.models import Notification, SmtpSettings, Status
from notifications.services.outbox import MAX_BODY_CHARACTERS

pytestmark = pytest.mark.django_db

QUOTED_CONTROLS = [f'"a{chr(code)}b"@example.com' for code in (*range(1, 32), 127)]


@pytest.mark.parametrize(
    "address",
    [
        "a@exa\u200bmple.com",  # zero-width space: would be dropped, sending to example.com
        "a@example\u00ad.com",  # soft hyphen, likewise
        "a@exam\ufeffple.com",  # zero-width no-break space
        *QUOTED_CONTROLS,
    ],
)
def test_an_address_the_envelope_would_change_or_cannot_carry_is_refused(address):
    with pytest.raises(InvalidNotification, match="recipients"):
        notifications.notify(recipients=address, subject="s", body="b")
    assert not Notification.objects.exists()


def test_the_stored_address_is_the_one_the_envelope_carries():
    [row] = notifications.notify(recipients="Ann@Bücher.de", subject="s", body="b")
    assert row.recipient == "Ann@xn--bcher-kva.de"
    # The same mailbox written the other way is the same recipient: one row, not two.
    again = notifications.notify(
        recipients=["ann@xn--bcher-kva.de", "ANN@bücher.de"],
        subject="s",
        body="b",
        idempotency_key="k",
    )
    assert len(again) == 1


def test_a_body_over_the_maximum_is_refused_with_the_figures():
    with pytest.raises(InvalidNotification, match="at most 1,000,000"):
        notifications.notify(
            recipients="a@example.com",
            subject="s",
            body="x" * (MAX_BODY_CHARACTERS // 2),
            html_body="<p>" + "y" * (MAX_BODY_CHARACTERS // 2) + "</p>",
        )
    assert not Notification.objects.exists()


def test_a_message_over_the_servers_size_fails_for_good_before_data(
    smtp_server_factory, configure_smtp
):
    server = smtp_server_factory("none", data_size_limit=2_000)
    configure_smtp(server)
    [big] = notifications.notify(recipients="a@example.com", subject="s", body="z" * 5_000)
    notifications.notify(recipients="b@example.com", subject="s", body="short")
    assert services.deliver() == 1
    big.refresh_from_db()
    assert big.status == Status.FAILED
    assert "at most 2000 (its SIZE)" in big.last_error
    assert [m.rcpt_tos for m in server.messages] == [("b@example.com",)]


#: Address lists on which CPython's header parser raises (AttributeError, IndexError, TypeError,
#: UnboundLocalError) instead of recording a defect; found by fuzzing it.
PARSER_CRASHERS = [". <a@example.com>", "é \\@", '.?:">=[é: ', " .[[[ ", "?@[ "]


@pytest.mark.parametrize("address", PARSER_CRASHERS)
def test_an_address_the_header_parser_chokes_on_is_refused_as_an_address(address):
    with pytest.raises(InvalidNotification, match="recipients"):
        notifications.notify(recipients=address, subject="s", body="b")
    with pytest.raises(InvalidNotification, match="reply_to"):
        notifications.notify(recipients="a@example.com", subject="s", body="b", reply_to=address)
    assert not Notification.objects.exists()


@pytest.mark.parametrize("address", PARSER_CRASHERS)
def test_a_from_the_header_parser_chokes_on_gets_the_forms_error(address):
    from notifications.forms import SmtpSettingsForm

    form = SmtpSettingsForm(data={"from_address": address}, instance=SmtpSettings.load())
    assert not form.is_valid()
    assert "name@example.com" in " ".join(form.errors["from_address"])

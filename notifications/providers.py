"""SMTP provider presets (data only): host, port, security mode and what each provider demands."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _


@dataclass(frozen=True)
class Provider:
    key: str
    name: str
    host: str
    port: int
    security: str
    note: str
    host_suffixes: tuple[str, ...] = ()
    auth_hint: str = ""
    #: The sign-in method the preset selects in the settings page ("" keeps the current one).
    auth_method: str = ""
    #: What the provider calls the password, for the password field's label.
    password_label: str = ""
    #: The setup steps shown with the preset, in order.
    checklist: tuple[str, ...] = ()
    #: The provider's published sending limits (0: none known), and where they are published.
    rate_per_minute: int = 0
    rate_per_day: int = 0
    limits_note: str = ""


_AUTHORIZATION_CODE_LABEL = _("Authorization code (授权码)")

_AUTHORIZATION_CODE = _(
    "Log in with the authorization code (授权码) generated in the mailbox's web settings, "
    "not the mailbox password; SMTP must be enabled there first."
)

PROVIDERS: tuple[Provider, ...] = (
    Provider(
        key="netease163",
        name=_("NetEase 163 Mail"),
        host="smtp.163.com",
        port=465,
        security="ssl",
        note=_(
            "Enable the SMTP service under Settings → POP3/SMTP/IMAP in the 163 mailbox and use "
            "the authorization code it gives you as the password, not the login password."
        ),
        host_suffixes=("163.com",),
        auth_hint=_AUTHORIZATION_CODE,
        password_label=_AUTHORIZATION_CODE_LABEL,
    ),
    Provider(
        key="netease126",
        name=_("NetEase 126 Mail"),
        host="smtp.126.com",
        port=465,
        security="ssl",
        note=_(
            "Enable the SMTP service under Settings → POP3/SMTP/IMAP in the 126 mailbox and use "
            "the authorization code it gives you as the password, not the login password."
        ),
        host_suffixes=("126.com",),
        auth_hint=_AUTHORIZATION_CODE,
        password_label=_AUTHORIZATION_CODE_LABEL,
    ),
    Provider(
        key="qq",
        name=_("QQ Mail"),
        host="smtp.qq.com",
        port=465,
        security="ssl",
        note=_(
            "Enable the SMTP service in QQ Mail's account settings and use the authorization "
            "code it generates as the password, not the QQ password."
        ),
        host_suffixes=("qq.com",),
        auth_hint=_AUTHORIZATION_CODE,
        password_label=_AUTHORIZATION_CODE_LABEL,
    ),
    Provider(
        key="exmail",
        name=_("Tencent Exmail (WeCom business mail)"),
        host="smtp.exmail.qq.com",
        port=465,
        security="ssl",
        note=_(
            "Use the full mailbox address as the username. If secure login is enabled for the "
            "account, generate a client-specific password and use it instead of the login "
            "password."
        ),
        host_suffixes=("exmail.qq.com",),
        auth_hint=_(
            "If secure login is enabled for this Exmail account, use a client-specific password; "
            "also check that IMAP/SMTP is enabled for the mailbox."
        ),
    ),
    Provider(
        key="aliyun",
        name=_("Alibaba Cloud enterprise mail"),
        host="smtp.qiye.aliyun.com",
        port=465,
        security="ssl",
        note=_(
            "Use the full mailbox address as the username. If the administrator enabled "
            "third-party client security passwords, use that password (authorization code)."
        ),
        host_suffixes=("aliyun.com",),
        auth_hint=_(
            "Use the full mailbox address and, if third-party client security passwords are "
            "enabled, the security password (authorization code) instead of the login password."
        ),
        password_label=_("Password, or third-party client security password (三方客户端安全密码)"),
    ),
    Provider(
        key="office365",
        name=_("Outlook / Office 365"),
        host="smtp.office365.com",
        port=587,
        security="starttls",
        note=_(
            "Exchange Online no longer accepts a password for SMTP AUTH in most tenants: sign "
            "in with Microsoft 365 (OAuth2). An administrator of the tenant sets it up once:"
        ),
        host_suffixes=("office365.com", "outlook.com", "hotmail.com", "live.com"),
        auth_hint=_(
            "Check that Authenticated SMTP is enabled for this mailbox and that security defaults "
            "or a policy do not block basic authentication. Errors 5.7.139 or 5.7.30 mean basic "
            "authentication is disabled: use OAuth, an SMTP relay connector or another provider."
        ),
        auth_method="microsoft-oauth2",
        checklist=(
            _(
                "Register an app in Microsoft Entra (App registrations → New registration); note "
                "its Application (client) ID and Directory (tenant) ID."
            ),
            _(
                "API permissions → Add a permission → APIs my organization uses → Office 365 "
                "Exchange Online → Application permissions → SMTP.SendAsApp; then Grant admin "
                "consent."
            ),
            _(
                "Certificates & secrets → New client secret: copy its Value (not the Secret ID) "
                "and note its expiry date."
            ),
            _(
                "In Exchange Online PowerShell: New-ServicePrincipal -AppId <client ID> "
                "-ObjectId <object ID of the app under Enterprise applications>."
            ),
            _(
                "Add-MailboxPermission -Identity <mailbox> -User <the service principal's ID> "
                "-AccessRights FullAccess."
            ),
            _(
                "Make sure SMTP AUTH is enabled for the mailbox: Set-CASMailbox <mailbox> "
                "-SmtpClientAuthenticationDisabled $false."
            ),
        ),
        rate_per_minute=30,
        rate_per_day=10_000,
        limits_note=_(
            "Limits filled in from Microsoft's “Exchange Online limits” (sending limits): 30 "
            "messages a minute and 10,000 recipients a day per mailbox."
        ),
    ),
    Provider(
        key="outlook_personal",
        name=_("Outlook.com / Hotmail (personal account)"),
        host="smtp-mail.outlook.com",
        port=587,
        security="starttls",
        note=_(
            "Personal Microsoft accounts (outlook.com, hotmail.com, live.com) no longer accept a "
            "password for SMTP and need delegated OAuth, where a person signs in in a browser; "
            "this product does not offer that. Use a Microsoft 365 business mailbox with OAuth2, "
            "or a sending service (Amazon SES, SendGrid, Mailgun) instead."
        ),
    ),
    Provider(
        key="gmail",
        name=_("Gmail / Google Workspace"),
        host="smtp.gmail.com",
        port=587,
        security="starttls",
        note=_(
            "Turn on 2-Step Verification for the Google account and create an app password to use "
            'here; the account password does not work and "less secure apps" no longer exists. '
            "Google Workspace can sign in without a password: choose the sign-in method Google "
            "Workspace (OAuth2) and upload a service account's key with domain-wide delegation."
        ),
        host_suffixes=("gmail.com", "googlemail.com"),
        auth_hint=_(
            "Gmail needs an app password: turn on 2-Step Verification, create an app password "
            "in the Google account's security settings and enter it here."
        ),
        password_label=_("App password (应用专用密码)"),
        rate_per_day=2_000,
        limits_note=_(
            "Limits filled in from Google Workspace's “Gmail sending limits”: 2,000 messages a "
            "day per user. A personal Gmail account allows about 500: lower it for one."
        ),
    ),
    Provider(
        key="ses",
        name=_("Amazon SES"),
        host="email-smtp.us-east-1.amazonaws.com",
        port=587,
        security="starttls",
        note=_(
            "The host is regional: change us-east-1 to your SES region. Use SMTP credentials "
            "created in the SES console; they are not your IAM access key. The From address or "
            "its domain must be a verified identity."
        ),
        host_suffixes=("amazonaws.com",),
        auth_hint=_(
            "Use the SMTP credentials created in the SES console for this region (they are not the "
            "IAM access key and secret), and check that the host's region matches them."
        ),
        rate_per_minute=60,
        rate_per_day=200,
        limits_note=_(
            "Limits filled in from Amazon SES's sandbox quotas (“Service quotas in Amazon SES”): "
            "1 message a second and 200 a day. Raise them once the account has production access."
        ),
    ),
    Provider(
        key="sendgrid",
        name=_("SendGrid"),
        host="smtp.sendgrid.net",
        port=587,
        security="starttls",
        note=_(
            'The username is literally "apikey" and the password is an API key with Mail Send '
            "permission. The From address must be a verified sender or domain."
        ),
        host_suffixes=("sendgrid.net",),
        auth_hint=_(
            'The username must be literally "apikey" and the password a valid API key with Mail '
            "Send permission."
        ),
    ),
    Provider(
        key="mailgun",
        name=_("Mailgun"),
        host="smtp.mailgun.org",
        port=587,
        security="starttls",
        note=_(
            "Use the SMTP credentials of your sending domain. Domains in the EU region use "
            "smtp.eu.mailgun.org."
        ),
        host_suffixes=("mailgun.org",),
        auth_hint=_(
            "Use the SMTP login and password of the sending domain, and smtp.eu.mailgun.org for "
            "EU domains."
        ),
    ),
    Provider(
        key="zoho",
        name=_("Zoho Mail"),
        host="smtp.zoho.com",
        port=465,
        security="ssl",
        note=_(
            "With two-factor authentication, use an application-specific password. Accounts in "
            "other data centres use their regional host (smtp.zoho.eu, smtp.zoho.in, …)."
        ),
        host_suffixes=("zoho.com", "zoho.eu", "zoho.in", "zoho.com.au", "zoho.jp", "zoho.com.cn"),
        auth_hint=_(
            "With two-factor authentication use an application-specific password, and the host "
            "of your account's data centre."
        ),
    ),
    Provider(
        key="yahoo",
        name=_("Yahoo Mail"),
        host="smtp.mail.yahoo.com",
        port=465,
        security="ssl",
        note=_("Generate an app password in the Yahoo account security settings and use it here."),
        host_suffixes=("yahoo.com",),
        auth_hint=_("Yahoo needs an app password generated in the account security settings."),
    ),
    Provider(
        key="devsink",
        name=_("Local development sink"),
        host="127.0.0.1",
        port=8025,
        security="none",
        note=_(
            "The development SMTP sink started with the run command: no login, nothing leaves "
            "this machine, messages show up in the admin."
        ),
    ),
    Provider(
        key="custom",
        name=_("Custom"),
        host="",
        port=587,
        security="starttls",
        note="",
    ),
)

_BY_KEY = {provider.key: provider for provider in PROVIDERS}


def get_provider(key: str) -> Provider | None:
    """Return the preset with this key, or None."""
    return _BY_KEY.get(key)


def provider_for_host(host: str) -> Provider | None:
    """Return the preset whose host suffixes match ``host`` (longest suffix wins), or None."""
    host = host.strip().rstrip(".").lower()
    if not host:
        return None
    best: Provider | None = None
    best_length = 0
    for provider in PROVIDERS:
        for suffix in provider.host_suffixes:
            if (host == suffix or host.endswith("." + suffix)) and len(suffix) > best_length:
                best, best_length = provider, len(suffix)
    return best

"""The Simplified Chinese catalogue: complete, compiled, current, and served to Chinese browsers."""

from __future__ import annotations

import gettext
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from tests.availability import require_service

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES"
CHANGE_URL = reverse("admin:notifications_smtpsettings_change", args=[1])
#: How the catalogue is made: the tests, benchmarks and scripts hold nothing an administrator reads.
MAKEMESSAGES = [
    "makemessages",
    "--locale=zh_Hans",
    "--no-obsolete",
    "--add-location=file",
    *("--ignore=tests/*", "--ignore=bench/*", "--ignore=scripts/*", "--ignore=var/*"),
    "--ignore=docs/*",
]


def entries(po: Path) -> list[dict]:
    """The .po file's entries: msgid, msgid_plural, msgstrs and flags (the header included)."""
    parsed = []
    for block in po.read_text(encoding="utf-8").split("\n\n"):
        entry: dict = {"flags": [], "msgstr": {}}
        key = None
        for line in block.splitlines():
            if line.startswith("#,"):
                entry["flags"] += [flag.strip() for flag in line[2:].split(",")]
            elif match := re.match(
                r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d)\])?) "(.*)"$', line
            ):
                key = match.group(1) if match.group(2) is None else int(match.group(2))
                if key == "msgstr":
                    key = 0
                _store(entry, key, match.group(3))
            elif line.startswith('"') and key is not None:
                _store(entry, key, line[1:-1], append=True)
        if "msgid" in entry:
            parsed.append(entry)
    return parsed


PO_ESCAPES = {'\\"': '"', "\\n": "\n", "\\\\": "\\"}


def _store(entry: dict, key, text: str, *, append: bool = False) -> None:
    text = re.sub(r'\\["n\\]', lambda escape: PO_ESCAPES[escape.group()], text)
    target = entry["msgstr"] if isinstance(key, int) else entry
    target[key] = target.get(key, "") + text if append else text


def test_every_message_is_translated_and_none_is_fuzzy():
    catalogue = entries(MESSAGES / "django.po")
    assert len(catalogue) > 250
    fuzzy = [e["msgid"] for e in catalogue if "fuzzy" in e["flags"]]
    untranslated = [e["msgid"] for e in catalogue if e["msgid"] and not all(e["msgstr"].values())]
    assert fuzzy == []
    assert untranslated == []


def test_the_compiled_catalogue_matches_the_po_file():
    with (MESSAGES / "django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    for entry in entries(MESSAGES / "django.po"):
        if not entry["msgid"]:
            continue
        if "msgid_plural" in entry:
            got = compiled.ngettext(entry["msgid"], entry["msgid_plural"], 1)
        else:
            got = compiled.gettext(entry["msgid"])
        assert got == entry["msgstr"][0], f"run compilemessages: {entry['msgid']!r} is stale"


def test_placeholders_survive_translation():
    for entry in entries(MESSAGES / "django.po"):
        expected = sorted(re.findall(r"%(?:\(\w+\))?[sd]", entry["msgid"]))
        for text in entry["msgstr"].values():
            assert sorted(re.findall(r"%(?:\(\w+\))?[sd]", text)) == expected, entry["msgid"]


def test_makemessages_finds_no_string_missing_from_the_catalogue(tmp_path):
    """A string added to the code without a translation fails here (needs GNU gettext)."""
    require_service(shutil.which("xgettext") is not None, "GNU gettext", "apt-get install gettext")
    copy = tmp_path / "project"
    for name in ("config", "notifications", "devsink", "templates", "locale"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "manage.py", copy / "manage.py")
    subprocess.run(
        [sys.executable, "manage.py", *MAKEMESSAGES],
        cwd=copy,
        check=True,
        capture_output=True,
        env={"DJANGO_SETTINGS_MODULE": "config.settings.test", "PATH": "/usr/bin:/bin"},
    )
    current = {e["msgid"] for e in entries(copy / "locale/zh_Hans/LC_MESSAGES/django.po")}
    stored = {e["msgid"] for e in entries(MESSAGES / "django.po")}
    assert current - stored == set(), "run makemessages and translate the new strings"


@pytest.mark.django_db
def test_a_chinese_browser_gets_the_settings_page_in_chinese(admin_client):
    html = admin_client.get(CHANGE_URL, headers={"Accept-Language": "zh-CN,zh;q=0.9"}).content
    page = html.decode()
    assert '<html lang="zh-hans"' in page
    for text in ("SMTP 设置", "运行状况", "服务器地址", "加密方式", "发送测试邮件", "服务商预设"):
        assert text in page


@pytest.mark.django_db
def test_without_a_chinese_preference_the_page_stays_english(admin_client):
    page = admin_client.get(CHANGE_URL, headers={"Accept-Language": "fr-FR"}).content.decode()
    assert '<html lang="en"' in page and "Health" in page and "运行状况" not in page

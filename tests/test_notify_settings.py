"""The creator's notification settings and what they see of the notices: channel settings
that can never work are config errors naming file:line and the fix; ``doctor`` reports
failing notices at once, with their channel and error, and looks at each channel."""

# Expected messages read best one per line, so long lines are allowed here.
# ruff: noqa: E501

from __future__ import annotations

import pytest

from instaset.config import parse_config_text
from tests.config_helpers import problems

TOKEN = "bot123456:AAHsecretTOKEN"


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "webhook_url must be an http(s) URL without spaces"),
    ("ftp://example.com/hook", "webhook_url must be an http(s) URL without spaces"),
    ("127.0.0.1:18901/hook", "webhook_url must be an http(s) URL without spaces"),
    (f"https://api.telegram.org/{TOKEN} /sendMessage", "webhook_url must be an http(s) URL without spaces"),
    (f"http://127.0.0.1:99999/{TOKEN}/x", "webhook_url is not a valid URL (check the host and the port)"),
])
def test_a_webhook_url_that_is_no_http_url_is_an_error(url: str, message: str) -> None:
    [line] = problems(f"notify:\n  desktop: false\n  webhook_url: \"{url}\"\n")
    assert line.startswith(f"config.yaml:3:16: notify.webhook_url: {message}")
    assert TOKEN not in line  # a chat webhook's URL carries its token: never repeated


def test_http_and_https_webhook_urls_are_fine() -> None:
    for url in ("https://api.telegram.org/bot1:AA/sendMessage?chat_id=42",
                "http://127.0.0.1:18901/hook", "https://hooks.slack.com/services/T0/B0/x"):
        config = parse_config_text(f"notify:\n  webhook_url: \"{url}\"\n", "config.yaml", {})
        assert config.notify.webhook_url is not None


SMTP = "notify:\n  smtp:\n    host: smtp.example.com\n{extra}    from_addr: {sender}\n    to_addr: {to}\n"


def test_smtp_port_465_is_refused_with_the_fix() -> None:
    """smtplib.SMTP (plain, then STARTTLS) waits forever for a greeting on an implicit-TLS
    port: every notice would fail, retried for a day."""
    [line] = problems(SMTP.format(extra="    port: 465\n", sender="a@example.com",
                                  to="me@example.com"))
    assert line == (
        "config.yaml:4:11: notify.smtp.port: port 465 is SMTP over implicit TLS, which instaset"
        " does not speak (it connects in plain and upgrades with STARTTLS): use port 587 with"
        " starttls: true, which mail providers offer beside 465")


@pytest.mark.parametrize(("sender", "to", "where"), [
    ("a@example.com", "not-an-address", "config.yaml:5:14: notify.smtp.to_addr: to_addr"),
    ("instaset", "me@example.com", "config.yaml:4:16: notify.smtp.from_addr: from_addr"),
    ("a@example.com", "me@example.com, nobody", "config.yaml:5:14: notify.smtp.to_addr: to_addr"),
])
def test_smtp_addresses_must_be_addresses(sender: str, to: str, where: str) -> None:
    [line] = problems(SMTP.format(extra="", sender=sender, to=f"\"{to}\""))
    assert line == (f"{where} must be an email address, e.g. me@example.com (several:"
                    " comma-separated)")


def test_working_smtp_settings_are_fine() -> None:
    for sender, to in (("a@example.com", "me@example.com"),
                       ("\"instaset <a@example.com>\"", "\"me@example.com, you@example.org\""),
                       ("root@localhost", "me@localhost")):
        config = parse_config_text(SMTP.format(extra="    port: 25\n", sender=sender, to=to),
                                   "config.yaml", {})
        assert config.notify.smtp is not None and config.notify.smtp.port == 25

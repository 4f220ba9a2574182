"""A real browser (headless Chromium through Playwright): sign up, confirm, unsubscribe; the newsletter on a phone.

Needs Debian's chromium at /usr/bin/chromium (Playwright's own browser download is not used).
Without it these tests are skipped, except under CI, where a missing browser is a failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from browser_support import Offline, fits
from playwright.sync_api import Browser, Page
from web_server import WebServer

from newsletter.issue import parse_issue
from newsletter.mails import build_mail
from newsletter.merge import recipient_values
from newsletter.render import render_issue
from newsletter.tokens import unsubscribe_url
from newsletter.workspace import Workspace

pytestmark = pytest.mark.browser

BASE = "https://newsletter.praxis.example.org"
WIDTHS = (375, 640)


@pytest.fixture
def web(ws: Workspace) -> Iterator[WebServer]:
    server = WebServer(ws).start()
    yield server
    server.stop()


def local(web: WebServer, url: str) -> str:
    """The link from a mail (on base_url), opened on the test server instead."""
    assert url.startswith(BASE + "/"), url
    return web.url + url[len(BASE):]


def link_in_mail(path: Path, kind: str) -> str:
    mail = message_from_bytes(path.read_bytes(), policy=policy.default)
    text = mail.get_body(("plain",)).get_content()
    [link] = re.findall(rf"{re.escape(BASE)}/{kind}/\S+", text)
    return link


def test_sign_up_confirm_and_unsubscribe_in_a_browser(ws: Workspace, web: WebServer, page: Page,
                                                      offline: Offline) -> None:
    people = ws.store()
    page.goto(web.url + "/subscribe")
    assert page.locator("h1").inner_text() == "Newsletter abonnieren"
    assert page.get_by_text("Ja, ich möchte den Newsletter erhalten.").is_visible()
    assert fits(page)
    honeypot = page.locator("#website").bounding_box()
    assert honeypot is None or honeypot["x"] + honeypot["width"] <= 0  # people never see the trap
    page.get_by_label("E-Mail-Adresse").fill("bea@example.org")
    page.get_by_label("Vorname (freiwillig)").fill("Bea „Bee“ Müller")
    page.get_by_label("Ja, ich möchte den Newsletter erhalten.").check()
    page.get_by_role("button", name="Anmelden").click()
    assert page.locator("h1").inner_text() == "Fast geschafft"
    assert "Bitte schau in dein Postfach" in page.content()
    bea = people.load().get("bea@example.org")
    # The browser is on 127.0.0.1, not on one of her hosts: no evidence of a page is recorded.
    assert (bea.status, bea.name, bea.signup_page) == ("pending", "Bea „Bee“ Müller", "")

    web.app.signups.settle()  # the mail goes out after the answer
    confirm = link_in_mail(ws.outbox_dir / "web" / "confirm" / "bea@example.org.eml", "c")
    page.goto(local(web, confirm))
    assert page.locator("h1").inner_text() == "Anmeldung bestätigen"
    assert people.load().get("bea@example.org").status == "pending"  # opening the link is not consent
    page.get_by_role("button", name="Ja, Anmeldung bestätigen").click()
    assert page.locator("h1").inner_text() == "Schön, dass du dabei bist"
    assert fits(page)
    bea = people.load().get("bea@example.org")
    assert bea.status == "active" and bea.confirmed_at is not None and bea.confirm_ip == "127.0.0.1"
    assert bea.consent_text == "Ja, ich möchte den Newsletter erhalten." and bea.consent_version == "1"

    web.app.signups.settle()
    leave = link_in_mail(ws.outbox_dir / "web" / "welcome" / "bea@example.org.eml", "u")
    assert leave == unsubscribe_url(BASE, ws.secret(), bea.id)
    page.goto(local(web, leave))
    assert page.locator("h1").inner_text() == "Newsletter abbestellen?"
    assert people.load().get("bea@example.org").status == "active"
    page.get_by_role("button", name="Ja, abbestellen").click()
    assert page.locator("h1").inner_text() == "Du bist abgemeldet"
    assert "ab jetzt nicht mehr" in page.locator(".card").inner_text()
    assert people.load().get("bea@example.org").status == "unsubscribed"
    assert offline.blocked == []


def test_browser_form_without_consent_is_not_sent(ws: Workspace, web: WebServer, page: Page) -> None:
    page.goto(web.url + "/subscribe")
    page.get_by_label("E-Mail-Adresse").fill("ohne@example.org")
    page.get_by_role("button", name="Anmelden").click()  # the required checkbox stops the browser
    assert page.locator("h1").inner_text() == "Newsletter abonnieren"
    assert ws.store().load().get("ohne@example.org") is None


@pytest.mark.parametrize("width", WIDTHS)
def test_example_newsletter_fits_phone_and_small_screens(example_workspace: Path, browser: Browser,
                                                         offline: Offline, width: int) -> None:
    ws = Workspace(example_workspace)
    rendered = render_issue(ws, parse_issue(ws.issues_dir / "2026-12-innehalten.md"))
    url = unsubscribe_url(ws.config.base_url, b"test secret", "abcdefghijklmnop")
    html, _ = rendered.personalize(recipient_values("alex@example.org", "Alex Beispiel", url))
    context = browser.new_context(viewport={"width": width, "height": 800})
    context.route("**/*", offline)
    try:
        page = context.new_page()
        page.set_content(html, wait_until="load")
        assert page.evaluate("window.innerWidth") == width
        assert fits(page), page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert "Innehalten ist kein Stillstand" in page.locator("body").inner_text()
    finally:
        context.close()
    assert offline.blocked == []  # no fonts, pixels or anything else from elsewhere


@pytest.mark.parametrize("width", WIDTHS)
def test_pages_and_confirmation_mail_fit(ws: Workspace, web: WebServer, browser: Browser, width: int) -> None:
    mail = build_mail(ws, "confirm", "anna@example.org", {"confirm_url": f"{BASE}/c/{'x' * 60}", "confirm_days": 7})
    html = message_from_bytes(mail.data, policy=policy.default).get_body(("html",)).get_content()
    context = browser.new_context(viewport={"width": width, "height": 800}, java_script_enabled=False)
    try:
        page = context.new_page()
        for path in ("/subscribe", "/u/kaputt", "/nirgends"):
            page.goto(web.url + path)
            assert fits(page), path
        page.set_content(html)
        assert fits(page), "confirmation mail"
    finally:
        context.close()

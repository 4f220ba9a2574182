"""The archive as a reader sees it: served by `newsletter serve`, opened in headless Chromium on a phone."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import pytest
from browser_support import fits
from conftest import invoke, write_issue
from playwright.sync_api import Page
from test_browser import BASE
from test_send import add_people
from web_server import WebServer

from newsletter.archive import page_url
from newsletter.issue import parse_issue
from newsletter.workspace import Workspace

pytestmark = pytest.mark.browser


@pytest.fixture
def served(ws: Workspace, runner) -> WebServer:
    add_people(ws, [("anna@example.org", "Anna Beispiel", "active")])
    for month in ("2026-11", "2026-12"):
        write_issue(ws, f"{month}-impuls", "Hallo {{ first_name | default(\"du\") }},\n\n"
                    + "Ein langer Absatz über Selbstfürsorgefähigkeitsentwicklungsräume. " * 20 + "\n",
                    subject=f"Impuls {month}", date=f"{month}-01")
        assert invoke(runner, "send", f"issues/{month}-impuls.md", "--yes").exit_code == 0
    server = WebServer(ws).start()
    yield server
    server.stop()


def internal_links(page: Page, base: str) -> list[str]:
    """Every link on the page that points into the archive or to our own endpoint, made absolute."""
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
    links = []
    for href in hrefs:
        absolute = urljoin(base, href)
        if absolute.startswith(BASE):
            absolute = absolute.replace(BASE, base.split("/archiv/")[0], 1)
        if absolute.startswith("http://127.0.0.1"):
            links.append(absolute)
    return links


def test_archive_pages_fit_a_phone_and_links_resolve(ws: Workspace, served: WebServer, page: Page) -> None:
    index_url = served.url + "/archiv/"
    response = page.goto(index_url)
    assert response.status == 200 and response.headers["content-type"].startswith("text/html")
    assert fits(page)
    assert page.get_by_role("link", name="Impuls 2026-12").is_visible()
    links = internal_links(page, index_url)
    assert f"{served.url}/archiv/2026-12-impuls.html" in links and f"{served.url}/subscribe" in links
    for link in links:
        assert served.request("GET", link).status == 200, link

    page.get_by_role("link", name="Impuls 2026-12").click()
    assert page.url == f"{served.url}/archiv/2026-12-impuls.html"
    assert fits(page)
    assert "Hallo du," in page.inner_text("body")
    links = internal_links(page, page.url)
    assert f"{served.url}/archiv/index.html" in links
    for link in links:
        assert served.request("GET", link).status == 200, link


def test_web_version_link_of_a_sent_mail_opens_the_page(ws: Workspace, served: WebServer, page: Page) -> None:
    raw = (ws.outbox_dir / "2026-12-impuls" / "anna@example.org.eml").read_text()
    url = page_url(ws, parse_issue(ws.issues_dir / "2026-12-impuls.md"))
    assert url in raw.replace("=\n", "")
    local = served.url + url[len(BASE):]
    assert page.goto(local).status == 200
    assert re.search("Impuls 2026-12", page.title())
    feed = served.request("GET", "/archiv/feed.xml")
    assert feed.status == 200 and feed.headers["Content-Type"].startswith("application/atom+xml")
    assert "max-age" in feed.headers["Cache-Control"]
    again = served.request("GET", "/archiv/feed.xml", headers={"If-None-Match": feed.headers["ETag"]})
    assert again.status == 304 and again.body == b""


def test_archive_without_trailing_slash_redirects(ws: Workspace, served: WebServer) -> None:
    reply = served.request("GET", "/archiv")
    assert reply.status == 308 and reply.headers["Location"] == "/archiv/"

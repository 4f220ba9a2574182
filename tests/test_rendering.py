"""The finished HTML in every inbox: Outlook's image sizes and button, dark mode, the preview text,
and the confirmation and welcome mails in the issues' design. Checked on the real output, and
in headless Chromium with dark mode emulated (contrast computed from the computed styles)."""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess
import sys
import zlib
from email import message_from_bytes, policy

import pytest
from browser_support import Offline
from conftest import write_issue
from playwright.sync_api import Browser

from newsletter.changes import CONFIRM_MAIL, WELCOME_MAIL
from newsletter.issue import parse_issue
from newsletter.mails import build_mail
from newsletter.merge import recipient_values
from newsletter.render import COLUMN_WIDTH, render_issue
from newsletter.workspace import Workspace

BASE = "https://newsletter.praxis.example.org"
CONFIRM_URL = f"{BASE}/c/{'x' * 24}.1796192961.{'y' * 22}"


def png(width: int, height: int) -> str:
    """A real PNG of that size as a data: URL, so the browser needs no network for it."""
    row = b"\x00" + b"\x80\xa0\x90" * width
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(data).decode()


PHOTO, LOGO = png(1200, 300), png(120, 40)
BODY = f"""\
Hallo {{{{ first_name | default("du") }}}},

ein Foto vom Garten, 1200 Pixel breit:

![Der Garten im Dezember]({PHOTO})

<img src="{LOGO}" alt="Logo der Praxis" width="120" height="40">

<img src="{PHOTO}" alt="Noch einmal der Garten" width="900" height="225">

## Eine Übung

> Erst wenn wir langsamer werden, kann unser Nervensystem merken, dass die Gefahr vorbei ist.

| Tag | Übung |
|-----|-------|
| Montag | Atmen |

Mehr dazu im [Artikel](https://praxis.example.org/artikel) und ein `Code`.
"""


def issue_html(ws: Workspace) -> str:
    path = write_issue(ws, "2026-12-garten", BODY, preheader="Warum Pausen keine Schwäche sind",
                       button_text="Zum Online-Abend am 14. Dezember",
                       button_url="https://praxis.example.org/abend")
    rendered = render_issue(ws, parse_issue(path))
    return rendered.personalize(recipient_values("anna@example.org", "Anna Müller", f"{BASE}/u/TOKEN"))[0]


def mail_html(ws: Workspace, kind: str) -> str:
    if kind == CONFIRM_MAIL:
        mail = build_mail(ws, CONFIRM_MAIL, "anna@example.org", {"confirm_url": CONFIRM_URL, "confirm_days": 7})
    else:
        leave = f"{BASE}/u/{'z' * 40}"
        mail = build_mail(ws, WELCOME_MAIL, "anna@example.org", {"unsubscribe_url": leave}, unsubscribe_url=leave)
    return message_from_bytes(mail.data, policy=policy.default).get_body(("html",)).get_content()


def test_every_image_has_a_numeric_width_for_outlook(ws: Workspace) -> None:
    images = re.findall(r"<img\b[^>]*>", issue_html(ws))
    assert len(images) == 3
    widths = [int(re.search(r'\swidth="(\d+)"', tag).group(1)) for tag in images]
    assert widths == [COLUMN_WIDTH, 120, COLUMN_WIDTH]  # the column, or the image's own smaller one
    assert all('height="auto"' not in tag and 'width="auto"' not in tag for tag in images)
    assert 'height="40"' in images[1] and "height=" not in images[2].replace("height:auto", "")
    assert all("max-width:100%" in tag.replace(" ", "") for tag in images)  # phones still shrink them


def test_dark_mode_is_declared_and_survives_inlining(ws: Workspace) -> None:
    for html in (issue_html(ws), mail_html(ws, CONFIRM_MAIL), mail_html(ws, WELCOME_MAIL)):
        head = html.split("</head>", 1)[0]
        assert '<meta name="color-scheme" content="light dark">' in head
        assert '<meta name="supported-color-schemes" content="light dark">' in head
        assert "color-scheme: light dark" in head
        [dark] = [block for block in re.findall(r"@media \(prefers-color-scheme: dark\) \{(?:[^{}]*\{[^{}]*\})+", head)
                  if ".page" in block]
        for part in (".page", ".card", ".content div", ".content a", ".button-cell", ".footer"):
            assert part in dark
        assert dark.count("!important") >= 10  # beats the inlined light colours
        assert 'data-premailer' not in html


def test_preview_text_is_hidden_in_the_page_colour_and_followed_by_a_spacer(ws: Workspace) -> None:
    html = issue_html(ws)
    body = html.split("<body", 1)[1]
    hidden = re.findall(r'<div class="preheader" style="([^"]*)">([^<]*)</div>', body)
    assert len(hidden) == 2 and hidden[0][1] == "Warum Pausen keine Schwäche sind"
    assert hidden[1][1].count("\u200c") >= 60 and not hidden[1][1].strip("\u034f\u200c\xa0")
    assert body.index("preheader") < body.index("Hallo Anna")
    for style, _ in hidden:
        assert "display:none" in style and "mso-hide:all" in style
        assert "color" not in style and "font-size:1px" not in style  # read by spam filters as hidden text
    assert re.search(r"\.preheader \{ color: #f4f1ec; \}", html)  # the page colour, where it is visible at all
    assert "background-color:#f4f1ec" in body.split(">", 1)[0]


def test_the_button_has_an_outlook_drawing_with_round_corners(ws: Workspace) -> None:
    for html, url, text in ((issue_html(ws), "https://praxis.example.org/abend", "Zum Online-Abend am 14. Dezember"),
                            (mail_html(ws, CONFIRM_MAIL), CONFIRM_URL, "Anmeldung bestätigen")):
        vml = re.search(r"<!--\[if mso\]><v:roundrect ([^>]*)>.*?</v:roundrect><!\[endif\]-->", html, re.S)
        assert vml and f'href="{url}"' in vml.group(1) and 'arcsize="' in vml.group(1)
        assert re.search(r"width:(\d+)px", vml.group(1)) and f">{text}</center>" in vml.group(0)
        assert re.search(rf'<!--\[if !mso\]><!-- -->.*?href="{re.escape(url)}"[^>]*>{text}</a>.*?<!--<!\[endif\]-->',
                         html, re.S)


def test_confirmation_and_welcome_wear_the_issues_design(ws: Workspace) -> None:
    confirm, welcome = mail_html(ws, CONFIRM_MAIL), mail_html(ws, WELCOME_MAIL)
    for html in (confirm, welcome):
        assert 'class="card"' in html and 'class="page"' in html and "IMPULS" in html
        assert "<table" in html and "<!--[if mso | IE]>" in html  # MJML's Outlook tables, not a div layout
        assert "Impressum" in html and "Lindenallee 12" in html
        assert "Newsletter abbestellen</a>" not in html  # the footer of an issue is not theirs
    hint = re.search(r'<p class="button-hint"[^>]*>(.*?)</p>', confirm, re.S)
    assert hint and f">{CONFIRM_URL}</a>" in hint.group(1)  # the link as text below the button
    assert confirm.index("Anmeldung bestätigen</a>") < confirm.index('class="button-hint"') \
        < confirm.rindex("Der Link gilt 7 Tage")
    assert "Ein Klick noch, dann bist du dabei" in confirm.split("<body", 1)[1][:2000]


def test_a_workspace_design_from_before_keeps_mails_correct(ws: Workspace) -> None:
    """An older newsletter.mjml copy knows no `mail`: the single mails take the shipped design."""
    old = (ws.templates_dir / "newsletter.mjml").read_text(encoding="utf-8")
    (ws.templates_dir / "newsletter.mjml").write_text(re.sub(r"\bmail\b", "post", old), encoding="utf-8")
    ws.__dict__.pop("templates", None)
    html = mail_html(ws, CONFIRM_MAIL)
    assert "Anmeldung bestätigen</a>" in html and "abbestellen" not in html


# The contrast of every visible text against the background it really stands on (WCAG 2).
CONTRAST_JS = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    const el = node.parentElement, text = node.textContent.trim();
    if (!text || !el.getClientRects().length || el.closest('.preheader')) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || Number(style.opacity) === 0) continue;
    const fg = lum(rgb(style.color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    found.push({text: text.slice(0, 40), ratio});
  }
  const of = selector => lum(background(document.querySelector(selector)));
  const wide = document.documentElement.scrollWidth > window.innerWidth;
  return {page: of('.page'), card: of('.card'), texts: found, wide};
}"""


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["dark", "light"])
@pytest.mark.parametrize("kind", ["issue", CONFIRM_MAIL, WELCOME_MAIL])
def test_readable_in_dark_and_light_mode_on_a_phone(ws: Workspace, browser: Browser, offline: Offline,
                                                    scheme: str, kind: str) -> None:
    html = issue_html(ws) if kind == "issue" else mail_html(ws, kind)
    context = browser.new_context(viewport={"width": 375, "height": 800}, color_scheme=scheme)
    context.route("**/*", offline)
    try:
        page = context.new_page()
        page.set_content(html, wait_until="load")
        seen = page.evaluate(CONTRAST_JS)
    finally:
        context.close()
    assert not seen["wide"], "horizontal scrolling at 375 px"
    if scheme == "dark":
        assert seen["page"] < 0.03 and seen["card"] < 0.03  # a dark page, not a white one
    else:
        assert seen["page"] > 0.8 and seen["card"] == 1.0
    texts = seen["texts"]
    assert len(texts) > 10 and any(t["text"].startswith("Impressum") for t in texts)
    poor = [t for t in texts if t["ratio"] < 4.5]
    assert not poor, poor
    assert offline.blocked == []


REMEMBERED = r"""
import sys
from pathlib import Path
from newsletter.issue import parse_issue
from newsletter.render import render_issue
from newsletter.workspace import Workspace
ws = Workspace(Path("."))
html = render_issue(ws, parse_issue(Path(sys.argv[1]))).html
print("premailer" in sys.modules, "cssutils" in sys.modules)
sys.stdout.write(html)
"""


def test_preview_check_and_send_inline_one_issue_once(ws: Workspace) -> None:
    """The second render of the same issue takes the inlined HTML premailer made the first time
    (no premailer, no cssutils in that process), byte for byte; an edit to the design is
    inlined anew, and a cache that cannot be written is no error."""
    issue = write_issue(ws, "2026-12-impuls", "Hallo {{ first_name }}, ein Impuls.\n")

    def render() -> tuple[str, str]:
        result = subprocess.run([sys.executable, "-c", REMEMBERED, str(issue)], cwd=ws.root, capture_output=True,
                                text=True, check=True)
        loaded, _, html = result.stdout.partition("\n")
        return loaded, html

    first_loaded, first = render()
    assert first_loaded == "True True"
    assert list((ws.cache_dir).glob("inlined-*.html"))
    second_loaded, second = render()
    assert second_loaded == "False False" and second == first
    assert 'style="' in second  # inlined, not the raw MJML output

    (remembered,) = ws.cache_dir.glob("inlined-*.html")
    remembered.write_bytes(remembered.read_bytes()[:2000])  # a power cut cut it short
    cut_loaded, cut = render()
    assert cut_loaded == "True True" and cut == first  # never the half page

    template = ws.root / "templates" / "newsletter.mjml"
    template.write_text(template.read_text(encoding="utf-8").replace("</mj-head>",
                        "<mj-style>.impuls-test { color: #123456; }</mj-style></mj-head>"), encoding="utf-8")
    edited_loaded, edited = render()
    assert edited_loaded == "True True" and ".impuls-test" in edited

    shutil.rmtree(ws.cache_dir)
    ws.cache_dir.write_text("kein Ordner")  # state/cache is a file: nothing can be remembered
    unwritable_loaded, unwritable = render()
    assert unwritable_loaded == "True True" and unwritable == edited

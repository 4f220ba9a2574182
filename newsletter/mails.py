"""Single mails to one person (sign-up confirmation, welcome): a Markdown template → one correct message.

It wears the issues' design (templates/newsletter.mjml with `mail` true: card, imprint,
a real button) and is built whole with `EmailMessage` under `email.policy.SMTP`: one
message at a time, so speed does not matter. The standard library writes the
quoted-printable UTF-8 bodies; Subject and names come from our own encoder
(newsletter.headers), as in every issue.
"""

from __future__ import annotations

import re
import secrets
import tomllib
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from newsletter.config import toml_error_text
from newsletter.errors import NewsletterError
from newsletter.headers import ascii_address, encode_text
from newsletter.message import address_header, list_id_value
from newsletter.render import PlainText, markdown, mjml_to_html
from newsletter.texts import texts
from newsletter.tokens import UNSUBSCRIBE_WORD
from newsletter.workspace import Workspace, default_templates_dir

FENCE = "+++"
# The standard SMTP policy, with quoted-printable lines of at most 76 bytes (RFC 2045) instead of 78;
# headers given raw (set_raw) are written as they are, which keeps List-Unsubscribe on one line.
POLICY = SMTP.clone(max_line_length=76, refold_source="none")
BUTTON_MARK = "NLBUTTONQ"  # where {{ button }} stood; letters only, so Markdown leaves it alone


def mail_design(workspace: Workspace) -> jinja2.Template:
    """newsletter.mjml frames the single mails too; a workspace's copy from before it knew
    about them (no `mail` in it) would show an empty unsubscribe link, so the shipped one does."""
    template = workspace.templates.get_template("newsletter.mjml")
    if template.filename and re.search(r"\bmail\b", Path(template.filename).read_text(encoding="utf-8")):
        return template
    shipped = jinja2.Environment(loader=jinja2.FileSystemLoader(default_templates_dir()),
                                 autoescape=jinja2.select_autoescape(["html", "mjml", "xml"]),
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return shipped.get_template("newsletter.mjml")


@dataclass(frozen=True)
class Mail:
    """A finished message and the addresses it travels between."""

    envelope_from: str
    envelope_to: str
    subject: str
    data: bytes


def template_name(workspace: Workspace, kind: str) -> str:
    """`confirm.en.md` for an English newsletter if there is one, else `confirm.md`."""
    language = workspace.config.newsletter.language
    if language != "de":
        localized = f"{kind}.{language}.md"
        try:
            workspace.template_source(localized)
        except NewsletterError:
            pass
        else:
            return localized
    return f"{kind}.md"


@dataclass(frozen=True)
class Button:
    """The one action of a single mail ("Anmeldung bestätigen"); the hint shows its link as text below it."""

    text: str
    url: str
    hint: str = ""


def build_mail(workspace: Workspace, kind: str, to: str, values: dict[str, Any],
               unsubscribe_url: str = "", message_id: str = "") -> Mail:
    """Fill templates/<kind>.md with `values` and wrap it as a message to `to`.

    The front matter is split off before Jinja runs, so a value with quotes cannot break the TOML.
    Its `button_text` and `button_url` make a button; `{{ button }}` in the text says where
    (else it follows the text). With an unsubscribe_url (mails to subscribers), the list
    headers of every issue are added.
    """
    config = workspace.config
    name = template_name(workspace, kind)
    meta, body = split_front_matter(name, workspace.template_source(name))
    context = {"newsletter": config.newsletter, "language": config.newsletter.language,
               "button": BUTTON_MARK, **values}

    def fill(key: str) -> str:
        return " ".join(workspace.templates.from_string(str(meta.get(key, ""))).render(context).split())

    try:
        subject, preheader = fill("subject"), fill("preheader")
        button = Button(fill("button_text"), fill("button_url"), fill("button_hint"))
        body = workspace.templates.from_string(body).render(context)
    except jinja2.TemplateError as exc:
        raise NewsletterError(f"templates/{name}: {exc}") from None
    if not subject:
        raise NewsletterError(f"templates/{name}: subject fehlt im Kopfbereich zwischen den +++-Zeilen")
    if bool(button.text) != bool(button.url):
        raise NewsletterError(f"templates/{name}: button_text und button_url gehören zusammen")
    return compose(workspace, to, subject, body, unsubscribe_url, preheader=preheader,
                   button=button if button.url else None, message_id=message_id)


def split_front_matter(name: str, text: str) -> tuple[dict[str, Any], str]:
    """The TOML between the first two `+++` lines, and the Markdown after them."""
    lines = text.lstrip("\n").split("\n")
    if not lines or lines[0].strip() != FENCE:
        raise NewsletterError(f"templates/{name}: muss mit einer Zeile „+++“ beginnen (Kopfbereich mit subject)")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == FENCE), None)
    if end is None:
        raise NewsletterError(f"templates/{name}: der Kopfbereich wird nicht mit „+++“ geschlossen")
    try:
        meta = tomllib.loads("\n".join(lines[1:end]))
    except tomllib.TOMLDecodeError as exc:
        raise NewsletterError(f"templates/{name}: {toml_error_text(exc, line_offset=1)}") from None
    return meta, "\n".join(lines[end + 1:]).strip() + "\n"


def new_message_id(domain: str) -> str:
    return f"<{secrets.token_hex(12)}@{domain}>"


def compose(workspace: Workspace, to: str, subject: str, body: str, unsubscribe_url: str = "",
            preheader: str = "", button: Button | None = None, message_id: str = "") -> Mail:
    """multipart/alternative (text first, then HTML in the issues' design), From/Message-ID on the sender's domain.

    `message_id` is one chosen earlier (a sign-up's history names its mail before it is built)."""
    config = workspace.config
    nl = config.newsletter
    language = nl.language
    md = markdown(language)
    tokens = md.parse(body)
    context = {"newsletter": nl, "imprint": config.imprint, "t": texts(language),
               "language": language, "subject": subject}
    from markdown_it.tree import SyntaxTreeNode

    body_text = PlainText(language).render(SyntaxTreeNode(tokens))
    body_html = md.renderer.render(tokens, md.options, {})
    if button:
        button_html = str(workspace.templates.get_template("button.html").module.button(  # type: ignore[attr-defined]
            button.url, button.text, button.hint))
        if BUTTON_MARK in body_html:
            body_html = re.sub(rf"<p>\s*{BUTTON_MARK}\s*</p>", lambda _: button_html, body_html)
        else:
            body_html += button_html
        button_line = f"{button.text}: {button.url}"
        body_text = body_text.replace(BUTTON_MARK, button_line) if BUTTON_MARK in body_text \
            else f"{body_text}\n\n{button_line}"
    text = workspace.templates.get_template("mail.txt").render(**context, body_text=body_text)
    page = {**context, "preheader": preheader, "issue": {"button_text": "", "button_url": ""}, "page": None,
            "web_url": "", "unsubscribe_url": "", "why": "", "mail": True,
            "body_html": markupsafe.Markup(body_html)}  # noqa: S704 - the template's own Markdown
    html = mjml_to_html(workspace, page, template=mail_design(workspace))

    sender = ascii_address(nl.from_email)
    domain = sender.rpartition("@")[2]
    message = EmailMessage(policy=POLICY)
    # Written raw by our own encoder, as MessageFactory writes them: the policy's folder
    # loses or doubles spaces next to encoded words (newsletter.headers).
    message.set_raw("From", address_header(nl.from_name, sender, "From"))
    message.set_raw("To", address_header("", to))
    if nl.reply_to:
        message.set_raw("Reply-To", address_header("", nl.reply_to, "Reply-To"))
    message.set_raw("Subject", encode_text(subject, "Subject"))
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = message_id or new_message_id(domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    if unsubscribe_url:  # as MessageFactory writes them: one line each, never encoded
        message.set_raw("List-Id", list_id_value(nl.name, config.list_id))
        word = UNSUBSCRIBE_WORD.get(nl.language, "Abmelden")  # the token is the link's last part
        message.set_raw("List-Unsubscribe", f"<{unsubscribe_url}>, "
                                            f"<mailto:{sender}?subject={word}%20{unsubscribe_url.rsplit('/', 1)[1]}>")
        message.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in message.iter_parts():
        del part["MIME-Version"]  # add_alternative copies it into the part; it belongs on top only
    return Mail(envelope_from=sender, envelope_to=ascii_address(to), subject=subject,
                data=message.as_bytes(policy=POLICY))

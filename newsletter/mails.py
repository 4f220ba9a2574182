"""Single mails to one person (sign-up confirmation, welcome): a Markdown template → one correct message.

Unlike an issue, such a mail is built whole with `EmailMessage` under `email.policy.SMTP`:
one message at a time, so speed does not matter and the standard library's encoder can do
the work (RFC 2047 headers, quoted-printable UTF-8 bodies, lines ≤ 76, pure ASCII).
"""

from __future__ import annotations

import secrets
import tomllib
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Any

import jinja2
import markupsafe
from markdown_it.tree import SyntaxTreeNode

from newsletter.config import toml_error_text
from newsletter.errors import NewsletterError
from newsletter.headers import encode_text
from newsletter.message import address_header, ascii_address, list_id_value
from newsletter.render import PlainText, inline_css, markdown
from newsletter.texts import texts
from newsletter.workspace import Workspace

FENCE = "+++"
# The standard SMTP policy, with quoted-printable lines of at most 76 bytes (RFC 2045) instead of 78;
# headers given raw (set_raw) are written as they are, which keeps List-Unsubscribe on one line.
POLICY = SMTP.clone(max_line_length=76, refold_source="none")
CONFIRM_MAIL = "confirm"
WELCOME_MAIL = "welcome"


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


def build_mail(workspace: Workspace, kind: str, to: str, values: dict[str, Any],
               unsubscribe_url: str = "") -> Mail:
    """Fill templates/<kind>.md with `values` and wrap it as a message to `to`.

    The front matter is split off before Jinja runs, so a value with quotes cannot break the TOML.
    With an unsubscribe_url (mails to subscribers), the list headers of every issue are added.
    """
    config = workspace.config
    name = template_name(workspace, kind)
    meta, body = split_front_matter(name, workspace.template_source(name))
    context = {"newsletter": config.newsletter, "language": config.newsletter.language, **values}
    try:
        subject = workspace.templates.from_string(str(meta.get("subject", ""))).render(context)
        body = workspace.templates.from_string(body).render(context)
    except jinja2.TemplateError as exc:
        raise NewsletterError(f"templates/{name}: {exc}") from None
    subject = " ".join(subject.split())
    if not subject:
        raise NewsletterError(f"templates/{name}: subject fehlt im Kopfbereich zwischen den +++-Zeilen")
    return compose(workspace, to, subject, body, unsubscribe_url)


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


def compose(workspace: Workspace, to: str, subject: str, body: str, unsubscribe_url: str = "") -> Mail:
    """multipart/alternative (text first, then HTML), From/Message-ID on the sender's domain."""
    config = workspace.config
    nl = config.newsletter
    language = nl.language
    md = markdown(language)
    tokens = md.parse(body)
    context = {"newsletter": nl, "imprint": config.imprint, "t": texts(language),
               "language": language, "subject": subject}
    body_text = PlainText(language).render(SyntaxTreeNode(tokens))
    text = workspace.templates.get_template("mail.txt").render(**context, body_text=body_text)
    body_html = markupsafe.Markup(md.renderer.render(tokens, md.options, {}))  # noqa: S704 - the template's own Markdown
    html = inline_css(workspace.templates.get_template("mail.html").render(**context, body_html=body_html))

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
    message["Message-ID"] = f"<{secrets.token_hex(12)}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    if unsubscribe_url:  # as MessageFactory writes them: one line each, never encoded
        message.set_raw("List-Id", list_id_value(nl.name, config.list_id))
        message.set_raw("List-Unsubscribe", f"<{unsubscribe_url}>, <mailto:{sender}?subject=unsubscribe>")
        message.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in message.iter_parts():
        del part["MIME-Version"]  # add_alternative copies it into the part; it belongs on top only
    return Mail(envelope_from=sender, envelope_to=ascii_address(to), subject=subject,
                data=message.as_bytes(policy=POLICY))

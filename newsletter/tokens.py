"""Signed tokens for the links in every mail: unsubscribe (forever) and confirm (expiring).

A token is the subscriber id plus an HMAC-SHA256 under the workspace secret, so the web
endpoint can verify it without storing anything, and a forged or damaged token changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

UNSUBSCRIBE = "unsubscribe"
CONFIRM = "confirm"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[0-9]{1,12})?\.[A-Za-z0-9_-]{22}")


def _mac(secret: bytes, purpose: str, payload: str) -> str:
    digest = hmac.new(secret, f"{purpose}\0{payload}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def make_token(secret: bytes, subscriber_id: str, purpose: str = UNSUBSCRIBE,
               issued_at: int | None = None) -> str:
    """`id.mac`, or `id.time.mac` for tokens that expire (confirmation links)."""
    payload = subscriber_id if issued_at is None else f"{subscriber_id}.{issued_at}"
    return f"{payload}.{_mac(secret, purpose, payload)}"


def verify_token(secret: bytes, token: str, purpose: str = UNSUBSCRIBE,
                 max_age: float | None = None, now: float | None = None) -> str | None:
    """The subscriber id if the token is genuine (and young enough), else None."""
    if not _TOKEN.fullmatch(token):
        return None
    payload, _, mac = token.rpartition(".")
    if not hmac.compare_digest(mac, _mac(secret, purpose, payload)):
        return None
    subscriber_id, _, issued = payload.partition(".")
    if max_age is not None:
        if not issued:
            return None
        age = (time.time() if now is None else now) - int(issued)
        if age > max_age or age < -300:
            return None
    elif issued:
        return None
    return subscriber_id


def unsubscribe_url(base_url: str, secret: bytes, subscriber_id: str) -> str:
    return unsubscribe_links(base_url, "", secret, subscriber_id)[0]


UNSUBSCRIBE_WORD = {"de": "Abmelden", "en": "Unsubscribe"}


def unsubscribe_subject(secret: bytes, subscriber_id: str, language: str = "de") -> str:
    """The subject of an unsubscribe by mail: "Abmelden <token>", so `newsletter inbox` can verify
    who asked, whatever address the mail comes from."""
    return unsubscribe_links("", "", secret, subscriber_id, language)[1]


def unsubscribe_mailto(address: str, secret: bytes, subscriber_id: str, language: str = "de") -> str:
    """The mailto: of List-Unsubscribe (Gmail and Apple Mail send it when a reader presses their button)."""
    return unsubscribe_links("", address, secret, subscriber_id, language)[2]


def unsubscribe_links(base_url: str, address: str, secret: bytes, subscriber_id: str,
                      language: str = "de") -> tuple[str, str, str]:
    """The link, the subject by mail and the mailto: of one person, from one token (every message
    carries all three)."""
    token = make_token(secret, subscriber_id)
    subject = f"{UNSUBSCRIBE_WORD.get(language, 'Abmelden')} {token}"
    return f"{base_url.rstrip('/')}/u/{token}", subject, f"mailto:{address}?subject={subject.replace(' ', '%20')}"

"""Double opt-in on the subscriber file: sign-up, confirmation, unsubscribe, and pruning what was never confirmed.

The web app only turns HTTP into calls of `Signups`. Every change of the subscriber file happens
here, through `SubscriberStore.change()` (lock, read, change, atomic write), and mails go out only
after the lock is released, so a slow mail server never holds up a send or an import.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import Any
from urllib.parse import urlsplit

from newsletter.config import Config
from newsletter.errors import NewsletterError, SubscriberError
from newsletter.mails import CONFIRM_MAIL, WELCOME_MAIL, Mail, build_mail
from newsletter.subscribers import (
    ACTIVE,
    CONFIRMED,
    INVITED,
    PENDING,
    SIGNUP,
    UNSUBSCRIBED,
    Event,
    Subscriber,
    SubscriberList,
    SubscriberStore,
    clean_name,
    email_key,
    latest,
    needs_fresh_confirmation,
    normalize_email,
    now,
)
from newsletter.texts import texts
from newsletter.tokens import CONFIRM, UNSUBSCRIBE, make_token, unsubscribe_url, verify_token
from newsletter.transport import make_transport, smtp_password
from newsletter.workspace import Workspace

log = logging.getLogger(__name__)

SOURCE = "web"
DAY = 86400

# What a sign-up, confirmation or unsubscribe came to; the web app picks the page by it.
INVALID = "invalid"      # a form with mistakes, or a link that is forged, damaged or expired
TOO_MANY = "too_many"    # this IP address has signed up too often within the hour
RECEIVED = "received"    # the one answer every acceptable sign-up gets, whatever happened
ASK = "ask"              # the link is good: show the button
DONE = "done"            # confirmed or unsubscribed (now or earlier)


@dataclass(frozen=True)
class SignupForm:
    """What someone typed into the sign-up form; nothing here is trusted yet."""

    email: str
    name: str = ""
    consent: bool = False
    honeypot: str = ""  # a field people never see; bots fill it in
    page: str = ""      # the page the form was on (hidden field or Referer)


@dataclass(frozen=True)
class SignupResult:
    outcome: str
    problems: list[str] = field(default_factory=list)  # keys into texts() for the form


def consent_text(config: Config) -> str:
    """The sentence next to the checkbox, exactly as it is stored with each sign-up."""
    nl = config.newsletter
    return nl.consent_text or texts(nl.language)["consent_default"].format(name=nl.name)


class RateLimit:
    """At most `limit` events per key within `window` seconds; in memory, so a restart forgets."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one event for `key`; False (and not counted) when the limit is reached."""
        moment = self.clock()
        with self._lock:
            if len(self._events) > 10_000:
                self._forget_idle(moment)
            events = self._events.setdefault(key, deque())
            while events and events[0] <= moment - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(moment)
            return True

    def _forget_idle(self, moment: float) -> None:
        for key in [k for k, events in self._events.items() if not events or events[-1] <= moment - self.window]:
            del self._events[key]


class Signups:
    """Sign-up, confirmation and unsubscribe for one workspace, shared by all requests of `serve`."""

    def __init__(self, workspace: Workspace, clock: Callable[[], float] = time.time) -> None:
        self.workspace = workspace
        self.config = workspace.config
        self.secret = workspace.secret()
        self.clock = clock
        web = self.config.web
        self.per_ip = RateLimit(web.signups_per_hour, 3600, clock)
        self.per_address = RateLimit(web.mails_per_address_per_day, DAY, clock)
        self._password: str | None = None  # asked for once (password_command may ask a keyring)
        self.outgoing = MailQueue(self._deliver)

    @property
    def store(self) -> SubscriberStore:
        return SubscriberStore(self.workspace.subscribers_path)

    def sign_up(self, form: SignupForm, ip: str) -> SignupResult:
        """Store a pending sign-up with its consent record and mail the confirmation link.

        Whether the address is new, pending, active or suppressed, the result is the same
        RECEIVED, so the form cannot be used to find out who is on the list.
        """
        problems = []
        try:
            email = normalize_email(form.email)
        except SubscriberError:
            problems.append("signup_bad_email")
        if not form.consent:
            problems.append("signup_no_consent")
        if problems:
            return SignupResult(INVALID, problems)
        if form.honeypot.strip():
            return SignupResult(RECEIVED)
        if not self.per_ip.allow(ip):
            return SignupResult(TOO_MANY)
        if not self.per_address.allow(email_key(email)):
            log.info("Anmeldung: zu viele Bestätigungsmails an dieselbe Adresse, diese übersprungen")
            return SignupResult(RECEIVED)
        details: dict[str, Any] = {
            "signup_ip": ip, "signup_page": signup_page(form.page), "consent_text": consent_text(self.config),
            "consent_version": self.config.newsletter.consent_version,
        }
        signed = Event(SIGNUP, now(), ip=ip, page=details["signup_page"], consent_text=details["consent_text"],
                       consent_version=details["consent_version"])
        with self.store.change() as people:
            if people.is_suppressed(email):
                return SignupResult(RECEIVED)
            person = people.get(email)
            if person is None:
                person = people.add(email, form.name, status=PENDING, source=SOURCE, event=signed, **details)
            elif person.status == ACTIVE:
                return SignupResult(RECEIVED)
            elif person.status == PENDING:  # a second try: this sign-up's consent is the one to confirm
                if clean_name(form.name):
                    people.set_name(person, form.name)
                person.source, person.subscribed_at = SOURCE, now()
                for key, value in details.items():
                    setattr(person, key, value)
                people.record(person, signed)
            # Someone who left stays left, their record untouched, until the mailbox owner
            # confirms: a stranger typing the address into the form changes nothing but this mail.
            mail = confirmation_mail(self.workspace, self.secret, person.id, person.email, int(self.clock()))
            if person.status == PENDING:
                person.invited_at = now()
                people.record(person, invitation(mail))
        self.outgoing.put(mail, CONFIRM_MAIL)  # after the answer: its timing must not tell who is listed
        return SignupResult(RECEIVED)

    def _confirmed_id(self, token: str) -> str | None:
        return verify_token(self.secret, token, CONFIRM, max_age=self.config.web.confirm_days * DAY,
                            now=self.clock())

    def check_confirm(self, token: str) -> str:
        """What the confirmation page should show; changes nothing (mail scanners open links)."""
        subscriber_id = self._confirmed_id(token)
        person = self.store.load().by_id(subscriber_id) if subscriber_id else None
        if person is None or not _may_confirm(person, token):
            return INVALID
        return DONE if person.status == ACTIVE and not needs_fresh_confirmation(person) else ASK

    def confirm(self, token: str, ip: str) -> str:
        """Make a sign-up active, with the time and IP of the confirmation; idempotent.

        Someone who had left comes back only with a link issued after they left, and with a
        fresh consent record: this sign-up's time and the consent text as it is now. Every
        confirmation records the consent text and version in force when it happened; an active
        person imported without evidence ("kein DOI-Nachweis") confirms the same way.
        """
        subscriber_id = self._confirmed_id(token)
        if subscriber_id is None:
            return INVALID
        with self.store.change() as people:
            person = people.by_id(subscriber_id)
            if person is None or not _may_confirm(person, token):
                return INVALID
            if person.status == ACTIVE and not needs_fresh_confirmation(person):
                return DONE
            welcome = person.status != ACTIVE
            if person.status not in (PENDING, ACTIVE):  # the sign-up is known by its link alone
                person.source, person.subscribed_at = SOURCE, _issued_at(token)
                person.signup_ip, person.signup_page = "", ""
                person.consent_text, person.consent_version = "", ""
                people.record(person, Event(SIGNUP, _issued_at(token), source="Bestätigungslink"))
            record_confirmation(people, person, ip, consent_text(self.config), self.config.newsletter.consent_version)
            email = person.email
        if welcome and self.config.web.welcome_mail:
            self._welcome(subscriber_id, email)
        return DONE

    def _welcome(self, subscriber_id: str, email: str) -> None:
        """Sent once, on the step to active; the confirmation stands even if this mail fails."""
        try:
            leave = unsubscribe_url(self.config.base_url, self.secret, subscriber_id)
            mail = build_mail(self.workspace, WELCOME_MAIL, email, {"unsubscribe_url": leave}, unsubscribe_url=leave)
            self.outgoing.put(mail, WELCOME_MAIL)
        except NewsletterError as exc:
            log.warning("Willkommensmail nicht gesendet: %s", exc)

    def check_unsubscribe(self, token: str) -> str:
        """ASK for a genuine link, INVALID otherwise; reads nothing and changes nothing."""
        return ASK if verify_token(self.secret, token, UNSUBSCRIBE) else INVALID

    def unsubscribe(self, token: str) -> str:
        """Mark the person unsubscribed; a second click, or a person already erased, is DONE too."""
        subscriber_id = verify_token(self.secret, token, UNSUBSCRIBE)
        if subscriber_id is None:
            return INVALID
        self.store.update_status(subscriber_id, UNSUBSCRIBED, source="Abmeldelink")
        return DONE

    def _deliver(self, mail: Mail, kind: str) -> None:
        config = self.config
        if self._password is None and config.smtp.host:
            self._password = smtp_password(config.smtp)
        transport = make_transport(config.smtp, self.workspace.outbox_dir / "web" / kind, config.path.parent,
                                   self._password)
        try:
            delivery = transport.deliver(mail.envelope_from, mail.envelope_to, mail.data)
        finally:
            transport.close()
        if not delivery.accepted:  # the reply may name the address: log only the code
            log.warning("%s-Mail nicht angenommen (SMTP %s)", kind, delivery.code)


class MailQueue:
    """Sends mails on a thread of its own, after the answer went out; a failure is logged."""

    def __init__(self, deliver: Callable[[Mail, str], None]) -> None:
        self.deliver = deliver
        self.queue: queue.Queue[tuple[Mail, str]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="mails", daemon=True)
        self.thread.start()

    def put(self, mail: Mail, kind: str) -> None:
        self.queue.put((mail, kind))

    def join(self) -> None:
        """Wait until every queued mail has been handed over (tests, and `serve` on its way out)."""
        self.queue.join()

    def _run(self) -> None:
        while True:
            mail, kind = self.queue.get()
            try:
                self.deliver(mail, kind)
            except NewsletterError as exc:
                log.warning("%s-Mail nicht gesendet: %s", kind, exc)
            except Exception:  # a mail thread must survive anything and keep going
                log.exception("%s-Mail nicht gesendet", kind)
            finally:
                self.queue.task_done()


def _issued_at(token: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(token.split(".")[1]), dt.UTC)


def _may_confirm(person: Subscriber, token: str) -> bool:
    """Pending people may confirm; those who left only with a link issued after they left.

    A leave an import dated to the day alone counts until that day's end.
    """
    if person.status in (PENDING, ACTIVE):
        return True
    left = person.unsubscribed_at if person.status == UNSUBSCRIBED else person.bounced_at
    return left is None or _issued_at(token) >= latest(left)


def record_confirmation(people: SubscriberList, person: Subscriber, ip: str, text: str, version: str) -> None:
    """The double opt-in: confirmed now from `ip`, under the consent text and version in force now.

    A person without a consent text of their own (added by hand or imported, then invited)
    gets this one: it is what they agreed to by confirming.
    """
    stamp = now()
    if not person.consent_text:
        person.consent_text, person.consent_version = text, version
    person.confirmed_at, person.confirm_ip = stamp, ip
    confirmed = Event(CONFIRMED, stamp, ip=ip, consent_text=text, consent_version=version)
    if not people.set_status(person, ACTIVE, confirmed):  # already active, now with its proof
        people.record(person, confirmed)


def invitation(mail: Mail) -> Event:
    """The confirmation mail as an event of the history, with its Message-ID to find it in logs."""
    message_id = BytesHeaderParser().parsebytes(mail.data).get("Message-ID", "")
    return Event(INVITED, now(), message_id=" ".join(str(message_id).split()))


def signup_page(value: str) -> str:
    """Where the form was: scheme, host and path only (a query string could carry personal data)."""
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    page = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    return page if page.isprintable() and len(page) <= 500 else ""


def confirmation_mail(workspace: Workspace, secret: bytes, subscriber_id: str, address: str,
                      issued_at: int) -> Mail:
    """The double opt-in mail: only the confirmation link, no advertising."""
    config = workspace.config
    token = make_token(secret, subscriber_id, CONFIRM, issued_at=issued_at)
    return build_mail(workspace, CONFIRM_MAIL, address, {
        "confirm_url": f"{config.base_url}/c/{token}", "confirm_days": config.web.confirm_days})


def invite_pending(workspace: Workspace, emails: list[str] | None = None, without_proof: bool = False) -> list[str]:
    """Send the confirmation mail to unconfirmed people added by hand or by import.

    Only `pending` people get it (never anyone unsubscribed or bounced), and with
    `without_proof` exactly those marked "kein DOI-Nachweis", active ones too: confirming gives
    them the proof. `invited_at` records when, so `prune` removes pending people only once
    that link has expired unanswered; the history keeps each mail's Message-ID.
    """
    store = SubscriberStore(workspace.subscribers_path)
    secret = workspace.secret()

    def invitable(person: Subscriber) -> bool:
        return needs_fresh_confirmation(person) if without_proof else person.status == PENDING

    with store.change() as people:
        if emails:
            chosen = [people.require(email) for email in emails]
            for person in chosen:
                if not (person.status == PENDING or needs_fresh_confirmation(person)):
                    raise SubscriberError(f"{person.email}: ist nicht unbestätigt (Status: {person.status}) und "
                                          "hat keinen fehlenden DOI-Nachweis; eine Bestätigungsmail bekommen nur "
                                          "unbestätigte Personen und solche ohne DOI-Nachweis")
        else:
            chosen = [person for person in people if invitable(person)]
        mails = [(person, confirmation_mail(workspace, secret, person.id, person.email, int(time.time())))
                 for person in chosen]
        for person, mail in mails:
            person.invited_at = now()
            people.record(person, invitation(mail))
    config = workspace.config
    transport = make_transport(config.smtp, workspace.outbox_dir / "web" / CONFIRM_MAIL, config.path.parent)
    sent: list[str] = []
    try:
        for person, mail in mails:
            delivery = transport.deliver(mail.envelope_from, mail.envelope_to, mail.data)
            if not delivery.accepted:
                raise NewsletterError(f"{person.email}: Bestätigungsmail nicht angenommen "
                                      f"({delivery}); schon gesendet: {len(sent)}")
            sent.append(person.email)
    finally:
        transport.close()
    return sent


def link_sent_at(person: Subscriber) -> dt.datetime | None:
    """When this person's confirmation link went out, if one did (older web sign-ups lack invited_at)."""
    signed = person.subscribed_at if person.source == SOURCE else None
    return person.invited_at or (signed if isinstance(signed, dt.datetime) else None)


def prune_pending(store: SubscriberStore, max_age: dt.timedelta, at: dt.datetime | None = None,
                  dry_run: bool = False) -> list[Subscriber]:
    """Remove pending people whose confirmation link expired unanswered: they never consented.

    Someone added by hand or by import who was never sent a link is kept (see `invite`).
    Returns the removed people (or, with dry_run, those that would be removed).
    """
    cutoff = (at or now()) - max_age
    with store.change() as people:
        expired = [p for p in people
                   if p.status == PENDING and (sent := link_sent_at(p)) is not None and sent < cutoff]
        if not dry_run:
            for person in expired:
                people.remove(person)
    return expired

"""Double opt-in on the subscriber file: sign-up, confirmation, unsubscribe, and pruning what was never confirmed.

The web app only turns HTTP into calls of `Signups`. A request appends its change to the change
log and is answered (`newsletter.changes`: durable in milliseconds at any list size); a writer
process applies the log to the file in batches, and mails go out on a thread of their own after
that, so neither a large list nor a slow mail server holds up an answer, a send or an import.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from urllib.parse import urlsplit

from newsletter.changes import CONFIRM as CONFIRM_CHANGE
from newsletter.changes import (
    CONFIRM_MAIL,
    SIGN_UP,
    WELCOME_MAIL,
    WRITE_PAUSE,
    MailDue,
    apply_changes,
    apply_forever,
    may_confirm,
)
from newsletter.changes import UNSUBSCRIBE as UNSUBSCRIBE_CHANGE
from newsletter.config import Config
from newsletter.errors import NewsletterError, SubscriberError
from newsletter.mails import Mail, build_mail, new_message_id
from newsletter.subscribers import (
    ACTIVE,
    INVITED,
    PENDING,
    Event,
    Subscriber,
    SubscriberList,
    SubscriberStore,
    clean_name,
    email_key,
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
LINK_REPEATS = 30   # requests per IP in 10 minutes that change nothing (forged or used links)

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


@dataclass(frozen=True)
class SignupResult:
    outcome: str
    problems: list[str] = field(default_factory=list)  # keys into texts() for the form


def consent_text(config: Config) -> str:
    """The sentence next to the checkbox, exactly as it is stored with each sign-up."""
    nl = config.newsletter
    return nl.consent_text or texts(nl.language)["consent_default"].format(name=nl.name)


class RateLimit:
    """At most `limit` events per key within `window` seconds; in memory, so a restart forgets.

    Its memory is bounded: beyond `max_keys` the key seen longest ago is forgotten, so a flood
    of made-up keys costs a fixed amount of memory and forgets only strangers.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float], max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one event for `key`; False (and not counted) when the limit is reached."""
        moment = self.clock()
        with self._lock:
            events = self._events.get(key)
            if events is None:
                events = self._events[key] = deque()
                if len(self._events) > self.max_keys:
                    self._events.popitem(last=False)
            else:
                self._events.move_to_end(key)
            while events and events[0] <= moment - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(moment)
            return True

    def __len__(self) -> int:
        return len(self._events)


GMAIL = frozenset({"gmail.com", "googlemail.com"})


def mailbox_key(email: str) -> str:
    """The mailbox an address reaches: without +tag, and without the dots Gmail ignores.

    `anna+1@`, `anna+2@` and `a.n.n.a@gmail.com` are one inbox, so they share one limit.
    """
    local, _, domain = email_key(email).rpartition("@")
    local = local.split("+", 1)[0] or local
    if domain in GMAIL:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


class Signups:
    """Sign-up, confirmation and unsubscribe for one workspace, shared by all requests of `serve`.

    Every change is appended to the change log and answered; a writer process applies the log
    to the subscriber file in batches (`changes.apply_forever`), and a thread here hands the
    mails that calls for to the mail thread.
    """

    def __init__(self, workspace: Workspace, clock: Callable[[], float] = time.time) -> None:
        self.workspace = workspace
        self.config = workspace.config
        self.secret = workspace.secret()
        self.clock = clock
        web = self.config.web
        self.per_ip = RateLimit(web.signups_per_hour, 3600, clock)
        self.per_address = RateLimit(web.mails_per_address_per_day, DAY, clock)
        self.per_domain = RateLimit(web.mails_per_domain_per_day, DAY, clock)
        # Requests that change nothing (a forged, expired or already used link): per IP, never
        # counted for a link's first use, so Gmail's one-click servers are never turned away.
        self.per_ip_links = RateLimit(LINK_REPEATS, 600, clock)
        self._unsubscribed: OrderedDict[str, None] = OrderedDict()  # ids answered here, newest last
        self.store = workspace.store()
        assert self.store.changes is not None
        self.log = self.store.changes
        self._file: tuple[tuple[int, int, int], SubscriberList] | None = None
        self._password: str | None = None  # asked for once (password_command may ask a keyring)
        self.outgoing = MailQueue(self._deliver)
        self._queued: set[int] = set()
        self._writing = threading.Lock()
        processes = multiprocessing.get_context("spawn")
        self._wake, self._stopped = processes.Event(), processes.Event()
        self._wake.set()  # at start: apply what a killed predecessor left in the log
        self.writer = processes.Process(
            target=apply_forever, name="newsletter-changes", daemon=True,
            args=(str(self.store.path), str(self.log.path), self._wake, self._stopped, os.getpid()))
        self.writer.start()
        self.mailer = threading.Thread(target=self._mail_loop, name="mails-due", daemon=True)
        self.mailer.start()

    def sign_up(self, form: SignupForm, ip: str, page: str = "") -> SignupResult:
        """Append a sign-up (with its consent record) to the change log; the writer decides.

        Whether the address is new, pending, active, unsubscribed or erased, this does the same
        work and gives the same RECEIVED, so neither timing nor answer tells who is on the list.
        `page` is the evidence of where the form was, already checked against her own domains.
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
        mailbox = mailbox_key(email)
        if not self.per_address.allow(mailbox) or not self.per_domain.allow(mailbox.rpartition("@")[2]):
            log.info("Anmeldung: zu viele Bestätigungsmails an dieselbe Adresse oder Domain, diese übersprungen")
            return SignupResult(RECEIVED)
        sender_domain = self.config.newsletter.from_email.rpartition("@")[2]
        self.log.append(SIGN_UP, "", now(), email=email, name=clean_name(form.name), ip=ip, page=page,
                        consent_text=consent_text(self.config), consent_version=self.config.newsletter.consent_version,
                        message_id=new_message_id(sender_domain))
        self._wake.set()
        return SignupResult(RECEIVED)

    def _confirmed_id(self, token: str) -> str | None:
        return verify_token(self.secret, token, CONFIRM, max_age=self.config.web.confirm_days * DAY,
                            now=self.clock())

    def person(self, subscriber_id: str) -> Subscriber | None:
        """One person as the list has them now: the file (parsed again only when it changed) and the log."""
        try:
            info = self.store.path.stat()
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        cached = self._file
        if cached is None or cached[0] != stamp:
            cached = self._file = (stamp, self.store.load_file())
        person = cached[1].by_id(subscriber_id)
        pending = [c for c in self.log.pending() if c.subscriber_id == subscriber_id]
        if person is not None and pending:
            person = copy.deepcopy(person)
            apply_changes(SubscriberList([person]), pending)
        return person

    def _confirm_state(self, token: str) -> tuple[str, str]:
        """(outcome, id): INVALID, DONE (nothing left to confirm) or ASK."""
        subscriber_id = self._confirmed_id(token)
        person = self.person(subscriber_id) if subscriber_id else None
        if person is None or subscriber_id is None or not may_confirm(person, _issued_at(token)):
            return INVALID, ""
        done = person.status == ACTIVE and not needs_fresh_confirmation(person)
        return (DONE if done else ASK), subscriber_id

    def check_confirm(self, token: str) -> str:
        """What the confirmation page should show; changes nothing (mail scanners open links)."""
        return self._confirm_state(token)[0]

    def confirm(self, token: str, ip: str) -> str:
        """Make a sign-up active, with the time and IP of the confirmation; idempotent.

        Someone who had left comes back only with a link issued after they left (see
        `newsletter.changes.may_confirm`), with a fresh consent record. Every confirmation
        records the consent text and version in force when it happened.
        """
        outcome, subscriber_id = self._confirm_state(token)
        if outcome == INVALID:
            return INVALID if self.per_ip_links.allow(ip) else TOO_MANY
        if outcome == ASK:
            self.log.append(CONFIRM_CHANGE, subscriber_id, now(), ip=ip, issued_at=int(token.split(".")[1]),
                            consent_text=consent_text(self.config),
                            consent_version=self.config.newsletter.consent_version,
                            welcome=self.config.web.welcome_mail)
            self._wake.set()
        elif not self.per_ip_links.allow(ip):
            return TOO_MANY
        return DONE

    def check_unsubscribe(self, token: str) -> str:
        """ASK for a genuine link, INVALID otherwise; reads nothing and changes nothing."""
        return ASK if verify_token(self.secret, token, UNSUBSCRIBE) else INVALID

    def unsubscribe(self, token: str, ip: str = "") -> str:
        """Append the unsubscribe to the change log: it counts from this answer on.

        A link used again (a second click, a replay from many clients) changes nothing and
        costs nothing but a rate-limit count.
        """
        subscriber_id = verify_token(self.secret, token, UNSUBSCRIBE)
        if subscriber_id is None:
            return INVALID if self.per_ip_links.allow(ip) else TOO_MANY
        if subscriber_id in self._unsubscribed:
            return DONE if self.per_ip_links.allow(ip) else TOO_MANY
        self.log.append(UNSUBSCRIBE_CHANGE, subscriber_id, now(), source="Abmeldelink")
        self._unsubscribed[subscriber_id] = None
        if len(self._unsubscribed) > 100_000:
            self._unsubscribed.popitem(last=False)
        self._wake.set()
        return DONE

    # -- the writer ------------------------------------------------------------------------

    def _mail_loop(self) -> None:
        """Hand the mails the writer's changes call for to the mail thread, as they appear."""
        while not self._stopped.wait(WRITE_PAUSE):
            try:
                self._queue_mails()
            except NewsletterError as exc:
                log.error("Mails aus dem Änderungsprotokoll nicht gelesen: %s", exc)

    def _queue_mails(self) -> None:
        for mail in self.log.mails_due():
            if mail.seq not in self._queued:
                self._queued.add(mail.seq)
                self.outgoing.put(mail)

    def apply(self) -> None:
        """Write what the log holds into the file now, here (one rewrite), then queue the mails it calls for."""
        with self._writing:
            if self.log.pending():
                with self.store.change():
                    pass  # taking the lock applies every pending change
            self._queue_mails()

    def settle(self) -> None:
        """Apply everything now and wait until its mails are handed over (tests, and `serve` on its way out)."""
        self.apply()
        self.outgoing.join()

    def close(self) -> None:
        """Stop the writer, then write what is left and send its mails."""
        self._stopped.set()
        self._wake.set()
        self.writer.join(timeout=60)
        self.mailer.join(timeout=30)
        self.settle()

    def _deliver(self, due: MailDue) -> None:
        """Build and send one mail a change called for; its log row goes either way (the failure is logged)."""
        try:
            if due.kind == CONFIRM_MAIL:
                mail = confirmation_mail(self.workspace, self.secret, due.subscriber_id, due.email, due.issued_at,
                                         message_id=due.message_id)
            else:
                leave = unsubscribe_url(self.config.base_url, self.secret, due.subscriber_id)
                mail = build_mail(self.workspace, WELCOME_MAIL, due.email, {"unsubscribe_url": leave},
                                  unsubscribe_url=leave)
            self._send(mail, due.kind)
        finally:
            self.log.sent(due)

    def _send(self, mail: Mail, kind: str) -> None:
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

    def __init__(self, deliver: Callable[[MailDue], None]) -> None:
        self.deliver = deliver
        self.queue: queue.Queue[MailDue] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="mails", daemon=True)
        self.thread.start()

    def put(self, mail: MailDue) -> None:
        self.queue.put(mail)

    def join(self) -> None:
        """Wait until every queued mail has been handed over (tests, and `serve` on its way out)."""
        self.queue.join()

    def _run(self) -> None:
        while True:
            mail = self.queue.get()
            try:
                self.deliver(mail)
            except NewsletterError as exc:
                log.warning("%s-Mail nicht gesendet: %s", mail.kind, exc)
            except Exception:  # a mail thread must survive anything and keep going
                log.exception("%s-Mail nicht gesendet", mail.kind)
            finally:
                self.queue.task_done()


def _issued_at(token: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(token.split(".")[1]), dt.UTC)


def invitation(mail: Mail) -> Event:
    """The confirmation mail as an event of the history, with its Message-ID to find it in logs."""
    message_id = BytesHeaderParser().parsebytes(mail.data).get("Message-ID", "")
    return Event(INVITED, now(), message_id=" ".join(str(message_id).split()))


def signup_page(config: Config, origin: str, referer: str) -> str:
    """The evidence of where someone signed up, from her own configuration alone: the form of
    `serve` itself when the browser came from base_url's host, her form page (`[web] form_page`,
    else her website) when it came from that site. A forged or foreign Origin/Referer, or none,
    leaves it empty; nothing a poster sends is ever copied."""
    claimed = _host(origin) or _host(referer)
    if not claimed:
        return ""
    if claimed == _host(config.base_url):
        return f"{config.base_url}/subscribe"
    page = config.web.form_page or config.newsletter.website
    return page if claimed in {_host(page), _host(config.newsletter.website)} - {""} else ""


def _host(url: str) -> str:
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")


def client_ip(peer: str, forwarded_for: str, trust_proxy: bool) -> str:
    """Who asked: behind a trusted proxy the last X-Forwarded-For entry, but only when it is an
    IP address; anything else there (text, a script, 8,000 characters) falls back to the peer."""
    if trust_proxy and forwarded_for:
        try:
            return str(ipaddress.ip_address(forwarded_for.rsplit(",", 1)[-1].strip()))
        except ValueError:
            pass
    return peer


def confirmation_mail(workspace: Workspace, secret: bytes, subscriber_id: str, address: str,
                      issued_at: int, message_id: str = "") -> Mail:
    """The double opt-in mail: only the confirmation link, no advertising."""
    config = workspace.config
    token = make_token(secret, subscriber_id, CONFIRM, issued_at=issued_at)
    return build_mail(workspace, CONFIRM_MAIL, address, {
        "confirm_url": f"{config.base_url}/c/{token}", "confirm_days": config.web.confirm_days},
        message_id=message_id)


def invite_pending(workspace: Workspace, emails: list[str] | None = None, without_proof: bool = False) -> list[str]:
    """Send the confirmation mail to unconfirmed people added by hand or by import.

    Only `pending` people get it (never anyone unsubscribed or bounced), and with
    `without_proof` exactly those marked "kein DOI-Nachweis", active ones too: confirming gives
    them the proof. `invited_at` records when, so `prune` removes pending people only once
    that link has expired unanswered; the history keeps each mail's Message-ID.
    """
    store = workspace.store()
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

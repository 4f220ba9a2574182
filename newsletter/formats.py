"""What other newsletter services export: how each file is recognised, what its columns mean.

A format is recognised from the header (and from the file name, where a service splits its
export by status, as Mailchimp does). Each format says which header names carry which
meaning, what its status words mean, and how its times without a zone are meant:

- Mailchimp writes "2024-03-15 09:12:33" in UTC; listmonk and Keila think in UTC too.
- CleverReach writes seconds since 1970 (UTC by definition) or German dates.
- rapidmail, Brevo and spreadsheets of German authors write local German time (Europe/Berlin).

A time with its own offset (2024-03-15T09:12:33+01:00, Z) is taken as it is. A date without a
time of day stays a date: no time is made up.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from newsletter.subscribers import ACTIVE, BERLIN, BOUNCED, PENDING, UNSUBSCRIBED, Moment, now

NEVER = "never"  # the service says this person never subscribed (Mailchimp's transactional contacts)

# What a column means.
EMAIL, NAME, FIRST, LAST, STATUS = "email", "name", "first", "last", "status"
SIGNUP_AT, SIGNUP_IP, CONFIRMED_AT, CONFIRM_IP = "signup_at", "signup_ip", "confirmed_at", "confirm_ip"
UNSUBSCRIBED_AT, BOUNCED_AT, REASON, REASON_OTHER = "unsubscribed_at", "bounced_at", "reason", "reason_other"
CAMPAIGN, SOURCE, NOTE, TAGS, BLOCKLISTED = "campaign", "source", "note", "tags", "blocklisted"
MOMENTS = (SIGNUP_AT, CONFIRMED_AT, UNSUBSCRIBED_AT, BOUNCED_AT)
# Which meanings count as leaving, and how strict a status is when two sources disagree.
STRICTNESS = {"": 0, ACTIVE: 1, PENDING: 2, NEVER: 3, BOUNCED: 4, UNSUBSCRIBED: 5}
LEFT = (UNSUBSCRIBED, BOUNCED)


def header_key(cell: str) -> str:
    """Header names (and status words) compared after lowercasing and dropping all but letters and digits."""
    return re.sub(r"[^a-z0-9äöüß]", "", cell.lower())


def _words(mapping: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    return {header_key(word): meaning for meaning, words in mapping.items() for word in words}


# Status words in the languages an author's export is likely to be in; anything else is an error.
COMMON_STATUSES = _words({
    ACTIVE: ("active", "aktiv", "subscribed", "abonniert", "angemeldet", "confirmed", "bestätigt",
             "opted in", "opt-in", "abonné", "inscrit", "actif", "suscrito", "activo", "iscritto",
             "attivo", "ingeschreven", "actief"),
    PENDING: ("pending", "unbestätigt", "unconfirmed", "nicht bestätigt", "ausstehend",
              "en attente", "pendiente", "in attesa"),
    UNSUBSCRIBED: ("unsubscribed", "unsubscribe", "abgemeldet", "ausgetragen", "abbestellt", "opted out",
                   "opt-out", "blocklisted", "blacklisted", "blockiert", "gesperrt", "deleted", "gelöscht",
                   "abused", "complained", "spam", "disabled", "deaktiviert", "inactive", "inaktiv",
                   "archived", "archiviert", "désabonné", "désinscrit", "dado de baja", "baja",
                   "disiscritto", "uitgeschreven"),
    BOUNCED: ("bounced", "cleaned", "unzustellbar", "unreachable", "hard bounce", "hardbounce", "rebotado",
              "rebondi"),
    NEVER: ("transactional", "nonsubscribed", "non-subscribed"),
})
YES = frozenset({"ja", "j", "x", "yes", "y", "true", "wahr", "1", "oui", "si", "sí"})
NO = frozenset({"nein", "n", "no", "false", "falsch", "0", "non", "-"})


@dataclass(frozen=True)
class Format:
    """One service's export: the header names of each meaning (best first) and its status words."""

    key: str
    label: str
    zone: dt.tzinfo                                  # what its times without an offset mean
    columns: Mapping[str, tuple[str, ...]]
    statuses: Mapping[str, str] = field(default_factory=dict)

    def status_of(self, cell: str) -> str | None:
        """Our meaning of a status word; "" for an empty cell, None for a word nobody knows."""
        word = header_key(cell)
        if not word:
            return ""
        return self.statuses.get(word) or COMMON_STATUSES.get(word)


def _columns(**names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {meaning: tuple(header_key(name) for name in header_names) for meaning, header_names in names.items()}


UTC = dt.UTC
MAILCHIMP = Format("mailchimp", "Mailchimp", UTC, _columns(
    email=("Email Address", "E-Mail-Adresse", "Email", "E-Mail"),
    name=("Name", "Full Name", "Vollständiger Name"),
    first=("First Name", "Vorname"), last=("Last Name", "Nachname"),
    status=("Member Status", "Status"),
    signup_at=("OPTIN_TIME",), signup_ip=("OPTIN_IP",), confirmed_at=("CONFIRM_TIME",), confirm_ip=("CONFIRM_IP",),
    unsubscribed_at=("UNSUB_TIME",), reason=("UNSUB_REASON",), reason_other=("UNSUB_REASON_OTHER",),
    bounced_at=("CLEAN_TIME",), campaign=("UNSUB_CAMPAIGN_TITLE", "CLEAN_CAMPAIGN_TITLE"),
    note=("NOTES",), tags=("TAGS",),
), _words({ACTIVE: ("subscribed",), UNSUBSCRIBED: ("unsubscribed", "archived"), BOUNCED: ("cleaned",),
           PENDING: ("pending",), NEVER: ("transactional", "nonsubscribed")}))
CLEVERREACH = Format("cleverreach", "CleverReach", BERLIN, _columns(
    email=("email", "E-Mail"), name=("name",), first=("firstname", "vorname"), last=("lastname", "nachname"),
    signup_at=("registered",), confirmed_at=("activated",), unsubscribed_at=("deactivated",), source=("source",),
))
RAPIDMAIL = Format("rapidmail", "rapidmail", BERLIN, _columns(
    email=("email",), first=("firstname",), last=("lastname",), status=("status",),
    signup_at=("created",), signup_ip=("created_ip",), confirmed_at=("activated",), confirm_ip=("activated_ip",),
), _words({PENDING: ("new",), ACTIVE: ("active",), BOUNCED: ("bounced",), UNSUBSCRIBED: ("abused", "deleted")}))
BREVO = Format("brevo", "Brevo", BERLIN, _columns(
    email=("EMAIL", "E-Mail"), first=("VORNAME", "FIRSTNAME", "PRENOM", "Prénom"),
    last=("NACHNAME", "LASTNAME", "NOM"), signup_at=("ADDED_TIME",),
))
LISTMONK = Format("listmonk", "listmonk", UTC, _columns(
    email=("email",), name=("name",), status=("status",), signup_at=("created_at",),
), _words({ACTIVE: ("enabled",), UNSUBSCRIBED: ("disabled", "blocklisted")}))
KEILA = Format("keila", "Keila", UTC, _columns(
    email=("Email",), first=("First name",), last=("Last name",), status=("Status",),
), _words({ACTIVE: ("active",), UNSUBSCRIBED: ("unsubscribed",), BOUNCED: ("unreachable",)}))
OWN = Format("newsletter", "Export dieses Programms", UTC, _columns(email=("email",), name=("name",),
                                                                    status=("status",)))
GENERIC = Format("table", "Tabelle", BERLIN, _columns(
    email=("E-Mail", "Email", "Email Address", "E-Mail-Adresse", "Mail", "Mailadresse", "Mail Address",
           "E-Post", "E-Post-Adresse"),
    name=("Name", "Full Name", "Voller Name", "Vollständiger Name", "Anzeigename", "Display Name",
          "Vor- und Nachname"),
    first=("Vorname", "First Name", "First", "Given Name", "Rufname"),
    last=("Nachname", "Last Name", "Last", "Surname", "Familienname", "Zuname"),
    status=("Status", "Member Status", "Abostatus", "Zustand", "Statut", "Estado", "Stato", "État", "Etat",
            "Estatus", "Subscription Status", "Subscriber Status", "Contact Status"),
    signup_at=("Anmeldung am", "Anmeldedatum", "Anmeldung", "Angemeldet am", "angemeldet", "angemeldet seit",
               "Datum", "eingetragen am", "Eintragungsdatum", "registriert am", "registriert", "signup date",
               "signed up", "signed up at", "subscribed at", "subscription date", "created", "created at",
               "date added", "optin time", "optin date"),
    signup_ip=("IP", "IP-Adresse", "signup ip", "Anmelde-IP", "optin ip"),
    confirmed_at=("bestätigt am", "bestätigt", "Bestätigung", "Bestätigungsdatum", "DOI am", "DOI-Datum",
                  "confirmed", "confirmed at", "confirmation date", "confirm time"),
    confirm_ip=("confirm ip", "Bestätigungs-IP"),
    unsubscribed_at=("abgemeldet am", "abgemeldet", "Abmeldung", "Abmeldung am", "Abmeldedatum",
                     "unsubscribed", "unsubscribed at", "unsubscribe date"),
    source=("Quelle", "Herkunft", "source"),
    note=("Notiz", "Notizen", "Bemerkung", "Bemerkungen", "Kommentar", "note", "notes"),
))

MAILCHIMP_SIGNS = frozenset(header_key(h) for h in ("OPTIN_TIME", "CONFIRM_TIME", "MEMBER_RATING", "LEID",
                                                    "EUID", "UNSUB_TIME", "CLEAN_TIME", "LAST_CHANGED"))
MAILCHIMP_FILE = re.compile(r"(subscribed|unsubscribed|cleaned|nonsubscribed|transactional|pending|archived)"
                            r"_(?:members|segment)_export", re.IGNORECASE)
MAILCHIMP_FILE_STATUS = {"subscribed": ACTIVE, "unsubscribed": UNSUBSCRIBED, "cleaned": BOUNCED,
                         "nonsubscribed": NEVER, "transactional": NEVER, "pending": PENDING,
                         "archived": UNSUBSCRIBED}
OWN_EXPORT = frozenset({"id", "email", "status", "subscribed_at"})


@dataclass(frozen=True)
class Layout:
    """A header understood: the format, where each meaning is, and what the file's name or columns say."""

    format: Format
    columns: dict[str, int]
    file_status: str = ""          # the status every row has by the file's name or columns
    file_status_label: str = ""    # how the file says it ("unsubscribed_members_export", "UNSUB_TIME")
    blocklists: tuple[int, ...] = ()


def recognise(cells: list[str], filename: str) -> Layout | None:
    """The format and columns of a header line; None when it holds no column of addresses."""
    keys = [header_key(cell) for cell in cells]
    raw = [cell.strip().lower() for cell in cells]
    present = set(keys)
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    by_name = MAILCHIMP_FILE.match(name)
    if set(raw) >= OWN_EXPORT:
        chosen = OWN
    elif len(present & MAILCHIMP_SIGNS) >= 2 or (by_name and present & {"emailaddress", "emailadresse"}):
        chosen = MAILCHIMP
    elif {"email", "registered", "activated"} <= present:
        chosen = CLEVERREACH
    elif {"email", "created"} <= present and present & {"createdip", "activatedip", "status"}:
        chosen = RAPIDMAIL
    elif {"uuid", "email", "attributes", "status"} <= present:
        chosen = LISTMONK
    elif keys[:4] == ["email", "firstname", "lastname", "data"]:
        chosen = KEILA
    elif "EMAIL" in (cell.strip() for cell in cells) and (
            present & {"addedtime", "modifiedtime", "contactid"} or _blocklists(keys)):
        chosen = BREVO
    else:
        chosen = GENERIC
    columns = _find(chosen, keys)
    if EMAIL not in columns:
        if chosen is not GENERIC or (fallback := _fallback_email(keys)) is None:
            return None
        columns[EMAIL] = fallback
    if chosen is GENERIC:
        for meaning, part in ((FIRST, ("vorname", "firstname")), (LAST, ("nachname", "lastname"))):
            if meaning not in columns and (found := _containing(keys, part)) is not None:
                columns[meaning] = found
    file_status, label = "", ""
    if chosen is MAILCHIMP:
        if by_name:
            file_status, label = MAILCHIMP_FILE_STATUS[by_name.group(1).lower()], by_name.group(0)
        for meaning, status in ((UNSUBSCRIBED_AT, UNSUBSCRIBED), (BOUNCED_AT, BOUNCED)):
            if meaning in columns and STRICTNESS[status] > STRICTNESS[file_status]:
                file_status, label = status, cells[columns[meaning]].strip()
    return Layout(chosen, columns, file_status, label, _blocklists(keys) if chosen is BREVO else ())


def _find(chosen: Format, keys: list[str]) -> dict[str, int]:
    """Each meaning's column: the first header named as the format names it (its best name first)."""
    columns: dict[str, int] = {}
    taken: set[int] = set()
    for meaning, names in chosen.columns.items():
        for wanted in names:
            index = next((i for i, key in enumerate(keys) if key == wanted and i not in taken), None)
            if index is not None:
                columns[meaning] = index
                taken.add(index)
                break
    return columns


def _fallback_email(keys: list[str]) -> int | None:
    return _containing(keys, ("mail",))


def _containing(keys: list[str], parts: tuple[str, ...]) -> int | None:
    return next((i for i, key in enumerate(keys) if any(part in key for part in parts)), None)


def _blocklists(keys: list[str]) -> tuple[int, ...]:
    """Brevo's blacklist columns for e-mail (an SMS blacklist says nothing about mail)."""
    return tuple(i for i, key in enumerate(keys)
                 if ("blacklist" in key or "blocklist" in key) and "sms" not in key)


# -- times ---------------------------------------------------------------------------------------

ISO = re.compile(
    r"(?P<y>\d{4})[-/](?P<m>\d{1,2})[-/](?P<d>\d{1,2})"
    r"(?:[T ]+(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<f>\d{1,9}))?)?)?"
    r"(?:\s*(?P<z>Z|UTC|GMT|[+-]\d{2}:?\d{2})"
    r"(?:\s+(?:[A-Z]{2,5}|[+-]\d{4}))?)?")  # Go's time.String() (listmonk): "+0000 UTC", "+0100 CET"
GERMAN = re.compile(
    r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4}|\d{2})"
    r"(?:,?\s+(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?(?:\s*Uhr)?)?")
AMBIGUOUS = re.compile(r"\d{1,2}[/-]\d{1,2}[/-]\d{2,4}(?:[T ,]+\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp][Mm])?)?")
EPOCH = re.compile(r"(?P<s>\d{9,10})(?:\.\d+)?|(?P<ms>\d{12,13})")
EMPTY_MOMENTS = frozenset({"0", "0000-00-00", "0000-00-00 00:00:00", "0001-01-01 00:00:00 +0000 UTC"})
EARLIEST_YEAR = 1990  # before e-mail newsletters: a placeholder, not a sign-up


def parse_moment(text: str, zone: dt.tzinfo) -> Moment | None:
    """A time or date as a file writes it; None when empty. ValueError (German) for anything else.

    Accepted: ISO (2024-03-15, 2024-03-15 09:12:33, with T, fractions, Z or an offset, and Go's
    "+0000 UTC" tail), German (15.03.2024, 15.03.24, 15.03.2024 09:12[:33] [Uhr]) and seconds or
    milliseconds since 1970. 03/04/2024 is refused: it may be the 3rd of April or the 4th of March.
    Times without an offset are read in `zone`.
    """
    value = " ".join(text.split())
    if not value or value in EMPTY_MOMENTS or value.startswith("0001-01-01 00:00:00"):
        return None
    if match := EPOCH.fullmatch(value):
        seconds = int(match["s"]) if match["s"] else int(match["ms"]) / 1000
        return _plausible(dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=0), value)
    match = ISO.fullmatch(value) or GERMAN.fullmatch(value)
    if match is None:
        if AMBIGUOUS.fullmatch(value):
            raise ValueError(f"„{value}“ ist nicht eindeutig (Tag und Monat vertauschbar); "
                             "bitte als 15.03.2024 oder 2024-03-15 schreiben")
        raise ValueError(f"„{value}“ ist kein Datum (erwartet z. B. 15.03.2024, 15.03.2024 09:12 "
                         "oder 2024-03-15 09:12:33)")
    year = int(match["y"])
    year += 2000 if year < 100 else 0
    fraction = match.groupdict().get("f") or ""
    try:
        day = dt.date(year, int(match["m"]), int(match["d"]))
        clock = None if match["H"] is None else dt.time(int(match["H"]), int(match["M"]), int(match["S"] or 0),
                                                        int(fraction[:6].ljust(6, "0")))
    except ValueError:
        raise ValueError(f"„{value}“ gibt es nicht (Tag, Monat oder Uhrzeit außerhalb des Kalenders)") from None
    if clock is None:
        return _plausible(day, value)
    moment = dt.datetime.combine(day, clock)
    offset = match.groupdict().get("z")
    if offset in (None, ""):
        return _plausible(moment.replace(tzinfo=zone), value)
    if offset in ("Z", "UTC", "GMT"):
        return _plausible(moment.replace(tzinfo=dt.UTC), value)
    digits = offset.replace(":", "")
    delta = dt.timedelta(hours=int(digits[1:3]), minutes=int(digits[3:5]))
    return _plausible(moment.replace(tzinfo=dt.timezone(-delta if digits[0] == "-" else delta)), value)


def _plausible(value: Moment, text: str) -> Moment:
    """A sign-up before 1990 or after tomorrow is a broken cell, not a time to keep."""
    day = value.date() if isinstance(value, dt.datetime) else value
    if day.year < EARLIEST_YEAR:
        raise ValueError(f"„{text}“ liegt vor {EARLIEST_YEAR} und ist sicher kein Anmeldedatum")
    if day > (now() + dt.timedelta(days=1)).date():
        raise ValueError(f"„{text}“ liegt in der Zukunft")
    return value


def yes_no(text: str) -> bool | None:
    """True for ja/x/yes/1, False for nein/no/0 or empty, None for anything else."""
    word = text.strip().lower()
    if not word or word in NO:
        return False
    return True if word in YES else None

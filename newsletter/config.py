"""newsletter.toml, read once into validated dataclasses; every error names the file and the key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newsletter.errors import ConfigError

LANGUAGES = ("de", "en")
SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
IMAP_PORTS = {"ssl": 993, "starttls": 143}


@dataclass(frozen=True)
class NewsletterSettings:
    name: str
    from_email: str
    from_name: str = ""
    language: str = "de"
    reply_to: str = ""
    list_id: str = ""
    base_url: str = ""
    website: str = ""
    why: str = ""
    consent_text: str = ""
    consent_version: str = "1"
    archive_path: str = "/archiv/"


@dataclass(frozen=True)
class Imprint:
    name: str = ""
    address: str = ""
    email: str = ""
    phone: str = ""
    lines: list[str] = field(default_factory=list)

    REQUIRED: typing.ClassVar[tuple[str, ...]] = ("name", "address", "email")

    def missing(self) -> list[str]:
        """Required fields that are still empty (German law wants all of them in every mail)."""
        return [key for key in self.REQUIRED if not getattr(self, key).strip()]


@dataclass(frozen=True)
class SmtpSettings:
    host: str = ""
    port: int = 0
    security: str = "starttls"
    username: str = ""
    password_command: str = ""
    timeout: float = 30.0
    connections: int = 1
    rate_limit: str = ""
    daily_limit: int = 0
    tls_ca_file: str = ""
    local_hostname: str = ""
    retry_delay: float = 300.0  # first retry of a 4xx after this many seconds (as Postfix), doubling after
    retry_window: str = "3 days"  # how long a recipient's temporary failure is retried, then failed
    limit_pause: float = 600.0  # pause when the provider says "too many" (hourly caps)

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]

    @property
    def retry_seconds(self) -> float:
        return parse_duration(self.retry_window)

    @property
    def messages_per_second(self) -> float | None:
        """The configured rate as messages per second, or None for no limit."""
        return parse_rate(self.rate_limit) if self.rate_limit else None


@dataclass(frozen=True)
class ImapSettings:
    """Her own mailbox, where bounces, complaints, mailto unsubscribes and replies arrive."""

    host: str = ""
    port: int = 0
    security: str = "ssl"
    username: str = ""
    password_command: str = ""
    folder: str = "INBOX"
    tls_ca_file: str = ""
    timeout: float = 60.0
    bounce_folder: str = "Newsletter/Unzustellbar"
    unsubscribe_folder: str = "Newsletter/Abmeldungen"
    complaint_folder: str = "Newsletter/Beschwerden"
    autoreply_folder: str = "Newsletter/Abwesenheit"
    soft_bounce_limit: int = 3  # soft bounces on this many issues in a row make an address bounced

    @property
    def effective_port(self) -> int:
        return self.port or IMAP_PORTS[self.security]


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8025
    confirm_days: int = 7
    welcome_mail: bool = True
    trust_proxy: bool = False
    signups_per_hour: int = 10            # sign-ups from one IP address
    mails_per_address_per_day: int = 3    # confirmation mails to one mailbox (+tags and Gmail's dots are one)
    mails_per_domain_per_day: int = 100   # confirmation mails to one domain: a ceiling against floods
    form_page: str = ""                   # the page with the sign-up form, recorded as consent evidence
    privacy_url: str = ""                 # the privacy notice the sign-up form links to


@dataclass(frozen=True)
class DoctorSettings:
    """[doctor]: what `newsletter doctor` cannot guess, such as the DKIM selectors her provider signs with."""

    dkim_selectors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Config:
    path: Path
    newsletter: NewsletterSettings
    imprint: Imprint
    smtp: SmtpSettings
    web: WebSettings
    imap: ImapSettings = field(default_factory=ImapSettings)
    doctor: DoctorSettings = field(default_factory=DoctorSettings)

    @property
    def list_id(self) -> str:
        """List-Id value: configured, or derived from the sender's domain."""
        return self.newsletter.list_id or "newsletter." + self.newsletter.from_email.split("@")[1]

    @property
    def base_url(self) -> str:
        return self.newsletter.base_url.rstrip("/")


# `check` and `serve` refuse a plain-http base_url with the same words.
HTTPS_ONLY = "[newsletter] base_url muss mit https:// beginnen (Ein-Klick-Abmeldung nach RFC 8058)"

SECTIONS: dict[str, type] = {
    "newsletter": NewsletterSettings,
    "imprint": Imprint,
    "smtp": SmtpSettings,
    "web": WebSettings,
    "imap": ImapSettings,
    "doctor": DoctorSettings,
}

_RATE_UNITS = {
    "second": 1, "sekunde": 1, "s": 1, "sec": 1,
    "minute": 60, "min": 60, "m": 60,
    "hour": 3600, "stunde": 3600, "h": 3600,
    "day": 86400, "tag": 86400, "d": 86400,
}
_PLURALS = {"seconds": "second", "sekunden": "sekunde", "minutes": "minute", "minuten": "minute",
            "hours": "hour", "stunden": "stunde", "days": "day", "tage": "tag"}


def parse_duration(text: str) -> float:
    """Turn "3 days", "72 Stunden" or "1 Tag" into seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", text)
    unit = match.group(2).lower() if match else ""
    unit = _PLURALS.get(unit, unit)
    if not match or unit not in _RATE_UNITS or float(match.group(1)) <= 0:
        raise ValueError(f'"{text}" ist keine Dauer wie "3 days" oder "48 Stunden"')
    return float(match.group(1)) * _RATE_UNITS[unit]


def parse_rate(text: str) -> float:
    """Turn "500/hour" or "10/second" into messages per second."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*([A-Za-z]+)\s*", text)
    if not match or match.group(2).lower() not in _RATE_UNITS or float(match.group(1)) <= 0:
        raise ValueError(f'"{text}" ist keine Rate wie "500/hour" oder "10/second"')
    return float(match.group(1)) / _RATE_UNITS[match.group(2).lower()]


def load_config(path: Path) -> Config:
    """Read and validate newsletter.toml; raise ConfigError naming file and key."""
    try:
        raw = path.read_text(encoding="utf-8-sig")  # a BOM from an old Windows editor is fine
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: nicht gefunden. Ist das der richtige Ordner? "
            "(`newsletter init` legt einen neuen Arbeitsbereich an)"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: ist nicht als UTF-8 gespeichert (im Editor „UTF-8“ wählen)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: kann nicht gelesen werden ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {toml_error_text(exc, source=raw)}") from None
    return config_from_dict(path, data)


# tomllib speaks English; the author gets every case in German, the common ones with the right form.
TOML_MESSAGES = (
    ("Invalid value", "ungültiger Wert (Text gehört in gerade Anführungszeichen: \"…\")"),
    ("Illegal character", "unerlaubtes Zeichen (fehlt ein schließendes Anführungszeichen?)"),
    ("Unterminated string", "ein Anführungszeichen wird nicht geschlossen"),
    ("Expected \"'\"", "ein Anführungszeichen wird nicht geschlossen"),
    ("Unclosed array", "eine Liste [ … ] wird nicht mit ] geschlossen"),
    ("Unclosed inline table", "eine Angabe { … } wird nicht mit } geschlossen"),
    ("Unclosed", "nicht geschlossen (fehlt ein Anführungszeichen oder eine Klammer?)"),
    ("Cannot overwrite a value", "dieser Eintrag steht doppelt"),
    ("Duplicate inline table key", "dieser Eintrag steht doppelt"),
    ("Cannot declare", "dieser Abschnitt steht doppelt"),
    ("Cannot mutate immutable namespace", "dieser Abschnitt passt nicht zu einem Eintrag gleichen Namens"),
    ("Cannot redefine namespace", "dieser Abschnitt passt nicht zu einem Eintrag gleichen Namens"),
    ("Expected '=' after a key", "nach dem Namen fehlt ein „=“ (so geht es: name = \"Text\")"),
    ("Expected ']' at the end of a table", "der Abschnittsname wird nicht mit ] geschlossen, etwa [newsletter]"),
    ("Expected ']]'", "der Abschnittsname wird nicht mit ]] geschlossen, etwa [[subscriber]]"),
    ("Expected newline or end of document",
     "nach dem Wert steht noch etwas; pro Zeile ein Eintrag wie name = \"Text\""),
    ("Invalid date or datetime", "kein gültiges Datum (Jahr-Monat-Tag, etwa 2026-12-01)"),
    ("Unescaped '\\'", "ein einzelner \\ im Text: als \\\\ schreiben"),
    ("Invalid hex value", "eine ungültige \\u-Angabe im Text"),
    ("Escaped character", "eine ungültige \\u-Angabe im Text"),
    ("Invalid statement", "diese Zeile ist nicht lesbar (erwartet: name = \"Wert\")"),
    ("Invalid initial character for a key part", "ein Name darf so nicht beginnen"),
    ("Found invalid character", "ein Zeichen, das hier nicht stehen darf"),
)
TYPOGRAPHIC_QUOTES = "„“”‚‘’«»"
KEY_VALUE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(.*?)\s*$')
GERMAN_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4}|\d{2})")
SHORT_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
COMMA_DECIMAL = re.compile(r"[+-]?\d+,\d+")


def toml_error_text(exc: ValueError, line_offset: int = 0, source: str = "") -> str:
    """A TOML error as "Zeile N: what", in German, with the right form where the line shows the
    mistake; shifted by `line_offset` for TOML inside another file (an issue's front matter)."""
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    what = message[: match.start()].strip() if match else message.replace("(at end of document)", "").strip()
    lines = source.splitlines()
    line = int(match.group(1)) if match else _open_line(lines) if "end of document" in message else 0
    explained = _right_form(lines[line - 1]) if 0 < line <= len(lines) else None
    what = explained or next((german for english, german in TOML_MESSAGES if what.startswith(english)),
                             "diese Zeile ist nicht lesbar (so geht es: name = \"Text\", zahl = 3, "
                             "datum = 2026-12-01)")
    if not line:
        return f"ungültiges TOML: {what}"
    return f"Zeile {line + line_offset}: ungültiges TOML: {what}"


def _right_form(line: str) -> str | None:
    """What is wrong with a `key = value` line and how it is written right, for the common mistakes."""
    if any(q in line for q in TYPOGRAPHIC_QUOTES):
        fixed = re.sub(f"[{TYPOGRAPHIC_QUOTES}]", '"', line.strip())
        return ("typografische Anführungszeichen („…“) statt gerader (\"…\"); die setzt oft die Autokorrektur. "
                f"Richtig: {fixed}")
    match = KEY_VALUE.fullmatch(line)
    if not match or line.lstrip().startswith(("#", "[")):
        return None
    key, value = match.group(1), match.group(2)
    if value[:1] in ('"', "'"):
        quote = value[0]
        if len(re.findall(rf"(?<!\\){quote}", value)) == 1:
            return f"hier fehlt ein schließendes Anführungszeichen. Richtig: {key} = {value}{quote}"
        return None
    value = value.split(" #", 1)[0].strip()
    if date := GERMAN_DATE.fullmatch(value):
        day, month, year = (int(part) for part in date.groups())
        iso = _iso_date(year + 2000 if year < 100 else year, month, day)
        if not iso:
            return f"{value} gibt es nicht als Datum; ein Datum steht als Jahr-Monat-Tag, etwa {key} = 2026-12-01"
        return (f"ein Datum steht als Jahr-Monat-Tag: {key} = {iso} "
                f"(oder als Text in Anführungszeichen: {key} = \"{value}\")")
    if (date := SHORT_DATE.fullmatch(value)) and (iso := _iso_date(*(int(part) for part in date.groups()))):
        return f"Monat und Tag stehen zweistellig: {key} = {iso}"
    if COMMA_DECIMAL.fullmatch(value):
        return f"eine Kommazahl steht mit Punkt: {key} = {value.replace(',', '.')}"
    if value and value[:1] not in "[{":
        try:
            tomllib.loads(f"x = {value}")
        except tomllib.TOMLDecodeError:
            quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return f"Text gehört in gerade Anführungszeichen: {key} = {quoted}"
    return None


def _iso_date(year: int, month: int, day: int) -> str | None:
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def _open_line(lines: list[str]) -> int:
    """The line an error "at end of document" began on: the first with a quote or bracket left open."""
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        for quote in ('"', "'"):
            if '"""' not in text and "\'\'\'" not in text and len(re.findall(rf"(?<!\\){quote}", text)) % 2:
                return number
        if text.count("[") > text.count("]") or text.count("{") > text.count("}"):
            return number
    return 0


def config_from_dict(path: Path, data: dict[str, Any]) -> Config:
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(f"{path}: unbekannter Abschnitt [{key}]{_did_you_mean(key, SECTIONS)}")
    sections = {name: _section(path, name, cls, data.get(name, {})) for name, cls in SECTIONS.items()}
    if "newsletter" not in data:
        raise ConfigError(f"{path}: der Abschnitt [newsletter] fehlt")
    config = Config(path=path, **sections)
    _validate(config)
    return config


def _section(path: Path, name: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: [{name}] muss ein Abschnitt sein, kein einzelner Wert")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in values:
        if key not in fields:
            raise ConfigError(f"{path}: [{name}] {key}: unbekannter Schlüssel{_did_you_mean(key, fields)}")
    for f in fields.values():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in values:
            raise ConfigError(f"{path}: [{name}] {f.name}: fehlt, muss angegeben werden")
    converted = {}
    for key, value in values.items():
        converted[key] = _convert(path, f"[{name}] {key}", hints[key], value)
    return cls(**converted)


def _convert(path: Path, where: str, hint: Any, value: Any) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{path}: {where}: erwartet eine Liste von Texten wie ["…", "…"]')
        return value
    expected = hint if isinstance(hint, type) and not isinstance(hint, types.GenericAlias) else str
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        names = {str: "einen Text in Anführungszeichen", int: "eine ganze Zahl",
                 float: "eine Zahl", bool: "true oder false"}
        raise ConfigError(f"{path}: {where}: erwartet {names[expected]}, gefunden {value!r}")
    return value


def _validate(config: Config) -> None:
    path, nl, smtp, web = config.path, config.newsletter, config.smtp, config.web

    def fail(where: str, message: str) -> typing.NoReturn:
        raise ConfigError(f"{path}: {where}: {message}")

    if nl.language not in LANGUAGES:
        fail("[newsletter] language", f'"{nl.language}" wird nicht unterstützt, erlaubt: "de" oder "en"')
    for key in ("from_email", "reply_to"):
        value = getattr(nl, key)
        if value and not _valid_email(value):
            fail(f"[newsletter] {key}", f'"{value}" ist keine gültige E-Mail-Adresse')
    if not nl.from_email:
        fail("[newsletter] from_email", "darf nicht leer sein")
    if config.imprint.email and not _valid_email(config.imprint.email):
        fail("[imprint] email", f'"{config.imprint.email}" ist keine gültige E-Mail-Adresse')
    if nl.base_url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", nl.base_url):
        fail("[newsletter] base_url", f'"{nl.base_url}" ist keine Adresse wie "https://example.org"')
    if not nl.base_url.isascii():  # it goes into the List-Unsubscribe header, which is ASCII only
        fail("[newsletter] base_url", "bitte ohne Umlaute schreiben, eine Domain mit Umlauten in ihrer "
                                      "xn--…-Form (so zeigt sie dein Hoster an)")
    if nl.list_id and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z0-9-]+", nl.list_id):
        fail("[newsletter] list_id", f'"{nl.list_id}" ist keine Kennung wie "impuls.example.org"')
    if nl.website and not re.fullmatch(r"https?://\S+", nl.website):
        fail("[newsletter] website", f'"{nl.website}" ist keine Adresse wie "https://example.org"')
    if not nl.archive_path.startswith("/") or not nl.archive_path.endswith("/"):
        fail("[newsletter] archive_path", 'muss mit "/" beginnen und enden, z. B. "/archiv/"')
    if smtp.security not in SECURITY_MODES:
        fail("[smtp] security", f'"{smtp.security}" ist unbekannt, erlaubt: starttls, ssl, none')
    if not 0 <= smtp.port <= 65535:
        fail("[smtp] port", f"{smtp.port} ist kein gültiger Port")
    if smtp.connections < 1 or smtp.connections > 20:
        fail("[smtp] connections", "muss zwischen 1 und 20 liegen")
    if smtp.timeout <= 0:
        fail("[smtp] timeout", "muss größer als 0 sein")
    if smtp.retry_delay < 0 or smtp.limit_pause < 0:
        fail("[smtp] retry_delay" if smtp.retry_delay < 0 else "[smtp] limit_pause", "darf nicht negativ sein")
    if smtp.daily_limit < 0:
        fail("[smtp] daily_limit", "darf nicht negativ sein (0 heißt: keine Grenze)")
    if smtp.rate_limit:
        try:
            parse_rate(smtp.rate_limit)
        except ValueError as exc:
            fail("[smtp] rate_limit", str(exc))
    try:
        parse_duration(smtp.retry_window)
    except ValueError as exc:
        fail("[smtp] retry_window", str(exc))
    if smtp.tls_ca_file and not _resolve(path, smtp.tls_ca_file).is_file():
        fail("[smtp] tls_ca_file", f'"{smtp.tls_ca_file}" nicht gefunden')
    if web.confirm_days < 1:
        fail("[web] confirm_days", "muss mindestens 1 sein")
    if not 0 < web.port <= 65535:
        fail("[web] port", f"{web.port} ist kein gültiger Port")
    for key in ("signups_per_hour", "mails_per_address_per_day", "mails_per_domain_per_day"):
        if getattr(web, key) < 1:
            fail(f"[web] {key}", "muss mindestens 1 sein")
    imap = config.imap
    if imap.security not in IMAP_PORTS:
        fail("[imap] security", f'"{imap.security}" ist unbekannt, erlaubt: ssl, starttls (ohne Verschlüsselung nie)')
    if not 0 <= imap.port <= 65535:
        fail("[imap] port", f"{imap.port} ist kein gültiger Port")
    if imap.host and not imap.username:
        fail("[imap] username", "fehlt: mit welchem Benutzernamen meldest du dich am Postfach an?")
    if imap.soft_bounce_limit < 1:
        fail("[imap] soft_bounce_limit", "muss mindestens 1 sein")
    if imap.tls_ca_file and not _resolve(path, imap.tls_ca_file).is_file():
        fail("[imap] tls_ca_file", f'"{imap.tls_ca_file}" nicht gefunden')
    if web.privacy_url and not re.fullmatch(r"https?://\S+", web.privacy_url):
        fail("[web] privacy_url", f'"{web.privacy_url}" ist keine Adresse wie "https://example.org/datenschutz"')
    if web.form_page and not re.fullmatch(r"https?://\S+", web.form_page):
        fail("[web] form_page", f'"{web.form_page}" ist keine Adresse wie "https://example.org/newsletter"')


def _resolve(config_path: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else config_path.parent / candidate


def _valid_email(value: str) -> bool:
    from email_validator import EmailNotValidError, validate_email  # 40 ms: only when a config is read

    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _did_you_mean(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (meintest du „{close[0]}“?)" if close else ""

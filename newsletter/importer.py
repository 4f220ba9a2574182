"""CSV in and out of the subscriber file: what spreadsheets and other newsletter services export.

Reading is forgiving about the file (UTF-8 with or without BOM, UTF-16, Windows-1252; comma,
semicolon or tab; loosely named headers or none; a service's export zip) and strict about
people and their evidence: an import adds and completes records but never re-activates anyone
who left, bounced or was erased; it keeps every sign-up and confirmation time and IP exactly as
the file states them and makes none up; and a cell it cannot read (a date that does not exist,
a status nobody knows) stops the whole import before anything is written. All changes of one
import, however many files, are applied under one lock with one write.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path
from typing import IO, Any

from newsletter.errors import CsvError, SubscriberError
from newsletter.formats import (
    BOUNCED_AT,
    CAMPAIGN,
    CLEVERREACH,
    CONFIRM_IP,
    CONFIRMED_AT,
    EMAIL,
    FIRST,
    GENERIC,
    LAST,
    LEFT,
    MOMENTS,
    NAME,
    NEVER,
    NOTE,
    OWN,
    REASON,
    REASON_OTHER,
    SIGNUP_AT,
    SIGNUP_IP,
    SOURCE,
    STATUS,
    STRICTNESS,
    TAGS,
    UNSUBSCRIBED_AT,
    Layout,
    parse_moment,
    recognise,
    yes_no,
)
from newsletter.subscribers import (
    ACTIVE,
    BOUNCED,
    CONFIRMED,
    CONTROL,
    IMPORTED,
    NO_PROOF,
    PENDING,
    SCALAR_ORDER,
    UNSUBSCRIBED,
    Event,
    Moment,
    Subscriber,
    SubscriberList,
    SubscriberStore,
    earliest,
    email_key,
    event_problem,
    latest,
    normalize_email,
    now,
    proof_of_consent,
)

DELIMITERS = ("\t", ";", ",")  # on a tie the earlier wins: a tab or semicolon is rarely data
DELIMITER_NAMES = {"\t": "Tabulator", ";": "Semikolon", ",": "Komma"}
SAMPLE_LINES = 20
MAX_PROBLEMS = 20           # lines shown of a file full of one mistake; the count says the rest
MAX_MEMBER_BYTES = 200_000_000  # a CSV inside a zip larger than this is refused (a zip bomb, not a list)

# This tool's own export: these columns are restored as they were (id, so old unsubscribe links work).
RESTORED = ("id", "source", "invited_at", "consent_version", "consent_text", "signup_page", "note", "events")
OWN_MOMENTS = {"subscribed_at": SIGNUP_AT, "confirmed_at": CONFIRMED_AT, "unsubscribed_at": UNSUBSCRIBED_AT,
               "bounced_at": BOUNCED_AT}
OWN_IPS = {"signup_ip": SIGNUP_IP, "confirm_ip": CONFIRM_IP}

SKIP_REASONS = {
    "invalid": "ungültige Adresse",
    "duplicate": "doppelt in der Datei",
    "unsubscribed": "abgemeldet",
    "bounced": "unzustellbar",
    "erased": "gelöscht",
    "never": "laut Datei nie angemeldet",
}
# What a file's name or columns say about all its rows, in the report's words.
FILE_STATE_WORDS = {ACTIVE: "angemeldet", PENDING: "unbestätigt", UNSUBSCRIBED: "abgemeldet",
                    BOUNCED: "unzustellbar", NEVER: "nie angemeldet"}
IMPORT_STATUSES = (PENDING, ACTIVE)
ADDED, UPDATED, UNCHANGED, SKIPPED = "added", "updated", "unchanged", "skipped"
OUTCOMES = (ADDED, UPDATED, UNCHANGED, SKIPPED)


class ImportProblems(CsvError):
    """Cells an import cannot read; each problem is one line naming file and line, nothing is written."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (und {len(problems) - 1} weitere Probleme)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)

    def lines(self) -> list[str]:
        """What to show: the first MAX_PROBLEMS problems, then how many more there are."""
        shown = self.problems[:MAX_PROBLEMS]
        if len(self.problems) > MAX_PROBLEMS:
            shown.append(f"… und {len(self.problems) - MAX_PROBLEMS} weitere Probleme; nichts wurde importiert")
        return shown


@dataclass(frozen=True)
class CsvRow:
    """One row, understood: the address and what the file states about the person, as stated."""

    row: int  # the line in the file where the row starts (a header is line 1, as in Excel)
    email: str
    name: str = ""
    status: str = ""        # what the file says, in our words: active, pending, unsubscribed, bounced, never
    status_cell: str = ""   # the file's own status cell, as written
    signup_at: Moment | None = None
    signup_ip: str = ""
    confirmed_at: Moment | None = None
    confirm_ip: str = ""
    unsubscribed_at: Moment | None = None
    bounced_at: Moment | None = None
    reason: str = ""
    source: str = ""        # the source the other service recorded
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # this tool's own export, restored as it was

    @property
    def has_doi_evidence(self) -> bool:
        """Both the sign-up and its confirmation are dated: a double opt-in on record."""
        return self.signup_at is not None and self.confirmed_at is not None

    def stated(self) -> tuple[Any, ...]:
        return (self.signup_at, self.signup_ip, self.confirmed_at, self.confirm_ip)


@dataclass(frozen=True)
class CsvTable:
    """A CSV file read and understood: its rows plus how it was written and what it is."""

    filename: str          # as shown in messages: the path given, or zip/member
    rows: list[CsvRow]
    encoding: str
    delimiter: str
    header: list[str] | None  # None: a plain list of addresses without a header line
    format: str = GENERIC.label
    file_status: str = ""     # what the file's name or columns say about every row, e.g. unsubscribed_members_export
    file_state: str = ""      # … in German: "abgemeldet"
    name: str = ""            # the short name kept in the history (no folders)

    @property
    def short_name(self) -> str:
        return self.name or Path(self.filename).name

    @property
    def described(self) -> str:
        """The recognised format for the report, e.g. "Mailchimp (abgemeldet laut unsubscribed_members_export)"."""
        return f"{self.format} ({self.file_state} laut {self.file_status})" if self.file_status else self.format


# -- reading ---------------------------------------------------------------------------------------

def read_import_files(paths: Sequence[Path]) -> list[CsvTable]:
    """Every CSV of the given files (a zip holds several); all problems of all files at once."""
    tables: list[CsvTable] = []
    problems: list[str] = []
    for path in paths:
        try:
            tables.extend(read_import_file(path))
        except ImportProblems as exc:
            problems.extend(exc.problems)
        except CsvError as exc:
            problems.append(str(exc))
    if problems:
        raise ImportProblems(problems)
    return tables


def read_import_file(path: Path) -> list[CsvTable]:
    """One file from disk: a CSV, or a zip of CSVs such as Mailchimp's export."""
    data = _read_bytes(path)
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return read_zip(data, str(path))
    return [read_csv(data, str(path))]


def read_csv_file(path: Path) -> CsvTable:
    """Read a CSV file from disk; CsvError for anything that is not a usable table."""
    return read_csv(_read_bytes(path), str(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CsvError(f"{path}: Datei nicht gefunden") from None
    except IsADirectoryError:
        raise CsvError(f"{path}: ist ein Ordner, keine CSV-Datei") from None
    except OSError as exc:
        raise CsvError(f"{path}: kann nicht gelesen werden ({exc.strerror})") from None


def read_zip(data: bytes, filename: str) -> list[CsvTable]:
    """The CSVs inside an export zip, in name order; an Excel file or a zip without CSV is an error."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        raise CsvError(f"{filename}: ist keine lesbare ZIP-Datei (beschädigt oder unvollständig geladen?)") from None
    names = {member.filename for member in members}
    if "[Content_Types].xml" in names or any(name.startswith("xl/") for name in names):
        raise CsvError(f"{filename}: ist eine Excel-Datei, keine CSV-Datei. In Excel: „Speichern unter“ → "
                       "„CSV UTF-8 (durch Trennzeichen getrennt)“.")
    found = sorted((m for m in members if not m.is_dir() and m.filename.lower().endswith(".csv")
                    and not _hidden(m.filename)), key=lambda m: m.filename)
    if not found:
        listed = ", ".join(sorted(names)[:5]) or "nichts"
        raise CsvError(f"{filename}: enthält keine CSV-Datei (darin: {listed})")
    tables: list[CsvTable] = []
    problems: list[str] = []
    zip_name = Path(filename).name
    for member in found:
        shown = f"{filename}/{member.filename}"
        try:
            if member.flag_bits & 0x1:
                raise CsvError(f"{shown}: ist verschlüsselt; bitte ohne Passwort exportieren")
            if member.file_size > MAX_MEMBER_BYTES:
                raise CsvError(f"{shown}: ist zu groß ({member.file_size // 1_000_000} MB entpackt)")
            with archive.open(member) as handle:
                content = handle.read(MAX_MEMBER_BYTES + 1)
            if len(content) > MAX_MEMBER_BYTES:
                raise CsvError(f"{shown}: ist zu groß (entpackt über {MAX_MEMBER_BYTES // 1_000_000} MB)")
            table = read_csv(content, shown)
            tables.append(replace(table, name=f"{zip_name}/{member.filename}"))
        except ImportProblems as exc:
            problems.extend(exc.problems)
        except CsvError as exc:
            problems.append(str(exc))
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):
            problems.append(f"{shown}: lässt sich nicht entpacken (beschädigt oder unbekanntes Verfahren)")
    if problems:
        raise ImportProblems(problems)
    return tables


def _hidden(name: str) -> bool:
    """What macOS and editors add to a zip: __MACOSX/, ._name, .DS_Store."""
    return any(part.startswith((".", "__MACOSX")) for part in name.split("/"))


def read_csv(data: bytes, filename: str = "CSV") -> CsvTable:
    """Decode, detect the delimiter, the format and the columns, and return the rows with their line numbers.

    A cell that cannot be read (an impossible date, an unknown status) is an ImportProblems
    naming every such line, so a file is imported whole or not at all.
    """
    text, encoding = _decode(data, filename)
    delimiter = _detect_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    numbered: list[tuple[int, list[str]]] = []
    line = 0
    try:
        for cells in reader:
            start, line = line + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                numbered.append((start, [cell.strip() for cell in cells]))
    except csv.Error as exc:
        raise CsvError(f"{filename}: Zeile {reader.line_num}: kein gültiges CSV ({exc})") from None
    if not numbered:
        raise CsvError(f"{filename}: ist leer")
    first = numbered[0][1]
    layout = recognise(first, filename)
    if layout is not None:
        header: list[str] | None = first
        body = numbered[1:]
        if not body:
            raise CsvError(f"{filename}: enthält keine Adressen, nur die Kopfzeile")
    else:
        layout = _layout_without_header(first)
        if layout is None:
            raise CsvError(
                f"{filename}: keine Spalte mit E-Mail-Adressen gefunden (erwartet eine Überschrift "
                f"wie „E-Mail“ oder „email“; die erste Zeile ist: {'; '.join(first)[:120]})")
        header, body = None, numbered
    problems: list[str] = []
    reading = _RowReader(filename, layout, header or [], problems)
    rows = [reading.row(number, cells) for number, cells in body]
    if problems:
        raise ImportProblems(problems)
    return CsvTable(filename=filename, rows=rows, encoding=encoding, delimiter=delimiter, header=header,
                    format=layout.format.label if header is not None else "Adressliste",
                    file_status=layout.file_status_label,
                    file_state=FILE_STATE_WORDS.get(layout.file_status, "") if layout.file_status_label else "")


def _decode(data: bytes, filename: str) -> tuple[str, str]:
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8):].decode("utf-8"), "UTF-8 mit BOM"
        except UnicodeDecodeError:
            raise CsvError(f"{filename}: ist als UTF-8 markiert, enthält aber ungültige Zeichen") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode-Text"
        try:
            return data.decode("utf-16"), "UTF-16"
        except UnicodeDecodeError:
            raise CsvError(f"{filename}: ist als UTF-16 markiert, enthält aber ungültige Zeichen") from None
    _refuse_binary(data, filename)
    try:
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        raise CsvError(f"{filename}: ist weder UTF-8 noch Windows-1252 (Binärdaten?)") from None


def _refuse_binary(data: bytes, filename: str) -> None:
    """Spreadsheets and other binary files get one clear sentence instead of garbage rows."""
    save_as = "In Excel: „Speichern unter“ → „CSV UTF-8 (durch Trennzeichen getrennt)“."
    if data.startswith(b"PK\x03\x04"):
        raise CsvError(f"{filename}: ist eine Excel- oder ZIP-Datei, keine CSV-Datei. {save_as}")
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise CsvError(f"{filename}: ist eine alte Excel-Datei (.xls), keine CSV-Datei. {save_as}")
    sample = data[:8192]
    control = sum(1 for byte in sample if byte < 32 and byte not in b"\t\n\r\f")
    if b"\x00" in sample or control > len(sample) // 100:
        raise CsvError(f"{filename}: ist keine Textdatei (Binärdaten), also keine CSV-Datei")


def _detect_delimiter(text: str) -> str:
    """The delimiter that splits the first lines into the most, and most even, columns."""
    sample = [line for line in text.splitlines()[:SAMPLE_LINES * 2] if line.strip()][:SAMPLE_LINES]
    best, best_score = ",", (False, 0, 0)
    for delimiter in DELIMITERS:
        widths = [len(cells) for cells in csv.reader(sample, delimiter=delimiter)]
        if not widths:
            continue
        score = (widths[0] > 1, sum(width == widths[0] for width in widths), widths[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _layout_without_header(cells: list[str]) -> Layout | None:
    """A plain list: the column holding an address, and the other one as the name if there are two."""
    email = next((i for i, cell in enumerate(cells) if "@" in cell), None)
    if email is None:
        return None
    columns = {EMAIL: email} | ({NAME: 1 - email} if len(cells) == 2 else {})
    return Layout(GENERIC, columns)


class _RowReader:
    """Turns the cells of one row into a CsvRow, noting every cell it cannot read."""

    def __init__(self, filename: str, layout: Layout, header: list[str], problems: list[str]) -> None:
        self.filename = filename
        self.layout = layout
        self.format = layout.format
        self.header = header
        self.problems = problems
        self.restored = ({name: index for index, name in enumerate(h.strip().lower() for h in header)}
                         if self.format is OWN else {})

    def problem(self, number: int, column: int, message: str) -> None:
        name = self.header[column] if column < len(self.header) else f"Spalte {column + 1}"
        self.problems.append(f"{self.filename}: Zeile {number}, Spalte „{name}“: {message}")

    def row(self, number: int, cells: list[str]) -> CsvRow:
        columns = self.layout.columns

        def cell(meaning: str) -> str:
            index = columns.get(meaning)
            return cells[index] if index is not None and index < len(cells) else ""

        name = cell(NAME) or " ".join(part for part in (cell(FIRST), cell(LAST)) if part)
        address = cell(EMAIL)
        if "<" in address and address.endswith(">"):  # "Anna Müller <anna@example.org>"
            display, address = parseaddr(address)
            name = name or display
        statuses = [self.layout.file_status]
        status_cell = cell(STATUS)
        if status_cell:
            meaning = self.format.status_of(status_cell)
            if meaning is None:
                self.problem(number, columns[STATUS], f"Status „{status_cell}“ ist unbekannt (bekannt sind z. B. "
                             "subscribed, unsubscribed, cleaned, pending, aktiv, abgemeldet); bitte in aktiv, "
                             "unbestätigt, abgemeldet oder unzustellbar ändern")
            else:
                statuses.append(meaning)
        moments: dict[str, Moment | None] = {}
        texts = {meaning: cell(meaning) for meaning in MOMENTS}
        if self.format is OWN:
            texts.update({meaning: self._own(cells, column) for column, meaning in OWN_MOMENTS.items()})
        for meaning, text in texts.items():
            if not text:
                continue
            index = columns.get(meaning, self.restored.get(_own_column(meaning), 0))
            try:
                moments[meaning] = parse_moment(text, self.format.zone)
            except ValueError as exc:
                flag = yes_no(text) if self.format is GENERIC else None
                if flag is None:
                    self.problem(number, index, str(exc))
                elif flag and meaning == UNSUBSCRIBED_AT:  # a yes/no column: "abgemeldet: ja"
                    statuses.append(UNSUBSCRIBED)
        if moments.get(UNSUBSCRIBED_AT):
            statuses.append(UNSUBSCRIBED)
        if moments.get(BOUNCED_AT):
            statuses.append(BOUNCED)
        if self.format is CLEVERREACH:  # no status column: activated or not, deactivated or not
            statuses.append(ACTIVE if moments.get(CONFIRMED_AT) else PENDING)
        for index in self.layout.blocklists:
            flag = yes_no(cells[index]) if index < len(cells) else False
            if flag is None:
                self.problem(number, index, f"„{cells[index]}“ ist weder ja noch nein")
            elif flag:
                statuses.append(UNSUBSCRIBED)
        ips = {meaning: cell(meaning) for meaning in (SIGNUP_IP, CONFIRM_IP)}
        if self.format is OWN:
            ips.update({meaning: self._own(cells, column) for column, meaning in OWN_IPS.items()})
        reason = "; ".join(part for part in (cell(REASON), cell(REASON_OTHER)) if part)
        if campaign := cell(CAMPAIGN):
            reason = "; ".join(part for part in (reason, f"Kampagne „{campaign}“") if part)
        tags = ", ".join(tag.strip() for tag in cell(TAGS).replace('"', "").split(",") if tag.strip())
        note = "; ".join(part for part in (cell(NOTE), f"Tags: {tags}" if tags else "") if part)
        return CsvRow(
            row=number, email=address, name=name, status=max(statuses, key=STRICTNESS.__getitem__),
            status_cell=status_cell, signup_at=moments.get(SIGNUP_AT), signup_ip=_flat(ips[SIGNUP_IP]),
            confirmed_at=moments.get(CONFIRMED_AT), confirm_ip=_flat(ips[CONFIRM_IP]),
            unsubscribed_at=moments.get(UNSUBSCRIBED_AT), bounced_at=moments.get(BOUNCED_AT),
            reason=_flat(reason), source=_flat(cell(SOURCE)), note=_flat(note),
            details=self._details(number, cells) if self.format is OWN else {})

    def _own(self, cells: list[str], column: str) -> str:
        index = self.restored.get(column)
        return cells[index].removeprefix("'") if index is not None and index < len(cells) else ""

    def _details(self, number: int, cells: list[str]) -> dict[str, Any]:
        """The columns of this tool's own export as stored values (an --excel export's apostrophes dropped)."""
        details: dict[str, Any] = {}
        for name in RESTORED:
            value = self._own(cells, name)
            if not value:
                continue
            if name == "events":
                events = _events_from_json(value)
                if isinstance(events, str):
                    self.problem(number, self.restored[name], events)
                else:
                    details[name] = events
            elif name == "invited_at":
                try:
                    moment = parse_moment(value, dt.UTC)
                except ValueError as exc:
                    self.problem(number, self.restored[name], str(exc))
                else:
                    if isinstance(moment, dt.datetime):
                        details[name] = moment
            else:
                details[name] = value
        return details


def _own_column(meaning: str) -> str:
    return next((column for column, known in (OWN_MOMENTS | OWN_IPS).items() if known == meaning), "")


def _flat(text: str) -> str:
    """A cell kept as text: one line, control characters gone, at most 500 characters."""
    return " ".join(CONTROL.sub(" ", text).split())[:500]


def _events_from_json(text: str) -> list[Event] | str:
    """The `events` column of this tool's export back as events; a German problem if it is damaged."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        return "das Ereignisprotokoll ist kein gültiges JSON"
    if not isinstance(raw, list):
        return "das Ereignisprotokoll muss eine Liste sein"
    events = []
    for number, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            return f"Ereignis {number} ist kein Objekt"
        values: dict[str, Any] = {}
        for key, value in item.items():
            if (key == "at" or key.endswith("_at")) and isinstance(value, str):
                try:
                    values[key] = (dt.date.fromisoformat(value) if len(value) == 10
                                   else dt.datetime.fromisoformat(value))
                except ValueError:
                    return f"Ereignis {number}: {key} „{value}“ ist kein Zeitpunkt"
            else:
                values[key] = value
        event = event_problem(values)
        if isinstance(event, str):
            return f"Ereignis {number}: {event}"
        events.append(event)
    return events


# -- applying ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowResult:
    row: int
    email: str
    code: str = ""     # skipped: invalid | duplicate | unsubscribed | bounced | erased | never
    reason: str = ""   # in German: why skipped, or what was done
    file: str = ""
    outcome: str = ""  # added | updated | unchanged | skipped
    status: str = ""   # the person's status after the import ("" if skipped without a record)
    proof: str = ""    # how the person's consent is evidenced afterwards (subscribers.proof_of_consent)


@dataclass
class FileReport:
    """What one file brought: its format and each row's outcome, in row order."""

    filename: str
    format: str
    encoding: str
    delimiter: str
    rows: list[RowResult] = field(default_factory=list)

    def of(self, outcome: str) -> list[RowResult]:
        return [row for row in self.rows if row.outcome == outcome]

    def counts(self) -> dict[str, int]:
        return {outcome: len(self.of(outcome)) for outcome in OUTCOMES}

    def added_by_status(self) -> dict[str, int]:
        """New people by the status they were given: how many came in active, pending, or as having left."""
        counts: dict[str, int] = dict.fromkeys((ACTIVE, PENDING, UNSUBSCRIBED, BOUNCED), 0)
        for row in self.of(ADDED):
            counts[row.status] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {"filename": self.filename, "format": self.format, "encoding": self.encoding,
                "delimiter": self.delimiter, "counts": self.counts(), "added_by_status": self.added_by_status(),
                "rows": len(self.rows)}


@dataclass
class ImportReport:
    files: list[FileReport]
    dry_run: bool

    def _all(self, outcome: str) -> list[RowResult]:
        return [row for report in self.files for row in report.of(outcome)]

    @property
    def added(self) -> list[RowResult]:
        return self._all(ADDED)

    @property
    def updated(self) -> list[RowResult]:
        return self._all(UPDATED)

    @property
    def unchanged(self) -> list[RowResult]:
        return self._all(UNCHANGED)

    @property
    def skipped(self) -> list[RowResult]:
        return self._all(SKIPPED)

    @property
    def rows(self) -> int:
        return sum(len(report.rows) for report in self.files)

    @property
    def without_proof(self) -> list[RowResult]:
        """People on the list afterwards whose consent this import could not evidence, once each."""
        seen: set[str] = set()
        listed = []
        for report in self.files:
            for row in report.rows:
                if row.proof == NO_PROOF and row.status in (ACTIVE, PENDING) and email_key(row.email) not in seen:
                    seen.add(email_key(row.email))
                    listed.append(row)
        return listed

    def to_json(self) -> dict[str, Any]:
        def rows(items: list[RowResult]) -> list[dict[str, Any]]:
            return [row.__dict__.copy() for row in items]

        return {
            "dry_run": self.dry_run,
            "files": [report.to_json() for report in self.files],
            "counts": {outcome: len(self._all(outcome)) for outcome in OUTCOMES},
            "added": rows(self.added), "updated": rows(self.updated), "unchanged": rows(self.unchanged),
            "skipped": rows(self.skipped), "without_proof": rows(self.without_proof),
        }


def import_csv(store: SubscriberStore, table: CsvTable, status: str = PENDING, source: str = "",
               dry_run: bool = False) -> ImportReport:
    """Apply one read CSV (see import_tables)."""
    return import_tables(store, [table], status, source, dry_run)


def import_tables(store: SubscriberStore, tables: Sequence[CsvTable], status: str = PENDING, source: str = "",
                  dry_run: bool = False) -> ImportReport:
    """Apply read files to the subscriber file under one lock with one write (none if dry_run).

    `status` is what the author vouches for where a file gives no evidence (pending, or active
    when she knows they all consented); `source` replaces the default "Import <file>".
    """
    if status not in IMPORT_STATUSES:
        raise SubscriberError(f"Import mit Status „{status}“ geht nicht (erlaubt: pending, active)")
    report = ImportReport([FileReport(t.filename, t.described, t.encoding, t.delimiter) for t in tables], dry_run)
    if dry_run:
        _Import(store.load(), tables, report, status, source).run()
    else:
        with store.change() as people:
            _Import(people, tables, report, status, source).run()
    return report


class _Import:
    """One import: every row of every file sorted into added, updated, unchanged or skipped.

    The list wins over the files, and leaving wins over everything: rows of one address are
    applied strictest first (unsubscribed, cleaned … before pending, before subscribed), so an
    address subscribed in one file and unsubscribed in another ends unsubscribed, whatever
    the order of the files, and a later import never brings anyone back.
    """

    def __init__(self, people: SubscriberList, tables: Sequence[CsvTable], report: ImportReport, status: str,
                 source: str) -> None:
        self.people = people
        self.tables = tables
        self.report = report
        self.status = status
        self.source = source
        self.at = now()
        self.results: list[tuple[int, CsvRow, str, str, str, str, Subscriber | None]] = []
        self.handled: dict[str, tuple[int, int]] = {}  # address → (file, line) of the row applied first
        self.decided: dict[str, tuple[int, int]] = {}  # address → (file, line) of the row that set its status

    def run(self) -> None:
        groups: dict[str, list[tuple[int, CsvRow, str]]] = {}
        for index, table in enumerate(self.tables):
            for row in table.rows:
                try:
                    address = normalize_email(row.email)
                except SubscriberError:
                    self._note(index, row, row.email, SKIPPED, "invalid")
                    continue
                groups.setdefault(email_key(address), []).append((index, row, address))
        for key, candidates in groups.items():
            candidates.sort(key=lambda candidate: -STRICTNESS[candidate[1].status])
            for index, row, address in candidates:
                first = self.handled.get(key)
                if first is not None and first[0] == index:
                    self._note(index, row, row.email, SKIPPED, "duplicate", f"wie Zeile {first[1]}")
                    continue
                self.handled.setdefault(key, (index, row.row))
                self._apply(index, row, address)
        self._finish()

    def _note(self, index: int, row: CsvRow, email: str, outcome: str, code: str = "", reason: str = "",
              person: Subscriber | None = None) -> None:
        if code:
            reason = SKIP_REASONS[code] + (f" ({reason})" if reason else "")
        self.results.append((index, row, email, outcome, code, reason, person))

    def _finish(self) -> None:
        for index, row, email, outcome, code, reason, person in sorted(self.results, key=lambda r: (r[0], r[1].row)):
            status = person.status if person is not None else ""
            proof = proof_of_consent(person) if person is not None else ""
            self.report.files[index].rows.append(RowResult(row.row, email, code, reason, self.tables[index].filename,
                                                           outcome, status, proof))

    def _apply(self, index: int, row: CsvRow, address: str) -> None:
        people = self.people
        existing = people.get(address)
        if existing is None:
            if people.is_suppressed(address):
                self._note(index, row, address, SKIPPED, "erased")
            elif row.status == NEVER:
                self._note(index, row, address, SKIPPED, "never", row.status_cell or self.tables[index].file_status)
            else:
                self._add(index, row, address)
            return
        decided = self.decided.get(existing.key)
        where = f"laut {self.tables[decided[0]].short_name}, Zeile {decided[1]}" if decided else ""
        if existing.status in (UNSUBSCRIBED, BOUNCED):
            self._note(index, row, existing.email, SKIPPED, existing.status, where, existing)
        elif row.status == NEVER:
            self._note(index, row, existing.email, UNCHANGED, reason="laut Datei nie angemeldet; hier "
                       "bleibt der Eintrag, wie er ist", person=existing)
        elif row.status in LEFT:
            self._leave(index, row, existing)
        else:
            self._complete(index, row, existing)

    def _event(self, index: int, row: CsvRow, status: str) -> Event:
        """The import of this row, with everything the file states about the past, as stated."""
        table = self.tables[index]
        stated = not row.details.get("events")  # a moved record brings its own history instead
        return Event(
            IMPORTED, self.at, status=status, file=table.short_name, format=table.format, line=row.row,
            file_status=row.status_cell or table.file_status, source=row.source,
            consent_version=row.details.get("consent_version", "") if stated else "",
            consent_text=row.details.get("consent_text", "") if stated else "",
            signup_at=row.signup_at if stated else None, signup_ip=row.signup_ip if stated else "",
            confirmed_at=row.confirmed_at if stated else None, confirm_ip=row.confirm_ip if stated else "",
            unsubscribed_at=row.unsubscribed_at, bounced_at=row.bounced_at, reason=row.reason)

    def _add(self, index: int, row: CsvRow, address: str) -> None:
        """A new person: the stricter of the file's status and the import's wins; evidence makes active."""
        if row.status in (UNSUBSCRIBED, BOUNCED, PENDING):
            status = row.status
        elif row.has_doi_evidence:
            status = ACTIVE
        else:
            status = self.status
        details = dict(row.details)
        subscriber_id = details.pop("id", None)
        source = details.pop("source", "") or self.source or f"Import {self.tables[index].short_name}"
        note = details.pop("note", "") or row.note
        person = self.people.add(
            address, row.name, status, source, subscriber_id=subscriber_id, stamp=False,
            event=self._event(index, row, status), subscribed_at=row.signup_at, confirmed_at=row.confirmed_at,
            unsubscribed_at=row.unsubscribed_at, bounced_at=row.bounced_at, signup_ip=row.signup_ip,
            confirm_ip=row.confirm_ip, note=note, **details)
        if status in LEFT:
            reason = f"{SKIP_REASONS[status]} (laut Datei)"
        elif status == ACTIVE:
            reason = "aktiv, Double-Opt-in belegt" if row.has_doi_evidence else "aktiv, ohne DOI-Nachweis"
        else:
            reason = "unbestätigt"
        self.decided[person.key] = (index, row.row)
        self._note(index, row, person.email, ADDED, reason=reason, person=person)

    def _leave(self, index: int, row: CsvRow, existing: Subscriber) -> None:
        """Someone on the list who left over there leaves here too, unless they confirmed here afterwards."""
        left_at = row.unsubscribed_at or row.bounced_at
        if left_at is not None and any(e.kind == CONFIRMED and earliest(e.at) > latest(left_at)
                                       for e in existing.events):
            self._note(index, row, existing.email, UNCHANGED, reason="dort abgemeldet, hier danach neu bestätigt",
                       person=existing)
            return
        self.people.set_status(existing, row.status, self._event(index, row, row.status))
        self.decided[existing.key] = (index, row.row)
        self._note(index, row, existing.email, UPDATED, reason=f"{SKIP_REASONS[row.status]} (laut Datei)",
                   person=existing)

    def _complete(self, index: int, row: CsvRow, existing: Subscriber) -> None:
        """Fill in what is missing (name, evidence) and confirm a pending person; never overwrite."""
        people = self.people
        changes = []
        if row.name and not existing.name and people.set_name(existing, row.name):
            changes.append("Name ergänzt")
        known = {(e.signup_at, e.signup_ip, e.confirmed_at, e.confirm_ip)
                 for e in existing.events if e.kind == IMPORTED}
        if any(row.stated()) and row.stated() not in known:
            # The fields summarise one sign-up: they are completed from the first file that has
            # evidence, never pieced together from several. Every file's evidence is in the history.
            if not any(any(stated) for stated in known) and not any(e.kind == CONFIRMED for e in existing.events):
                for name, value in (("subscribed_at", row.signup_at), ("signup_ip", row.signup_ip),
                                    ("confirmed_at", row.confirmed_at), ("confirm_ip", row.confirm_ip)):
                    if value and not getattr(existing, name):
                        setattr(existing, name, value)
            changes.append("Anmelde- und Bestätigungsdaten der Datei ergänzt" if row.has_doi_evidence
                           else "Angaben der Datei ergänzt")
        activate = existing.status == PENDING and row.status != PENDING and (
            row.has_doi_evidence or self.status == ACTIVE)
        if activate:
            people.set_status(existing, ACTIVE, self._event(index, row, ACTIVE))
            changes.append("jetzt aktiv, Double-Opt-in belegt" if row.has_doi_evidence
                           else "jetzt aktiv, ohne DOI-Nachweis")
        elif changes:
            people.record(existing, self._event(index, row, existing.status))
        outcome = UPDATED if changes else UNCHANGED
        self._note(index, row, existing.email, outcome, reason=", ".join(changes), person=existing)


# -- exporting ---------------------------------------------------------------------------------------

EXPORT_COLUMNS = (*SCALAR_ORDER, "events")


def export_rows(people: Iterable[Subscriber]) -> Iterator[list[str]]:
    """Every field of every person as text; the history as one JSON cell (read back by `import`)."""
    for person in people:
        record = person.to_json()
        events = record.pop("events")
        values = ["" if value is None else str(value) for value in record.values()]
        values.append(json.dumps(events, ensure_ascii=False, separators=(",", ":")) if events else "")
        yield values


def write_csv(people: Iterable[Subscriber], stream: IO[str], excel: bool = False) -> None:
    """All fields of every person as CSV; `excel` writes what German Excel opens directly.

    For Excel: semicolons, a BOM so umlauts survive, and cells that Excel would run as a
    formula (=, +, -, @) prefixed with an apostrophe. Without `excel` the data is exact.
    """
    if excel:
        stream.write("\ufeff")
    writer = csv.writer(stream, delimiter=";" if excel else ",", lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    for values in export_rows(people):
        if excel:
            values = [f"'{value}" if value[:1] in ("=", "+", "-", "@") else value for value in values]
        writer.writerow(values)


def write_json(people: Iterable[Subscriber], stream: IO[str]) -> None:
    json.dump([person.to_json() for person in people], stream, ensure_ascii=False, indent=2)
    stream.write("\n")


def export_file(people: Iterable[Subscriber], path: Path, as_json: bool = False,
                excel: bool = False, overwrite: bool = False) -> None:
    """Write an export readable only by its owner (it is personal data); never overwrite silently."""
    with private_file(path, overwrite) as stream:
        if as_json:
            write_json(people, stream)
        else:
            write_csv(people, stream, excel)


def private_file(path: Path, overwrite: bool = False) -> IO[str]:
    """A new text file only its owner can read; SubscriberError if it exists (unless overwrite)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SubscriberError(f"{path}: gibt es schon (mit --force überschreiben)") from None
    except OSError as exc:
        raise SubscriberError(f"{path}: kann nicht geschrieben werden ({exc.strerror})") from None
    return os.fdopen(fd, "w", encoding="utf-8", newline="")

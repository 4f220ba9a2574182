"""CSV in and out of the subscriber file: what spreadsheets and other newsletter tools export.

Reading is forgiving about the file (UTF-8 with or without BOM, UTF-16, Windows-1252;
comma, semicolon or tab; loosely named headers or none) and strict about people: an
import adds and completes records but never re-activates anyone who left, bounced or was
erased, and all its changes are applied under one lock with one write.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import IO, Any

from newsletter.errors import CsvError, SubscriberError
from newsletter.subscribers import (
    ACTIVE,
    BOUNCED,
    FIELD_ORDER,
    PENDING,
    UNSUBSCRIBED,
    Subscriber,
    SubscriberList,
    SubscriberStore,
    email_key,
    normalize_email,
)

DELIMITERS = ("\t", ";", ",")  # on a tie the earlier wins: a tab or semicolon is rarely data
DELIMITER_NAMES = {"\t": "Tabulator", ";": "Semikolon", ",": "Komma"}
SAMPLE_LINES = 20

# Header names, compared after lowercasing and dropping everything but letters and digits.
EMAIL_HEADERS = {"email", "emailaddress", "emailadresse", "mail", "mailadresse", "mailaddress",
                 "epost", "epostadresse"}
NAME_HEADERS = {"name", "fullname", "vollername", "vollständigername", "anzeigename",
                "displayname", "vorundnachname"}
FIRST_NAME_HEADERS = {"vorname", "firstname", "first", "givenname", "rufname"}
LAST_NAME_HEADERS = {"nachname", "lastname", "last", "surname", "familienname", "zuname"}
STATUS_HEADERS = {"status", "memberstatus", "abostatus", "zustand"}
# What other tools (and this one's own export) call the states; anything else is refused per row.
STATUS_VALUES = {
    "active": ACTIVE, "aktiv": ACTIVE, "subscribed": ACTIVE, "confirmed": ACTIVE, "bestätigt": ACTIVE,
    "pending": PENDING, "unbestätigt": PENDING, "unconfirmed": PENDING,
    "unsubscribed": UNSUBSCRIBED, "abgemeldet": UNSUBSCRIBED, "unsubscribe": UNSUBSCRIBED,
    "bounced": BOUNCED, "cleaned": BOUNCED, "unzustellbar": BOUNCED,
}
# This tool's own export: these columns are restored as they were (id, so old unsubscribe links work).
RESTORED = ("id", "source", "subscribed_at", "confirmed_at", "unsubscribed_at", "bounced_at",
            "consent_version", "consent_text", "signup_ip", "signup_page", "confirm_ip", "note")

SKIP_REASONS = {
    "invalid": "ungültige Adresse",
    "duplicate": "doppelt in der Datei",
    "unsubscribed": "abgemeldet",
    "bounced": "unzustellbar",
    "erased": "gelöscht",
    "status": "Status unbekannt",
}
IMPORT_STATUSES = (PENDING, ACTIVE)


@dataclass(frozen=True)
class CsvRow:
    row: int  # the line in the file where the row starts (a header is line 1, as in Excel)
    email: str
    name: str = ""
    status: str = ""  # the file's own status cell, as written ("" when the file has none)
    details: dict[str, str] = field(default_factory=dict)  # RESTORED columns of this tool's export


@dataclass(frozen=True)
class CsvTable:
    """A CSV file read and understood: its rows plus how it was written."""

    filename: str
    rows: list[CsvRow]
    encoding: str
    delimiter: str
    header: list[str] | None  # None: a plain list of addresses without a header line


def read_csv_file(path: Path) -> CsvTable:
    """Read a CSV file from disk; CsvError for anything that is not a usable table."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CsvError(f"{path}: Datei nicht gefunden") from None
    except IsADirectoryError:
        raise CsvError(f"{path}: ist ein Ordner, keine CSV-Datei") from None
    except OSError as exc:
        raise CsvError(f"{path}: kann nicht gelesen werden ({exc.strerror})") from None
    return read_csv(data, str(path))


def read_csv(data: bytes, filename: str = "CSV") -> CsvTable:
    """Decode, detect the delimiter and the columns, and return the rows with their line numbers."""
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
    columns = _columns_from_header(first)
    if columns is not None:
        header: list[str] | None = first
        body = numbered[1:]
        if not body:
            raise CsvError(f"{filename}: enthält keine Adressen, nur die Kopfzeile")
    else:
        columns = _columns_without_header(first)
        if columns is None:
            raise CsvError(
                f"{filename}: keine Spalte mit E-Mail-Adressen gefunden (erwartet eine Überschrift "
                f"wie „E-Mail“ oder „email“; die erste Zeile ist: {'; '.join(first)[:120]})")
        header, body = None, numbered
    rows = [_row(number, cells, columns) for number, cells in body]
    return CsvTable(filename=filename, rows=rows, encoding=encoding, delimiter=delimiter,
                    header=header)


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


def _header_key(cell: str) -> str:
    return re.sub(r"[^a-z0-9äöüß]", "", cell.lower())


@dataclass(frozen=True)
class Columns:
    email: int
    name: int | None = None
    first: int | None = None
    last: int | None = None
    status: int | None = None
    restored: dict[str, int] = field(default_factory=dict)


def _columns_from_header(cells: list[str]) -> Columns | None:
    keys = [_header_key(cell) for cell in cells]

    def find(names: set[str], *parts: str) -> int | None:
        """The first column named exactly so, else the first whose name contains a part."""
        exact = next((i for i, key in enumerate(keys) if key in names), None)
        if exact is not None:
            return exact
        return next((i for i, key in enumerate(keys) if any(part in key for part in parts)), None)

    email = find(EMAIL_HEADERS, "mail")
    if email is None:
        return None
    raw = [cell.strip().lower() for cell in cells]
    own_export = {"id", "email", "status", "subscribed_at"} <= set(raw)
    restored = {name: raw.index(name) for name in RESTORED if name in raw} if own_export else {}
    return Columns(email, find(NAME_HEADERS), find(FIRST_NAME_HEADERS, "vorname", "firstname"),
                   find(LAST_NAME_HEADERS, "nachname", "lastname"), find(STATUS_HEADERS), restored)


def _columns_without_header(cells: list[str]) -> Columns | None:
    """A plain list: the column holding an address, and the other one as the name if there are two."""
    email = next((i for i, cell in enumerate(cells) if "@" in cell), None)
    if email is None:
        return None
    return Columns(email, 1 - email if len(cells) == 2 else None)


def _row(number: int, cells: list[str], columns: Columns) -> CsvRow:
    def cell(index: int | None) -> str:
        return cells[index] if index is not None and index < len(cells) else ""

    full = cell(columns.name) or " ".join(part for part in (cell(columns.first), cell(columns.last)) if part)
    address = cell(columns.email)
    if "<" in address and address.endswith(">"):  # "Anna Müller <anna@example.org>"
        display, address = parseaddr(address)
        full = full or display
    details = {name: cell(index).removeprefix("'") for name, index in columns.restored.items() if cell(index)}
    return CsvRow(row=number, email=address, name=full, status=cell(columns.status), details=details)


@dataclass(frozen=True)
class RowResult:
    row: int
    email: str
    code: str = ""    # skipped: invalid | duplicate | unsubscribed | bounced | erased
    reason: str = ""  # in German: why skipped, or what was updated


@dataclass
class ImportReport:
    filename: str
    encoding: str
    delimiter: str
    dry_run: bool
    added: list[RowResult] = field(default_factory=list)
    updated: list[RowResult] = field(default_factory=list)
    unchanged: list[RowResult] = field(default_factory=list)
    skipped: list[RowResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.added) + len(self.updated) + len(self.unchanged) + len(self.skipped)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = {name: len(data[name])
                          for name in ("added", "updated", "unchanged", "skipped")}
        return data


def import_csv(store: SubscriberStore, table: CsvTable, status: str = PENDING, source: str = "",
               dry_run: bool = False) -> ImportReport:
    """Apply a read CSV to the subscriber file under one lock with one write (none if dry_run)."""
    if status not in IMPORT_STATUSES:
        raise SubscriberError(f"Import mit Status „{status}“ geht nicht (erlaubt: pending, active)")
    report = ImportReport(filename=table.filename, encoding=table.encoding,
                          delimiter=table.delimiter, dry_run=dry_run)
    if dry_run:
        apply_rows(store.load(), table.rows, report, status, source)
    else:
        with store.change() as people:
            apply_rows(people, table.rows, report, status, source)
    return report


def apply_rows(people: SubscriberList, rows: Iterable[CsvRow], report: ImportReport,
               status: str, source: str) -> None:
    """Sort each row into added, updated, unchanged or skipped, changing `people` in memory.

    The list wins over the file: a row fills in a missing name and confirms a pending person
    when the import is explicitly `active`, but never overwrites or re-activates anyone. A
    status column is respected: who left in the other tool is stored as having left (so no
    later import brings them back), who never confirmed stays pending, and someone on the
    list who left over there is marked as left here too.
    """
    first_seen: dict[str, int] = {}
    for row in rows:
        try:
            address = normalize_email(row.email)
        except SubscriberError:
            report.skipped.append(_skip(row.row, row.email, "invalid"))
            continue
        key = email_key(address)
        if key in first_seen:
            report.skipped.append(_skip(row.row, row.email, "duplicate", f"wie Zeile {first_seen[key]}"))
            continue
        first_seen[key] = row.row
        in_file = STATUS_VALUES.get(row.status.strip().lower(), "?") if row.status.strip() else ""
        if in_file == "?":
            report.skipped.append(_skip(row.row, address, "status", f"„{row.status}“"))
            continue
        existing = people.get(address)
        if existing is None:
            if people.is_suppressed(address):
                report.skipped.append(_skip(row.row, address, "erased"))
            else:
                _add(people, address, row, status, in_file, source, report)
        elif existing.status in (UNSUBSCRIBED, BOUNCED):
            report.skipped.append(_skip(row.row, existing.email, existing.status))
        elif in_file in (UNSUBSCRIBED, BOUNCED):
            people.set_status(existing, in_file)
            report.updated.append(RowResult(row.row, existing.email, reason=f"{SKIP_REASONS[in_file]} (laut Datei)"))
        else:
            _update_existing(people, existing, row, PENDING if in_file == PENDING else status, report)


def _add(people: SubscriberList, address: str, row: CsvRow, status: str, in_file: str, source: str,
         report: ImportReport) -> None:
    """A new person; the stricter of the file's status and the import's wins."""
    details = _restored(row.details)
    if in_file in (UNSUBSCRIBED, BOUNCED, PENDING):
        status = in_file
    elif in_file == ACTIVE and details.get("confirmed_at"):  # our own export: the consent is on record
        status = ACTIVE
    subscriber_id = details.pop("id", None)
    person = people.add(address, row.name, status, details.pop("source", None) or source,
                        subscriber_id=subscriber_id, **details)
    reason = f"{SKIP_REASONS[in_file]} (laut Datei)" if in_file in (UNSUBSCRIBED, BOUNCED) else ""
    report.added.append(RowResult(row.row, person.email, reason=reason))


def _restored(values: dict[str, str]) -> dict[str, Any]:
    """The columns of this tool's own export as stored values; a damaged cell is left out."""
    restored: dict[str, Any] = {}
    for name, value in values.items():
        if name.endswith("_at"):
            try:
                stamp = dt.datetime.fromisoformat(value)
            except ValueError:
                continue
            restored[name] = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
        else:
            restored[name] = value
    return restored


def _update_existing(people: SubscriberList, existing: Subscriber, row: CsvRow, status: str,
                     report: ImportReport) -> None:
    changes = []
    if row.name and not existing.name and people.set_name(existing, row.name):
        changes.append("Name ergänzt")
    if status == ACTIVE and existing.status == PENDING:
        people.set_status(existing, ACTIVE)
        changes.append("jetzt aktiv")
    result = RowResult(row.row, existing.email, reason=", ".join(changes))
    (report.updated if changes else report.unchanged).append(result)


def _skip(row: int, email: str, code: str, detail: str = "") -> RowResult:
    reason = SKIP_REASONS[code] + (f" ({detail})" if detail else "")
    return RowResult(row, email, code=code, reason=reason)


def write_csv(people: Iterable[Subscriber], stream: IO[str], excel: bool = False) -> None:
    """All fields of every person as CSV; `excel` writes what German Excel opens directly.

    For Excel: semicolons, a BOM so umlauts survive, and cells that Excel would run as a
    formula (=, +, -, @) prefixed with an apostrophe. Without `excel` the data is exact.
    """
    if excel:
        stream.write("\ufeff")
    writer = csv.writer(stream, delimiter=";" if excel else ",", lineterminator="\r\n")
    writer.writerow(FIELD_ORDER)
    for person in people:
        values = ["" if value is None else str(value) for value in person.to_json().values()]
        if excel:
            values = [f"'{value}" if value[:1] in ("=", "+", "-", "@") else value for value in values]
        writer.writerow(values)


def write_json(people: Iterable[Subscriber], stream: IO[str]) -> None:
    json.dump([person.to_json() for person in people], stream, ensure_ascii=False, indent=2)
    stream.write("\n")


def export_file(people: Iterable[Subscriber], path: Path, as_json: bool = False,
                excel: bool = False, overwrite: bool = False) -> None:
    """Write an export readable only by its owner (it is personal data); never overwrite silently."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SubscriberError(f"{path}: gibt es schon (mit --force überschreiben)") from None
    except OSError as exc:
        raise SubscriberError(f"{path}: kann nicht geschrieben werden ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
        if as_json:
            write_json(people, stream)
        else:
            write_csv(people, stream, excel)

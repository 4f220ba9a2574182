"""Subjects and names arrive exactly as written: our RFC 2047 encoder against Python's two decoders."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.utils import parseaddr
from pathlib import Path

import pytest
from example_mail import all_mail
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newsletter.headers import MAX_LINE, MAX_WORD, address, encode_text, encoded_word, normalize_name
from newsletter.issue import parse_issue
from newsletter.message import MessageFactory, Recipient
from newsletter.render import render_issue
from newsletter.workspace import Workspace

EW = re.compile(r"=\?utf-8\?[qb]\?[^?]*\?=", re.I)
ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")

PLAIN = ["Impuls", "im", "Dezember", "und", "der", "die", "das", "Jahr", "sich", "Innehalten", "Pause",
         "Online-Abend", "14.", "2026", "Teil", "ist", "kein", "Stillstand", "Newsletter", "Praxis", "bevor",
         "Abend", "mit", "dir", "Advent", "Licht", "Atem", "in", "&", "/", "?", "(Teil", "2)", "Q&A:", "1/3"]
GERMAN = ["schließt", "Größe", "Nähe", "für", "Übergänge", "Selbstfürsorge", "Atemzüge", "Füße", "spüren",
          "Widersprüchliches", "draußen", "Müdigkeit", "Ängste", "Öffnung", "Gefühle", "Straße", "heißt",
          "Weiß", "zurück", "Grüße", "außen", "Übung", "Schönheit", "nachaußen", "Tür"]
COMPOUNDS = ["Donaudampfschifffahrtsgesellschaftskapitänswitwenrentenversicherung", "Selbstfürsorgeübungen",
             "Nervensystemregulationsübungen", "Weihnachtsvorbereitungsstress", "Jahresabschlussgedankenkarussell",
             "Traumasensibilitätsfortbildungsangebot", "Rindfleischetikettierungsüberwachungsaufgabenübertragung"]
MARKS = ["–", "—", "…", "·", "→", "🌱", "✨", "🎄", "❤️", "👩🏽‍⚕️", "🇩🇪", "☕", "½", "€"]
FIRST = ["Anna", "Jürgen", "Sören", "Chloé", "Zoë", "Björn", "Ümit", "Łukasz", "Hans-Jürgen", "Mira", "Lea",
         "Bea", "Renée", "Jörg", "Dr.", "Prof.", "Praxis", "Frau", "O'Brien"]
LAST = ["Müller", "Müller-Lüdenscheidt", "Schwarzenberg", "Weiß", "Groß", "Öztürk", "von", "zu", "de", "la",
        "Sommerfeld", "Söhnke,", "Schönhausen-Übermaß", "Nguyễn", "Ægidius", "Straßburger-Höß", "Jr.",
        "(Praxis)", "\"Cleo\"", "„Bee“", "🌱", "Dubois,", "Krankengymnastikpraxisgemeinschaft"]


def decorated(words: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A word as it stands in a sentence: sometimes quoted, bracketed or followed by punctuation."""
    return st.tuples(st.sampled_from(["", "", "", "„", "‚", "(", "\""]), words,
                     st.sampled_from(["", "", "", "", "“", "‘", ")", ":", ",", "?", "!", "…", ".", "\""])
                     ).map("".join)


def clipped(words: st.SearchStrategy[list[str]]) -> st.SearchStrategy[str]:
    return st.tuples(words.map(" ".join), st.integers(1, 200)).map(lambda t: t[0][:t[1]]).filter(bool)


german_subjects = clipped(st.lists(st.one_of(
    decorated(st.sampled_from(PLAIN)), decorated(st.sampled_from(GERMAN)),
    decorated(st.sampled_from(COMPOUNDS)), st.sampled_from(MARKS)), min_size=1, max_size=40))
# Anything printable, including spaces at either end and several in a row.
any_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=200)
subjects = st.tuples(st.sampled_from(["", "[TEST] "]), st.one_of(german_subjects, any_text)).map("".join)
german_names = clipped(st.lists(st.one_of(st.sampled_from(FIRST), st.sampled_from(LAST),
                                          decorated(st.sampled_from(GERMAN))), min_size=1, max_size=30))
names = st.one_of(german_names, st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=60))
MANY = settings(max_examples=2000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def header_block(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def check_wire(line: str, whole_words: bool = False) -> None:
    """ASCII; encoded words ≤ 75; lines ≤ 78 unless one word that cannot be cut is longer.

    In a subject only a plain word is such a word; in a name (whole_words) an encoded one too.
    """
    assert line.isascii()
    words = EW.findall(line)
    if not whole_words:
        assert all(len(word) <= MAX_WORD for word in words), words
    for physical in line.split("\r\n"):
        assert physical.strip(), repr(line)
        if len(physical) > MAX_LINE:
            rest = physical.split(": ", 1)[1] if not physical.startswith(" ") else physical[1:]
            assert " " not in rest and (whole_words or not EW.fullmatch(rest)), physical


def check_words_whole(value: str, original: str, header_name: str) -> None:
    """Two encoded words side by side meet at a space, unless the word is too long for one of them
    (the first word shares its line with the header's name)."""
    position, previous_encoded, joints = 0, False, []
    for index, token in enumerate(re.split(r"(?:\r\n)? ", value)):
        encoded = bool(EW.fullmatch(token))
        if index and not (encoded and previous_encoded):
            position += 1  # the space between two words, written as it is
        elif index:
            joints.append(position)
        position += len(str(make_header(decode_header(token)))) if encoded else len(token)
        previous_encoded = encoded
    assert position == len(original)
    for joint in joints:
        if original[joint - 1] == " " or original[joint] == " ":
            continue
        start = original.rfind(" ", 0, joint) + 1
        stop = original.find(" ", joint)
        whole = original[start: stop if stop >= 0 else len(original)]
        room = MAX_WORD if start else min(MAX_WORD, MAX_LINE - len(header_name) - 2)
        assert len(encoded_word(whole)) > room, (whole, value)


@MANY
@given(subjects)
@example("[TEST] Impuls im Dezember: Innehalten, bevor das Jahr sich schließt")
@example("Grenzen setzen, ohne sich zu verlieren: drinnen und draußen nachaußen")
@example("Übung (Teil 2) für dich")
@example("  zwei  Leerzeichen ")
@example("[TEST] 0000000" + "\xa0" * 11 + "\U00010000" * 4 + " ")  # fits once its space moves on
def test_subjects_decode_back_exactly(subject: str) -> None:
    value = encode_text(subject, "Subject")
    line = f"Subject: {value}"
    check_wire(line)
    message = message_from_bytes(header_block(line), policy=policy.default)
    assert message["Subject"] == subject
    assert not message.defects and not message["Subject"].defects
    folded = message_from_bytes(header_block(line), policy=policy.compat32)["Subject"]
    if EW.search(folded):  # decode_header reads folded lines itself, but leaves plain ASCII untouched
        assert str(make_header(decode_header(folded))) == subject
    assert str(make_header(decode_header(value.replace("\r\n", "")))) == subject
    check_words_whole(value, subject, "Subject")


@MANY
@given(names, st.sampled_from(["From", "To", "Reply-To"]))
@example("Hans-Jürgen Müller-Lüdenscheidt von Schönhausen-Übermaß 🌱", "To")
@example("Schwarzenberg-Höß Jürgen Björn Sören Ümit Müller-Lüdenscheidt", "From")
@example('Chloé "Cleo" Dubois, Jr.', "To")
@example("=?utf-8?q?Fake?=", "To")
@example(" \t ", "From")
def test_names_decode_back_exactly(name: str, header_name: str) -> None:
    expected = normalize_name(name)
    value = address(name, "anna@xn--strae-oqa.de", header_name)
    if not expected:  # only spaces: no name at all, just the address
        assert value == "anna@xn--strae-oqa.de"
        return
    line = f"{header_name}: {value}"
    assert line.isascii() and "<anna@xn--strae-oqa.de>" in line
    message = message_from_bytes(header_block(line), policy=policy.default)
    header = message[header_name]
    [person] = header.addresses
    assert person.addr_spec == "anna@xn--strae-oqa.de"
    assert person.display_name == expected
    assert not message.defects and not header.defects
    phrase, addr_spec = parseaddr(value.replace("\r\n", ""))
    assert addr_spec == "anna@xn--strae-oqa.de"
    assert str(make_header(decode_header(phrase))) == expected
    if not expected.isascii():
        assert str(make_header(decode_header(value))) == f"{expected} <anna@xn--strae-oqa.de>"
    check_wire(line, whole_words=True)
    # Longer than 75 only when a run of words that all need encoding is: as two words,
    # Python's address parser would read a space where they meet, other readers none.
    for word in EW.findall(line):
        if len(word) > MAX_WORD:
            assert not any(ATOM.fullmatch(w) for w in str(make_header(decode_header(word))).split(" ")), word


def test_the_audit_cases_read_right() -> None:
    """The subjects and the name the audit found broken, as a reader sees them."""
    subject = "[TEST] Impuls im Dezember: Innehalten, bevor das Jahr sich schließt"
    value = encode_text(subject, "Subject")
    assert value == "[TEST] Impuls im Dezember: Innehalten, bevor das Jahr sich\r\n =?utf-8?q?schlie=C3=9Ft?="
    name = "Schwarzenberg-Höß Jürgen Björn Sören Ümit Müller-Lüdenscheidt"
    [word] = EW.findall(address(name, "a@example.org", "To"))  # one word: never "Schwar zenberg"
    assert str(make_header(decode_header(word))) == name


def test_every_mail_of_the_example_workspace_parses_without_defects(example_workspace: Path, runner) -> None:
    ws = Workspace(example_workspace)
    nl = ws.config.newsletter
    subjects = {p.stem: render_issue(ws, parse_issue(p)).issue.subject for p in ws.issues_dir.glob("*.md")}
    mails = all_mail(example_workspace, runner)
    assert len(mails) >= 4 + 2
    for label, raw in mails.items():
        message = message_from_bytes(raw, policy=policy.default)
        assert raw.isascii(), label
        assert not message.defects, (label, message.defects)
        for name, value in message.items():
            assert not getattr(value, "defects", ()), (label, name, value.defects)
        head = raw.partition(b"\r\n\r\n")[0].decode("ascii")
        assert all(len(line) <= MAX_LINE for line in head.split("\r\n")
                   if not line.startswith("List-Unsubscribe:")), label
        [sender] = message["From"].addresses
        assert (sender.display_name, sender.addr_spec) == (nl.from_name, nl.from_email), label
        folded = message_from_bytes(raw, policy=policy.compat32)
        assert str(make_header(decode_header(folded["Subject"]))) == message["Subject"], label
        if "/" in label:
            slug, kind = label.split("/")
            expected = ("[TEST] " if kind == "test" else "") + subjects[slug]
            assert message["Subject"] == expected, label
    assert message_from_bytes(mails["confirm"], policy=policy.default)["Subject"] \
        == "Bitte bestätige deine Anmeldung zu „Impuls“"


@pytest.mark.parametrize("name", ["Anna Müller", "Hans-Jürgen Müller-Lüdenscheidt Schönhausen-Übermaß 🌱", ""])
def test_the_factory_writes_the_same_headers(example_workspace: Path, name: str) -> None:
    ws = Workspace(example_workspace)
    rendered = render_issue(ws, parse_issue(ws.issues_dir / "2026-12-innehalten.md"))
    raw = MessageFactory(rendered, ws.config, b"secret", "[TEST]").build(Recipient("id", "anna@straße.de", name)).data
    message = message_from_bytes(raw, policy=policy.default)
    assert message["Subject"] == "[TEST] " + rendered.issue.subject
    assert message["To"].addresses[0].display_name == name
    assert message["To"].addresses[0].addr_spec == "anna@xn--strae-oqa.de"
    assert not message.defects and all(not getattr(v, "defects", ()) for v in message.values())


@given(st.text(alphabet=st.sampled_from(list(".ab= äé\n")), max_size=400))
@example("." * 200)
@example("x" * 75 + "\n" + "." * 80)
def test_no_body_line_starts_with_a_dot_and_the_text_decodes_back(text: str) -> None:
    """A leading "." is written =2E, so the transport never has to copy the message to stuff it."""
    import quopri

    from newsletter.message import encode_piece

    encoded = encode_piece(text)
    lines = encoded.split(b"\r\n")
    assert not any(line.startswith(b".") for line in lines)
    assert all(len(line) <= 76 for line in lines)
    assert quopri.decodestring(encoded).decode("utf-8") == text.replace("\n", "\r\n")

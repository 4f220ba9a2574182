"""check knows the author's mistakes; `new --from` turns a pasted article into an issue."""

from __future__ import annotations

import email
import email.policy
import re
import textwrap
from pathlib import Path

import pytest
from conftest import invoke, write_issue
from test_send import add_people

from newsletter.issue import parse_issue
from newsletter.merge import recipient_values
from newsletter.render import render_issue
from newsletter.workspace import Workspace, init_workspace


@pytest.fixture(autouse=True)
def _doctor_ran_fine(ws: Workspace) -> None:
    """These tests are about the author's text: her sender's DNS was checked and found fine."""
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    (ws.state_dir / "doctor.json").write_text('{"domain": "praxis.example.org", "smtp_host": "", "errors": 0}')

# A blog article pasted as it comes from a website: one paragraph per line, headings as plain
# lines, "- " lists directly followed by text, an address in square brackets.
ARTICLE = """\
Warum Pausen uns näher zusammenbringen als Pläne
„Wer innehält, kommt bei sich an – und damit auch beim anderen.“
Mit diesem Gedanken einer Kollegin beginne ich heute, weil er etwas zusammenfasst, das mir in der Praxis immer wieder begegnet:
Wir hetzen von Termin zu Termin und wundern uns, warum wir uns trotz aller Nähe fremd fühlen. Gerade in vollen Wochen zeigt sich das besonders deutlich. Doch was wäre, wenn genau die Unterbrechung der Anfang von Verbindung ist?
Innehalten verstehen: Kein Stillstand, sondern ein Übergang
Viele Menschen erleben eine Pause als verlorene Zeit. Meine Erfahrung aus vielen Jahren Begleitung ist eine andere: Nicht die Pause ist das Problem – sondern die Angst vor dem, was in ihr auftaucht. In Beziehungen gibt es dafür ein schönes Bild: das gemeinsame Atemholen.
Es gehört zu jeder lebendigen Partnerschaft dazu.
Was geschieht in einer Pause – und warum ist sie so wertvoll?
Unser Nervensystem braucht Momente ohne Anforderung, um Sicherheit zu spüren. Entscheidend ist nicht, wie lange die Pause dauert – sondern ob wir sie uns wirklich erlauben. In der Arbeit mit Paaren sehe ich: Dort, wo beide sich Ruhe gönnen, wächst das Vertrauen, dass Nähe nicht verschlingt.
Was Paare von einer guten Pause lernen können
Eine gute Pause hat drei Zutaten, die sich auch in Beziehungen wiederfinden:
- einen Ort, an dem niemand etwas leisten muss,
- eine Zeit, die nicht verhandelt wird,
- und das Wissen, dass danach das Leben weitergeht.
Was wäre, wenn wir unsere gemeinsamen Abende genau so gestalten? Was wäre, wenn wir sie nicht als Lücke im Kalender, sondern als verabredeten Raum behandeln, der beiden gehört?
Nähe braucht Eigenständigkeit
Ein Gedanke, der mich seit Langem begleitet: Es ist nicht das ständige Zusammensein, das eine Beziehung nährt – sondern die Freiheit, auch allein sein zu dürfen. Je mehr beide Partner:innen eigene Wege gehen können, desto lieber kehren sie zueinander zurück. Beziehungen brauchen neben Zuneigung auch Neugier, Humor und die Bereitschaft, sich selbst zu hinterfragen.
Mein Angebot für den Winter
Ab Januar lade ich zu einer kleinen Abendreihe ein – für Menschen, die Ruhe nicht nur planen, sondern erleben möchten:
- Wie fühlt es sich an, eine Stunde lang nichts zu müssen?
- Was verändert sich, wenn wir gemeinsam schweigen?
- Und wie nehmen wir das mit in den Alltag?
Wer dabei sein möchte, schreibt mir einfach an [kontakt@praxis-beispiel.de] mit dem Betreff „Winterabende“ – ich freue mich auf dich!
Mehr Gedanken dieser Art bekommst du etwa einmal im Monat in meinem Newsletter.
Weitere Artikel
- Warum Übergänge so anstrengend sind und was dabei hilft
- Wenn zwei Wünsche gleichzeitig wahr sind
- Mein Geschenk zum Jahresende
"""  # noqa: E501 - one paragraph per line is the point
HEADINGS = ["Warum Pausen uns näher zusammenbringen als Pläne",
            "Innehalten verstehen: Kein Stillstand, sondern ein Übergang",
            "Was Paare von einer guten Pause lernen können", "Nähe braucht Eigenständigkeit",
            "Mein Angebot für den Winter", "Weitere Artikel"]
BODY_START = 7  # write_issue: +++, three keys, +++, a blank line, then the body


def _lines(output: str, needle: str) -> list[str]:
    return [line for line in output.splitlines() if needle in line]


def test_the_untouched_new_skeleton_is_refused_line_by_line(ws: Workspace, runner) -> None:
    path = ws.issues_dir / "2026-12-krisen-als-chance.md"
    assert invoke(runner, "new", "Krisen als Chance", "--month", "2026-12").exit_code == 0
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1
    placeholders = _lines(result.stdout, "Platzhaltertext aus `newsletter new`")
    named = [int(re.search(rf"{re.escape(str(path))}:(\d+):", line).group(1)) for line in placeholders]
    lines = path.read_text().splitlines()
    assert [lines[n - 1] for n in named] == [
        "hier beginnt die Ausgabe für diesen Monat.",
        "Schreib hier in Ruhe weiter. Eine Leerzeile trennt Absätze; „Anführungszeichen“",
        'setzt das Programm selbst, wenn du "gerade" tippst.', "deine …"]
    assert all(line.startswith("Fehler: ") for line in placeholders)
    send = invoke(runner, "send", str(path), "--yes")
    assert send.exit_code == 1 and "Platzhaltertext" in send.stderr


def test_the_skeleton_filled_in_passes(ws: Workspace, runner) -> None:
    invoke(runner, "new", "Krisen als Chance", "--month", "2026-12")
    path = ws.issues_dir / "2026-12-krisen-als-chance.md"
    text = path.read_text()
    text = text.replace("hier beginnt die Ausgabe für diesen Monat.", "heute geht es um Krisen.")
    text = re.sub(r"Schreib hier.*?tippst\.", "Krisen sind Übergänge.", text, flags=re.S)
    path.write_text(text.replace("deine …", "deine Mira").replace('preheader = ""', 'preheader = "Mut"'))
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 0, result.stdout
    assert "Hinweis" not in result.stdout


def test_init_example_values_are_refused_with_their_lines(tmp_path: Path, runner, monkeypatch) -> None:
    root = tmp_path / "neu"
    init_workspace(root)
    config = root / "newsletter.toml"
    text = config.read_text()
    for key, value in (("name", "Praxis Sommerfeld"), ("address", "Lindenallee 12\\n10115 Berlin"),
                       ("email", "kontakt@praxis.example.org")):
        text = re.sub(rf'^{key} = ""', lambda _, key=key, value=value: f'{key} = "{value}"', text, count=1,
                      flags=re.M)
    config.write_text(text)
    monkeypatch.chdir(root)
    path = write_issue(Workspace(root), "2026-12-a", "Ein eigener Text für alle.\n")
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1
    lines = config.read_text().splitlines()
    for key, example in (("from_name", "Vorname Nachname"), ("from_email", "newsletter@example.org"),
                         ("base_url", "https://newsletter.example.org"), ("website", "https://example.org")):
        found = _lines(result.stdout, f"[newsletter] {key} ist noch das Beispiel „{example}“")
        assert len(found) == 1, key
        number = int(re.search(rf"{re.escape(str(config))}:(\d+):", found[0]).group(1))
        assert lines[number - 1].startswith(f"{key} = "), key
    assert "imprint" not in result.stdout


def test_a_name_field_without_default_is_an_error_when_someone_has_no_name(ws: Workspace, runner) -> None:
    add_people(ws, [("anna@example.org", "Anna Müller", "active"), ("ben@example.org", "", "active"),
                    ("cem@example.org", "", "active"), ("dora@example.org", "", "pending")])
    path = write_issue(ws, "2026-12-n", "Text davor.\n\nHallo {{ first_name }}, schön, dass du da bist.\n")
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1
    line = _lines(result.stdout, "{{ first_name }} hat keinen Ersatz")[0]
    assert line.startswith(f"Fehler: {path}:{BODY_START + 2}: ")
    assert "2 von 3 Abonnent:innen haben keinen Vornamen" in line
    assert "„Hallo , schön, dass du da bist.“" in line and 'default("du")' in line
    path.write_text(path.read_text().replace("{{ first_name }}", '{{ first_name | default("du") }}'))
    assert invoke(runner, "check", str(path)).exit_code == 0


def test_a_name_field_without_default_warns_about_the_archive_page(ws: Workspace, runner) -> None:
    add_people(ws, [("anna@example.org", "Anna Müller", "active")])
    path = write_issue(ws, "2026-12-n", "Liebe Grüße an {{ name }} und alle.\n")
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 0
    assert "Web-Archiv steht dort „Liebe Grüße an und alle.“" in result.stdout


def test_first_name_skips_titles_in_every_mail(ws: Workspace, runner) -> None:
    assert recipient_values("a@example.org", "Dr. Christopher-Alexander Meier")["first_name"] == "Christopher-Alexander"
    assert recipient_values("a@example.org", "Prof. Dr. med. Eva Lind")["last_name"] == "Lind"
    assert recipient_values("a@example.org", "Frau Meier")["first_name"] == ""
    assert recipient_values("a@example.org", "Anna")["first_name"] == "Anna"
    add_people(ws, [("chris@example.org", "Dr. Christopher-Alexander Meier", "active"),
                    ("meier@example.org", "Frau Meier", "active"), ("anna@example.org", "Anna Roth", "active")])
    path = write_issue(ws, "2026-12-t", 'Hallo {{ first_name | default("du") }},\n\nschön, dass du da bist.\n')
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 0
    line = _lines(result.stdout, "Titel vor dem Namen")[0]
    assert line.startswith(f"Hinweis: {path}:{BODY_START}: 2 Abonnent:innen haben")
    assert "„Dr.“ 1×" in line and "„Frau“ 1×" in line
    assert invoke(runner, "send", str(path), "--yes").exit_code == 0
    greetings = {}
    for eml in (ws.outbox_dir / "2026-12-t").glob("*.eml"):
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        text = message.get_body(("plain",)).get_content()
        greetings[eml.stem] = next(line for line in text.splitlines() if line.startswith("Hallo"))
    assert greetings == {"chris@example.org": "Hallo Christopher-Alexander,", "meier@example.org": "Hallo du,",
                         "anna@example.org": "Hallo Anna,"}


def test_a_pasted_article_gets_the_warnings_that_fix_it(ws: Workspace, runner) -> None:
    path = write_issue(ws, "2026-12-artikel", ARTICLE)
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 0
    hints = [line.removeprefix("Hinweis: ") for line in result.stdout.splitlines() if line.startswith("Hinweis")]
    source = ARTICLE.splitlines()

    def at(line: str) -> int:
        return BODY_START + source.index(line)

    def found(line: int, text: str) -> bool:
        return any(hint.startswith(f"{path}:{line}: ") and text in hint for hint in hints)

    assert found(BODY_START, "11 Zeilen ohne Leerzeile dazwischen (Zeilen 7–17) werden im Mail ein einziger Absatz")
    assert found(BODY_START, "ein Absatz mit 213 Wörtern")
    for heading in HEADINGS:
        assert found(at(heading), f"als Überschrift `## {heading}`?"), heading
    assert not any("Was geschieht in einer Pause" in hint for hint in hints)  # ends in "?": a sentence
    for swallowed in ("Was wäre, wenn wir unsere gemeinsamen …", "Wer dabei sein möchte, schreibt mir …"):
        line = next(line for line in source if line.startswith(swallowed.removesuffix(" …")))
        assert found(at(line), f"„{swallowed}“ steht direkt unter einem Listenpunkt"), swallowed
    offer = next(line for line in source if "[kontakt@" in line)
    assert found(at(offer), "„[kontakt@praxis-beispiel.de]“ erscheint so mit eckigen Klammern im Mail und ist "
                                 "kein Link; als Link: [kontakt@praxis-beispiel.de](mailto:kontakt@praxis-beispiel.de)")
    assert len(hints) == 13, "\n".join(hints)


@pytest.mark.parametrize("body", [
    # a hard-wrapped paragraph, a sign-off over a name, a sentence that ends in a question mark
    """\
    Viele Menschen, mit denen ich arbeite, erleben Pausen als Bedrohung. Wenn ich
    jetzt anhalte, holt mich alles ein. Das ist verständlich, denn wer lange
    funktionieren musste, hat gelernt, dass Bewegung Sicherheit gibt. Und doch
    Ruhe ist kein Feind. Mehr braucht es nicht.

    Was bleibt, wenn wir langsamer werden?

    Herzliche Grüße
    Mira
    """,
    """\
    Hallo {{ first_name | default("du") }},

    - eine Liste,
    - deren Punkte
      weitergehen, eingerückt,
    - oder auch ohne Einrückung
    weitergehen.

    Herzlich,\\
    Mira
    """,
])
def test_ordinary_markdown_gets_no_pasted_text_warnings(ws: Workspace, runner, body: str) -> None:
    result = invoke(runner, "check", str(write_issue(ws, "2026-12-ok", body)))
    assert result.exit_code == 0
    assert "Hinweis" not in result.stdout, result.stdout


def test_lines_meant_as_lines_are_pointed_out(ws: Workspace, runner) -> None:
    path = write_issue(ws, "2026-12-adresse", "Wir treffen uns hier:\n\nPraxis Sommerfeld\nLindenallee 12\n"
                                              "10115 Berlin\n\nBis bald.\n")
    result = invoke(runner, "check", str(path))
    assert f"{path}:{BODY_START + 2}: 3 Zeilen ohne Leerzeile dazwischen" in result.stdout
    assert "ein \\ ans Zeilenende" in result.stdout


def test_new_from_an_article_drafts_headings_and_separate_paragraphs(ws: Workspace, runner,
                                                                      tmp_path: Path) -> None:
    source = tmp_path / "artikel.txt"
    source.write_text(ARTICLE, encoding="utf-8")
    result = invoke(runner, "new", "--from", str(source), "--month", "2026-12")
    assert result.exit_code == 0, result.output
    path = ws.issues_dir / "2026-12-warum-pausen-uns-naeher-zusammenbringen-als-plaene.md"
    assert result.stdout.startswith(f"{path}\n")
    lines = path.read_text().splitlines()
    for heading in HEADINGS:
        assert f"Überschrift: ## {heading}" in result.stdout
        number = int(re.search(rf"Zeile (\d+): Überschrift: ## {re.escape(heading)}\n", result.stdout).group(1))
        assert lines[number - 1] == f"## {heading}"
    assert "16 Zeilen mit einer Leerzeile als eigene Absätze abgesetzt" in result.stdout
    assert result.stdout.count("Leerzeile davor: dieser Text gehört nicht mehr zum letzten Listenpunkt") == 2
    assert "[kontakt@praxis-beispiel.de] als Link" in result.stdout

    issue = parse_issue(path)
    assert issue.subject == HEADINGS[0]
    html = render_issue(ws, issue).html
    assert [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h2[^>]*>.*?</h2>", html, re.S)] == HEADINGS
    paragraphs = [re.sub(r"<[^>]+>", "", p).strip() for p in re.findall(r"<p[^>]*>(.*?)</p>", html, re.S)]
    for line in ARTICLE.splitlines():
        if line in HEADINGS or line.startswith("- "):
            continue
        expected = line.replace("[kontakt@praxis-beispiel.de]", "kontakt@praxis-beispiel.de")
        assert expected in paragraphs, line
    assert 'href="mailto:kontakt@praxis-beispiel.de"' in html
    check = invoke(runner, "check", str(path))
    assert check.exit_code == 0
    assert _lines(check.stdout, "Hinweis") == [f"Hinweis: {path}: kein Vorschautext (preheader): das Postfach "
                                               "zeigt dann den Anfang der Mail"]


def test_new_from_word_text_in_windows_encodings(ws: Workspace, runner, tmp_path: Path) -> None:
    text = ("Grüße aus der Praxis\r\nLiebe Leser*innen, heute gibt es drei Übungen für dunkle Tage.\r\n"
            "•\tAtmen\r\n•\tGehen\r\n•\tRuhen\r\nDanach geht es weiter wie gewohnt.\r\n")
    for encoding, name in (("cp1252", "Windows-1252"), ("utf-16", "UTF-16")):
        source = tmp_path / f"word-{encoding}.txt"
        source.write_bytes(text.encode(encoding))
        result = invoke(runner, "new", f"Übungen {encoding}", "--from", str(source))
        assert result.exit_code == 0, result.output
        assert f"({name}):" in result.stdout
        path = Path(result.stdout.splitlines()[0])
        body = parse_issue(path).body
        assert body == ("## Grüße aus der Praxis\n\nLiebe Leser\\*innen, heute gibt es drei Übungen für dunkle "
                        "Tage.\n\n- Atmen\n- Gehen\n- Ruhen\n\nDanach geht es weiter wie gewohnt.\n")
        html = render_issue(ws, parse_issue(path)).html
        assert "Leser*innen" in html and "<em>" not in html


def test_new_from_markdown_keeps_what_is_already_right(ws: Workspace, runner, tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        Hallo {{ first_name | default("du") }},

        ein Absatz, der im Editor
        umbrochen wurde, bleibt ein Absatz.

        > Ein Zitat
        > über zwei Zeilen.

        ## Eine Überschrift

        Herzlich,\\
        Mira
        """)
    source = tmp_path / "entwurf.md"
    source.write_text(text)
    result = invoke(runner, "new", "Entwurf", "--from", str(source))
    assert result.exit_code == 0 and "unverändert übernommen" in result.stdout
    assert parse_issue(Path(result.stdout.splitlines()[0])).body == text


@pytest.mark.parametrize(("content", "message"), [
    (b"PK\x03\x04rest of a zip", "ist eine Word- oder OpenOffice-Datei (.docx, .odt), kein reiner Text"),
    (b"%PDF-1.7", "ist eine PDF-Datei"),
    (b"\n\n  \n", "enthält keinen Text"),
])
def test_new_from_what_is_not_text_says_what_to_do(ws: Workspace, runner, tmp_path: Path, content: bytes,
                                                   message: str) -> None:
    source = tmp_path / "artikel.docx"
    source.write_bytes(content)
    result = invoke(runner, "new", "Titel", "--from", str(source))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Fehler: {source}: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert list(ws.issues_dir.iterdir()) == []


def test_new_needs_a_title_or_a_file(ws: Workspace, runner, tmp_path: Path) -> None:
    result = invoke(runner, "new")
    assert result.exit_code == 2 and result.stderr.startswith("Fehler: es fehlt TITEL")
    missing = invoke(runner, "new", "--from", str(tmp_path / "fehlt.txt"))
    assert missing.exit_code == 1 and "fehlt.txt: Datei nicht gefunden" in missing.stderr

"""init, new, render, preview, check and config: what the author sees and the files she gets."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import typer.main
from conftest import invoke, write_issue

from newsletter.cli import app
from newsletter.issue import parse_issue, slugify
from newsletter.merge import recipient_values
from newsletter.render import render_issue
from newsletter.workspace import Workspace

TYPOGRAPHY = "Grüße aus Köln – „Verbindung“ ist größer als Angst 🌱 Partner:innen"


def test_init_creates_workspace_with_private_secret(tmp_path: Path, runner) -> None:
    result = invoke(runner, "init", str(tmp_path / "neu"))
    assert result.exit_code == 0
    root = tmp_path / "neu"
    for name in ("newsletter.toml", ".gitignore", "templates/newsletter.mjml",
                 "templates/issue.md", "templates/newsletter.txt"):
        assert (root / name).is_file(), name
    assert (root / "issues").is_dir() and (root / "subscribers").is_dir()
    secret = root / "state" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_bytes().strip()) >= 32
    gitignore = (root / ".gitignore").read_text()
    assert "state/" in gitignore and "subscribers/" in gitignore
    assert "[imprint]" in (root / "newsletter.toml").read_text()


def test_init_never_overwrites(tmp_path: Path, runner) -> None:
    root = tmp_path / "ws"
    invoke(runner, "init", str(root))
    (root / "newsletter.toml").write_text("# meine Einstellungen\n")
    secret = (root / "state" / "secret").read_bytes()
    result = invoke(runner, "init", str(root))
    assert result.exit_code == 0
    assert (root / "newsletter.toml").read_text() == "# meine Einstellungen\n"
    assert (root / "state" / "secret").read_bytes() == secret
    assert "unverändert" in result.stdout


@pytest.mark.parametrize(("title", "slug"), [
    ("Krisen als Chance", "krisen-als-chance"),
    ("Größe, Übermut & Mäßigung!", "groesse-uebermut-maessigung"),
    ("Straße: „Café“ – Ärger", "strasse-cafe-aerger"),
])
def test_slugify_spells_out_german_letters(title: str, slug: str) -> None:
    assert slugify(title) == slug


def test_new_drafts_issue_and_refuses_to_overwrite(ws: Workspace, runner) -> None:
    result = invoke(runner, "new", "Wärme im Winter", "--month", "2027-01")
    assert result.exit_code == 0
    path = ws.issues_dir / "2027-01-waerme-im-winter.md"
    assert result.stdout.strip().endswith(str(path))
    issue = parse_issue(path)
    assert issue.subject == "Wärme im Winter"
    assert str(issue.date) == "2027-01-01"
    assert "{{ first_name" in issue.body
    again = invoke(runner, "new", "Wärme im Winter", "--month", "2027-01")
    assert again.exit_code == 1
    assert "gibt es schon" in again.stderr


def test_new_rejects_bad_month(ws: Workspace, runner) -> None:
    result = invoke(runner, "new", "Titel", "--month", "2027-13")
    assert result.exit_code == 1
    assert "--month 2027-13" in result.stderr


def _rendered(ws: Workspace, body: str, **meta: object):
    path = write_issue(ws, "2026-12-test", body, **meta)
    issue = parse_issue(path)
    rendered = render_issue(ws, issue)
    html, text = rendered.personalize(recipient_values("anna@example.org", "Anna Müller",
                                                       "https://n.example.org/u/TOKEN"))
    return rendered, html, text


def test_render_html_is_email_ready(ws: Workspace) -> None:
    _, html, _ = _rendered(ws, f'Hallo {{{{ first_name }}}},\n\n{TYPOGRAPHY}\n\n"Zitat" und -- Strich\n')
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert re.search(r'<p style="[^"]+">Hallo Anna,</p>', html)
    media = re.findall(r"@media[^{]*\{[^@]*\}", html)
    assert media and any("!important" in block for block in media)
    assert "fonts.googleapis.com" not in html and "<mj-" not in html
    assert TYPOGRAPHY in html
    assert "„Zitat“ und – Strich" in html


def test_render_preheader_is_first_visible_text(ws: Workspace) -> None:
    _, html, _ = _rendered(ws, "Der eigentliche Text.\n", preheader="Ein Vorgeschmack")
    body = html.split("<body", 1)[1].split(">", 1)[1]
    first_text = re.sub(r"<!--.*?-->", "", body, flags=re.S)
    first_text = re.sub(r"<[^>]+>", "\n", first_text)
    assert next(line.strip() for line in first_text.splitlines() if line.strip()) == "Ein Vorgeschmack"


def test_render_text_part_has_links_footer_and_unsubscribe_slot(ws: Workspace) -> None:
    rendered, _, text = _rendered(
        ws, f"{TYPOGRAPHY}\n\nLies den [Artikel](https://praxis.example.org/a) in Ruhe.\n")
    assert TYPOGRAPHY in text
    assert "Lies den Artikel [1] in Ruhe." in text
    assert "[1] https://praxis.example.org/a" in text
    assert "Newsletter abbestellen: https://n.example.org/u/TOKEN" in text
    assert "Praxis Mira Sommerfeld\nLindenallee 12\n10115 Berlin" in text
    assert "NLSLOT0Q" in rendered.text  # the unsubscribe slot, filled per recipient
    assert "<" not in text.split("--")[0]


def test_merge_fields_fall_back_and_are_escaped_in_html(ws: Workspace) -> None:
    path = write_issue(ws, "2026-12-m", 'Hallo {{ first_name | default("du") }}, {{ email }}\n')
    rendered = render_issue(ws, parse_issue(path))
    html, text = rendered.personalize(recipient_values("a@example.org", "<script>x</script>", "u"))
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>x" not in html
    html, text = rendered.personalize(recipient_values("a@example.org", "", "u"))
    assert "Hallo du, a@example.org" in text and "Hallo du, a@example.org" in html


def test_check_unknown_merge_field_names_file_and_line(ws: Workspace, runner) -> None:
    path = write_issue(ws, "2026-12-x", "Hallo,\n\nLiebe {{ vorname }}!\n")
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1
    line = next(line for line in result.stdout.splitlines() if "vorname" in line)
    assert f"{path}:9:" in line


def test_check_errors_and_warnings(ws: Workspace, runner) -> None:
    path = write_issue(ws, "2026-12-w", "Text mit [Link](http://unsicher.example.org) und ![](bild.png)\n",
                       preheader="", subject="S" * 90)
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 0, result.stdout
    assert "kein Vorschautext" in result.stdout
    assert "Link ohne https: http://unsicher.example.org" in result.stdout
    assert "Bild ohne Beschreibung" in result.stdout
    assert "Betreff ist 90 Zeichen lang" in result.stdout


def test_check_refuses_missing_subject_empty_body_and_imprint(ws: Workspace, runner) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace('address = "Lindenallee 12\\n10115 Berlin"', 'address = ""'))
    path = write_issue(ws, "2026-12-e", "", subject="")
    result = invoke(runner, "check", "--json", str(path))
    assert result.exit_code == 1
    assert "kein Betreff" in result.stdout
    assert "der Text ist leer" in result.stdout
    assert "[imprint] address ist leer" in result.stdout


def test_check_refuses_html_that_gmail_would_clip(ws: Workspace, runner) -> None:
    long_body = "\n\n".join(f"Absatz {i}: " + "Ruhe und Verbindung. " * 20 for i in range(300))
    path = write_issue(ws, "2026-12-lang", long_body)
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1
    assert "Gmail kürzt" in result.stdout


def test_broken_front_matter_gives_one_line_with_position(ws: Workspace, runner) -> None:
    path = ws.issues_dir / "2026-12-kaputt.md"
    path.write_text('+++\nsubject = "Hallo\npreheader = "x"\n+++\nText\n', encoding="utf-8")
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Fehler: {path}: Zeile 2")
    assert "Traceback" not in result.output


def test_unclosed_front_matter_and_unknown_key(ws: Workspace, runner) -> None:
    path = ws.issues_dir / "2026-12-offen.md"
    path.write_text('+++\nsubject = "Hallo"\nText\n', encoding="utf-8")
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1 and "nicht mit „+++“ geschlossen" in result.stderr
    path.write_text('+++\nsubjekt = "Hallo"\n+++\nText\n', encoding="utf-8")
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1 and f"{path}:2: unbekannter Eintrag „subjekt“" in result.stderr


def test_missing_issue_file(ws: Workspace, runner) -> None:
    result = invoke(runner, "preview", "issues/gibt-es-nicht.md")
    assert result.exit_code == 1
    assert "issues/gibt-es-nicht.md: Ausgabe nicht gefunden" in result.stderr


@pytest.mark.parametrize(("old", "new", "message"), [
    ('language = "de"', 'language = "fr"', "[newsletter] language"),
    ('name = "Impuls"', 'name = "Impuls"\nfrom_emial = "x@example.org"',
     "[newsletter] from_emial: unbekannter Schlüssel (meintest du „from_email“?)"),
    ('[imprint]', '[smtp]\nport = "587"\n\n[imprint]', '[smtp] port: erwartet eine ganze Zahl'),
    ('[imprint]', '[smtp]\nrate_limit = "viele"\n\n[imprint]', "[smtp] rate_limit"),
    ('from_email = "impuls@praxis.example.org"', 'from_email = "impuls(at)praxis"', "[newsletter] from_email"),
    ('[imprint]', '[impressum]', "unbekannter Abschnitt [impressum]"),
])
def test_invalid_config_names_file_and_key(ws: Workspace, runner, old: str, new: str, message: str) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace(old, new, 1))
    path = write_issue(ws, "2026-12-c", "Text\n")
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Fehler: {config}: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_config_toml_syntax_error_names_line(ws: Workspace, runner) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace('language = "de"', "language = de"))
    result = invoke(runner, "check", str(write_issue(ws, "2026-12-c", "Text\n")))
    assert result.exit_code == 1
    assert f"{config}: Zeile 3: ungültiges TOML" in result.stderr


def test_missing_config_says_how_to_start(tmp_path: Path, runner, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "a.md").write_text("+++\nsubject='x'\n+++\nText\n")
    result = invoke(runner, "check", "issues/a.md")
    assert result.exit_code == 1
    assert "newsletter init" in result.stderr


def test_workspace_option_and_environment(ws: Workspace, runner, tmp_path: Path, monkeypatch) -> None:
    write_issue(ws, "2026-12-a", "Text\n")
    monkeypatch.chdir(tmp_path)
    assert invoke(runner, "--workspace", str(ws.root), "check", "2026-12-a").exit_code == 0
    monkeypatch.setenv("NEWSLETTER_WORKSPACE", str(ws.root))
    assert invoke(runner, "check", "2026-12-a.md").exit_code == 0


def test_render_command_writes_both_parts(ws: Workspace, runner, tmp_path: Path) -> None:
    write_issue(ws, "2026-12-r", f"{TYPOGRAPHY}\n")
    result = invoke(runner, "render", "2026-12-r", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0
    html = (tmp_path / "out" / "2026-12-r.html").read_bytes()
    text = (tmp_path / "out" / "2026-12-r.txt").read_bytes()
    assert TYPOGRAPHY.encode() in html and TYPOGRAPHY.encode() in text
    assert result.stdout.split() == [str(tmp_path / "out" / "2026-12-r.html"),
                                     str(tmp_path / "out" / "2026-12-r.txt")]
    assert b"https://newsletter.praxis.example.org/u/" in text


def test_preview_text_prints_exact_plain_part(ws: Workspace, runner, tmp_path: Path) -> None:
    write_issue(ws, "2026-12-p", "Hallo {{ name }}.\n")
    invoke(runner, "render", "2026-12-p", "--out", str(tmp_path))
    result = invoke(runner, "preview", "2026-12-p", "--text")
    assert result.exit_code == 0
    assert result.stdout == (tmp_path / "2026-12-p.txt").read_text() + "\n"
    assert "Hallo Alex Beispiel." in result.stdout


def test_preview_shows_header_links_and_warnings(ws: Workspace, runner, tmp_path: Path) -> None:
    write_issue(ws, "2026-12-p", "Siehe [hier](http://alt.example.org/x).\n")
    result = invoke(runner, "preview", "2026-12-p", "--html", str(tmp_path / "p.html"))
    assert result.exit_code == 0
    assert (tmp_path / "p.html").read_text().lower().startswith("<!doctype html>")
    shown = invoke(runner, "preview", "2026-12-p").stdout
    for expected in ("Von", "Mira Sommerfeld <impuls@praxis.example.org>", "Betreff",
                     "Impuls im Dezember", "Ein ruhiger Monat", "HTML", "KB",
                     "[1] http://alt.example.org/x", "Link ohne https"):
        assert expected in shown


def test_preview_as_unknown_address(ws: Workspace, runner) -> None:
    write_issue(ws, "2026-12-p", "Text\n")
    result = invoke(runner, "preview", "2026-12-p", "--as", "niemand@example.org")
    assert result.exit_code == 1
    assert "niemand@example.org" in result.stderr


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


def test_every_command_has_help_with_example(runner) -> None:
    root = typer.main.get_command(app)
    assert "Beispiel" in invoke(runner, "--help").stdout
    for path, command in _commands(root):
        result = invoke(runner, *path, "--help")
        assert result.exit_code == 0
        if not hasattr(command, "commands"):
            assert "Beispiel" in result.stdout, " ".join(path)


def test_example_workspace_issue_checks_clean(example_workspace: Path, runner) -> None:
    result = invoke(runner, "--workspace", str(example_workspace), "check", "2026-12-innehalten")
    assert result.exit_code == 0, result.output
    hints = [line for line in result.stdout.splitlines() if line.startswith("Hinweis")]
    assert hints == ["Hinweis: newsletter doctor: noch nie ausgeführt; `newsletter doctor` prüft, ob Gmail & Co. "
                     "Mails von deiner Adresse trauen (SPF, DKIM, DMARC)"]  # the only one, until doctor ran


@pytest.mark.parametrize("body", [
    'Hallo {{ first_name | default("du") },\n',
    "{% if first_name %}Liebe {{ first_name }}{% endif %}\n",
    "Hallo {first_name},\n",
])
def test_broken_placeholders_are_errors_not_text_for_every_reader(ws: Workspace, runner, body: str) -> None:
    path = write_issue(ws, "2026-12-kaputt", "Text\n\n" + body)
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1
    assert f"{path}:9: „" in result.stdout and "kaputten Platzhalter" in result.stdout


def test_commands_outside_a_workspace_change_nothing(tmp_path: Path, runner, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["subscribers", "add", "a@example.org"], ["subscribers", "list"], ["status"]):
        result = invoke(runner, *args)
        assert result.exit_code == 1, args
        assert "newsletter.toml: nicht gefunden" in result.stderr and "newsletter init" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_issue_from_another_folder_is_not_sent_to_this_list(ws: Workspace, runner, tmp_path: Path,
                                                               monkeypatch) -> None:
    other = tmp_path / "anderer"
    (other / "issues").mkdir(parents=True)
    (other / "issues" / "t.md").write_text('+++\nsubject = "Fremd"\n+++\nText\n')
    monkeypatch.chdir(other)
    monkeypatch.setenv("NEWSLETTER_WORKSPACE", str(ws.root))
    result = invoke(runner, "check", "issues/t.md")
    assert result.exit_code == 1 and "liegt nicht im Arbeitsbereich" in result.stderr


@pytest.mark.parametrize(("old", "new", "message"), [
    ('from_name = "Mira Sommerfeld"', "from_name = „Mira Sommerfeld“", "typografische Anführungszeichen"),
    ('from_name = "Mira Sommerfeld"', 'from_name = "Mira Sommerfeld', "fehlt ein schließendes Anführungszeichen"),
    ('language = "de"', 'language = "de"\nlanguage = "en"', "dieser Eintrag steht doppelt"),
])
def test_toml_mistakes_are_explained_in_german(ws: Workspace, runner, old: str, new: str, message: str) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace(old, new, 1))
    result = invoke(runner, "check", str(write_issue(ws, "2026-12-c", "Text\n")))
    assert result.exit_code == 1 and message in result.stderr and result.stderr.count("\n") == 1


def test_config_with_bom_or_windows_encoding(ws: Workspace, runner) -> None:
    config = ws.root / "newsletter.toml"
    text = config.read_text()
    config.write_bytes(b"\xef\xbb\xbf" + text.encode())
    path = write_issue(ws, "2026-12-c", "Text\n")
    assert invoke(runner, "check", str(path)).exit_code == 0
    config.write_bytes(text.encode("cp1252"))
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1 and "ist nicht als UTF-8 gespeichert" in result.stderr


def test_subject_and_preheader_get_the_same_typography_as_the_body(ws: Workspace) -> None:
    path = write_issue(ws, "2026-12-t", "Text\n", subject='Über \\"Grenzen\\" -- ein Impuls',
                       preheader='Was \\"Nein\\" heißt')
    rendered = render_issue(ws, parse_issue(path))
    assert rendered.issue.subject == "Über „Grenzen“ – ein Impuls"
    assert "Was „Nein“ heißt" in rendered.html


@pytest.mark.parametrize(("args", "expected"), [
    (["sendd"], "Fehler: unbekannter Befehl „sendd“; meintest du send? (Hilfe: newsletter --help)"),
    (["subscribers", "lst"], "Fehler: unbekannter Befehl „lst“; meintest du list?"),
    (["send"], "Fehler: es fehlt AUSGABE (Hilfe: newsletter send --help)"),
    (["status", "--jsn"], "Fehler: unbekannte Option --jsn; meintest du --json?"),
    (["subscribers", "list", "--status", "foo"],
     "Fehler: ungültiger Wert für --status: „foo“; möglich: aktiv, abgemeldet, unbestätigt, unzustellbar"),
    (["send", "issues/x.md", "--test"], "Fehler: --test braucht einen Wert"),
    (["--bogus", "status"], "Fehler: unbekannte Option --bogus (Hilfe: newsletter --help)"),
])
def test_usage_mistakes_get_one_german_line(ws: Workspace, runner, args: list[str], expected: str) -> None:
    result = invoke(runner, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1, result.stderr
    assert "Usage" not in result.output and "Error" not in result.output

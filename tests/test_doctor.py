"""newsletter doctor against a real DNS server on 127.0.0.1 (dnslib) and serve over HTTPS (trustme).

Every name the doctor looks up, the address of base_url included, is answered by the test's
own DNS server; nothing leaves loopback.
"""

from __future__ import annotations

import json
import ssl
import threading
import wsgiref.simple_server
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from conftest import invoke, write_issue
from dns_server import DnsServer
from smtp_server import free_port

from newsletter.doctor import Dns, run_doctor
from newsletter.web import WebApp
from newsletter.workspace import Workspace

SITE = "newsletter.praxis.example.org"

GOOD = f"""
praxis.example.org.                    300 IN SOA ns.praxis.example.org. admin.praxis.example.org. 1 3600 600 86400 300
praxis.example.org.                    300 IN MX  10 mx00.ionos.example.
praxis.example.org.                    300 IN TXT "v=spf1 include:_spf-eu.ionos.com ~all"
_spf-eu.ionos.com.                     300 IN TXT "v=spf1 ip4:212.227.0.0/16 ip4:217.72.192.0/20 -all"
s1-ionos._domainkey.praxis.example.org. 300 IN CNAME s1.dkim.ionos.example.
s1.dkim.ionos.example.                 300 IN TXT "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"
_dmarc.praxis.example.org.             300 IN TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@praxis.example.org"
{SITE}.                                300 IN A   127.0.0.1
"""

BROKEN = f"""
praxis.example.org.                    300 IN SOA ns.praxis.example.org. admin.praxis.example.org. 1 3600 600 86400 300
praxis.example.org.                    300 IN A   192.0.2.10
{SITE}.                                300 IN A   127.0.0.1
"""


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


class HttpsServe:
    """The real WebApp (`serve`) behind TLS with a certificate for base_url's name, as a proxy would be."""

    def __init__(self, workspace: Workspace, ca: trustme.CA) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(SITE).configure_cert(context)

        class Quiet(wsgiref.simple_server.WSGIRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        self.server = wsgiref.simple_server.make_server("127.0.0.1", 0, WebApp(workspace), handler_class=Quiet)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def https(ws: Workspace, ca: trustme.CA) -> Iterator[HttpsServe]:
    server = HttpsServe(ws, ca)
    yield server
    server.stop()


@pytest.fixture
def dns_zone() -> Iterator[list[DnsServer]]:
    started: list[DnsServer] = []
    yield started
    for server in started:
        server.stop()


def serve_dns(started: list[DnsServer], zone: str) -> DnsServer:
    server = DnsServer(zone).start()
    started.append(server)
    return server


def configure(ws: Workspace, port: int, smtp_host: str = "smtp.ionos.de", doctor: str = "") -> None:
    config = ws.root / "newsletter.toml"
    text = config.read_text(encoding="utf-8").replace(f'base_url = "https://{SITE}"', f'base_url = "https://{SITE}:{port}"')
    text += f'\n[smtp]\nhost = "{smtp_host}"\n' + (f"\n[doctor]\n{doctor}\n" if doctor else "")
    config.write_text(text, encoding="utf-8")
    ws.__dict__.pop("config", None)


def statuses(report) -> dict[str, str]:
    return {finding.key: finding.status for finding in report.findings}


def test_a_good_setup_is_all_ticks(ws: Workspace, runner, dns_zone, https: HttpsServe, ca: trustme.CA,
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dns = serve_dns(dns_zone, GOOD)
    configure(ws, https.port)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # trust the test CA, as a real one would be
    result = invoke(runner, "doctor", "--nameserver", dns.address)
    assert result.exit_code == 0, result.output
    ticked = [line for line in result.stdout.splitlines() if "✓" in line]
    for title in ("SPF", "DKIM", "DMARC", "MX", "serve (/healthz)"):
        assert any(title in row for row in ticked), result.stdout
    assert "erlaubt IONOS (include:_spf-eu.ionos.com)" in result.stdout
    assert "Schlüssel für s1-ionos" in result.stdout and "p=quarantine" in result.stdout
    assert "Alles eingerichtet" in result.stdout
    data = json.loads(invoke(runner, "doctor", "--json", "--nameserver", dns.address).stdout)
    assert data["ok"] is True and data["provider"] == "IONOS" and data["domain"] == "praxis.example.org"
    assert [c["status"] for c in data["checks"]] == ["ok"] * 5
    assert [c["key"] for c in data["checks"]] == ["spf", "dkim", "dmarc", "mx", "healthz"]
    # check no longer reminds her of the doctor
    issue = write_issue(ws, "2026-12-impuls", "Hallo\n")
    assert "newsletter doctor" not in invoke(runner, "check", str(issue)).stdout


def test_a_broken_setup_says_what_to_ask_for(ws: Workspace, runner, dns_zone) -> None:
    dns = serve_dns(dns_zone, BROKEN)
    configure(ws, free_port(), doctor='dkim_selectors = ["s1-ionos"]')
    result = invoke(runner, "doctor", "--nameserver", dns.address)
    assert result.exit_code == 1
    out = " ".join(result.stdout.split())
    assert "✗ SPF: Bitte IONOS um einen SPF-Eintrag (TXT) für praxis.example.org mit " \
           "„include:_spf-eu.ionos.com“." in out
    assert "✗ DKIM: Bitte IONOS, DKIM für praxis.example.org einzuschalten" in out
    assert "⚠ DMARC: Bitte IONOS um einen DMARC-Eintrag: TXT _dmarc.praxis.example.org „v=DMARC1; p=none“." in out
    assert "⚠ MX: Bitte IONOS um einen MX-Eintrag für praxis.example.org" in out
    assert "✗ serve (/healthz): Prüfe, ob `newsletter serve` läuft" in out
    advice = [line for line in result.stdout.splitlines() if line.startswith(("✗", "⚠"))]
    assert len(advice) == 5 and all(line.rstrip().endswith(".") for line in advice)  # one sentence each
    assert "Traceback" not in result.output
    data = json.loads(invoke(runner, "doctor", "--json", "--nameserver", dns.address).stdout)
    assert (data["ok"], data["errors"], data["warnings"]) == (False, 3, 2)


def test_check_reminds_of_the_doctor_until_it_ran_clean(ws: Workspace, runner, dns_zone) -> None:
    issue = write_issue(ws, "2026-12-impuls", "Hallo\n")
    never = invoke(runner, "check", str(issue))
    assert never.exit_code == 0
    [line] = [line for line in never.stdout.splitlines() if "newsletter doctor" in line]
    assert line.startswith("Hinweis: newsletter doctor: noch nie ausgeführt")
    dns = serve_dns(dns_zone, BROKEN)
    configure(ws, free_port())
    assert invoke(runner, "doctor", "--nameserver", dns.address).exit_code == 1
    failed = invoke(runner, "check", "--json", str(issue))
    assert failed.exit_code == 0  # a reminder, not a reason to refuse the send
    [hint] = [w for w in json.loads(failed.stdout)["warnings"] if w.startswith("newsletter doctor")]
    assert "2 Fehler gefunden" in hint
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace('host = "smtp.ionos.de"', 'host = "smtp.strato.de"'))
    assert "für einen anderen Absender oder Server" in invoke(runner, "check", str(issue)).stdout


@pytest.mark.parametrize(("records", "smtp_host", "status", "words"), [
    ('praxis.example.org. 300 IN TXT "v=spf1 a:mail.praxis.example.org -all"\n'
     "mail.praxis.example.org. 300 IN A 192.0.2.25", "mail.praxis.example.org", "ok", "erlaubt mail.praxis"),
    ('praxis.example.org. 300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"\n'
     "mail.praxis.example.org. 300 IN A 192.0.2.25", "mail.praxis.example.org", "warn", "192.0.2.25"),
    ('praxis.example.org. 300 IN TXT "v=spf1 redirect=_spf.praxis.example.org"\n'
     '_spf.praxis.example.org. 300 IN TXT "v=spf1 include:spf.protection.outlook.com -all"',
     "smtp.office365.com", "ok", "Microsoft 365"),
    ('praxis.example.org. 300 IN TXT "v=spf1 include:_spf.google.com ~all"', "smtp.ionos.de", "error",
     "nennt IONOS nicht"),
    ('praxis.example.org. 300 IN TXT "v=spf1 +all"', "smtp.ionos.de", "error", "+all"),
    ('praxis.example.org. 300 IN TXT "v=spf1 include:_spf-eu.ionos.com"', "smtp.ionos.de", "warn", "~all"),
    ('praxis.example.org. 300 IN TXT "v=spf1 -all"\npraxis.example.org. 300 IN TXT "v=spf1 mx -all"',
     "smtp.ionos.de", "error", "2 SPF-Einträge"),
    ("\n".join(f'l{i}.praxis.example.org. 300 IN TXT "v=spf1 include:l{i + 1}.praxis.example.org -all"'
               for i in range(12)) + '\npraxis.example.org. 300 IN TXT "v=spf1 include:l0.praxis.example.org -all"',
     "smtp.ionos.de", "error", "mehr als 10 DNS-Abfragen"),
])
def test_spf_records_good_and_broken(ws: Workspace, dns_zone, records: str, smtp_host: str, status: str,
                                     words: str) -> None:
    dns = serve_dns(dns_zone, BROKEN + records)
    configure(ws, free_port(), smtp_host=smtp_host)
    [spf] = [f for f in run_doctor(ws.config, Dns(dns.address, timeout=1)).findings if f.key == "spf"]
    assert (spf.status, words in spf.found) == (status, True), spf


@pytest.mark.parametrize(("records", "status", "words"), [
    ('_dmarc.praxis.example.org. 300 IN TXT "v=DMARC1; p=none"', "ok", "p=none"),
    ('_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject"', "ok", "von example.org"),
    ('_dmarc.praxis.example.org. 300 IN TXT "v=DMARC1; rua=mailto:x@praxis.example.org"', "error", "keine gültige"),
])
def test_dmarc_found_at_the_domain_or_its_parent(ws: Workspace, dns_zone, records: str, status: str,
                                                 words: str) -> None:
    dns = serve_dns(dns_zone, BROKEN + records)
    configure(ws, free_port())
    [dmarc] = [f for f in run_doctor(ws.config, Dns(dns.address, timeout=1)).findings if f.key == "dmarc"]
    assert (dmarc.status, words in dmarc.found) == (status, True), dmarc


def test_null_mx_unknown_domain_and_a_common_dkim_selector(ws: Workspace, dns_zone) -> None:
    dns = serve_dns(dns_zone, BROKEN + 'praxis.example.org. 300 IN MX 0 .\n'
                    'default._domainkey.praxis.example.org. 300 IN TXT "v=DKIM1; p=MIIB"')
    configure(ws, free_port(), smtp_host="mail.unbekannt.example")
    found = {f.key: f for f in run_doctor(ws.config, Dns(dns.address, timeout=1)).findings}
    assert found["mx"].status == "error" and "Null-MX" in found["mx"].found
    assert found["dkim"].status == "ok" and "default" in found["dkim"].found
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace("impuls@praxis.example.org", "impuls@gibt-es-nicht.example"))
    ws.__dict__.pop("config", None)
    found = {f.key: f for f in run_doctor(ws.config, Dns(dns.address, timeout=1)).findings}
    assert found["mx"].status == "error" and "gibt es im DNS nicht" in found["mx"].found
    assert found["spf"].status == "error" and found["dkim"].status == "warn"


def test_an_untrusted_certificate_is_an_error(ws: Workspace, dns_zone, https: HttpsServe) -> None:
    dns = serve_dns(dns_zone, GOOD)
    configure(ws, https.port)
    [health] = [f for f in run_doctor(ws.config, Dns(dns.address, timeout=1)).findings if f.key == "healthz"]
    assert health.status == "error" and "Zertifikat" in health.found


def test_no_dns_answer_is_a_warning_not_a_verdict(ws: Workspace) -> None:
    configure(ws, free_port())
    report = run_doctor(ws.config, Dns(f"127.0.0.1:{free_port()}", timeout=0.2))  # nobody listens there
    assert [f.status for f in report.findings] == ["warn"] * 5 and report.ok
    assert all(f.found.startswith("DNS gibt keine Antwort (127.0.0.1 antwortet nicht)") for f in report.findings)


def test_a_bad_nameserver_is_one_clear_line(ws: Workspace, runner) -> None:
    result = invoke(runner, "doctor", "--nameserver", "dns.example.org")
    assert result.exit_code == 1
    assert result.stderr.strip() == \
        "Fehler: --nameserver dns.example.org: keine IP-Adresse wie 9.9.9.9 oder 127.0.0.1:5353"

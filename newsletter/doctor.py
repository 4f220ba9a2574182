"""`newsletter doctor`: does the world trust mail from her address? SPF, DKIM, DMARC, MX and serve.

Gmail and Yahoo want SPF and DKIM from every sender and DMARC from bulk senders; whether her
provider publishes and signs for her domain is something she cannot see. Every look-up goes
through one dnspython resolver (the system's, or `--nameserver`), including the address of
base_url, so a test can answer all of it from a DNS server on loopback.

Each check ends in ✓, ⚠ or ✗ with one sentence on what to ask the provider for. The last
result is kept in state/doctor.json, so `check` can remind her when doctor never ran or found
errors.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import os
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.headers import ascii_domain

OK, WARN, ERROR = "ok", "warn", "error"
SYMBOLS = {OK: "✓", WARN: "⚠", ERROR: "✗"}
STATE_NAME = "doctor.json"
SPF_LOOKUPS = 10  # RFC 7208 4.6.4: more DNS-querying terms make the record fail


@dataclass(frozen=True)
class Provider:
    """A mail provider as its SPF and DKIM look; matched by the end of the [smtp] host."""

    name: str
    hosts: tuple[str, ...]
    spf_includes: tuple[str, ...]
    dkim_selectors: tuple[str, ...] = ()


# A convenience, not the last word: a record that does not name these is still checked
# against the provider host's own addresses.
PROVIDERS = (
    Provider("IONOS", ("ionos.de", "ionos.com", "1und1.de", "kundenserver.de"),
             ("_spf-eu.ionos.com", "_spf.perfora.net", "_spf.kundenserver.de"), ("s1-ionos", "s2-ionos")),
    Provider("Strato", ("strato.de", "rzone.de"), ("smtp.rzone.de", "_spf.strato.com"),
             ("strato-dkim-0001", "strato-dkim-0002")),
    Provider("ALL-INKL", ("kasserver.com", "all-inkl.com"), ("spf.kasserver.com",)),
    Provider("Hetzner", ("your-server.de",), ("spf.your-server.de",)),
    Provider("mailbox.org", ("mailbox.org",), ("mailbox.org",), ("MBO0001", "MBO0002", "MBO0003", "MBO0004")),
    Provider("Uberspace", ("uberspace.de",), ("spf.uberspace.de",), ("uberspace",)),
    Provider("Google Workspace", ("gmail.com", "googlemail.com", "google.com"), ("_spf.google.com",), ("google",)),
    Provider("Microsoft 365", ("office365.com", "outlook.com"), ("spf.protection.outlook.com",),
             ("selector1", "selector2")),
    Provider("Brevo", ("brevo.com", "sendinblue.com"), ("spf.brevo.com", "spf.sendinblue.com"),
             ("brevo1", "brevo2", "mail")),
    Provider("Mailjet", ("mailjet.com",), ("spf.mailjet.com",), ("mailjet",)),
    Provider("Amazon SES", ("amazonaws.com",), ("amazonses.com",)),
)
COMMON_SELECTORS = ("default", "dkim", "mail", "selector1", "selector2", "s1", "s2", "k1", "key1", "google")


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's table."""

    key: str
    title: str
    status: str
    found: str
    advice: str = ""  # one sentence: what to ask the provider for (empty when all is well)

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.status]


@dataclass
class DoctorReport:
    domain: str
    provider: str
    findings: list[Finding] = field(default_factory=list)
    ran_at: str = ""

    @property
    def errors(self) -> int:
        return sum(f.status == ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.status == WARN for f in self.findings)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "provider": self.provider, "ok": self.ok, "ran_at": self.ran_at,
                "errors": self.errors, "warnings": self.warnings,
                "checks": [{**asdict(f), "symbol": f.symbol} for f in self.findings]}


class LookupFailed(Exception):
    """DNS gave no answer at all (timeout, no server): we cannot tell, which is not a "no"."""


class Dns:
    """TXT, MX and address look-ups through one resolver; "no such record" is an empty list."""

    def __init__(self, nameserver: str | None = None, timeout: float = 3.0) -> None:
        import dns.resolver  # only doctor needs it: check and send start without it

        self.resolver = dns.resolver.Resolver(configure=nameserver is None)
        if nameserver:
            host, port = split_nameserver(nameserver)
            self.resolver.nameservers = [host]
            self.resolver.port = port
        self.resolver.timeout = timeout
        self.resolver.lifetime = timeout * 2
        self.lookups = 0
        self.silent = ""  # set once DNS gave no answer: the next look-ups would only wait as long


    def _answer(self, name: str, kind: str) -> list[Any]:
        import dns.exception
        import dns.resolver

        if self.silent:
            raise LookupFailed(self.silent)
        self.lookups += 1
        try:
            return list(self.resolver.resolve(name, kind, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers):
            self.silent = f"{', '.join(map(str, self.resolver.nameservers))} antwortet nicht"
            raise LookupFailed(self.silent) from None
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"{name} ({kind}): {exc}") from None

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._answer(name, "TXT")]

    def mx(self, name: str) -> list[tuple[int, str]]:
        return sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in self._answer(name, "MX"))

    def addresses(self, name: str) -> list[str]:
        return [r.address for kind in ("A", "AAAA") for r in self._answer(name, kind)]

    def exists(self, name: str) -> bool:
        """Whether the name has any record at all (NXDOMAIN says no)."""
        import dns.resolver

        self.lookups += 1
        try:
            self.resolver.resolve(name, "SOA", search=False)
        except dns.resolver.NXDOMAIN:
            return False
        except Exception:  # noqa: BLE001 - NoAnswer and the like: the name is there
            return True
        return True


def split_nameserver(text: str) -> tuple[str, int]:
    """"9.9.9.9", "127.0.0.1:5353" or "[::1]:5353" as (address, port)."""
    host, port = text.strip(), 53
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif host.count(":") == 1:
        host, _, number = host.partition(":")
        port = int(number)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise NewsletterError(f"--nameserver {text}: keine IP-Adresse wie 9.9.9.9 oder 127.0.0.1:5353") from None
    return host, port


def provider_for(smtp_host: str) -> Provider | None:
    host = smtp_host.lower().rstrip(".")
    return next((p for p in PROVIDERS for end in p.hosts if host == end or host.endswith("." + end)), None)


@dataclass
class Spf:
    """What one SPF record (with its includes and redirect) allows."""

    record: str
    includes: set[str] = field(default_factory=set)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    all_qualifier: str = ""  # of the outermost record: "-", "~", "?", "+" or "" (none)
    unresolved: list[str] = field(default_factory=list)  # exists:, ptr, macros: not evaluated
    too_many: bool = False

    def allows(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == net.version and ip in net for net in self.networks)


def spf_records(dns: Dns, domain: str) -> list[str]:
    return [t for t in dns.txt(domain) if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


def read_spf(dns: Dns, domain: str, record: str) -> Spf:
    """Follow include: and redirect= (at most 10 look-ups) and collect every network allowed."""
    spf = Spf(record)
    budget = [SPF_LOOKUPS]

    def spend() -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            spf.too_many = True
        return budget[0] >= 0

    def walk(current: str, text: str, outer: bool) -> None:
        redirect = ""
        for term in text.split()[1:]:
            qualifier = term[0] if term[0] in "+-~?" else "+"
            body = term.lstrip("+-~?")
            name, _, value = body.partition(":")
            name = name.lower()
            if body.lower().startswith("redirect="):
                redirect = body.split("=", 1)[1]
                continue
            if "%{" in body:
                spf.unresolved.append(term)
                continue
            if name == "all":
                if outer:
                    spf.all_qualifier = qualifier if term[0] in "+-~?" else "+"
                continue
            if qualifier != "+":
                continue  # only what is allowed counts here
            if name in ("ip4", "ip6"):
                try:
                    spf.networks.append(ipaddress.ip_network(value, strict=False))
                except ValueError:
                    spf.unresolved.append(term)
            elif name == "include" and value:
                spf.includes.add(value.lower().rstrip("."))
                if spend():
                    for inner in spf_records(dns, value)[:1]:
                        walk(value, inner, outer=False)
            elif name.split("/")[0] in ("a", "mx"):
                kind, _, cidr = name.partition("/")
                target, _, value_cidr = (value or current).partition("/")
                cidr = value_cidr or cidr  # the IPv4 prefix; an IPv6 address counts whole
                if not spend():
                    continue
                hosts = [target] if kind == "a" else [mx for _, mx in dns.mx(target)]
                for host in hosts:
                    for address in dns.addresses(host):
                        prefix = "128" if ":" in address else (cidr.split("//")[0] or "32")
                        spf.networks.append(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
            elif name in ("exists", "ptr"):
                spend()
                spf.unresolved.append(term)
        if redirect and spend():
            spf.includes.add(redirect.lower().rstrip("."))
            for inner in spf_records(dns, redirect)[:1]:
                walk(redirect, inner, outer=outer)

    walk(domain, record, outer=True)
    return spf


def check_spf(dns: Dns, domain: str, smtp_host: str, provider: Provider | None) -> Finding:
    title = "SPF"
    records = spf_records(dns, domain)
    who = provider.name if provider else (f"den Anbieter von {smtp_host}" if smtp_host else "deinen Anbieter")
    if not records:
        allowed = f"mit „include:{provider.spf_includes[0]}“" if provider else ", der seine Mailserver erlaubt"
        return Finding("spf", title, ERROR, f"{domain} hat keinen SPF-Eintrag",
                       f"Bitte {who} um einen SPF-Eintrag (TXT) für {domain}{' ' if provider else ''}{allowed}.")
    if len(records) > 1:
        return Finding("spf", title, ERROR, f"{domain} hat {len(records)} SPF-Einträge; gültig ist genau einer",
                       f"Bitte {who}, die SPF-Einträge von {domain} zu einem zusammenzufassen.")
    spf = read_spf(dns, domain, records[0])
    if spf.too_many:
        return Finding("spf", title, ERROR, f"der SPF-Eintrag braucht mehr als {SPF_LOOKUPS} DNS-Abfragen "
                       "und gilt deshalb als kaputt", f"Bitte {who}, den SPF-Eintrag von {domain} zu verkürzen.")
    if spf.all_qualifier == "+":
        return Finding("spf", title, ERROR, "der SPF-Eintrag erlaubt mit „+all“ jedem Server, "
                       "in deinem Namen zu senden", f"Bitte {who}, im SPF-Eintrag „+all“ durch „~all“ zu ersetzen.")
    if provider and spf.includes & {i.lower() for i in provider.spf_includes}:
        named = sorted(spf.includes & {i.lower() for i in provider.spf_includes})[0]
        found = f"erlaubt {provider.name} (include:{named})"
    elif smtp_host:
        addresses = dns.addresses(smtp_host)
        missing = [a for a in addresses if not spf.allows(a)]
        if provider and (missing or not addresses):
            return Finding("spf", title, ERROR, f"der SPF-Eintrag nennt {provider.name} nicht",
                           f"Bitte {provider.name}, „include:{provider.spf_includes[0]}“ in den "
                           f"SPF-Eintrag von {domain} aufzunehmen.")
        if not addresses:
            return Finding("spf", title, WARN, f"{smtp_host} hat keine Adresse im DNS; SPF nicht vergleichbar",
                           "Prüfe [smtp] host in newsletter.toml; den Namen nennt dir dein Anbieter.")
        if missing:
            return Finding("spf", title, WARN, f"der SPF-Eintrag nennt {smtp_host} ({', '.join(missing)}) nicht",
                           f"Frag den Anbieter von {smtp_host}, ob der SPF-Eintrag von {domain} dessen Server "
                           "erlaubt (meist ein „include:…“, das er dir nennt).")
        found = f"erlaubt {smtp_host}"
    else:
        return Finding("spf", title, WARN, "vorhanden; ohne [smtp] host lässt sich nicht sagen, ob er zu deinem "
                       "Anbieter passt", "Trag in newsletter.toml unter [smtp] den Server deines Anbieters ein.")
    if spf.all_qualifier in ("", "?"):
        return Finding("spf", title, WARN, f"{found}, endet aber nicht mit „~all“ oder „-all“",
                       f"Bitte {who}, den SPF-Eintrag von {domain} mit „~all“ zu beenden.")
    return Finding("spf", title, OK, f"{found}, {spf.all_qualifier}all")


def dmarc_policy(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            tags[key.strip().lower()] = value.strip()
    return tags


def check_dmarc(dns: Dns, domain: str, provider: Provider | None) -> Finding:
    """_dmarc at the domain, else at its parent domains (the organisation's policy covers them)."""
    who = provider.name if provider else "deinen Anbieter"
    labels = domain.split(".")
    for start in range(len(labels) - 1):
        name = "_dmarc." + ".".join(labels[start:])
        records = [t for t in dns.txt(name) if t.replace(" ", "").upper().startswith("V=DMARC1")]
        if not records:
            continue
        if len(records) > 1:
            return Finding("dmarc", "DMARC", ERROR, f"{name} hat {len(records)} DMARC-Einträge; gültig ist genau einer",
                           f"Bitte {who}, die DMARC-Einträge unter {name} zu einem zusammenzufassen.")
        tags = dmarc_policy(records[0])
        policy = tags.get("p", "").lower()
        if policy not in ("none", "quarantine", "reject"):
            return Finding("dmarc", "DMARC", ERROR, f"{name} hat keine gültige Regel (p=none, quarantine oder reject)",
                           f"Bitte {who}, den DMARC-Eintrag unter {name} zu berichtigen.")
        where = "" if start == 0 else f" (von {'.'.join(labels[start:])})"
        return Finding("dmarc", "DMARC", OK, f"p={policy}{where}")
    return Finding("dmarc", "DMARC", WARN, f"_dmarc.{domain} hat keinen DMARC-Eintrag; Gmail und Yahoo verlangen "
                   "ihn von Absendern vieler Mails",
                   f"Bitte {who} um einen DMARC-Eintrag: TXT _dmarc.{domain} „v=DMARC1; p=none“.")


def check_dkim(dns: Dns, domain: str, configured: list[str], provider: Provider | None) -> Finding:
    who = provider.name if provider else "deinen Anbieter"
    selectors = list(configured) or list(dict.fromkeys([*(provider.dkim_selectors if provider else ()),
                                                         *COMMON_SELECTORS]))
    found: list[str] = []
    revoked: list[str] = []
    for selector in selectors:
        for record in dns.txt(f"{selector}._domainkey.{domain}"):
            tags = dmarc_policy(record)
            if "p" not in tags or not tags.get("v", "DKIM1").upper().startswith("DKIM1"):
                continue
            (found if tags["p"] else revoked).append(selector)
    found = list(dict.fromkeys(found))
    if found:
        return Finding("dkim", "DKIM", OK, f"Schlüssel für {', '.join(found)}")
    if configured:
        state = "ist zurückgezogen (p= leer)" if revoked else "gibt es nicht"
        return Finding("dkim", "DKIM", ERROR, f"einen DKIM-Schlüssel für {', '.join(configured)} {state}",
                       f"Bitte {who}, DKIM für {domain} einzuschalten und den Schlüssel im DNS zu veröffentlichen.")
    return Finding("dkim", "DKIM", WARN, "unter den üblichen Namen kein DKIM-Schlüssel gefunden",
                   f"Frag {who}, ob Mails von {domain} mit DKIM signiert werden und unter welchem Selektor; "
                   "den trägst du unter [doctor] dkim_selectors ein.")


def check_mx(dns: Dns, domain: str, provider: Provider | None) -> Finding:
    who = provider.name if provider else "deinen Anbieter"
    records = dns.mx(domain)
    if records == [(0, "")] or records == [(0, ".")]:
        return Finding("mx", "MX", ERROR, f"{domain} nimmt ausdrücklich keine Mail an (Null-MX)",
                       f"Bitte {who} um ein Postfach für {domain}: Bounces und Abmeldungen per Mail gehen dorthin.")
    if records:
        return Finding("mx", "MX", OK, ", ".join(host for _, host in records))
    if not dns.exists(domain):
        return Finding("mx", "MX", ERROR, f"die Domain {domain} gibt es im DNS nicht",
                       "Prüfe from_email in newsletter.toml: die Domain dahinter muss es geben.")
    return Finding("mx", "MX", WARN, f"{domain} hat keinen MX-Eintrag; Bounces und Abmeldungen per Mail kommen "
                   "vielleicht nicht an",
                   f"Bitte {who} um einen MX-Eintrag für {domain}, damit das Postfach Mail bekommt.")


def check_healthz(dns: Dns, base_url: str, context: ssl.SSLContext | None = None, timeout: float = 10.0) -> Finding:
    """GET base_url/healthz over HTTPS, connecting to the address our resolver gives."""
    title = "serve (/healthz)"
    if not base_url:
        return Finding("healthz", title, ERROR, "[newsletter] base_url fehlt; Abmelde- und Bestätigungslinks "
                       "hätten kein Ziel", "Trag unter [newsletter] base_url die https-Adresse von serve ein.")
    url = urlsplit(base_url)
    if url.scheme != "https" or not url.hostname:
        return Finding("healthz", title, ERROR, f"{base_url} ist keine https-Adresse",
                       "Bitte deinen Webhoster um ein Zertifikat (etwa Let’s Encrypt) und trag die https-Adresse ein.")
    target = f"https://{url.netloc}{url.path.rstrip('/')}/healthz"
    addresses = dns.addresses(url.hostname)
    if not addresses:
        return Finding("healthz", title, ERROR, f"{url.hostname} hat keine Adresse im DNS",
                       f"Bitte deinen Webhoster, {url.hostname} auf den Server zeigen zu lassen, auf dem serve läuft.")
    problem = ""
    for address in addresses:
        try:
            status = _https_status(address, url.hostname, url.port or 443, f"{url.path.rstrip('/')}/healthz",
                                   context or ssl.create_default_context(), timeout)
        except ssl.SSLCertVerificationError as exc:
            problem = f"das Zertifikat von {url.hostname} ist nicht gültig ({exc.verify_message})"
            continue
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{target} antwortet nicht ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})"
            continue
        if status == 200:
            return Finding("healthz", title, OK, f"{target} antwortet")
        problem = f"{target} antwortet mit {status} statt 200"
    return Finding("healthz", title, ERROR, problem,
                   "Prüfe, ob `newsletter serve` läuft und der Webserver davor /healthz weiterreicht (docs/serve.md).")


def _https_status(address: str, host: str, port: int, path: str, context: ssl.SSLContext, timeout: float) -> int:
    with socket.create_connection((address, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.sock = tls
        connection.request("GET", path, headers={"Host": host if port == 443 else f"{host}:{port}",
                                                 "User-Agent": "newsletter-doctor"})
        return connection.getresponse().status


def run_doctor(config: Config, dns: Dns | None = None, context: ssl.SSLContext | None = None,
               now: Callable[[], dt.datetime] | None = None) -> DoctorReport:
    """Every check; a look-up that gets no answer makes its line ⚠, never a wrong ✓ or ✗."""
    dns = dns or Dns()
    nl, smtp = config.newsletter, config.smtp
    domain = ascii_domain(nl.from_email.rpartition("@")[2]).lower()
    provider = provider_for(smtp.host) if smtp.host else None
    report = DoctorReport(domain, provider.name if provider else "")
    checks: list[tuple[str, str, Callable[[], Finding]]] = [
        ("spf", "SPF", lambda: check_spf(dns, domain, smtp.host, provider)),
        ("dkim", "DKIM", lambda: check_dkim(dns, domain, config.doctor.dkim_selectors, provider)),
        ("dmarc", "DMARC", lambda: check_dmarc(dns, domain, provider)),
        ("mx", "MX", lambda: check_mx(dns, domain, provider)),
        ("healthz", "serve (/healthz)", lambda: check_healthz(dns, config.base_url, context)),
    ]
    for key, title, check in checks:
        try:
            report.findings.append(check())
        except LookupFailed as exc:
            report.findings.append(Finding(key, title, WARN, f"DNS gibt keine Antwort ({exc})",
                                           "Versuch es später noch einmal, oder mit --nameserver 9.9.9.9."))
    report.ran_at = (now or (lambda: dt.datetime.now(dt.UTC)))().isoformat(timespec="seconds")
    return report


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_NAME


def remember(report: DoctorReport, config: Config, state_dir: Path) -> None:
    """The last result, for `check`; written whole or not at all."""
    data = {**report.as_dict(), "smtp_host": config.smtp.host}
    state_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".doctor.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)
    os.replace(tmp, state_path(state_dir))


def doctor_hint(config: Config, state_dir: Path) -> str:
    """One line for `check`: doctor never ran, ran for another sender, or found errors ("" if fine)."""
    try:
        last = json.loads(state_path(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ("noch nie ausgeführt; `newsletter doctor` prüft, ob Gmail & Co. Mails von deiner Adresse "
                "trauen (SPF, DKIM, DMARC)")
    domain = ascii_domain(config.newsletter.from_email.rpartition("@")[2]).lower()
    if last.get("domain") != domain or last.get("smtp_host", "") != config.smtp.host:
        return "lief zuletzt für einen anderen Absender oder Server; bitte `newsletter doctor` noch einmal ausführen"
    errors = last.get("errors", 0)
    if errors:
        when = str(last.get("ran_at", ""))[:10]
        return (f"hat am {when} {errors} Fehler gefunden; `newsletter doctor` sagt, worum du deinen Anbieter "
                "bitten kannst")
    return ""

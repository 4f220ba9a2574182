"""`newsletter serve`: the small web app the links in every mail point to, built on Werkzeug, served by waitress.

These paths and nothing else: /u/<token> (unsubscribe, RFC 8058 one-click), /subscribe (sign-up),
/c/<token> (confirmation), /healthz, and the files of the public archive under [newsletter]
archive_path, where the "view in browser" link of every mail points. No cookies, no
JavaScript, nothing loaded from elsewhere.
The decisions live in `newsletter.signup`; this module turns HTTP into its calls and back into pages.
"""

from __future__ import annotations

import errno
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import waitress
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    UnsupportedMediaType,
)
from werkzeug.routing import Map, RequestRedirect, Rule
from werkzeug.wrappers import Request, Response

from newsletter.archive import MANIFEST
from newsletter.config import HTTPS_ONLY
from newsletter.errors import ConfigError, NewsletterError
from newsletter.signup import ASK, INVALID, TOO_MANY, SignupForm, Signups, client_ip, consent_text, signup_page
from newsletter.texts import texts
from newsletter.workspace import Workspace

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # a sign-up form is a few hundred bytes
MAX_FIELDS = 20
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token in the address stays here
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex",
}
# The public archive's pages may show pictures the author linked in her text, nothing else.
ARCHIVE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
                               "form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Cache-Control": "public, max-age=600",
}
ARCHIVE_FILE = re.compile(r"[a-z0-9][a-z0-9-]*\.html|feed\.xml")


def url_map(archive_path: str) -> Map:
    """Every path the app answers; anything else is a 404."""
    return Map([
        Rule("/healthz", endpoint="health", methods=["GET"]),
        Rule("/subscribe", endpoint="subscribe", methods=["GET", "POST"]),
        Rule("/u/<token>", endpoint="unsubscribe", methods=["GET", "POST"]),
        Rule("/c/<token>", endpoint="confirm", methods=["GET", "POST"]),
        Rule(archive_path.rstrip("/"), redirect_to=archive_path, methods=["GET"]),  # relative links need the /
        Rule(archive_path, endpoint="archive", defaults={"name": "index.html"}, methods=["GET"]),
        Rule(f"{archive_path}<name>", endpoint="archive", methods=["GET"]),
    ], strict_slashes=False, merge_slashes=False, redirect_defaults=False)


class LimitedRequest(Request):
    max_content_length = MAX_BODY
    max_form_memory_size = MAX_BODY
    max_form_parts = MAX_FIELDS


class _Fill(dict):
    """str.format_map that leaves placeholders it has no value for as they are."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class WebApp:
    """The WSGI application for one workspace."""

    def __init__(self, workspace: Workspace, clock: Callable[[], float] = time.time) -> None:
        config = workspace.config
        if not config.base_url:
            raise ConfigError(f"{config.path}: [newsletter] base_url fehlt: die öffentliche https-Adresse, unter der "
                              "`newsletter serve` erreichbar ist (sonst führen die Links in den Mails ins Leere)")
        if not config.base_url.startswith("https://"):
            raise ConfigError(f"{config.path}: {HTTPS_ONLY}")
        self.config = config
        self.templates = workspace.templates
        self.signups = Signups(workspace, clock)
        nl = config.newsletter
        values = _Fill(name=nl.name, days=config.web.confirm_days, email=nl.reply_to or nl.from_email)
        self.context: dict[str, Any] = {
            "newsletter": nl, "imprint": config.imprint, "language": nl.language,
            "t": {key: text.format_map(values) for key, text in texts(nl.language).items()},
            "privacy_url": config.web.privacy_url, "signup_url": f"{config.base_url}/subscribe",
        }
        self.urls = url_map(nl.archive_path)
        self.archive_dir = workspace.state_dir / "archive"

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = LimitedRequest(environ)
        try:
            response = self.dispatch(request)
        except RequestRedirect as exc:  # /archiv → /archiv/, so the index's relative links work
            # A path, not a URL: behind the HTTPS proxy, the host and scheme seen here are not the public ones.
            response = Response(status=308, headers={"Location": urlsplit(exc.new_url).path})
        except HTTPException as exc:
            response = self.error(exc.code or 500)
            if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
                response.headers["Allow"] = ", ".join(exc.valid_methods)
        except NewsletterError as exc:  # subscriber file locked or unreadable, mail server down
            log.error("%s: %s", request.path.split("/")[1], exc)
            response = self.error(503)
        except Exception:  # a bug: the person sees a calm page, the log gets the traceback
            log.exception("Fehler bei %s /%s", request.method, request.path.split("/")[1])
            response = self.error(500)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        if request.content_length and request.content_length > MAX_BODY:
            raise RequestEntityTooLarge
        endpoint, args = self.urls.bind_to_environ(request.environ).match()
        return getattr(self, endpoint)(request, **args)

    def ip(self, request: Request) -> str:
        return client_ip(request.remote_addr or "", request.headers.get("X-Forwarded-For", ""),
                         self.config.web.trust_proxy)

    # --- pages -------------------------------------------------------------------------------

    def page(self, name: str, status: int = 200, **context: Any) -> Response:
        html = self.templates.get_template(f"web/{name}.html").render(**self.context, **context)
        return Response(html, status=status, mimetype="text/html")

    def message(self, key: str, status: int = 200, link: tuple[str, str] | None = None,
                hint: str = "") -> Response:
        t = self.context["t"]
        return self.page("message", status, title=t[f"{key}_title"], text=t[f"{key}_text"], link=link, hint=hint)

    def ask(self, key: str) -> Response:
        t = self.context["t"]
        return self.page("ask", title=t[f"{key}_title"], text=t[f"{key}_text"], button=t[f"{key}_button"])

    def error(self, status: int) -> Response:
        key = {400: "error_400", 404: "error_404", 405: "error_405", 413: "error_413",
               415: "error_400", 429: "error_429"}.get(status, "error_500")
        return self.message(key, status)

    # --- endpoints -----------------------------------------------------------------------------

    def health(self, request: Request) -> Response:
        return Response("ok\n", mimetype="text/plain")

    def subscribe(self, request: Request) -> Response:
        if request.method != "POST":
            return self.signup_form()
        fields = form_fields(request)
        form = SignupForm(
            email=fields.get("email", ""), name=fields.get("name", ""), consent=bool(fields.get("consent")),
            honeypot=fields.get("website", ""),
        )
        page = signup_page(self.config, request.headers.get("Origin", ""), request.referrer or "")
        result = self.signups.sign_up(form, self.ip(request), page)
        if result.outcome == INVALID:
            return self.signup_form(form, result.problems, status=400)
        if result.outcome == TOO_MANY:
            return self.error(429)
        return self.message("signup_sent", hint=self.context["t"]["signup_sent_hint"])

    def signup_form(self, form: SignupForm | None = None, problems: list[str] | None = None,
                    status: int = 200) -> Response:
        return self.page("subscribe", status, title=self.context["t"]["signup_title"],
                         form=form or SignupForm(email=""), problems=problems or [],
                         consent_text=consent_text(self.config))

    def unsubscribe(self, request: Request, token: str) -> Response:
        # One-click (RFC 8058) posts `List-Unsubscribe=One-Click`, the button posts nothing: the
        # signed token is what counts, so the body is not even read.
        signups = self.signups
        if request.method == "POST":
            outcome = signups.unsubscribe(token, self.ip(request))
        else:
            outcome = signups.check_unsubscribe(token)
        if outcome == TOO_MANY:
            return self.error(429)
        if outcome == INVALID:
            return self.message("unsubscribe_invalid", 400)
        return self.ask("unsubscribe") if outcome == ASK else self.message("unsubscribed")

    def confirm(self, request: Request, token: str) -> Response:
        # Only a POST changes anything: GET and the HEAD Werkzeug adds to it are what scanners send.
        if request.method == "POST":
            outcome = self.signups.confirm(token, self.ip(request))
        else:
            outcome = self.signups.check_confirm(token)
        if outcome == TOO_MANY:
            return self.error(429)
        if outcome == INVALID:
            return self.message("confirm_invalid", 400,
                                link=(self.context["signup_url"], self.context["t"]["signup_again"]))
        return self.ask("confirm") if outcome == ASK else self.message("confirmed")

    def archive(self, request: Request, name: str) -> Response:
        """A file of the public archive (`newsletter archive` writes it), and only one it listed itself."""
        manifest = self.archive_dir / MANIFEST
        try:
            listed = manifest.read_text(encoding="utf-8").split() if ARCHIVE_FILE.fullmatch(name) else []
            data = (self.archive_dir / name).read_bytes() if name in listed else None
        except FileNotFoundError:
            data = None
        if data is None:
            raise NotFound
        mimetype = "application/atom+xml" if name.endswith(".xml") else "text/html"
        response = Response(data, mimetype=mimetype, headers=ARCHIVE_HEADERS)
        response.add_etag()  # feed readers and browsers revalidate cheaply: 304 when unchanged
        return response.make_conditional(request)


def form_fields(request: Request) -> dict[str, str]:
    """The posted form, read strictly: URL-encoded UTF-8 only, anything else is a 4xx.

    Werkzeug's own form parser forgives broken encodings by design; here a broken one is
    refused, so nothing half-decoded is ever stored.
    """
    if request.mimetype != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType
    try:
        text = request.get_data().decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict",
                          max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest from None
    return dict(pairs)


def form_snippet(workspace: Workspace) -> str:
    """The sign-up form as HTML to paste into the author's website; it posts to base_url/subscribe."""
    config = workspace.config
    if not config.base_url:
        raise ConfigError(f"{config.path}: [newsletter] base_url fehlt: dorthin schickt das Formular die Anmeldung")
    nl = config.newsletter
    words = texts(nl.language)
    return workspace.templates.get_template("web/form.html").render(
        action=f"{config.base_url}/subscribe", t=words, consent_text=consent_text(config),
        intro=words["signup_intro"].format(name=nl.name), privacy_url=config.web.privacy_url,
    )


def create_server(app: WebApp, host: str, port: int) -> Any:
    """waitress on host:port, set up for this job. It refuses bodies far over the limit itself.

    Far more connections than a burst after a send brings (1,000, polled, not select()ed, so
    more than 1,024 sockets work), and a connection quiet for 10 seconds is closed, checked
    every 2: slow or idle clients cannot take the endpoint offline. A client trickling bytes
    is the proxy's job (docs/serve.md). X-Forwarded-For is passed through untouched: the app
    decides ([web] trust_proxy) whether to believe it, the same under any WSGI server.
    """
    _allow_sockets(CONNECTIONS + 64)
    try:
        return waitress.create_server(
            app, host=host, port=port, threads=6, ident="newsletter", expose_tracebacks=False,
            max_request_body_size=4 * MAX_BODY, max_request_header_size=16 * 1024,
            connection_limit=CONNECTIONS, asyncore_use_poll=True, channel_timeout=10, cleanup_interval=2,
            backlog=1024, clear_untrusted_proxy_headers=False,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise NewsletterError(f"{host}:{port}: der Port ist schon belegt (läuft `newsletter serve` "
                                  "schon?); einen anderen mit --port wählen") from None
        raise NewsletterError(f"{host}:{port}: kann hier nicht lauschen ({exc.strerror})") from None


CONNECTIONS = 1000


def _allow_sockets(count: int) -> None:
    """Raise this process's open-file limit to `count` where the system allows (often 1,024 by default)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

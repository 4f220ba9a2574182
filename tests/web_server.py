"""The real web app for tests: waitress on a free 127.0.0.1 port in a thread, and a small HTTP client."""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlsplit

from smtp_server import free_port
from waitress import wasyncore

from newsletter.web import WebApp, create_server
from newsletter.workspace import Workspace


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class WebServer:
    """`newsletter serve` as the CLI builds it (same app, same waitress limits), stoppable by the test."""

    def __init__(self, workspace: Workspace) -> None:
        self.app = WebApp(workspace)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = create_server(self.app, "127.0.0.1", self.port)
        self.thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)

    def start(self) -> WebServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        # Close every socket from inside waitress's own loop (closing them from this thread
        # would pull them out from under its select()); the loop ends once none is left.
        try:
            self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
        except OSError:
            # Seen once in a full CI run: the trigger's pipe was already gone (EBADF), so the loop
            # cannot be woken; close everything from here instead, the loop then has nothing left.
            wasyncore.close_all(self.server._map, ignore_all=True)
        self.thread.join(timeout=30)
        self.server.task_dispatcher.shutdown()
        self.app.signups.close()

    def request(self, method: str, target: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        """One HTTP request on a fresh connection; `target` is a path or a URL whose path is used."""
        parts = urlsplit(target)
        path = parts.path + (f"?{parts.query}" if parts.query else "") if parts.scheme else target
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = body.encode() if isinstance(body, str) else body
            connection.request(method, path, body=data, headers=headers or {})
            response = connection.getresponse()
            reply = Reply(response.status, response.msg, response.read())
            self.app.signups.settle()  # mails go out after the answer; tests read them next
            return reply
        finally:
            connection.close()

    def get(self, target: str, **headers: str) -> Reply:
        return self.request("GET", target, headers=headers)

    def post_form(self, target: str, body: bytes | str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("POST", target, body, {"Content-Type": "application/x-www-form-urlencoded",
                                                   **(headers or {})})

"""The console application: routes, login sessions, CSRF checks and the security headers of
every answer. Requests come from sealmail.server.http, which has already refused bad methods,
malformed HTTP and oversized requests.

Nothing but the login form is served without a session; every POST carries the session's CSRF
token (the login form its own, see sessions.py) and, when the browser sends an Origin, comes from
the console's own origin. Work that reads the disk (the queue, the logs, the store) runs in a
thread, so one slow page does not stall the others.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import quote, urlsplit

from sealmail.console import pages, views
from sealmail.console.login import ConsoleLogin
from sealmail.console.queue_actions import act, flush
from sealmail.console.sessions import COOKIE, LOGIN_COOKIE, Session, Sessions, same
from sealmail.console.store_helper import StoreHelper
from sealmail.mta.queue import Queue
from sealmail.proto.sasl import FailureReason
from sealmail.server.http import Request, Response, plain

log = logging.getLogger("sealmail.console")

SECURITY_HEADERS = [
    ("Content-Security-Policy",
     f"default-src 'none'; style-src 'sha256-{pages.CSS_HASH}'; img-src 'self'; "
     "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    # same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` with the
    # console's own forms, which the origin check must refuse.
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
REFUSALS = {
    FailureReason.ENCRYPTION_REQUIRED: "Log in over TLS: this console is not on loopback and "
                                       "allowplaintext is off",
    FailureReason.TEMPORARY: "The password check is unavailable; try again later",
}


@dataclass
class Console:
    """What the pages read: the MTA's queue, the store's imapd.conf, the logs (views.py), and
    the store through its helper (store_helper.py)."""

    queue: Queue
    sources: views.Sources
    login: ConsoleLogin
    store: StoreHelper
    sessions: Sessions = field(default_factory=Sessions)
    flashes: dict[str, tuple[bool, str]] = field(default_factory=dict)

    async def handle(self, request: Request) -> Response:
        response = await self._route(request)
        response.headers += SECURITY_HEADERS
        return response

    # -- routing -----------------------------------------------------------------------------

    async def _route(self, request: Request) -> Response:
        path = request.path
        if path == "/login":
            return await (self._login(request) if request.method == "POST"
                          else self._login_form(request))
        token = request.cookies().get(COOKIE, "")
        session = self.sessions.find(token)
        if session is None:
            self.flashes.pop(token, None)  # a message for a session that has ended
            if request.method == "POST":
                return plain(403, "Not logged in")
            # Pages lead to the login form; anything else (a browser's /favicon.ico) does not,
            # or its redirect would hand out a new login token under the open form.
            return redirect("/login") if path in self._gets or path == "/" else plain(
                404, "Not found")
        if request.method == "POST":
            refused = self._forged(request, session)
            if refused is not None:
                return refused
            handler = self._posts.get(path)
            if handler is None:
                return plain(404, "Not found")
            return await handler(self, request, session, token)
        view = self._gets.get(path)
        if view is None:
            return redirect("/queue") if path == "/" else plain(404, "Not found")
        title, content = await asyncio.to_thread(view, self, request, session)
        flash = self.flashes.pop(token, None)
        html = pages.page(title, path, session.user, session.csrf, content, flash)
        return Response(200, html.encode())

    def _forged(self, request: Request, session: Session | None,
                expected: str | None = None) -> Response | None:
        """403 unless the form carries the right CSRF token and comes from our own origin."""
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            log.warning("console: %s: POST %s from another origin %s refused",
                        request.client, request.path, origin)
            return plain(403, "Cross-origin request refused")
        wanted = expected if session is None else session.csrf
        if not same(request.form().get("csrf", ""), wanted or ""):
            log.warning("console: %s: POST %s without a valid CSRF token refused",
                        request.client, request.path)
            return plain(403, "CSRF token missing or wrong; reload the page")
        return None

    # -- login and logout ----------------------------------------------------------------------

    async def _login_form(self, request: Request, error: str = "",
                          status: int = 200) -> Response:
        from secrets import token_urlsafe

        # The browser's own token again if it has one (two tabs, a reload), so each login form
        # it shows stays valid; anything not shaped like our tokens is replaced.
        csrf = request.cookies().get(LOGIN_COOKIE, "")
        if not TOKEN.fullmatch(csrf):
            csrf = token_urlsafe(32)
        response = Response(status, pages.login_page(csrf, error).encode())
        response.headers.append(("Set-Cookie", cookie(LOGIN_COOKIE, csrf, request.secure,
                                                      max_age=3600)))
        return response

    async def _login(self, request: Request) -> Response:
        refused = self._forged(request, None, request.cookies().get(LOGIN_COOKIE, ""))
        if refused is not None:
            return refused
        form = request.form()
        user, password = form.get("user", "").strip(), form.get("password", "")
        if not user or not password or len(user) > 256 or len(password) > 1024:
            return await self._login_form(request, "Give a user name and a password", 400)
        identity, why = await self.login.check(user, password, request.client, request.secure)
        if identity is None:
            text = REFUSALS.get(why or FailureReason.BAD_CREDENTIALS, "Login failed")
            return await self._login_form(request, text, 401)
        token, _ = self.sessions.open(identity)
        response = redirect("/queue")
        response.headers.append(("Set-Cookie", cookie(COOKIE, token, request.secure)))
        response.headers.append(("Set-Cookie", cookie(LOGIN_COOKIE, "", request.secure,
                                                      max_age=0)))
        return response

    async def _logout(self, request: Request, session: Session, token: str) -> Response:
        self.sessions.close(token)
        self.flashes.pop(token, None)
        log.info("console: %s logged out", session.user)
        response = redirect("/login")
        response.headers.append(("Set-Cookie", cookie(COOKIE, "", request.secure, max_age=0)))
        return response

    # -- queue actions -------------------------------------------------------------------------

    async def _queue_action(self, request: Request, session: Session, token: str) -> Response:
        form = request.form()
        outcome = await asyncio.to_thread(act, self.queue, form.get("action", ""),
                                          form.get("id", ""), session.user)
        self.flashes[token] = (outcome.ok, outcome.text)
        needle = form.get("q", "")
        return redirect("/queue" + (f"?q={quote(needle)}" if needle else ""))

    async def _flush(self, request: Request, session: Session, token: str) -> Response:
        outcome = await asyncio.to_thread(flush, self.queue, session.user)
        self.flashes[token] = (outcome.ok, outcome.text)
        return redirect("/queue")

    _posts: ClassVar[dict[str, Callable[..., Awaitable[Response]]]] = {
        "/logout": _logout, "/queue/action": _queue_action, "/queue/flush": _flush,
    }
    _gets: ClassVar[dict[str, Callable[..., tuple[str, str]]]] = {
        "/queue": views.queue_view, "/trace": views.trace_view, "/users": views.users_view,
        "/auth": views.auth_view, "/activity": views.activity_view,
    }


def redirect(location: str) -> Response:
    """303 See Other: after a POST the browser GETs the page (no resubmission on reload)."""
    return Response(303, b"", "text/plain", [("Location", location)])


def cookie(name: str, value: str, secure: bool, max_age: int | None = None) -> str:
    """A cookie scripts cannot read, sent by the browser to this site only (SameSite=Strict),
    and only over TLS when the console is served over TLS."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)

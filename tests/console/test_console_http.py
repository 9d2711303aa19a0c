"""The console over real HTTP: nothing without a login, only admins log in, every POST needs the
session's CSRF token, and the server refuses oversized, malformed and unknown-method requests."""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from tests.support.console import (
    ADMIN,
    ADMIN_PASSWORD,
    USER,
    USER_PASSWORD,
    ConsoleServer,
    serving,
)

from sealmail.mta.queue import QueueName


class Client:
    """A browser's cookie jar and the last page's CSRF token, over http.client."""

    def __init__(self, console: ConsoleServer) -> None:
        self.console = console
        self.cookies: dict[str, str] = {}
        self.csrf = ""
        self.set_cookies: list[str] = []  # the last response's Set-Cookie headers

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.console.port, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        text = response.read().decode()
        self.set_cookies = response.headers.get_all("Set-Cookie") or []
        for value in self.set_cookies:
            name, _, rest = value.partition("=")
            token = rest.split(";")[0]
            if token:
                self.cookies[name] = token
            else:
                self.cookies.pop(name, None)
        found = re.search(r'name=csrf value="([^"]+)"', text)
        if found:
            self.csrf = found.group(1)
        connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text

    def login(self, user: str = ADMIN, password: str = ADMIN_PASSWORD) -> int:
        self.request("GET", "/login")
        status, _, _ = self.request("POST", "/login", {"csrf": self.csrf, "user": user,
                                                       "password": password})
        if status == 303:
            self.request("GET", "/queue")  # the session's CSRF token
        return status


def raw(console: ConsoleServer, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", console.port), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest.mark.parametrize("path", ["/", "/queue", "/trace?id=X", "/users", "/auth", "/activity"])
def test_nothing_is_shown_without_a_login(console: ConsoleServer, path: str) -> None:
    status, headers, body = Client(console).request("GET", path)
    assert status == 303 and headers["location"] == "/login"
    assert "queue" not in body.lower()


def test_a_post_without_a_session_is_refused(console: ConsoleServer) -> None:
    queue_id = console.enqueue()
    client = Client(console)
    status, _, _ = client.request("POST", "/queue/action",
                                  {"action": "delete", "id": queue_id, "csrf": "x"})
    assert status == 403
    assert console.queue.find(queue_id) is QueueName.INCOMING
    console.queue.remove(queue_id)


def test_admins_log_in_with_their_sasl_password_and_others_do_not(
    console: ConsoleServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = Client(console)
    assert wrong.login(ADMIN, "guess") == 401
    assert wrong.login(USER, USER_PASSWORD) == 401  # right password, not in admins
    assert "badlogin: [127.0.0.1] plaintext admin [SASL(-13): authentication failure" in caplog.text
    assert "badlogin: [127.0.0.1] plaintext alice [SASL(-14): authorization failure" in caplog.text
    assert "guess" not in caplog.text and USER_PASSWORD not in caplog.text
    assert wrong.request("GET", "/queue")[0] == 303
    client = Client(console)
    client.request("GET", "/login")
    status, headers, _ = client.request("POST", "/login", {
        "csrf": client.csrf, "user": ADMIN, "password": ADMIN_PASSWORD})
    assert status == 303 and headers["location"] == "/queue"
    cookie = next(c for c in client.set_cookies if c.startswith("sealmail_console="))
    assert "sealmail_console=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback: a Secure cookie would not come back
    status, headers, body = client.request("GET", "/queue")
    assert status == 200 and "Log out" in body
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    client.request("POST", "/logout", {"csrf": client.csrf})
    assert client.request("GET", "/queue")[0] == 303


def test_the_login_form_needs_its_csrf_token(console: ConsoleServer) -> None:
    client = Client(console)
    client.request("GET", "/login")
    status, _, _ = client.request("POST", "/login", {"user": ADMIN, "password": ADMIN_PASSWORD})
    assert status == 403
    other = Client(console)  # a token from another browser's form
    status, _, _ = other.request("POST", "/login", {"csrf": client.csrf, "user": ADMIN,
                                                    "password": ADMIN_PASSWORD})
    assert status == 403


def test_every_post_needs_the_sessions_csrf_token(console: ConsoleServer) -> None:
    client = Client(console)
    assert client.login() == 303
    queue_id = console.enqueue()
    for form in ({"action": "hold", "id": queue_id},
                 {"action": "hold", "id": queue_id, "csrf": "forged"}):
        assert client.request("POST", "/queue/action", form)[0] == 403
    form = {"action": "hold", "id": queue_id, "csrf": client.csrf}
    status, _, _ = client.request("POST", "/queue/action", form,
                                  {"Origin": "http://evil.example"})
    assert status == 403
    assert console.queue.find(queue_id) is QueueName.INCOMING
    assert client.request("POST", "/queue/action", form)[0] == 303
    assert console.queue.find(queue_id) is QueueName.HOLD
    _, _, body = client.request("GET", "/queue?q=" + queue_id)
    assert f"{queue_id}: placed on hold" in body
    client.request("POST", "/queue/action", {**form, "action": "delete"})
    assert console.queue.find(queue_id) is None


def test_an_oversized_body_is_refused_with_413_before_it_is_read(
    console: ConsoleServer,
) -> None:
    head = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: 10000000\r\n\r\n")
    assert raw(console, head).startswith(b"HTTP/1.1 413 ")
    chunked = (b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"10000\r\n" + b"a" * 0x10000 + b"\r\n" + b"10000\r\n" + b"a" * 0x10000)
    assert raw(console, chunked).startswith(b"HTTP/1.1 413 ")


def test_an_oversized_head_is_refused_with_431(console: ConsoleServer) -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
    assert raw(console, data).startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "TRACE"])
def test_other_methods_are_refused_with_405(console: ConsoleServer, method: str) -> None:
    reply = raw(console, f"{method} /queue HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD, POST" in reply


@pytest.mark.parametrize("data", [b"NONSENSE\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n",
                                  b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"])
def test_malformed_requests_get_400(console: ConsoleServer, data: bytes) -> None:
    assert raw(console, data).startswith(b"HTTP/1.1 400 ")


def test_head_and_keep_alive(console: ConsoleServer) -> None:
    reply = raw(console, b"HEAD /login HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /queue HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, _, rest = reply.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest.startswith(b"HTTP/1.1 303 ")  # no body came with the HEAD answer


def test_over_tls_the_session_cookie_is_secure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with serving(tmp_path, server_context) as console:
        def post(path: str, form: dict[str, str], cookie: str) -> http.client.HTTPResponse:
            connection = http.client.HTTPSConnection("127.0.0.1", console.port, timeout=30,
                                                     context=client_context)
            connection.request("POST", path, body=urlencode(form), headers={
                "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
            return connection.getresponse()

        connection = http.client.HTTPSConnection("127.0.0.1", console.port, timeout=30,
                                                 context=client_context)
        connection.request("GET", "/login")
        page = connection.getresponse()
        login_cookie = page.headers["Set-Cookie"].split(";")[0]
        assert "Secure" in page.headers["Set-Cookie"]
        csrf = re.search(r'name=csrf value="([^"]+)"', page.read().decode())
        assert csrf is not None
        answer = post("/login", {"csrf": csrf.group(1), "user": ADMIN,
                                 "password": ADMIN_PASSWORD}, login_cookie)
        assert answer.status == 303
        session = [c for c in answer.headers.get_all("Set-Cookie") or []
                   if c.startswith("sealmail_console=")]
        assert session and "; Secure" in session[0] and "HttpOnly" in session[0]


def test_a_trickling_client_is_disconnected(tmp_path: Path) -> None:
    """Slowloris: a request whose head never ends is dropped at HttpLimits.request."""
    from sealmail.server.http import HttpLimits

    with serving(tmp_path, limits=HttpLimits(idle=5.0, request=1.0)) as console, \
            socket.create_connection(("127.0.0.1", console.port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        deadline = time.monotonic() + 20
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"X-A: b\r\n")
                sock.settimeout(0.2)
                closed = sock.recv(100) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed


def test_only_pages_lead_to_the_login_form(console: ConsoleServer) -> None:
    """A browser's /favicon.ico must not be sent to the login form: its redirect would set a
    new login token while the user is filling in the open form."""
    client = Client(console)
    client.request("GET", "/login")
    token = client.cookies["sealmail_console_login"]
    assert client.request("GET", "/favicon.ico")[0] == 404
    client.request("GET", "/login")  # a second tab: the same token
    assert client.cookies["sealmail_console_login"] == token == client.csrf


def test_the_users_page_reads_the_store_as_its_account(console: ConsoleServer) -> None:
    client = Client(console)
    assert client.login() == 303
    status, _, body = client.request("GET", "/users")
    assert status == 200 and "flash error" not in body, body
    assert "admin@console.example" in body and "alice@console.example" in body
    assert "Resource Root" in body  # sealmail quota's header
    assert ADMIN_PASSWORD not in body

"""smtpd over real sockets with real clients (smtplib, swaks): queueing, relay control,
limits, STARTTLS, AUTH."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from tests.support.loops import LOOPS, new_loop
from tests.support.mta import wait_for

from sealmail.auth.authenticator import Authenticator
from sealmail.config.imapd_conf import ConfigError, load_imapd_conf
from sealmail.mta.cleanup import cleanup_from_config
from sealmail.mta.config.main_cf import MainConfig, parse_main_cf
from sealmail.mta.queue import Queue, QueueName
from sealmail.mta.restrictions import Engine
from sealmail.mta.smtpd import SmtpdService
from sealmail.mta.smtpd_tls import smtpd_context

MESSAGE = b"From: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
BASE = ("myhostname = mx.example.com\nmydestination = example.com\n"
        "relay_domains = relayed.test\n")


class Server:
    """An SmtpdService on 127.0.0.1:<free port> in a background event loop."""

    def __init__(
        self, tmp_path: Path, main_text: str, loop: str = "asyncio", **kwargs: Any
    ) -> None:
        self.config = MainConfig.from_document(parse_main_cf(BASE + main_text),
                                               hostname="mx.example.com")
        self.queue = Queue(tmp_path / "queue")
        self.queue.create_directories()
        self.queued: list[str] = []
        self.kwargs = kwargs
        self.loop = new_loop(loop)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.service = SmtpdService(self.config, self.queue, cleanup_from_config(self.config),
                                    on_queued=self.queued.append, **self.kwargs)
        self.server = await asyncio.start_server(self.service.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def __enter__(self) -> Server:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()
            self.service.drain()
            if self.service.sessions:
                await asyncio.wait(set(self.service.sessions), timeout=5)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=10)

    def incoming(self) -> list[str]:
        return self.queue.ids(QueueName.INCOMING)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(main_text: str = "", **kwargs: Any) -> Server:
        server = Server(tmp_path / f"s{len(servers)}", main_text, **kwargs)
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__()


def test_smtplib_submission_is_queued_durably(serve: Callable[..., Server]) -> None:
    server = serve()
    with server.client() as client:
        code, text = client.ehlo("client.test")
        assert code == 250
        for keyword in (b"PIPELINING", b"SIZE 10240000", b"8BITMIME", b"ENHANCEDSTATUSCODES"):
            assert keyword in text
        refused = client.sendmail("alice@example.org", ["bob@example.com"], MESSAGE)
        assert refused == {}
    [queue_id] = server.incoming()
    assert server.queued == [queue_id]
    entry = server.queue.load(queue_id, QueueName.INCOMING)
    assert entry.envelope.sender == "alice@example.org"
    assert entry.envelope.protocol == "ESMTP"
    assert [r.record.address for r in entry.recipients] == ["bob@example.com"]
    content = entry.content.read()
    assert content.startswith(b"Received: from client.test (unknown [127.0.0.1])")
    assert f"with ESMTP id {queue_id}".encode() in content
    assert b"Message-Id: <" in content and b"\r\nDate: " in content


def test_queue_id_in_the_250_reply(serve: Callable[..., Server]) -> None:
    server = serve()
    with server.client() as client:
        client.ehlo("c.test")
        client.mail("alice@example.org")
        client.rcpt("bob@example.com")
        code, text = client.data(MESSAGE)
    assert code == 250
    assert text.decode().startswith("2.0.0 Ok: queued as ")
    assert text.decode().split()[-1] == server.incoming()[0]


def test_never_an_open_relay(serve: Callable[..., Server]) -> None:
    server = serve("mynetworks = 10.0.0.0/8\n")  # 127.0.0.1 is not trusted here
    with server.client() as client:
        client.ehlo("c.test")
        client.mail("spammer@example.net")
        # Postfix's default smtpd_relay_restrictions end in defer_unauth_destination.
        assert client.rcpt("victim@elsewhere.test") == (
            454, b"4.7.1 <victim@elsewhere.test>: Relay access denied")
        assert client.rcpt("bob@example.com")[0] == 250
        assert client.rcpt("x@relayed.test")[0] == 250
        assert client.rcpt("x@sub.relayed.test")[0] == 250
    with server.client() as client, pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail("a@example.net", ["victim@elsewhere.test"], MESSAGE)
    assert server.incoming() == []


def test_reject_unauth_destination_is_permanent(serve: Callable[..., Server]) -> None:
    server = serve("mynetworks = 10.0.0.0/8\n"
                   "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n")
    with server.client() as client:
        client.ehlo("c.test")
        client.mail("spammer@example.net")
        assert client.rcpt("victim@elsewhere.test") == (
            554, b"5.7.1 <victim@elsewhere.test>: Relay access denied")


def test_mynetworks_may_relay(serve: Callable[..., Server]) -> None:
    server = serve("mynetworks = 127.0.0.0/8 [::1]/128\n")
    with server.client() as client:
        assert client.sendmail("a@example.org", ["far@elsewhere.test"], MESSAGE) == {}
    assert len(server.incoming()) == 1


def test_restriction_lists_in_order(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
                   "smtpd_recipient_restrictions = reject_non_fqdn_recipient, permit\n")
    with server.client() as client:
        client.ehlo("c.test")
        client.mail("a@example.org")
        assert client.rcpt("x@nodots")[0] == 504
        assert client.rcpt("x@fine.test")[0] == 250


def test_unknown_restriction_fails_closed(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_relay_restrictions = check_nonsense, reject_unauth_destination\n")
    with server.client() as client:
        client.ehlo("c.test")
        client.mail("a@example.org")
        assert client.rcpt("bob@example.com")[0] == 451


def test_open_relay_configuration_is_refused() -> None:
    config = MainConfig.from_document(parse_main_cf(
        "smtpd_relay_restrictions = permit_mynetworks\nsmtpd_recipient_restrictions =\n",
        "main.cf"), hostname="h.test")
    with pytest.raises(ConfigError, match="reject_unauth_destination") as caught:
        Engine.from_config(config)
    assert str(caught.value).startswith("main.cf:1: smtpd_relay_restrictions: ")


def test_a_bad_mynetworks_names_its_line() -> None:
    config = MainConfig.from_document(parse_main_cf(
        "# trusted\nmynetworks = 127.0.0.0/8, 10.0.0.0/33\n", "main.cf"), hostname="h.test")
    with pytest.raises(ConfigError) as caught:
        Engine.from_config(config)
    assert str(caught.value) == (
        "main.cf:2: mynetworks: '10.0.0.0/33' is not a network address (CIDR)"
    )


def test_message_size_limit(serve: Callable[..., Server]) -> None:
    server = serve("message_size_limit = 1000\n")
    with server.client() as client:
        client.ehlo("c.test")
        assert b"SIZE 1000" in client.ehlo_resp  # type: ignore[operator]
        code, _ = client.mail("a@example.org", ["SIZE=5000"])
        assert code == 552
        client.rset()
        client.mail("a@example.org")
        client.rcpt("bob@example.com")
        code, _ = client.data(MESSAGE + b"x" * 2000 + b"\r\n")
        assert code == 552
    assert server.incoming() == []


def test_recipient_limit(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_recipient_limit = 2\n")
    with server.client() as client:
        client.ehlo("c.test")
        client.mail("a@example.org")
        assert client.rcpt("a@example.com")[0] == 250
        assert client.rcpt("b@example.com")[0] == 250
        assert client.rcpt("c@example.com")[0] == 452


def test_bad_commands_drop_the_client(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_hard_error_limit = 2\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"220 ")
        replies = []
        for _ in range(2):
            stream.write(b"BOGUS\r\n")
            stream.flush()
            replies.append(stream.readline()[:3])
        # As Postfix's smtpd: the error that reaches the limit is followed by 421 at once.
        assert replies == [b"500", b"500"]
        assert stream.readline().startswith(b"421 4.7.0 ")
        assert stream.readline() == b""  # closed


def test_refused_recipients_count_toward_the_hard_error_limit(
        serve: Callable[..., Server]) -> None:
    """A dictionary attack: each refused RCPT is an error, as in Postfix's smtpd, so the
    client is dropped at smtpd_hard_error_limit however well-formed its commands are."""
    server = serve("smtpd_hard_error_limit = 3\nmynetworks = 10.0.0.0/8\n"
                   "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"220 ")
        stream.write(b"HELO c.test\r\nMAIL FROM:<a@example.org>\r\n")
        stream.flush()
        assert stream.readline().startswith(b"250 ")
        assert stream.readline().startswith(b"250 ")
        for n in range(3):
            stream.write(f"RCPT TO:<u{n}@elsewhere.example>\r\n".encode())
            stream.flush()
            assert stream.readline().startswith(b"554 5.7.1 ")  # relay access denied
        assert stream.readline().startswith(b"421 4.7.0 ")
        assert stream.readline() == b""


def test_a_client_past_the_soft_error_limit_waits_before_each_reply() -> None:
    """smtpd_soft_error_limit / smtpd_error_sleep_time: the tarpit's delay, per reply of a
    pipelined batch (the wait itself is asyncio.sleep, not timed here)."""
    from types import SimpleNamespace

    from sealmail.mta.smtpd.session import SmtpdSession

    settings = SimpleNamespace(soft_error_limit=2, error_sleep=1.0)
    session: Any = SimpleNamespace(service=SimpleNamespace(settings=settings),
                                   conn=SimpleNamespace(bad_commands=1))
    batch = b"250-mx\r\n250 PIPELINING\r\n554 5.7.1 no\r\n"
    assert SmtpdSession._tarpit(session, batch) == 0.0
    session.conn.bad_commands = 2
    assert SmtpdSession._tarpit(session, batch) == 2.0  # two replies, one of them multi-line
    settings.error_sleep = 0.0
    assert SmtpdSession._tarpit(session, batch) == 0.0


def test_an_http_request_ends_the_session(
        serve: Callable[..., Server], caplog: pytest.LogCaptureFixture) -> None:
    """smtpd_forbidden_commands: an open proxy relaying a browser's request to port 25."""
    server = serve("")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"220 ")
        stream.write(b"POST /form HTTP/1.1\r\nHost: x\r\n\r\n")
        stream.flush()
        assert stream.readline() == b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"
        assert stream.readline() == b""
    wait_for(lambda: any("non-SMTP command from" in m and "POST /form HTTP/1.1" in m
                         for m in caplog.messages))


def test_timeout_closes_idle_sessions(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_timeout = 1s\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"220 ")
        assert stream.readline().startswith(b"421 4.4.2 ")


def test_bare_local_part_gets_myorigin(serve: Callable[..., Server]) -> None:
    server = serve("mydestination = example.com, mx.example.com\n")
    with server.client() as client:
        assert client.sendmail("alice@example.org", ["postmaster"], MESSAGE) == {}
    entry = server.queue.load(server.incoming()[0], QueueName.INCOMING)
    assert entry.recipients[0].record.address == "postmaster@mx.example.com"


def test_virtual_alias_expansion_at_receive(serve: Callable[..., Server], tmp_path: Path) -> None:
    aliases = tmp_path / "virtual"
    aliases.write_text("team@example.com a@example.com, b@example.com\n")
    server = serve(f"virtual_alias_maps = texthash:{aliases}\n")
    with server.client() as client:
        client.sendmail("x@example.org", ["team@example.com"], MESSAGE)
    entry = server.queue.load(server.incoming()[0], QueueName.INCOMING)
    assert [(r.record.address, r.record.original) for r in entry.recipients] == [
        ("a@example.com", "team@example.com"), ("b@example.com", "team@example.com")]


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_submission(serve: Callable[..., Server]) -> None:
    server = serve()
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(server.port), "--from",
         "alice@example.org", "--to", "bob@example.com,carol@example.com", "--helo",
         "swaks.test", "--pipeline"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ok: queued as" in result.stdout
    entry = server.queue.load(server.incoming()[0], QueueName.INCOMING)
    assert [r.record.address for r in entry.recipients] == ["bob@example.com",
                                                            "carol@example.com"]


# -- STARTTLS and AUTH ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_settings(tmp_path: Path, ca: trustme.CA, level: str) -> str:
    cert = ca.issue_cert("mx.example.com", "127.0.0.1")
    path = tmp_path / "smtpd.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    return f"smtpd_tls_security_level = {level}\nsmtpd_tls_cert_file = {path}\n"


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    return context


def with_tls(server_text: str) -> dict[str, Any]:
    config = MainConfig.from_document(parse_main_cf(BASE + server_text), hostname="mx.test")
    return {"tls_context": smtpd_context(config)}


def test_starttls(serve: Callable[..., Server], tmp_path: Path, ca: trustme.CA) -> None:
    text = tls_settings(tmp_path, ca, "may")
    server = serve(text, **with_tls(text))
    with server.client() as client:
        client.ehlo("c.test")
        assert client.has_extn("starttls")
        client.starttls(context=client_context(ca))
        client.ehlo("c.test")
        assert not client.has_extn("starttls")
        assert client.sendmail("a@example.org", ["bob@example.com"], MESSAGE) == {}
    entry = server.queue.load(server.incoming()[0], QueueName.INCOMING)
    assert entry.envelope.protocol == "ESMTPS"


def test_tls_encrypt_requires_starttls(serve: Callable[..., Server], tmp_path: Path,
                                       ca: trustme.CA) -> None:
    text = tls_settings(tmp_path, ca, "encrypt")
    server = serve(text, **with_tls(text))
    with server.client() as client:
        client.ehlo("c.test")
        assert client.mail("a@example.org")[0] == 530


def ehlo_then_starttls(sock: socket.socket) -> Any:
    """A raw client up to the server's go-ahead; returns the socket's reading stream."""
    stream = sock.makefile("rb")
    assert stream.readline().startswith(b"220 ")
    sock.sendall(b"EHLO c.test\r\n")
    while not stream.readline().startswith(b"250 "):
        pass
    sock.sendall(b"STARTTLS\r\n")
    assert stream.readline() == b"220 2.0.0 Ready to start TLS\r\n"
    return stream


def closed_by_server(stream: Any) -> bool:
    try:
        return stream.read() == b""
    except ConnectionResetError:  # the handshake was aborted: a reset is a close too
        return True


@pytest.mark.parametrize("loop", LOOPS)
def test_starttls_timeout_drops_a_client_that_never_handshakes(
    serve: Callable[..., Server], tmp_path: Path, ca: trustme.CA, loop: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="sealmail")
    text = tls_settings(tmp_path, ca, "may") + "smtpd_starttls_timeout = 2s\n"
    server = serve(text, loop=loop, **with_tls(text))
    assert server.service.settings.starttls_timeout == 2.0
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as stalled:
        stream = ehlo_then_starttls(stalled)
        # The stalled client holds nothing up: another one is served meanwhile.
        with server.client() as client:
            client.starttls(context=client_context(ca))
            assert client.sendmail("a@example.org", ["bob@example.com"], MESSAGE) == {}
        assert closed_by_server(stream)  # it never sent a ClientHello
    wait_for(lambda: "SSL_accept error from unknown[127.0.0.1]: Connection timed out"
             in caplog.text, what="the handshake timeout's log line")
    wait_for(lambda: "lost connection after STARTTLS from unknown[127.0.0.1]" in caplog.text)
    with server.client() as client:  # and after
        assert client.sendmail("a@example.org", ["bob@example.com"], MESSAGE) == {}
    assert len(server.incoming()) == 2


def test_starttls_timeout_is_postfixs_by_default() -> None:
    config = MainConfig.from_document(parse_main_cf(BASE), hostname="mx.test")
    assert config.time("smtpd_starttls_timeout") == 300


@pytest.mark.parametrize("loop", LOOPS)
def test_failed_handshake_ends_the_session(
    serve: Callable[..., Server], tmp_path: Path, ca: trustme.CA, loop: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="sealmail")
    text = tls_settings(tmp_path, ca, "may")
    server = serve(text, loop=loop, **with_tls(text))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        stream = ehlo_then_starttls(sock)
        sock.sendall(b"MAIL FROM:<a@example.org>\r\n" * 8)  # clear text, not a ClientHello
        assert closed_by_server(stream)
    wait_for(lambda: "SSL_accept error from unknown[127.0.0.1]: -1" in caplog.text)
    assert "TLS library problem" in caplog.text
    wait_for(lambda: "disconnect from unknown[127.0.0.1]" in caplog.text)
    assert server.incoming() == []


def test_starttls_starts_the_session_over(
    serve: Callable[..., Server], tmp_path: Path, ca: trustme.CA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 3207 4.2: the EHLO sent in clear is forgotten (STARTTLS is refused inside a
    transaction, as Postfix refuses it)."""
    caplog.set_level("INFO", logger="sealmail")
    text = tls_settings(tmp_path, ca, "may")
    server = serve(text, **with_tls(text))
    with server.client() as client:
        client.ehlo("clear.test")
        assert client.mail("a@example.org")[0] == 250
        assert client.docmd("STARTTLS")[0] == 503
        client.rset()
        client.starttls(context=client_context(ca))
        assert client.docmd("MAIL FROM:<a@example.org>")[0] == 503  # no EHLO
        client.ehlo("tls.test")
        assert client.sendmail("a@example.org", ["bob@example.com"], MESSAGE) == {}
    entry = server.queue.load(server.incoming()[0], QueueName.INCOMING)
    assert entry.envelope.protocol == "ESMTPS"
    assert entry.envelope.helo == "tls.test"
    assert "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher" \
        in caplog.text


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_starttls(serve: Callable[..., Server], tmp_path: Path, ca: trustme.CA) -> None:
    text = tls_settings(tmp_path, ca, "encrypt")
    server = serve(text, **with_tls(text))
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(server.port), "--from",
         "alice@example.org", "--to", "bob@example.com", "--helo", "swaks.test", "--tls"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TLS started" in result.stdout
    assert "Ok: queued as" in result.stdout
    entry = server.queue.load(server.incoming()[0], QueueName.INCOMING)
    assert entry.envelope.protocol == "ESMTPS"


def make_authenticator(tmp_path: Path) -> Authenticator:
    root = tmp_path / "store"
    root.mkdir()
    sasldb = root / "sasldb2"
    subprocess.run([sys.executable, "-m", "sealmail", "saslpasswd2", "-p", "-c", "-u",
                    "mx.example.com", "-f", str(sasldb), "alice"], input="alice-pw\n",
                   text=True, check=True, capture_output=True)
    conf = root / "imapd.conf"
    conf.write_text(f"configdirectory: {root / 'lib'}\npartition-default: {root / 'spool'}\n"
                    f"servername: mx.example.com\nsasl_sasldb_path: {sasldb}\n"
                    "allowplaintext: yes\nauth_failure_delay: 0\n")
    return Authenticator(load_imapd_conf(str(conf)))


def test_auth_permits_relaying(serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve("mynetworks = 10.0.0.0/8\nsmtpd_sasl_auth_enable = yes\n",
                   authenticator=make_authenticator(tmp_path))
    client = server.client()
    client.ehlo("c.test")
    assert "PLAIN" in client.esmtp_features["auth"]
    client.mail("alice@example.org")
    assert client.rcpt("far@elsewhere.test")[0] == 454
    client.rset()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("alice", "wrong")  # smtplib tries three mechanisms, then we hang up (421)
    client.close()
    with server.client() as client:
        client.login("alice", "alice-pw")
        assert client.sendmail("alice@example.org", ["far@elsewhere.test"], MESSAGE) == {}
    entry = server.queue.load(server.incoming()[0], QueueName.INCOMING)
    assert entry.envelope.protocol == "ESMTPA"
    assert entry.envelope.sasl_username == "alice"


def test_noplaintext_hides_plain_without_tls(serve: Callable[..., Server],
                                             tmp_path: Path) -> None:
    server = serve("smtpd_sasl_auth_enable = yes\n"
                   "smtpd_sasl_security_options = noanonymous, noplaintext\n",
                   authenticator=make_authenticator(tmp_path))
    with server.client() as client:
        client.ehlo("c.test")
        mechanisms = client.esmtp_features["auth"].split()
        assert "PLAIN" not in mechanisms and "LOGIN" not in mechanisms
        assert "SCRAM-SHA-256" in mechanisms


def test_dsn_notify_parameter() -> None:
    from sealmail.mta.smtpd import dsn_notify

    assert dsn_notify("success,Failure") == ("SUCCESS", "FAILURE")
    assert dsn_notify("NEVER") == ("NEVER",)
    assert dsn_notify(None) == ()


def test_the_package_keeps_its_public_names() -> None:
    """sealmail.mta.smtpd became a package (issue 20's split): what others import from it is
    re-exported, and each name is the one its module defines."""
    import sealmail.mta.smtpd as smtpd

    for name in smtpd.__all__:
        value = getattr(smtpd, name)
        assert getattr(value, "__module__", smtpd.__name__).startswith("sealmail.mta.smtpd"), name
    assert {"SmtpdService", "SmtpdSettings", "serve_sockets", "worker_main"} <= set(smtpd.__all__)


def test_smtpd_forbidden_commands_is_the_list_in_main_cf(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_forbidden_commands = PUT\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"220 ")
        stream.write(b"GET / HTTP/1.0\r\nput /x HTTP/1.0\r\n")
        stream.flush()
        assert stream.readline().startswith(b"500 ")  # not listed here: an unknown command
        assert stream.readline().startswith(b"221 2.7.0 ")
        assert stream.readline() == b""

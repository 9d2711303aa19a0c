"""sieved in process: a real asyncio server on 127.0.0.1, real script files, sievelib and a raw
client (for SCRAM, SASL-IR, literals and the failure paths sievelib does not reach)."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import scramp
import trustme
from sievelib.managesieve import Client  # type: ignore[import-untyped]

from sealmail.auth.authenticator import Authenticator
from sealmail.auth.sasldb import SaslDB
from sealmail.config.imapd_conf import ConfigError, ImapdConfig, parse_imapd_conf
from sealmail.proto.sasl import split_identity
from sealmail.server.sieved import (
    ManageSieveService,
    SievedSettings,
    build_service,
    sieve_capabilities,
    validate,
)
from sealmail.sieve import SUPPORTED_EXTENSIONS
from sealmail.store.sieve_scripts import SieveScriptStore

PASSWORD = "sieve secret"
VACATION = (
    'require ["fileinto", "vacation"];\r\n'
    'if header :contains "subject" "lists" { fileinto "Lists"; }\r\n'
    'vacation :days 7 "I am away";\r\n'
)
BROKEN = 'require "fileinto";\r\nif true {\r\n  fileinto "x";\r\n  frobnicate;\r\n}\r\n'


@dataclass
class Server:
    config: ImapdConfig
    service: ManageSieveService
    scripts: SieveScriptStore
    port: int
    ca_file: Path
    loop: asyncio.AbstractEventLoop

    def raw(self) -> RawClient:
        return RawClient(socket.create_connection(("127.0.0.1", self.port), timeout=10))

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


class RawClient:
    """Reads whole ManageSieve responses: data lines (with literals) up to OK/NO/BYE."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.file = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[list[bytes], bytes]:
        lines: list[bytes] = []
        while True:
            line = self.file.readline()
            assert line, "server closed the connection"
            assert line.endswith(b"\r\n"), line
            line = line[:-2]
            literal = re.search(rb"\{(\d+)\}$", line)
            if literal:
                line += b"\r\n" + self.file.read(int(literal.group(1)))
                line += self.file.readline()[:-2]
            if re.match(rb"(OK|NO|BYE)( |$)", line):
                return lines, line
            lines.append(line)

    def command(self, data: bytes) -> tuple[list[bytes], bytes]:
        self.send(data)
        return self.response()

    def starttls(self, context: ssl.SSLContext) -> list[bytes]:
        assert self.command(b"STARTTLS\r\n")[1].startswith(b"OK")
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        lines, status = self.response()  # RFC 5804 2.2: capabilities again, then OK
        assert status.startswith(b"OK")
        return lines

    def plain(self, user: str = "alice", password: str = PASSWORD) -> bytes:
        blob = base64.b64encode(f"\0{user}\0{password}".encode())
        return self.command(b'AUTHENTICATE "PLAIN" "' + blob + b'"\r\n')[1]

    def closed(self) -> bool:
        return self.file.read() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def make_config(tmp_path: Path, ca: trustme.CA, **extra: str) -> ImapdConfig:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    values = {
        "configdirectory": str(tmp_path / "config"),
        "partition-default": str(tmp_path / "partition"),
        "servername": "sieve.test.example",
        "tls_server_cert": str(cert),
        "tls_server_key": str(key),
        "auth_failure_delay": "0",
        "hosts_allow": str(tmp_path / "hosts.allow"),
        "hosts_deny": str(tmp_path / "hosts.deny"),
        **extra,
    }
    (tmp_path / "config").mkdir(exist_ok=True)
    return parse_imapd_conf("".join(f"{k}: {v}\n" for k, v in values.items()), "imapd.conf")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    """start(max_scripts=..., max_size=..., **imapd_conf) -> Server, stopped at the end."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    running: list[tuple[asyncio.AbstractEventLoop, threading.Thread]] = []

    def starter(max_scripts: int = 5, max_size: int = 32 * 1024, **extra: str) -> Server:
        config = make_config(tmp_path, ca, **extra)
        sasldb = SaslDB(tmp_path / "config" / "sasldb2", scrypt_n=2**10)
        for user in ("alice", "bob"):
            sasldb.set_password(split_identity(user, config.servername), PASSWORD)
        scripts = SieveScriptStore(
            tmp_path / "config" / "sieve", max_script_size=max_size, max_scripts=max_scripts
        )
        service = ManageSieveService(
            config,
            scripts,
            settings=SievedSettings.from_config(config),
            authenticator=Authenticator(config, sasldb=sasldb),
        )
        loop = asyncio.new_event_loop()
        port: list[int] = []

        async def main() -> None:
            server = await asyncio.start_server(service.handle, "127.0.0.1", 0)
            port.append(server.sockets[0].getsockname()[1])

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(main(), loop).result(10)
        running.append((loop, thread))
        return Server(config, service, scripts, port[0], ca_file, loop)

    yield starter
    for loop, thread in running:

        async def finish() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(finish(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def sievelib_client(server: Server, monkeypatch: pytest.MonkeyPatch) -> Client:
    # sievelib verifies against the default CA store; point it at the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
    client = Client("127.0.0.1", server.port)
    assert client.connect("alice", PASSWORD, starttls=True, authmech="PLAIN")
    return client


def test_greeting_lists_capabilities_and_tls_brings_plain(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start()
    client = server.raw()
    lines, status = client.response()
    assert status == b'OK "sieve.test.example sealmail ManageSieve ready"'
    caps = {name: value for name, _, value in (line.partition(b" ") for line in lines)}
    assert caps[b'"IMPLEMENTATION"'] == b'"sealmail"'
    assert caps[b'"VERSION"'] == b'"1.0"'
    assert b'"STARTTLS"' in caps
    assert b'"OWNER"' not in caps
    sieve = caps[b'"SIEVE"'].strip(b'"').decode().split()
    assert set(sieve) == set(SUPPORTED_EXTENSIONS)
    assert caps[b'"NOTIFY"'] == b'"mailto"'
    assert caps[b'"MAXREDIRECTS"'] == f'"{sieve_capabilities().max_redirects}"'.encode()
    # Outside TLS, with allowplaintext off, PLAIN is neither offered nor accepted.
    assert b"PLAIN" not in caps[b'"SASL"']
    assert (
        client.plain()
        == b'NO (ENCRYPT-NEEDED) "This mechanism needs an encrypted connection (use STARTTLS)"'
    )
    after = client.starttls(server.tls_context())
    assert b'"STARTTLS"' not in after
    assert any(line.startswith(b'"SASL"') and b"PLAIN" in line for line in after)
    assert client.command(b"STARTTLS\r\n")[1].startswith(b"NO")
    assert client.plain() == b'OK "Authentication successful"'
    lines, status = client.command(b"CAPABILITY\r\n")
    assert b'"OWNER" "alice"' in lines
    assert b'"SASL" ""' in lines
    assert client.command(b"LOGOUT\r\n")[1] == b'OK "Logout completed"'
    assert client.closed()


def test_sievelib_upload_activate_list_get_rename_delete(start, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    server: Server = start()
    client = sievelib_client(server, monkeypatch)
    assert client.havespace("vacation", len(VACATION))
    assert client.putscript("vacation", VACATION)
    assert client.putscript("other", "keep;\r\n")
    assert client.setactive("vacation")
    active, others = client.listscripts()
    assert active == "vacation" and others == ["other"]
    assert client.getscript("vacation").splitlines() == VACATION.splitlines()  # sievelib splits
    # Cyrus's layout: <sievedir>/<first letter>/<user>/NAME.script and the defaultbc link.
    directory = server.scripts.sievedir / "a" / "alice"
    assert (directory / "vacation.script").read_bytes() == VACATION.encode()
    assert (directory / "defaultbc").readlink() == Path("vacation.script")
    assert server.scripts.active_script("alice") == ("vacation", VACATION.encode())
    # RFC 5804 2.10: the active script cannot be deleted.
    assert not client.deletescript("vacation")
    assert "ACTIVE" in str(client.errcode)
    # RFC 5804 2.11.1: a renamed active script stays active.
    assert client.renamescript("vacation", "away")
    assert client.listscripts() == ("away", ["other"])
    assert not client.renamescript("away", "other")
    assert "ALREADYEXISTS" in str(client.errcode)
    assert not client.getscript("nope")
    assert "NONEXISTENT" in str(client.errcode)
    assert client.setactive("")  # the empty name deactivates
    assert client.listscripts() == (None, ["away", "other"])
    assert server.scripts.active_script("alice") is None
    assert client.deletescript("away")
    assert client.listscripts() == (None, ["other"])
    client.logout()


def test_invalid_script_is_refused_with_line_and_active_one_stays(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start()
    client = server.raw()
    client.response()
    client.starttls(server.tls_context())
    client.plain()
    script = VACATION.encode()
    put = b'PUTSCRIPT "main" {%d+}\r\n%s\r\n' % (len(script), script)
    assert client.command(put)[1] == b'OK "Putscript completed"'
    assert client.command(b'SETACTIVE "main"\r\n')[1].startswith(b"OK")
    broken = BROKEN.encode()
    _, status = client.command(b'PUTSCRIPT "main" {%d+}\r\n%s\r\n' % (len(broken), broken))
    assert status.startswith(b'NO "line 4, column 3: ')
    assert server.scripts.read("alice", "main") == script
    _, status = client.command(b"CHECKSCRIPT {%d+}\r\n%s\r\n" % (len(broken), broken))
    assert status == b'NO "' + "; ".join(validate(BROKEN)).encode() + b'"'
    _, status = client.command(b'CHECKSCRIPT "keep;"\r\n')
    assert status == b'OK "Script is valid"'
    _, status = client.command(b'CHECKSCRIPT "keep; \xff"\r\n')
    assert status.startswith(b'NO "script is not valid UTF-8')
    # GETSCRIPT gives the stored octets back as a literal.
    lines, status = client.command(b'GETSCRIPT "main"\r\n')
    assert lines == [b"{%d}\r\n" % len(script) + script]
    client.close()


def test_quotas_maxscripts_and_maxsize(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(max_scripts=2, max_size=100)
    client = server.raw()
    client.response()
    client.starttls(server.tls_context())
    client.plain()
    for name in (b"one", b"two"):
        assert client.command(b'PUTSCRIPT "%s" "keep;"\r\n' % name)[1].startswith(b"OK")
    assert client.command(b'PUTSCRIPT "three" "keep;"\r\n')[1].startswith(b"NO (QUOTA/MAXSCRIPTS)")
    assert client.command(b'HAVESPACE "three" 5\r\n')[1].startswith(b"NO (QUOTA/MAXSCRIPTS)")
    assert client.command(b'HAVESPACE "one" 100\r\n')[1] == b'OK "Putscript would succeed"'
    assert client.command(b'HAVESPACE "one" 101\r\n')[1].startswith(b"NO (QUOTA/MAXSIZE)")
    big = b"#" * 200 + b"\r\nkeep;\r\n"
    # Over the limit, the literal is read to its end and refused; the session goes on.
    _, status = client.command(b'PUTSCRIPT "one" {%d+}\r\n%s\r\n' % (len(big), big))
    assert status.startswith(b"NO (QUOTA/MAXSIZE)")
    assert client.command(b'NOOP "still here"\r\n')[1] == b'OK (TAG "still here") "Done"'
    assert server.scripts.names("alice") == ["one", "two"]
    client.close()


def test_scram_sha_256_with_initial_response_and_server_signature(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start()
    client = server.raw()
    client.response()
    client.starttls(server.tls_context())
    scram = scramp.ScramClient(["SCRAM-SHA-256"], "bob", PASSWORD)
    first = base64.b64encode(scram.get_client_first().encode())
    client.send(b'AUTHENTICATE "SCRAM-SHA-256" "' + first + b'"\r\n')
    challenge = client.file.readline().strip()
    assert challenge.startswith(b'"') and challenge.endswith(b'"')
    scram.set_server_first(base64.b64decode(challenge[1:-1]).decode())
    final = base64.b64encode(scram.get_client_final().encode())
    lines, status = client.command(b'"' + final + b'"\r\n')
    assert lines == []
    match = re.fullmatch(rb'OK \(SASL "([A-Za-z0-9+/=]+)"\) "Authentication successful"', status)
    assert match, status
    scram.set_server_final(base64.b64decode(match.group(1)).decode())  # raises if forged
    lines, status = client.command(b"CAPABILITY\r\n")
    assert b'"OWNER" "bob"' in lines
    client.close()


def test_auth_cancel_bad_password_and_failure_limit(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    client = server.raw()
    client.response()
    client.send(b'AUTHENTICATE "PLAIN"\r\n')
    assert client.file.readline() == b'""\r\n'  # an empty challenge: send the response
    assert client.command(b'"*"\r\n')[1] == b'NO "Authentication aborted by client"'
    assert client.command(b"LISTSCRIPTS\r\n")[1] == b'NO "Authenticate first"'
    assert client.plain(password="wrong") == b'NO "Authentication error"'
    assert client.plain(password="wrong") == b'NO "Authentication error"'
    client.send(b'AUTHENTICATE "PLAIN" "' + base64.b64encode(b"\0alice\0bad") + b'"\r\n')
    assert client.response()[1] == b'NO "Authentication error"'
    assert client.response()[1] == b'BYE "Too many authentication failures"'
    assert client.closed()


def test_unauthenticate_then_login_as_someone_else(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    client = server.raw()
    client.response()
    client.plain()
    assert client.command(b'PUTSCRIPT "mine" "keep;"\r\n')[1].startswith(b"OK")
    assert client.command(b"UNAUTHENTICATE\r\n")[1] == b'OK "Unauthenticate completed"'
    assert client.command(b"LISTSCRIPTS\r\n")[1] == b'NO "Authenticate first"'
    assert client.plain(user="bob") == b'OK "Authentication successful"'
    lines, status = client.command(b"LISTSCRIPTS\r\n")
    assert lines == [] and status.startswith(b"OK")
    assert server.scripts.names("alice") == ["mine"]
    client.close()


def test_hosts_deny_gets_no_greeting(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "hosts.deny").write_text("sieve: 127.0.0.1\n")
    server: Server = start()
    client = server.raw()
    assert client.closed()


def test_build_service_refuses_arguments(tmp_path: Path) -> None:
    config = make_config(tmp_path, trustme.CA())
    service = build_service(config, [])
    assert service.scripts.sievedir == tmp_path / "config" / "sieve"
    assert service.scripts.max_script_size == 32 * 1024
    assert service.scripts.max_scripts == 5
    with pytest.raises(ConfigError, match="unknown argument '-s'"):
        build_service(config, ["-s"])


def test_idle_timeout_says_bye(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Server = start()
    server.service.settings = SievedSettings(timeout=0.05)
    client = server.raw()
    client.response()
    assert client.response()[1] == b'BYE "Idle for too long"'
    assert client.closed()


def test_shutdown_says_bye_trylater(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start()
    client = server.raw()
    client.response()
    assert client.plain().startswith(b"NO")  # PLAIN needs TLS: the session goes on
    server.loop.call_soon_threadsafe(server.service.drain)  # as master's SIGTERM does
    assert client.response()[1] == b'BYE (TRYLATER) "Server shutting down"'
    assert client.closed()

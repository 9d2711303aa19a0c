"""One fuzz target per parser: a function of bytes that must return, or raise only the errors
the parser declares for bad input. Anything else it raises is a crash (a bug).

`fuzz/<name>.py` runs one target under atheris (`python fuzz/smtp_server.py -atheris_runs=N`);
tests/reliability/test_fuzz_targets.py runs every target over random and hypothesis-made inputs
in CI; `fuzz/run_all.sh` runs them all for 100,000 inputs each. docs/reliability.md has the
counts.

The first bytes of an input choose the target's options (LMTP or SMTP, the size of the pieces
the bytes are fed in, which SASL mechanism) so one corpus explores them all. The protocol cores
are driven by a host that answers every event, yes or no by a bit of the input, the way the
daemons do; the config parsers go through the loaders, a file on disk, as a daemon reads them.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Target = Callable[[bytes], None]


def _pieces(data: bytes) -> tuple[int, bool, bytes]:
    """(piece size 1-64, answer yes?, the rest): the options an input's first byte chooses."""
    if not data:
        return 64, True, b""
    return (data[0] & 0x3F) + 1, bool(data[0] & 0x40), data[1:]


def _chunks(data: bytes, piece: int) -> list[bytes]:
    return [data[i : i + piece] for i in range(0, len(data), piece)] + [b""]


# -- protocol cores ----------------------------------------------------------------------------


def smtp_server(data: bytes) -> None:
    """The SMTP/LMTP server core (proto.smtp.ServerConnection): never raises."""
    from sealmail.proto import smtp

    piece, yes, rest = _pieces(data)
    lmtp = bool(data[:1]) and bool(data[0] & 0x80)
    conn = smtp.ServerConnection(
        mode=smtp.Mode.LMTP if lmtp else smtp.Mode.SMTP,
        hostname="mx",
        limits=smtp.Limits(max_line_length=512, max_message_size=200, max_recipients=4),
        auth_mechanisms=("PLAIN", "LOGIN"),
        starttls_available=True,
        dsn=True,
        smtputf8=True,
        record_history=True,
    )
    code = 250 if yes else 550
    for chunk in _chunks(rest, piece):
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not smtp.NEED_DATA:
            if isinstance(event, smtp.ConnectionClosed):
                return
            if isinstance(event, smtp.MessageData):
                for _ in range(conn.replies_owed):
                    conn.answer(smtp.Reply(code, f"{code // 100}.0.0", "x"))
            elif isinstance(event, smtp.AuthStart | smtp.AuthResponse):
                if yes and event == smtp.AuthResponse(b""):
                    conn.auth_succeeded("u")
                elif yes:
                    conn.auth_challenge(b"c")
                else:
                    conn.answer(smtp.Reply(535, "5.7.8", "no"))
            elif isinstance(event, smtp.StartTLS):
                ok, no = smtp.Reply(220, "2.0.0", "go"), smtp.Reply(454, "4.7.0", "no")
                conn.answer(ok if yes else no)
                if yes:
                    conn.tls_started()
            elif event.needs_reply:
                conn.answer(smtp.Reply(code, f"{code // 100}.1.0", "x"))
        conn.data_to_send()


def imap_command(data: bytes) -> None:
    """IMAP's command parser (proto.imap.parse_command): ImapError for bad input."""
    from sealmail.proto.imap import ImapError, parse_command
    from sealmail.proto.imap.parser import ParserLimits

    # A command as the connection hands it over: complete, ending in CRLF.
    with contextlib.suppress(ImapError):
        parse_command(data + b"\r\n", ParserLimits(8, 200), utf8=data[-1:] == b"8")


def imap_connection(data: bytes) -> None:
    """IMAP's connection core (framing, literals, continuations, states): never raises."""
    from sealmail.proto import imap
    from sealmail.proto.imap.response import ContinuationRequest

    piece, yes, rest = _pieces(data)
    limits = imap.Limits(max_line_length=1024, max_literal_size=256, max_append_size=512)
    conn = imap.ServerConnection(limits)
    for chunk in _chunks(rest, piece):
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not imap.NEED_DATA:
            if isinstance(event, imap.ConnectionClosed):
                return
            if isinstance(event, imap.CommandReceived):
                command = event.command
                if isinstance(command, imap.Authenticate | imap.Idle) and yes:
                    conn.send(ContinuationRequest(b""))
                else:
                    conn.send(imap.StatusResponse("OK" if yes else "NO", "x", command.tag))
            elif isinstance(event, imap.AuthenticateData | imap.IdleDone):
                pending = conn.pending
                if pending is not None:
                    conn.send(imap.StatusResponse("OK" if yes else "NO", "x", pending.tag))
        if conn._tls_wait:
            conn.tls_started()
        if conn._compress_wait:
            conn.receive_data(conn.compression_started())
        conn.data_to_send()


def pop3(data: bytes) -> None:
    """The POP3 core: never raises."""
    from sealmail.proto import pop3 as p

    piece, yes, rest = _pieces(data)
    conn = p.ServerConnection(
        "mx", "S1", auth_mechanisms=("PLAIN",), plaintext_allowed=True, starttls_available=True
    )
    messages = {7: b"Subject: a\r\n\r\n.x\r\n", 9: b"Subject: b\r\n\r\nbody"}
    drop = p.Maildrop(1, tuple(p.MaildropMessage(uid, len(m)) for uid, m in messages.items()))
    no = p.Reply(False, "no", p.ResponseCode.AUTH)
    for chunk in _chunks(rest, piece):
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not p.NEED_DATA:
            if isinstance(event, p.ConnectionClosed):
                return
            if isinstance(event, p.Login):
                conn.open_maildrop(event.user, drop) if yes else conn.refuse(no)
            elif isinstance(event, p.AuthStart):
                conn.auth_challenge(b"") if event.initial_response is None else conn.refuse(no)
            elif isinstance(event, p.AuthResponse):
                conn.open_maildrop("u", drop) if yes else conn.refuse(no)
            elif isinstance(event, p.StartTLS):
                conn.start_tls()
                conn.tls_started()
            elif isinstance(event, p.MessageRequest):
                conn.send_message(messages[event.uid])
            elif isinstance(event, p.Update):
                conn.update_done()
        conn.data_to_send()


def managesieve(data: bytes) -> None:
    """The ManageSieve core and its tokenizer: SyntaxProblem from the tokenizer only."""
    from sealmail.proto import managesieve as m
    from sealmail.proto.managesieve._syntax import SyntaxProblem, tokenize

    with contextlib.suppress(SyntaxProblem):
        tokenize(data.split(b"\r\n", 1)[0])
    piece, yes, rest = _pieces(data)
    conn = m.ServerConnection(
        m.Capabilities(sieve_extensions=("fileinto",), notify_methods=("mailto",)),
        "S1",
        auth_mechanisms=("PLAIN",),
        starttls_available=True,
    )
    for chunk in _chunks(rest, piece):
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not m.NEED_DATA:
            if isinstance(event, m.ConnectionClosed):
                return
            if isinstance(event, m.StartTLS):
                conn.answer(m.NO("no TLS here"))
            elif isinstance(event, m.GetScript):
                conn.send_script(b"keep;")
            elif isinstance(event, m.ListScripts):
                conn.send_listing([("a", True), ("b", False)])
            elif isinstance(event, m.AuthStart | m.AuthResponse):
                conn.authenticated("u") if yes else conn.answer(m.NO("no"))
            elif event.needs_reply:
                conn.answer(m.OK() if yes else m.NO("no"))
        conn.data_to_send()


_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "EXTERNAL")


class _Credentials:
    """Fixed secrets, no hashing: the mechanisms' parsing is the target, not scrypt."""

    def check_password(self, identity: object, password: str) -> object:
        from sealmail.proto.sasl import Verdict

        return Verdict.OK if password == "pw" else Verdict.NO

    def cram_md5_secret(self, identity: object) -> object:
        from sealmail.proto.sasl import cram_md5_secret

        return cram_md5_secret(b"pw")

    def scram_secret(self, mechanism: str, identity: object) -> object:
        from sealmail.proto.sasl import ScramSecret

        return ScramSecret(b"salt-16-octets!!", 4096, b"k" * 32, b"s" * 32)


def sasl(data: bytes) -> None:
    """The SASL mechanisms' response parsing (each step of one exchange; responses split at
    NUL NUL): a Failure for bad input, never an exception."""
    from sealmail.proto.sasl import (
        Challenge,
        MechanismContext,
        PlainSyntaxError,
        ScramSyntaxError,
        new_mechanism,
        parse_client_final,
        parse_client_first,
        parse_plain,
    )

    name = _MECHANISMS[data[0] % len(_MECHANISMS)] if data else "PLAIN"
    context = MechanismContext(
        credentials=_Credentials(),  # type: ignore[arg-type]
        default_realm="example.com",
        authorize=lambda authcid, authzid: authcid == authzid,
        entropy=lambda n: b"e" * n,
        success_data=bool(data[:1]) and data[0] & 0x80 == 0x80,
        tls_peer_identity="u" if data[:1] and data[0] & 0x40 else None,
    )
    mechanism = new_mechanism(name, context)
    steps = data[1:].split(b"\0\0")
    first: bytes | None = None if steps[0] == b"-" else steps[0]
    result = mechanism.step(first)
    for response in steps[1:]:
        if not isinstance(result, Challenge):
            break
        result = mechanism.step(response)
    with contextlib.suppress(PlainSyntaxError):
        parse_plain(data[1:])
    text = data[1:].decode("utf-8", "replace")
    with contextlib.suppress(ScramSyntaxError):
        parse_client_first(text)
    with contextlib.suppress(ScramSyntaxError):
        parse_client_final(text)


# -- Sieve, messages ---------------------------------------------------------------------------

_MESSAGE = (
    b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n"
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n"
    b"body\r\n--x--\r\n"
)


def sieve(data: bytes) -> None:
    """The Sieve compiler (SieveCompileError for a bad script), then a run of what compiles on a
    fixed message (a runtime error is in the result, never raised)."""
    from sealmail.sieve import Envelope, SieveCompileError, SieveContext, compile_script, run

    text = data.decode("utf-8", "replace")
    try:
        script = compile_script(text)
    except SieveCompileError:
        return
    context = SieveContext(now=datetime(2026, 1, 1, tzinfo=UTC), environment={"name": "x"})
    run(script, _MESSAGE, Envelope("a@example.com", "b@example.com"), context)


def mime(data: bytes) -> None:
    """MIME and RFC 5322 parsing: the body structure and envelope (never raise), their IMAP
    forms, the header fields, address lists and the message checks of delivery."""
    from sealmail import rfc5322
    from sealmail.delivery import message
    from sealmail.proto.imap import mime as m
    from sealmail.proto.imap.response import (
        body_structure_value,
        envelope_value,
        render_value,
    )
    from sealmail.store.errors import InvalidMessage

    parsed = m.parse_message(data)
    render_value(body_structure_value(parsed.body))
    render_value(envelope_value(parsed.envelope))
    m.section_bytes(data, parsed.body, (1,), None)
    m.section_bytes(data, parsed.body, (1, 2), "MIME")
    part = m.find_part(parsed.body, (1,))
    if part is not None:
        m.decode_part(data, part)
    header = rfc5322.message_header(data)
    rfc5322.header_fields(header, ("FROM", "SUBJECT"), exclude=bool(len(data) & 1))
    rfc5322.parse_address_list(data.decode("utf-8", "replace"))
    message.message_id(data)
    message.without_return_path(data)
    with contextlib.suppress(InvalidMessage):
        message.validate(data)


# -- configuration files -----------------------------------------------------------------------

# In memory when the system has a tmpfs there: a config target writes a file per input.
_DIR = tempfile.mkdtemp(prefix="sealmail-fuzz-",
                        dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _DIR, True)


def _config_error() -> type[Exception]:
    from sealmail.config.imapd_conf import ConfigError

    return ConfigError


def _file(name: str, data: bytes) -> Path:
    path = Path(_DIR, f"{os.getpid()}-{name}")
    path.write_bytes(data)
    return path


@functools.cache
def _main_options() -> dict[str, Any]:
    from sealmail.mta.config.parameters import MAIN

    return MAIN.options()


def main_cf(data: bytes) -> None:
    """main.cf as the MTA reads it (load_mta_config), then each parameter it sets converted
    through the registry: ConfigError."""
    from sealmail.mta.config import load_mta_config
    directory = Path(_DIR, f"{os.getpid()}-mta")
    directory.mkdir(exist_ok=True)
    (directory / "main.cf").write_bytes(data)
    (directory / "master.cf").write_bytes(b"")
    try:
        main = load_mta_config(directory, hostname="mx.example.com").main
    except _config_error():
        return
    options = _main_options()
    for name in main.explicit:  # the parameters the file sets: converting all 700 is slow
        option = options.get(name)
        if option is not None:
            with contextlib.suppress(_config_error()):
                main.get(option)


def master_cf(data: bytes) -> None:
    """master.cf (load_master_cf): ConfigError."""
    from sealmail.mta.config.master_cf import load_master_cf

    with contextlib.suppress(_config_error()):
        load_master_cf(_file("master.cf", data))


def imapd_conf(data: bytes) -> None:
    """imapd.conf (load_imapd_conf): ConfigError."""
    from sealmail.config.imapd_conf import load_imapd_conf

    with contextlib.suppress(_config_error()):
        load_imapd_conf(_file("imapd.conf", data))


def cyrus_conf(data: bytes) -> None:
    """cyrus.conf (load_cyrus_conf): ConfigError."""
    from sealmail.config.cyrus_conf import load_cyrus_conf

    with contextlib.suppress(_config_error()):
        load_cyrus_conf(_file("cyrus.conf", data))


def aliases(data: bytes) -> None:
    """aliases(5) and :include: files: ConfigError (AliasError)."""
    from sealmail.mta.aliases import include_members, parse_aliases

    text = data.decode("utf-8", "replace")
    with contextlib.suppress(_config_error()):
        parse_aliases(text)
    with contextlib.suppress(_config_error()):
        include_members(data, "fuzz")


def hosts_allow(data: bytes) -> None:
    """hosts.allow and hosts.deny (the half after a NUL is hosts.deny): never raises; a bad line
    is in .errors and refuses, and a check is made for a few clients."""
    from sealmail.config.hosts_access import HostsAccess

    allow, _, deny = data.partition(b"\0")
    access = HostsAccess.load(_file("hosts.allow", allow), _file("hosts.deny", deny))
    for client in ("127.0.0.1", "192.0.2.7", "2001:db8::1", "/run/socket"):
        access.check("lmtpd", client, "127.0.0.1")


TARGETS: dict[str, Target] = {
    "smtp_server": smtp_server,
    "imap_command": imap_command,
    "imap_connection": imap_connection,
    "pop3": pop3,
    "managesieve": managesieve,
    "sasl": sasl,
    "sieve": sieve,
    "mime": mime,
    "main_cf": main_cf,
    "master_cf": master_cf,
    "imapd_conf": imapd_conf,
    "cyrus_conf": cyrus_conf,
    "aliases": aliases,
    "hosts_allow": hosts_allow,
}


SEEDS: dict[str, list[bytes]] = {
    "smtp_server": [
        b"\xc0LHLO c\r\nMAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<u@x> NOTIFY=NEVER\r\n"
        b"DATA\r\nx\r\n.\r\n",
        b"@EHLO c\r\nAUTH PLAIN AGEAYg==\r\nMAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<u@x>\r\n"
        b"BDAT 3 LAST\r\nabcQUIT\r\n",
        b"@EHLO c\r\nSTARTTLS\r\nEHLO c\r\nAUTH LOGIN\r\ndQ==\r\n*\r\nVRFY x\r\nRSET\r\n",
    ],
    "imap_command": [
        b'a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From)]<0.10> BINARY[1])',
        b'a SEARCH CHARSET UTF-8 OR (FROM "x" SINCE 1-Jan-2020) NOT UID 1:5,7 MODSEQ 3',
        b'a APPEND INBOX (\\Seen) "01-Jan-2020 00:00:00 +0000" {3+}\r\nabc',
        b'a SELECT INBOX (QRESYNC (1 2 1:3 (1 2)))',
        b'a LIST (SUBSCRIBED) "" ("*" "%") RETURN (CHILDREN STATUS (MESSAGES))',
    ],
    "imap_connection": [
        b"@a LOGIN {1}\r\nu {1+}\r\np\r\nb IDLE\r\nDONE\r\nc AUTHENTICATE PLAIN\r\n*\r\n",
        b"@a APPEND x {3}\r\nabc\r\nb STARTTLS\r\nc COMPRESS DEFLATE\r\n",
    ],
    "pop3": [
        b"@USER u\r\nPASS p\r\nSTAT\r\nLIST\r\nUIDL 1\r\nTOP 1 0\r\nRETR 2\r\nDELE 1\r\nQUIT\r\n",
        b"@CAPA\r\nSTLS\r\nAUTH PLAIN\r\nAHUAcA==\r\nRSET\r\nNOOP\r\n",
    ],
    "managesieve": [
        b'@AUTHENTICATE "PLAIN" "AHUAcA=="\r\nPUTSCRIPT "a" {5+}\r\nkeep;\r\nLISTSCRIPTS\r\n'
        b'SETACTIVE "a"\r\nGETSCRIPT "a"\r\nHAVESPACE "a" 10\r\nRENAMESCRIPT "a" "b"\r\n',
        b"@CAPABILITY\r\nSTARTTLS\r\nNOOP \"x\"\r\nLOGOUT\r\n",
    ],
    "sasl": [
        b"\x00\x00u\x00pw",
        b"\x01u\x00\x00pw",
        b"\x02-\x00\x00u 0123456789abcdef0123456789abcdef",
        b"\x03n,,n=u,r=abc\x00\x00c=biws,r=abceeeeeeeeeeeeeeeeeeeeeeee,p=AAAA",
        b"\x05",
    ],
    "sieve": [
        b'require ["fileinto", "variables", "regex"];\nif header :regex "subject" "(h)i" '
        b'{ set "a" "${1}"; fileinto "x${a}"; } elsif exists "to" { discard; } else { keep; }',
        b'require "vacation"; vacation :days 3 :subject "s" "away";',
    ],
    "mime": [_MESSAGE, b"Content-Type: message/rfc822\r\n\r\n" + _MESSAGE],
    "main_cf": [b"myhostname = mx\nrelayhost = [$myhostname]:25\nmydestination = $myhostname, x\n"],
    "master_cf": [
        b"smtp inet n - n - - smtpd\n  -o smtpd_tls_security_level=may\nx unix - - n - 1 lmtp\n"
    ],
    "imapd_conf": [b"configdirectory: /x\npartition-default: /y\nadmins: a b\nquotawarn: 90\n"],
    "cyrus_conf": [b'START { r cmd="ctl_cyrusdb -r" }\nSERVICES { imap cmd="imapd" listen="1143" '
                   b'prefork=1 maxchild=10 }\nEVENTS { c cmd="x" period=5 at=0300 }\n'],
    "aliases": [b'postmaster: root\na: b, "|/bin/x y", /tmp/f, :include:/etc/x\n  , c\n'],
    "hosts_allow": [b"lmtpd : 127.0.0.1 [::1]/128 .example.com : ALLOW\n"
                    b"ALL EXCEPT imapd : 10.0.0.0/255.0.0.0\x00ALL : ALL@ALL : DENY\n"],
}


def main(target: Target) -> None:
    """Run `target` under atheris with sealmail's code instrumented (coverage guided), from
    the target's seeds unless a corpus directory is named."""
    import sys

    import atheris

    logging.disable(logging.CRITICAL)  # a bad line is logged: millions of them
    name = next(key for key, value in TARGETS.items() if value is target)
    args = list(sys.argv)
    if not any(not arg.startswith("-") for arg in args[1:]):
        corpus = Path(__file__).parent / "findings" / f"corpus-{name}"
        corpus.mkdir(parents=True, exist_ok=True)
        for n, seed in enumerate(SEEDS.get(name, [])):
            (corpus / f"seed-{n}").write_bytes(seed)
        args.append(str(corpus))
    # Only sealmail's code is instrumented (all of it made every input four times slower):
    # running the seeds imports what the target uses.
    with atheris.instrument_imports(include=["sealmail"]):
        for seed in SEEDS.get(name, [b""]):
            target(seed)
    atheris.Setup(args, target)
    atheris.Fuzz()

"""`sealmail deliver`: local delivery from a pipe, procmail or inetd (Cyrus deliver(8), the seed's
sections 3, 4, 7 and 9.1).

Two modes:

- **Pipe mode** (`deliver [-r SENDER] [-m MAILBOX] [-a AUTHUSER] [-q] USER...`): the message on
  stdin is handed to the running lmtpd over `lmtpsocket` in one LMTP transaction, as Cyrus 2.x's
  deliver does, so lmtpd's checks, Sieve, duplicate suppression and single-instance store all apply.
  The outcome becomes a sysexits.h status for the pipe transport (see `exit_status`); a short
  reason per failed user goes to stderr, which Postfix's pipe(8) quotes in the bounce or log.
- **LMTP mode** (`deliver -l`): one LMTP session on stdin/stdout served in-process by lmtpd's own
  service, for inetd behind tcpd (the seed's section 7), with hosts.allow/hosts.deny checked for
  the daemon name `deliver` when stdin is an inet socket.

Pipe mode imports nothing heavy: Postfix runs it once per message.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH

if TYPE_CHECKING:
    from sealmail.delivery.handoff import TransactionOutcome
    from sealmail.proto.smtp.client import ServerReply
    from sealmail.server.lmtpd import LmtpService

# sysexits.h, the statuses a pipe transport understands (Postfix: pipe(8) DIAGNOSTICS).
EX_OK = 0
EX_USAGE = 64  # command line usage error
EX_DATAERR = 65  # the message (or its sender) is unacceptable
EX_NOUSER = 67  # addressee unknown -> Postfix bounces with 5.1.1
EX_UNAVAILABLE = 69  # refused for another permanent reason
EX_SOFTWARE = 70  # internal software error
EX_CANTCREAT = 73  # the mailbox cannot take it (permanently full) -> 5.2.0
EX_TEMPFAIL = 75  # try again later -> Postfix defers with 4.3.0
EX_PROTOCOL = 76  # lmtpd did not understand what deliver sent
EX_NOPERM = 77  # permission denied -> 5.7.0
EX_CONFIG = 78  # configuration error

PROG = "sealmail deliver"

_FROM_LINE = b"From "
_BARE_LF = re.compile(rb"(?<!\r)\n")
_RETURN_PATH = re.compile(rb"return-path[ \t]*:(.*)", re.IGNORECASE)


class UsageError(Exception):
    """Bad arguments: EX_USAGE."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Deliver the message on stdin to each USER's INBOX (or its folder MAILBOX) through the "
        "running lmtpd; with -l, speak LMTP on stdin/stdout (inetd)."
    )
    parser.add_argument("-C", dest="config", default=DEFAULT_CONFIG_PATH, help="imapd.conf")
    parser.add_argument(
        "-e",
        dest="dupelim",
        action="store_true",
        help="accepted for compatibility: duplicate suppression follows duplicatesuppression",
    )
    parser.add_argument(
        "-r", "-f", dest="sender", metavar="SENDER", help="envelope sender (Return-Path)"
    )
    parser.add_argument(
        "-m",
        dest="mailbox",
        action="append",
        metavar="MAILBOX",
        help="folder under each USER's INBOX (empty: the INBOX); without USER, a shared folder",
    )
    parser.add_argument(
        "-a", dest="authuser", action="append", metavar="AUTHUSER", help="identity for ACL checks"
    )
    parser.add_argument("-q", dest="ignore_quota", action="store_true", help="ignore quotas")
    parser.add_argument(
        "-l", dest="lmtp", action="store_true", help="speak LMTP on stdin/stdout (inetd)"
    )
    parser.add_argument("-d", dest="compat_d", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-D", "-v", dest="verbose", action="store_true", help="log more")
    parser.add_argument("users", nargs="*", metavar="USER")
    _exit_with_usage_status(parser)


def _exit_with_usage_status(parser: argparse.ArgumentParser) -> None:
    """Bad arguments must exit 64 (EX_USAGE), not argparse's 2: pipe(8) reads the status.

    The dispatcher parses the whole command line, and an unknown option is reported by the
    top-level parser; so this subparser reports its leftovers itself, with its own status.
    """

    def error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: {message}", file=sys.stderr)
        sys.exit(EX_USAGE)

    original = parser.parse_known_args

    def parse_known_args(
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = original(args, namespace)
        if extras:
            error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]


def run(args: argparse.Namespace) -> int:
    try:
        if args.lmtp:
            if args.users or args.sender is not None or args.mailbox or args.authuser:
                raise UsageError("-l takes no USER, -r, -m or -a: the LMTP client says them")
            return _run_lmtp(args)
        return _run_pipe(args)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EX_USAGE


def config_failed(args: argparse.Namespace, error: Exception) -> int | None:
    """With -l, standard output and error are the client's (inetd): it gets an LMTP reply, not
    our error text, and the reason goes to syslog or a file beside the -C file."""
    if not getattr(args, "lmtp", False):
        return None
    import contextlib
    import logging

    from sealmail.cli.main import log_off_the_wire

    with contextlib.suppress(OSError):
        log_off_the_wire(Path(args.config).parent, "deliver")
    logging.getLogger("sealmail.deliver").error("deliver -l: %s", error)
    with contextlib.suppress(OSError):
        os.write(1, b"421 4.3.0 deliver: configuration error, try again later\r\n")
    return EX_CONFIG


# --------------------------------------------------------------------------------------------
# Pipe mode: the message, the envelope, the exit status (pure functions first)


def prepare_message(raw: bytes) -> bytes:
    """The message as LMTP carries it: no mbox `From ` line, CRLF line ends.

    procmail, and pipe(8) with flag F, put a `From sender date` line first; it is mbox framing,
    not a header field, and the store would refuse it as an invalid header. A pipe gives LF text;
    the store keeps RFC 5322 CRLF text (2.3: "CR and LF MUST only occur together as CRLF").
    """
    if raw.startswith(_FROM_LINE):
        end = raw.find(b"\n")
        raw = b"" if end < 0 else raw[end + 1 :]
    return _BARE_LF.sub(b"\r\n", raw)


def return_path_of(content: bytes) -> str | None:
    """The address of the first Return-Path field of a CRLF message ("" for <>), or None."""
    end = content.find(b"\r\n\r\n")
    headers = content if end < 0 else content[: end + 2]
    if headers.startswith(b"\r\n"):
        return None
    lines = headers.split(b"\r\n")
    for index, line in enumerate(lines):
        match = _RETURN_PATH.match(line)
        if match is None:
            continue
        value = match.group(1)
        for more in lines[index + 1 :]:  # RFC 5322 2.2.3: unfold
            if more[:1] not in (b" ", b"\t"):
                break
            value += more
        text = value.decode("utf-8", "surrogateescape").strip()
        found = re.search(r"<([^<>]*)>", text)
        return (found.group(1) if found else text).strip()
    return None


def envelope_sender(option: str | None, content: bytes) -> str:
    """The MAIL FROM path (without brackets): -r/-f, else the message's Return-Path, else <>.

    Postfix passes ${sender} unquoted ("" for the null sender unless null_sender= says otherwise);
    a local part that needs quoting on the wire is quoted here.
    """
    from sealmail.proto.smtp.address import render_address

    text = option if option is not None else return_path_of(content)
    if text is None:
        return ""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text:
        return ""
    local, at, domain = text.rpartition("@")
    if not at:
        local, domain = text, ""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        return text  # already quoted
    return render_address(local, domain or None)


def recipient_address(user: str, mailbox: str | None, delimiter: str) -> str:
    """RCPT TO address for USER (and -m MAILBOX): `user+mailbox[@domain]`, as Cyrus deliver does."""
    from sealmail.proto.smtp.address import render_address

    local, at, domain = user.partition("@")
    if mailbox:
        local = f"{local}{delimiter}{mailbox}"
    return render_address(local, domain if at else None)


def exit_status(reply: ServerReply) -> int:
    """The sysexits.h status for one recipient's final LMTP reply.

    Any 4xx is EX_TEMPFAIL (the MTA keeps the message and retries; that includes Cyrus's
    452 4.2.2 over quota). A 5xx is told apart by its RFC 3463 subject: 5.1.x other than the
    sender's 5.1.7/5.1.8 is an unknown addressee, 5.2.x a mailbox that cannot take it (5.2.3, a
    message too large, is about the message), 5.5.x a command lmtpd did not take, 5.6.x the
    message's content, 5.7.x a refusal by policy or ACL.
    """
    if reply.is_success:
        return EX_OK
    if reply.code < 500:
        return EX_TEMPFAIL
    enhanced = reply.enhanced or ""
    subject = enhanced[2:].split(".", 1)[0] if enhanced else ""
    if enhanced in ("5.1.7", "5.1.8") or enhanced == "5.2.3":
        return EX_DATAERR
    return {
        "1": EX_NOUSER,
        "2": EX_CANTCREAT,
        "5": EX_PROTOCOL,
        "6": EX_DATAERR,
        "7": EX_NOPERM,
    }.get(subject, EX_UNAVAILABLE)


def combined_status(statuses: Iterable[int]) -> int:
    """One status for several users, as Cyrus deliver combines them.

    Any temporary failure wins (EX_TEMPFAIL): the MTA must keep the message, and the users already
    served are protected from a second copy by duplicate suppression. Otherwise the first
    permanent failure, in USER order, gives the status; all delivered is EX_OK.
    """
    result = EX_OK
    for status in statuses:
        if status == EX_TEMPFAIL:
            return EX_TEMPFAIL
        if result == EX_OK:
            result = status
    return result


def _run_pipe(args: argparse.Namespace) -> int:
    import logging

    from sealmail.config.imapd_conf import load_imapd_conf
    from sealmail.config.options import IMAPD
    from sealmail.delivery.handoff import LmtpClient, LmtpConnectionError, Rcpt
    from sealmail.proto.smtp.address import encode_xtext
    from sealmail.proto.smtp.client import ClientUsageError

    mailboxes: list[str] = args.mailbox or []
    authusers: list[str] = args.authuser or []
    if len(mailboxes) > 1:
        raise UsageError("multiple -m options")
    if len(authusers) > 1:
        raise UsageError("multiple -a options")
    mailbox = mailboxes[0] if mailboxes else None  # -m "" (an empty ${extension}) is the INBOX
    if not args.users and not mailbox:
        raise UsageError("give a USER, or -m MAILBOX for a shared folder")

    try:
        raw = sys.stdin.buffer.read()
    except OSError as exc:
        print(f"{PROG}: cannot read the message: {exc.strerror or exc}", file=sys.stderr)
        return EX_TEMPFAIL
    content = prepare_message(raw)

    config = load_imapd_conf(args.config)
    # Said only with -v: standard error is the reply pipe(8) quotes in bounces and its log.
    logging.getLogger("sealmail.deliver").debug("deliver logs to standard error")
    delimiter = (config.get(IMAPD.recipient_delimiter) or "")[:1]
    if args.users:
        if mailbox and not delimiter:
            print(f"{PROG}: recipient_delimiter is empty: -m {mailbox} ignored", file=sys.stderr)
            mailbox = None
        users = list(args.users)
        addresses = [recipient_address(user, mailbox, delimiter) for user in users]
    else:
        # No USER: -m names a shared folder, which lmtpd takes as postuser+folder (or +folder).
        assert mailbox is not None
        users = [mailbox]
        postuser = config.get(IMAPD.postuser) or ""
        addresses = [recipient_address(postuser, mailbox, delimiter or "+")]

    sender = envelope_sender(args.sender, content)
    socket_path = config.get(IMAPD.lmtpsocket) or ""
    try:
        with LmtpClient.connect_unix(socket_path, lhlo_name=config.servername) as client:
            mail_params: list[str] = []
            if client.offers("SIZE"):
                mail_params.append(f"SIZE={len(content)}")  # RFC 1870: an early size check
            if authusers:
                # RFC 4954 5: the identity that submitted the message, as xtext; lmtpd applies
                # this identity's ACL rights when it trusts the session.
                mail_params.append(f"AUTH={encode_xtext(authusers[0])}")
            rcpt_params = (
                ("IGNOREQUOTA",) if args.ignore_quota and client.offers("IGNOREQUOTA") else ()
            )
            outcome = client.transaction(
                sender, [Rcpt(a, rcpt_params) for a in addresses], content, mail_params
            )
    except LmtpConnectionError as exc:
        print(f"{PROG}: {exc}; try again later", file=sys.stderr)
        return EX_TEMPFAIL
    except ClientUsageError as exc:  # an address that cannot go on an LMTP command line
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EX_DATAERR
    return _report(users, outcome)


def _report(users: Sequence[str], outcome: TransactionOutcome) -> int:
    """One short line per failed user on stderr; the combined exit status."""
    statuses = []
    for user, result in zip(users, outcome.recipients, strict=True):
        status = exit_status(result.reply)
        statuses.append(status)
        if status != EX_OK:
            print(f"{PROG}: {user}: {result.reply}", file=sys.stderr)
    return combined_status(statuses)


# --------------------------------------------------------------------------------------------
# LMTP mode (-l): one session on stdin/stdout, served by lmtpd's own service


def _run_lmtp(args: argparse.Namespace) -> int:
    """One LMTP session on stdin/stdout: lmtpd's own service, daemon name `deliver` for
    hosts.allow (the seed's section 7), inet clients trusted once tcpd's rules let them in."""
    import asyncio
    import logging

    from sealmail.cli.main import log_off_the_wire
    from sealmail.config.imapd_conf import load_imapd_conf
    from sealmail.server.lmtpd import build_deliver_service

    log = logging.getLogger("sealmail.deliver")

    config = load_imapd_conf(args.config)
    # Under inetd, stderr is the client's socket: logs go to syslog, or a file when there is none.
    log.info("deliver -l logs to %s", log_off_the_wire(config.configdirectory, "deliver"))
    service = build_deliver_service(config, ["-e", "-l"])
    try:
        asyncio.run(_serve_stdin(service))
    finally:
        service.close()
    return EX_OK


async def _serve_stdin(service: LmtpService) -> None:
    import socket
    import stat

    from sealmail.server.session import serve_connection

    if stat.S_ISSOCK(os.fstat(0).st_mode):
        await serve_connection(service, socket.socket(fileno=os.dup(0)))
    else:
        await _serve_pipes(service)


async def _serve_pipes(service: LmtpService) -> None:
    """stdin/stdout that are pipes (or files): a local caller, trusted like the UNIX socket.

    The session runs on one end of a UNIX socket pair (so it is a UNIX-socket client) and two
    threads copy stdin into the other end and its output to stdout; asyncio cannot read a
    regular file, which a caller may give as stdin.
    """
    import asyncio
    import contextlib
    import socket
    import threading

    from sealmail.server.session import serve_connection

    inner, outer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def stdin_to_session() -> None:
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                outer.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                outer.shutdown(socket.SHUT_WR)

    def session_to_stdout() -> None:
        try:
            while True:
                data = outer.recv(65536)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(1, view) :]
        except OSError:
            pass

    reading = threading.Thread(target=stdin_to_session, name="deliver-stdin", daemon=True)
    writing = threading.Thread(target=session_to_stdout, name="deliver-stdout", daemon=True)
    reading.start()
    writing.start()
    await serve_connection(service, inner)
    # handle() closed its end: the copier sees EOF once everything reached stdout. The stdin
    # thread may still wait for input nobody will send; it is a daemon and ends with us.
    await asyncio.get_running_loop().run_in_executor(None, writing.join)
    outer.close()

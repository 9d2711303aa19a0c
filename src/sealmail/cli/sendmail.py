"""`sealmail sendmail [-t] [-i] [-f SENDER] [-C DIR] [RCPT ...]`, as Postfix's sendmail(1);
`sealmail sendmail -bs` speaks SMTP on standard input and output (sealmail.mta.smtp_stdio).

Reads a message on standard input and posts it through the maildrop directory (postdrop), so it
needs no network and no running master; a running master is told to pick it up at once.
`-t` takes recipients from To:, Cc: and Bcc: as well (Bcc: is then dropped by cleanup); `-i` /
`-oi` keep reading past a line holding a single dot. A sender without `@` gets @$myorigin, as
does a recipient. Exit codes are sysexits(3): 64 usage, 65 bad data, 73 cannot create, 78 config.
"""

from __future__ import annotations

import argparse
import email.utils
import getpass
import os
import sys
import time
from pathlib import Path

from sealmail.mta.config import DEFAULT_CONFIG_DIRECTORY, MainConfig, load_mta_config
from sealmail.mta.config.parameters import MAIN

EX_USAGE = 64
EX_DATAERR = 65
EX_CANTCREAT = 73


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-C", "-c", dest="config_dir", metavar="CONFIG_DIR", default=None,
                        help="configuration directory (default $MAIL_CONFIG or "
                             f"{DEFAULT_CONFIG_DIRECTORY})")
    parser.add_argument("-f", "-r", dest="sender", default=None,
                        help="envelope sender (default: your login name)")
    parser.add_argument("-F", dest="full_name", default=None, help="ignored (full name)")
    parser.add_argument("-t", dest="extract", action="store_true",
                        help="take recipients from To:, Cc: and Bcc: too")
    parser.add_argument("-i", "-oi", dest="ignore_dots", action="store_true",
                        help="a line with a single dot does not end the message")
    parser.add_argument("-o", dest="options", action="append", default=[],
                        help="sendmail options (accepted and ignored, except -oi)")
    parser.add_argument("-b", dest="mode", default="m", metavar="MODE",
                        help="m: read a message (the default); s: SMTP on standard input")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("recipients", nargs="*", metavar="RCPT")


def read_message(stream: bytes, ignore_dots: bool) -> bytes:
    """The message from standard input; without -i a line "." ends it (sendmail's rule)."""
    if ignore_dots:
        return stream
    out = []
    for line in stream.splitlines(keepends=True):
        if line.rstrip(b"\r\n") == b".":
            break
        out.append(line)
    return b"".join(out)


def header_recipients(message: bytes) -> list[str]:
    """Addresses in To:, Cc: and Bcc: of the header (sendmail -t)."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    headers = BytesHeaderParser(policy=compat32).parsebytes(message)
    values = [str(v) for name in ("To", "Cc", "Bcc") for v in headers.get_all(name, [])]
    return [address for _, address in email.utils.getaddresses(values) if address]


def qualify(address: str, origin: str) -> str:
    return address if "@" in address or not address else f"{address}@{origin}"


def run(args: argparse.Namespace) -> int:
    from sealmail.mta.pickup import MaildropError, post, send_control
    from sealmail.mta.queue import Queue

    if args.options and any(o not in ("i",) for o in args.options):
        pass  # -oem, -odb ...: accepted, as Postfix ignores most of them
    if "i" in args.options:
        args.ignore_dots = True
    directory = Path(args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY)
    config = load_mta_config(directory)
    main = config.main
    if args.mode not in ("m", "s"):
        print(f"sealmail sendmail: fatal: -b{args.mode} is not supported (use -bm or -bs)",
              file=sys.stderr)
        return EX_USAGE
    if args.mode == "s":
        return _smtp_session(main)
    origin = main.get(MAIN.myorigin)
    message = read_message(sys.stdin.buffer.read(), args.ignore_dots)
    recipients = list(args.recipients)
    if args.extract:
        recipients += header_recipients(message)
    recipients = [qualify(r.strip(), origin) for r in recipients if r.strip()]
    if not recipients:
        print("sealmail sendmail: fatal: no recipients specified", file=sys.stderr)
        return EX_USAGE
    sender = args.sender if args.sender is not None else getpass.getuser()
    sender = qualify(sender.strip().strip("<>"), origin)
    queue = Queue.from_config(main)
    if not queue.maildrop.is_dir():
        print(f"sealmail sendmail: fatal: {queue.maildrop}: no maildrop directory "
              "(run `sealmail postfix check` or start the mail system)", file=sys.stderr)
        return EX_CANTCREAT
    try:
        post(queue.maildrop, sender, recipients, message, time.time())
    except MaildropError as exc:
        print(f"sealmail sendmail: fatal: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    send_control(queue.control_socket, "pickup")
    return 0


def _smtp_session(main: MainConfig) -> int:
    """-bs: one SMTP session on standard input and output; each message to maildrop."""
    from sealmail.mta.pickup import send_control
    from sealmail.mta.queue import Queue
    from sealmail.mta.smtp_stdio import StdioSession

    queue = Queue.from_config(main)
    session = StdioSession(main, queue.maildrop)
    session.run(sys.stdin.buffer, sys.stdout.buffer)
    if session.posted:
        send_control(queue.control_socket, "pickup")
    return 0

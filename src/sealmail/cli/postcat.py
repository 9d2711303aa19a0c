"""`sealmail postcat [-c DIR] [-e] [-h] [-b] [-q] FILE|QUEUEID...`, as Postfix's postcat(1).

Shows a queue file: its envelope (`-e`), the message header (`-h`) and body (`-b`); all three by
default. `-q` names messages by queue id (looked up in incoming, active, deferred, hold); without
it the arguments are queue file paths. As Postfix's postcat, the `*** ... ***` section lines come
with the envelope only, so `-h` and `-b` print the message text alone (`-b` from the empty line
that ends the header); lines are shown with LF. The envelope lines use Postfix's record names
(message_size, message_arrival_time, sender, named_attribute, original_recipient, recipient,
done_recipient) and, after the content, each recipient's last delivery attempt.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sealmail.mta.config import DEFAULT_CONFIG_DIRECTORY, load_mta_config
from sealmail.mta.queue import (
    ENVELOPE_QUEUES,
    Envelope,
    Queue,
    QueuedRecipientEntry,
    QueueError,
    parse_queue_file,
)

EX_NOINPUT = 66


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.conflict_handler = "resolve"  # -h is "header" here, as in postcat(1)
    parser._optionals.conflict_handler = "resolve"
    parser.add_argument("-c", dest="config_dir", metavar="CONFIG_DIR", default=None)
    parser.add_argument("-e", dest="envelope", action="store_true", help="show the envelope")
    parser.add_argument("-h", dest="header", action="store_true", help="show the header")
    parser.add_argument("-b", dest="body", action="store_true", help="show the body")
    parser.add_argument("-q", dest="by_id", action="store_true", help="arguments are queue ids")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("names", nargs="+", metavar="FILE|QUEUEID")


def _envelope_lines(envelope: Envelope, recipients: list[QueuedRecipientEntry]) -> list[str]:
    arrival = time.asctime(time.localtime(envelope.arrival))
    lines = [f"message_size: {envelope.size:>16d}",
             f"message_arrival_time: {arrival}",
             f"sender: {envelope.sender}"]
    attributes = {"log_message_origin": envelope.client, "log_helo_name": envelope.helo,
                  "log_protocol_name": envelope.protocol,
                  "sasl_username": envelope.sasl_username, "dsn_envid": envelope.envid,
                  "dsn_ret": envelope.ret, "message_id": envelope.message_id}
    lines += [f"named_attribute: {k}={v}" for k, v in attributes.items() if v]
    for r in recipients:
        if r.record.orcpt:
            lines.append(f"named_attribute: dsn_orig_rcpt={r.record.orcpt}")
        lines.append(f"original_recipient: {r.record.original or r.record.address}")
        kind = "done_recipient" if r.state.final else "recipient"
        lines.append(f"{kind}: {r.record.address}")
    return lines


def _attempt_lines(recipients: list[QueuedRecipientEntry]) -> list[str]:
    out = []
    for r in recipients:
        if r.last is not None:
            when = time.asctime(time.localtime(r.last.time))
            out.append(f"attempt: {r.record.address} {when} relay={r.last.relay}, "
                       f"dsn={r.last.dsn}, status={r.last.status} ({r.last.text})")
    return out


def render(data: bytes, name: str, *, envelope: bool, header: bool, body: bool) -> str:
    """One queue file as postcat prints it."""
    env, recipients, _attempts, (at, size) = parse_queue_file(data, name)
    text = data[at:at + size].replace(b"\r\n", b"\n").decode("utf-8", "replace")
    head, blank, rest = text.partition("\n\n")
    head = head + "\n" if blank or text.endswith("\n") else head
    out: list[str] = []
    if envelope:
        out.append(f"*** ENVELOPE RECORDS {name} ***")
        out += _envelope_lines(env, recipients)
        out.append(f"*** MESSAGE CONTENTS {name} ***")
    chunks = "\n".join(out) + ("\n" if out else "")
    if header:
        chunks += head
    if body and blank:
        chunks += "\n" + rest
    if envelope:
        chunks += "\n".join([f"*** HEADER EXTRACTED {name} ***", *_attempt_lines(recipients),
                             f"*** MESSAGE FILE END {name} ***"]) + "\n"
    return chunks


def run(args: argparse.Namespace) -> int:
    directory = args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    show = {"envelope": args.envelope, "header": args.header, "body": args.body}
    if not any(show.values()):
        show = dict.fromkeys(show, True)
    status = 0
    queue = Queue.from_config(load_mta_config(directory).main) if args.by_id else None
    for name in args.names:
        path: Path | None = Path(name)
        if queue is not None:
            path = next((p for q in ENVELOPE_QUEUES if (p := queue.locate(name, q))), None)
        try:
            if path is None:
                raise FileNotFoundError(name)
            data = path.read_bytes()
            label = str(path.relative_to(queue.directory)) if queue is not None else name
            sys.stdout.write(render(data, label, **show))
        except FileNotFoundError:
            print(f"sealmail postcat: fatal: open queue file {name}: No such file or directory",
                  file=sys.stderr)
            return EX_NOINPUT
        except (OSError, QueueError) as exc:
            print(f"sealmail postcat: warning: {name}: {exc}", file=sys.stderr)
            status = 1
    return status

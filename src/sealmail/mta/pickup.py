"""Local submission without the network: postdrop writes to maildrop/, pickup queues from it.

`sealmail sendmail` (any local user) writes one file per message into the queue's maildrop
directory (mode 1733, like Postfix's with its setgid postdrop): under a temporary name first,
fsync'd, then renamed, so pickup never sees half a file. The file's owner is who posted it;
pickup runs cleanup as for SMTP mail (Received: "from userid N"), queues the message durably in
incoming, and only then removes the maildrop file: a crash in between posts it at most once more.

Maildrop file: the line `sealmail-maildrop 1`, one JSON line {"sender", "recipients", "time"},
then the message as given.

The master's control socket (public/qmgr in the queue directory) takes one word per connection:
`pickup` (maildrop has mail), `wake` (incoming has mail), `flush` (postqueue -f).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sealmail.durable import fsync_directory, replace_file
from sealmail.mta.cleanup import Cleanup, CleanupError, queue_message
from sealmail.mta.queue import Queue, RecipientRecord

log = logging.getLogger("sealmail.mta.pickup")

MAGIC = b"sealmail-maildrop 1\n"
CONTROL_WORDS = ("pickup", "wake", "flush")


class MaildropError(Exception):
    """A maildrop file cannot be read or written."""


@dataclass(frozen=True, slots=True)
class Posting:
    sender: str
    recipients: tuple[str, ...]
    time: float
    content: bytes
    uid: int


def post(
    maildrop: Path, sender: str, recipients: Sequence[str], content: bytes, when: float
) -> Path:
    """Write a maildrop file durably (postdrop); returns its final path."""
    if not recipients:
        raise MaildropError("no recipients")
    header = json.dumps(
        {"sender": sender, "recipients": list(recipients), "time": when}, ensure_ascii=False
    ).encode("utf-8")
    final = maildrop / secrets.token_hex(8).upper()
    try:
        # Readable by pickup, which runs as mail_owner (Postfix gets there with its setgid
        # postdrop group); nobody else can find it: maildrop cannot be listed, the name is random.
        # The directory fsync is ours: a user may not be able to open maildrop for it.
        replace_file(final, MAGIC + header + b"\n" + content, mode=0o644, sync_directory=False)
    except OSError as exc:
        raise MaildropError(f"cannot create file in {maildrop}: {exc.strerror}") from None
    with contextlib.suppress(OSError):
        fsync_directory(maildrop)
    return final


def read_posting(path: Path) -> Posting:
    # maildrop is world-writable: never follow a symlink, and refuse anything but a plain file
    # with one link, or a user could have pickup (root) mail out a file only root may read.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise MaildropError(f"{path.name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise MaildropError(f"{path.name}: not a regular file with a single link")
        data = handle.read()
        uid = info.st_uid
    if not data.startswith(MAGIC):
        raise MaildropError(f"{path.name}: not a maildrop file")
    header, _, content = data[len(MAGIC) :].partition(b"\n")
    try:
        fields = json.loads(header)
        return Posting(
            str(fields["sender"]),
            tuple(str(r) for r in fields["recipients"]),
            float(fields["time"]),
            content,
            uid,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise MaildropError(f"{path.name}: bad header: {exc}") from None


def pickup_once(queue: Queue, cleanup: Cleanup) -> list[str]:
    """Queue every complete maildrop file; returns the new queue ids. Blocking."""
    queued = []
    maildrop = queue.maildrop
    try:
        names = sorted(n for n in os.listdir(maildrop) if not n.startswith("."))
    except FileNotFoundError:
        return []
    for name in names:
        path = maildrop / name
        try:
            posting = read_posting(path)
        except MaildropError as exc:
            log.warning("%s: removed: %s", name, exc)
            path.unlink(missing_ok=True)
            continue
        records = [RecipientRecord(r, r) for r in posting.recipients]
        try:
            queue_id, _ = queue_message(
                queue,
                cleanup,
                sender=posting.sender,
                recipients=records,
                content=posting.content,
                arrival=posting.time,
                protocol="local",
                local_uid=posting.uid,
            )
        except CleanupError as exc:
            # Postfix bounces such mail; with no queue file yet we log and drop it.
            log.warning("%s: uid=%d from=<%s>: refused: %s", name, posting.uid, posting.sender, exc)
            path.unlink(missing_ok=True)
            continue
        log.info("%s: uid=%d from=<%s>", queue_id, posting.uid, posting.sender)
        path.unlink(missing_ok=True)
        queued.append(queue_id)
    return queued


def send_control(socket_path: Path, word: str, timeout: float = 5.0) -> bool:
    """Tell a running master something (see the module text); False if none is listening."""
    if word not in CONTROL_WORDS:
        raise ValueError(f"unknown control word {word!r}")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(word.encode() + b"\n")
            return sock.recv(16).startswith(b"ok")
    except OSError:
        return False

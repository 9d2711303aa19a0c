"""Local submission without the network: postdrop writes to maildrop/, pickup queues from it.

`sealmail sendmail` (any local user) writes one file per message into the queue's maildrop
directory (mode 1733, like Postfix's with its setgid postdrop): under a temporary name first,
fsync'd, then renamed, so pickup never sees half a file. The file's owner is who posted it;
pickup runs cleanup as for SMTP mail (Received: "from userid N"), queues the message durably in
incoming, and only then removes the maildrop file: a crash in between posts it at most once more.

Maildrop file: the line `sealmail-maildrop 1`, one JSON line {"sender", "recipients", "time",
and "smtputf8" when sendmail -bs was told MAIL ... SMTPUTF8}, then the message as given.

A queue file in maildrop is mail requeued by `postsuper -r` (as Postfix's). It is taken only when
the mail system owns it (root or the queue's owner, and not readable by others: no user can make
such a file), and cleaned again: recipients not yet delivered go through virtual_alias_maps as
they are now, a Received: header is added, and the envelope (sender, arrival, DSN, client) is
kept. Crash safety, with the message in exactly one place at every step: postsuper marks the file
(REQUEUE_MODE) and renames it into maildrop; pickup writes the new queue file under a temporary
name and renames it over the old one (the new file names its new queue id, `requeued_as`, and
has no mark), then renames it into incoming. A crash before the first rename leaves the old
file, cleaned again at the next start; after it, the new file, which pickup only moves on.

The master's control socket (public/qmgr in the queue directory) takes one line per connection:
`pickup` (maildrop has mail), `wake` (incoming has mail), `flush` (postqueue -f), `retry QUEUEID`
(postqueue -i: that message, moved to incoming by the caller, now, its destinations tried even
if marked dead).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sealmail.durable import fsync_directory, replace_file
from sealmail.mta.cleanup import (
    Cleanup,
    CleanupError,
    Submission,
    log_queued,
    prepare_message,
    queue_message,
)
from sealmail.mta.milter import MilterSettings
from sealmail.mta.milter.stages import filter_local_message_blocking, restage
from sealmail.mta.queue import MAGIC as QUEUE_MAGIC_TEXT
from sealmail.mta.queue import (
    CorruptQueueFile,
    Queue,
    QueueName,
    RecipientRecord,
    is_queue_id,
    names_inode,
    parse_queue_file,
    render_queue_file,
)

log = logging.getLogger("sealmail.mta.pickup")

MAGIC = b"sealmail-maildrop 1\n"
QUEUE_MAGIC = QUEUE_MAGIC_TEXT.encode() + b" "  # a queue file, requeued by postsuper -r
CONTROL_WORDS = ("pickup", "wake", "flush", "retry")
CONTROL_ARGUMENT = {"retry"}  # the words followed by one queue id


class MaildropError(Exception):
    """A maildrop file cannot be read or written."""


@dataclass(frozen=True, slots=True)
class Posting:
    sender: str
    recipients: tuple[str, ...]
    time: float
    content: bytes
    uid: int
    smtputf8: bool = False  # sendmail -bs: MAIL ... SMTPUTF8


def post(
    maildrop: Path, sender: str, recipients: Sequence[str], content: bytes, when: float,
    *, smtputf8: bool = False,
) -> Path:
    """Write a maildrop file durably (postdrop); returns its final path."""
    if not recipients:
        raise MaildropError("no recipients")
    fields: dict[str, object] = {"sender": sender, "recipients": list(recipients), "time": when}
    if smtputf8:
        fields["smtputf8"] = True
    header = json.dumps(fields, ensure_ascii=False).encode("utf-8")
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


@dataclass(frozen=True, slots=True)
class _MaildropFile:
    data: bytes
    uid: int
    mode: int
    inode: int


def _read_file(path: Path) -> _MaildropFile:
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
        return _MaildropFile(handle.read(), info.st_uid, info.st_mode, info.st_ino)


def read_posting(path: Path) -> Posting:
    return _posting(path, _read_file(path))


def _posting(path: Path, found: _MaildropFile) -> Posting:
    data = found.data
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
            found.uid,
            bool(fields.get("smtputf8", False)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise MaildropError(f"{path.name}: bad header: {exc}") from None


def pickup_once(queue: Queue, cleanup: Cleanup, clock: Callable[[], float] = time.time,
                milters: MilterSettings | None = None) -> list[str]:
    """Queue every complete maildrop file (through non_smtpd_milters when `milters`); returns
    the new queue ids. Blocking."""
    queued = []
    maildrop = queue.maildrop
    try:
        names = sorted(n for n in os.listdir(maildrop) if not n.startswith("."))
    except FileNotFoundError:
        return []
    for name in names:
        path = maildrop / name
        try:
            found = _read_file(path)
            if found.data.startswith(QUEUE_MAGIC):
                queue_id = _requeued(queue, cleanup, path, found, clock())
                if queue_id is not None:
                    queued.append(queue_id)
                continue
            posting = _posting(path, found)
        except MaildropError as exc:
            log.warning("%s: removed: %s", name, exc)
            path.unlink(missing_ok=True)
            continue
        records = [RecipientRecord(r, r) for r in posting.recipients]
        try:
            if milters is not None:
                filtered = _queue_filtered(queue, cleanup, posting, records, milters)
                if filtered is None:
                    continue  # a temporary refusal: the file stays for the next pass
                if not filtered:
                    path.unlink(missing_ok=True)  # discarded
                    continue
                queue_id = filtered
            else:
                queue_id, _ = queue_message(
                    queue,
                    cleanup,
                    sender=posting.sender,
                    recipients=records,
                    content=posting.content,
                    arrival=posting.time,
                    protocol="local",
                    local_uid=posting.uid,
                    smtputf8=posting.smtputf8,
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


def _queue_filtered(queue: Queue, cleanup: Cleanup, posting: Posting,
                    records: list[RecipientRecord], milters: MilterSettings) -> str | None:
    """Clean a posting, pass it through non_smtpd_milters and queue it as they left it: its
    queue id, "" when a milter discarded it, None when one refused it for now (4xx; the file is
    tried again later). A permanent refusal is a CleanupError, as cleanup's own."""
    writer, envelope, cleaned = prepare_message(
        queue.new_message(), cleanup, sender=posting.sender, recipients=records,
        content=posting.content, arrival=posting.time, protocol="local",
        local_uid=posting.uid, smtputf8=posting.smtputf8)
    with writer:
        verdict = filter_local_message_blocking(
            milters, queue_id=writer.queue_id, content=cleaned.content, sender=posting.sender,
            recipients=envelope.recipients, hostname=cleanup.settings.myhostname,
            uid=posting.uid)
        if verdict.reply is not None:
            reply = verdict.reply
            if reply.code < 500:
                return None
            raise CleanupError(reply.code, reply.enhanced or "5.7.1", " ".join(reply.lines))
        if verdict.discard:
            return ""
        envelope = restage(writer, envelope, verdict.message)
        target = QueueName.HOLD if verdict.hold is not None else QueueName.INCOMING
        queue_id = writer.commit(envelope, target)
    log_queued(queue_id, cleaned)
    return queue_id


def _trusted(queue: Queue, found: _MaildropFile) -> bool:
    """A queue file the mail system put here (Postfix's MAIL_IS_REQUEUED): owned by root or the
    queue's owner, and not readable by others, as postings are."""
    owner = os.stat(queue.queue_directory(QueueName.INCOMING)).st_uid
    return found.uid in (0, owner) and not found.mode & stat.S_IROTH


def _requeued(queue: Queue, cleanup: Cleanup, path: Path, found: _MaildropFile,
              now: float) -> str | None:
    """A requeued queue file (see the module text): its new queue id, or None when nothing
    was queued (nothing left to deliver, or cleanup must be tried again later)."""
    name = path.name
    if not _trusted(queue, found):
        raise MaildropError("a queue file not owned by the mail system")
    try:
        envelope, recipients, _, (offset, length) = parse_queue_file(found.data, name)
    except CorruptQueueFile as exc:
        log.warning("%s: requeued file moved to corrupt/: %s", name, exc)
        queue.place(path, queue.path_of(name, QueueName.CORRUPT))
        return None
    cleaned_as = envelope.requeued_as
    if not found.mode & stat.S_IXUSR and names_inode(cleaned_as, found.inode):
        _into_incoming(queue, path, cleaned_as)  # a crash came between our two renames
        return cleaned_as
    pending = [r.record for r in recipients if not r.state.final]
    if not pending:
        log.info("%s: requeued with every recipient done: removed", name)
        path.unlink(missing_ok=True)
        return None
    writer = queue.new_message()
    try:
        cleaned = cleanup.process(Submission(
            sender=envelope.sender, recipients=tuple(pending),
            content=found.data[offset : offset + length], queue_id=writer.queue_id,
            arrival=envelope.arrival, protocol=envelope.protocol, helo=envelope.helo,
            local_uid=found.uid, sasl_username=envelope.sasl_username, received_at=now))
    except CleanupError as exc:
        writer.abort()
        log.warning("%s: requeued mail kept in maildrop: %s", name, exc)  # tried again later
        return None
    new_envelope = dataclasses.replace(
        envelope, recipients=cleaned.recipients, size=len(cleaned.content),
        message_id=cleaned.message_id, requeued_as=writer.queue_id)
    with writer:
        writer.store_at(render_queue_file(new_envelope, cleaned.content), path)
        writer.committed = True
    queue.sync_directory(queue.maildrop)
    log.info("%s: uid=%d from=<%s> orig_id=%s", writer.queue_id, found.uid, envelope.sender, name)
    _into_incoming(queue, path, writer.queue_id)
    log_queued(writer.queue_id, cleaned)
    return writer.queue_id


def _into_incoming(queue: Queue, path: Path, queue_id: str) -> None:
    target = queue.path_of(queue_id, QueueName.INCOMING)
    queue.place(path, target)
    queue.sync_directory(target.parent)
    queue.sync_directory(queue.maildrop)


def control_request(line: bytes) -> tuple[str, str] | None:
    """(word, queue id or "") of one control socket line, None when malformed."""
    word, _, queue_id = line.decode("ascii", "replace").strip().partition(" ")
    if word not in CONTROL_WORDS:
        return None
    if word in CONTROL_ARGUMENT:
        return (word, queue_id) if is_queue_id(queue_id) else None
    return None if queue_id else (word, "")


def send_control(socket_path: Path, word: str, timeout: float = 5.0, *,
                 queue_id: str = "") -> bool:
    """Tell a running master something (see the module text); False if none is listening."""
    if word not in CONTROL_WORDS:
        raise ValueError(f"unknown control word {word!r}")
    if (word in CONTROL_ARGUMENT) != bool(queue_id) or (queue_id and not is_queue_id(queue_id)):
        raise ValueError(f"control word {word!r} with queue id {queue_id!r}")
    line = f"{word} {queue_id}" if queue_id else word
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(line.encode() + b"\n")
            return sock.recv(16).startswith(b"ok")
    except OSError:
        return False

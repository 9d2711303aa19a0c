"""The mail queue on disk: queue ids, queue files, and crash-safe moves between queue states.

Theory of operation. Under `queue_directory`:

    content/QUEUEID      the message (headers + body, CRLF), written once and never moved
    incoming/QUEUEID     envelope of mail that is complete and waits for the queue manager
    active/QUEUEID       envelope of mail the queue manager is delivering now
    deferred/QUEUEID     envelope of mail that waits for a retry; its mtime is the next attempt
    hold/QUEUEID         envelope of mail put on hold (postsuper -h)
    corrupt/QUEUEID      envelopes that could not be read
    maildrop/            files posted by `sealmail sendmail`, read by pickup (sealmail.mta.pickup)

A message's state is the directory its envelope is in, so a state change is one rename(2), which
is atomic: after a crash the envelope is in exactly one queue. Receiving writes and fsyncs the
content, writes the envelope under a temporary name, fsyncs it, renames it into incoming/ and
fsyncs both directories: only then may the SMTP server say 250 (issue 8: "fsync'd before the
250"). A master that starts moves everything in active/ back to incoming/ (`recover`), so mail
whose delivery was interrupted is delivered again; recipients already marked done are skipped, so
a crash delivers each recipient at most once more.

The envelope file is text, one record per line:

    sealmail-queue 1
    E {"sender": ..., "arrival": ..., ...}          the message's envelope
    R P {"address": ..., "original": ..., ...}      one per recipient; the byte after "R " is
                                                    its state, rewritten in place (as Postfix
                                                    overwrites a recipient record's type)
    L {"index": 0, "status": "deferred", ...}       appended: a delivery attempt's result
    A {"time": ..., "next": ...}                    appended: a deferred attempt

Directory fsyncs are shared by concurrent writers (`DirectorySync`): many messages arriving at the
same time pay for one directory fsync, while each still waits until its own rename is durable.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealmail.durable import fsync_directory

log = logging.getLogger("sealmail.mta.queue")

MAGIC = "sealmail-queue 1"


class QueueError(Exception):
    """A queue operation failed (unreadable file, unknown queue id, bad directory)."""


class CorruptQueueFile(QueueError):
    """A queue file cannot be parsed; the queue manager moves it to corrupt/."""


class QueueName(enum.Enum):
    INCOMING = "incoming"
    ACTIVE = "active"
    DEFERRED = "deferred"
    HOLD = "hold"
    CORRUPT = "corrupt"


ENVELOPE_QUEUES = (QueueName.INCOMING, QueueName.ACTIVE, QueueName.DEFERRED, QueueName.HOLD)
CONTENT_DIRECTORY = "content"
MAILDROP_DIRECTORY = "maildrop"
PUBLIC_DIRECTORY = "public"


class RecipientState(enum.Enum):
    """One byte in the queue file, overwritten in place when the recipient is done."""

    PENDING = "P"  # not yet delivered
    SENT = "S"  # delivered (or discarded): done
    BOUNCED = "B"  # failed for good; a non-delivery notice is still owed to the sender
    DONE = "D"  # failed for good and the notice is queued (or none was due): done

    @property
    def final(self) -> bool:
        return self in (RecipientState.SENT, RecipientState.DONE)


@dataclass(frozen=True, slots=True)
class RecipientRecord:
    """A recipient as it enters the queue."""

    address: str
    original: str = ""  # as the client gave it (before virtual_alias_maps); "" = same
    notify: tuple[str, ...] = ()  # DSN NOTIFY (RFC 3461 4.1)
    orcpt: str = ""  # DSN ORCPT (RFC 3461 4.2), as given

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "original": self.original or self.address,
            "notify": list(self.notify),
            "orcpt": self.orcpt,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecipientRecord:
        return cls(
            str(data["address"]),
            str(data.get("original") or data["address"]),
            tuple(str(n) for n in data.get("notify", ())),
            str(data.get("orcpt", "")),
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the queue keeps besides the content: sender, recipients and where mail came from."""

    sender: str  # "" for the null sender <>
    recipients: tuple[RecipientRecord, ...]
    arrival: float = 0.0
    size: int = 0  # octets of content
    client: str = ""  # "unknown[127.0.0.1]" or "local"
    protocol: str = ""  # ESMTP, ESMTPSA, SMTP, local
    helo: str = ""
    sasl_username: str = ""
    ret: str = ""  # DSN RET=FULL|HDRS (RFC 3461 4.3)
    envid: str = ""  # DSN ENVID (RFC 3461 4.4)
    is_bounce: bool = False  # a notice we made ourselves: bounce_queue_lifetime applies
    message_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "sender": self.sender,
            "arrival": self.arrival,
            "size": self.size,
            "client": self.client,
            "protocol": self.protocol,
            "helo": self.helo,
            "sasl_username": self.sasl_username,
            "ret": self.ret,
            "envid": self.envid,
            "is_bounce": self.is_bounce,
            "message_id": self.message_id,
        }


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """An `L` record: what happened to one recipient in one delivery attempt."""

    index: int
    status: str  # "sent", "deferred", "bounced", "expired"
    dsn: str
    text: str
    relay: str
    time: float

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status,
            "dsn": self.dsn,
            "text": self.text,
            "relay": self.relay,
            "time": self.time,
        }


@dataclass(slots=True)
class QueuedRecipientEntry:
    index: int
    record: RecipientRecord
    state: RecipientState
    offset: int  # file offset of the state byte
    last: AttemptResult | None = None


@dataclass(slots=True)
class QueueFile:
    """A loaded envelope file."""

    queue_id: str
    queue: QueueName
    path: Path
    content_path: Path
    envelope: Envelope
    recipients: list[QueuedRecipientEntry]
    attempts: int = 0
    mtime: float = 0.0

    @property
    def pending(self) -> list[QueuedRecipientEntry]:
        return [r for r in self.recipients if r.state is RecipientState.PENDING]

    @property
    def bounced(self) -> list[QueuedRecipientEntry]:
        return [r for r in self.recipients if r.state is RecipientState.BOUNCED]

    @property
    def finished(self) -> bool:
        return all(r.state.final for r in self.recipients)


# --------------------------------------------------------------------------------------------
# Queue ids

_ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # no vowels: ids never spell words


def new_queue_id(clock: Callable[[], float] = time.time) -> str:
    """A 12-character id: 7 from the microsecond clock, 5 random; unique because the content
    file is created with O_EXCL under it (a clash just draws another)."""
    micro = int(clock() * 1_000_000)
    digits = []
    for _ in range(7):
        micro, rest = divmod(micro, len(_ID_ALPHABET))
        digits.append(_ID_ALPHABET[rest])
    random_part = "".join(secrets.choice(_ID_ALPHABET) for _ in range(5))
    return "".join(reversed(digits)) + random_part


def is_queue_id(text: str) -> bool:
    return 6 <= len(text) <= 32 and all(c in _ID_ALPHABET for c in text)


# --------------------------------------------------------------------------------------------
# Durable directory updates


class DirectorySync:
    """Group commit of one directory's fsync across threads.

    Each caller gets a ticket after its own change; it returns once an fsync that *started*
    after its ticket has completed. While one fsync runs, later callers queue up and the next
    fsync covers all of them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._running = False

    def sync(self) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while True:
                if self._done >= ticket:
                    return
                if not self._running:
                    self._running = True
                    target = self._requested
                    break
                self._cond.wait()
        ok = False
        try:
            fsync_directory(self.path)
            ok = True
        finally:
            with self._cond:
                self._running = False
                if ok:
                    self._done = max(self._done, target)
                self._cond.notify_all()


# --------------------------------------------------------------------------------------------
# Reading and writing envelope files


def render_envelope(envelope: Envelope) -> bytes:
    lines = [MAGIC, "E " + json.dumps(envelope.to_json(), ensure_ascii=False)]
    for record in envelope.recipients:
        lines.append(
            f"R {RecipientState.PENDING.value} " + json.dumps(record.to_json(), ensure_ascii=False)
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_envelope_file(
    data: bytes, queue_id: str = "?"
) -> tuple[Envelope, list[QueuedRecipientEntry], int]:
    """(envelope, recipients with their state offsets and last results, attempts)."""
    if not data.startswith(MAGIC.encode() + b"\n"):
        raise CorruptQueueFile(f"{queue_id}: not a sealmail queue file")
    envelope_data: dict[str, Any] | None = None
    recipients: list[QueuedRecipientEntry] = []
    attempts = 0
    offset = 0
    for raw in data.splitlines(keepends=True):
        start = offset
        offset += len(raw)
        if not raw.endswith(b"\n"):
            break  # a torn append at the end: ignore it, the record was never complete
        line = raw[:-1].decode("utf-8", "replace")
        if line == MAGIC:
            continue
        try:
            if line.startswith("E "):
                envelope_data = json.loads(line[2:])
            elif line.startswith("R "):
                state = RecipientState(line[2])
                record = RecipientRecord.from_json(json.loads(line[4:]))
                recipients.append(QueuedRecipientEntry(len(recipients), record, state, start + 2))
            elif line.startswith("L "):
                item = json.loads(line[2:])
                result = AttemptResult(
                    int(item["index"]),
                    str(item["status"]),
                    str(item["dsn"]),
                    str(item["text"]),
                    str(item["relay"]),
                    float(item["time"]),
                )
                if 0 <= result.index < len(recipients):
                    recipients[result.index].last = result
            elif line.startswith("A "):
                attempts += 1
            else:
                raise CorruptQueueFile(f"{queue_id}: unknown record {line[:20]!r}")
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise CorruptQueueFile(f"{queue_id}: bad record {line[:40]!r}: {exc}") from None
    if envelope_data is None:
        raise CorruptQueueFile(f"{queue_id}: no envelope record")
    try:
        envelope = Envelope(
            sender=str(envelope_data["sender"]),
            recipients=tuple(r.record for r in recipients),
            arrival=float(envelope_data["arrival"]),
            size=int(envelope_data.get("size", 0)),
            client=str(envelope_data.get("client", "")),
            protocol=str(envelope_data.get("protocol", "")),
            helo=str(envelope_data.get("helo", "")),
            sasl_username=str(envelope_data.get("sasl_username", "")),
            ret=str(envelope_data.get("ret", "")),
            envid=str(envelope_data.get("envid", "")),
            is_bounce=bool(envelope_data.get("is_bounce", False)),
            message_id=str(envelope_data.get("message_id", "")),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CorruptQueueFile(f"{queue_id}: bad envelope record: {exc}") from None
    return envelope, recipients, attempts


# --------------------------------------------------------------------------------------------
# The queue


class MessageWriter:
    """A message being received: its content file exists (O_EXCL) under its queue id.

    Write the content, then `commit(envelope)`; `abort()` (or an exception in a `with`) removes
    what was written. Blocking: call from a worker thread in asyncio code.
    """

    def __init__(self, queue: Queue, queue_id: str, fd: int) -> None:
        self.queue = queue
        self.queue_id = queue_id
        self._file = os.fdopen(fd, "wb")
        self.size = 0
        self.committed = False

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def commit(self, envelope: Envelope, target: QueueName = QueueName.INCOMING) -> str:
        """Make the message durable in `target` (incoming, or hold); returns the queue id."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        queue = self.queue
        final = queue.path_of(self.queue_id, target)
        temporary = final.with_name(f".{self.queue_id}.tmp")
        data = render_envelope(envelope)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.rename(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        queue.sync(QueueName.INCOMING if target is QueueName.INCOMING else target)
        queue.sync_content()
        self.committed = True
        return self.queue_id

    def abort(self) -> None:
        if self.committed:
            return
        with contextlib.suppress(OSError):
            self._file.close()
        self.queue.content_path(self.queue_id).unlink(missing_ok=True)

    def __enter__(self) -> MessageWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.abort()


@dataclass
class Queue:
    """The queue directory. Methods block on disk: run them in a thread from asyncio code."""

    directory: Path
    clock: Callable[[], float] = time.time
    _syncs: dict[str, DirectorySync] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    # -- layout -------------------------------------------------------------------------------

    def create_directories(self) -> None:
        """Make the queue's directories (mode 700, maildrop 1733 so any local user may post)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in [*(q.value for q in QueueName), CONTENT_DIRECTORY, PUBLIC_DIRECTORY]:
            (self.directory / name).mkdir(mode=0o700, exist_ok=True)
        maildrop = self.directory / MAILDROP_DIRECTORY
        maildrop.mkdir(exist_ok=True)
        os.chmod(maildrop, 0o1733)
        os.chmod(self.directory / PUBLIC_DIRECTORY, 0o755)

    def queue_directory(self, queue: QueueName) -> Path:
        return self.directory / queue.value

    def path_of(self, queue_id: str, queue: QueueName) -> Path:
        return self.directory / queue.value / queue_id

    def content_path(self, queue_id: str) -> Path:
        return self.directory / CONTENT_DIRECTORY / queue_id

    @property
    def maildrop(self) -> Path:
        return self.directory / MAILDROP_DIRECTORY

    @property
    def control_socket(self) -> Path:
        return self.directory / PUBLIC_DIRECTORY / "qmgr"

    def _sync_for(self, name: str) -> DirectorySync:
        found = self._syncs.get(name)
        if found is None:
            found = self._syncs.setdefault(name, DirectorySync(self.directory / name))
        return found

    def sync(self, queue: QueueName) -> None:
        self._sync_for(queue.value).sync()

    def sync_content(self) -> None:
        self._sync_for(CONTENT_DIRECTORY).sync()

    # -- receiving ----------------------------------------------------------------------------

    def new_message(self) -> MessageWriter:
        """Reserve a queue id by creating its content file."""
        for _ in range(100):
            queue_id = new_queue_id(self.clock)
            try:
                fd = os.open(
                    self.content_path(queue_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
                )
            except FileExistsError:
                continue
            return MessageWriter(self, queue_id, fd)
        raise QueueError("cannot allocate a queue id")

    def enqueue(
        self, envelope: Envelope, content: bytes, target: QueueName = QueueName.INCOMING
    ) -> str:
        """Write a whole message at once (bounces, pickup); returns its queue id."""
        with self.new_message() as writer:
            writer.write(content)
            return writer.commit(envelope, target)

    # -- reading ------------------------------------------------------------------------------

    def ids(self, queue: QueueName) -> list[str]:
        """Queue ids in `queue` (temporary files skipped), oldest first by mtime."""
        directory = self.queue_directory(queue)
        found: list[tuple[float, str]] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.is_file():
                        continue
                    try:
                        found.append((entry.stat().st_mtime, entry.name))
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            return []
        return [name for _, name in sorted(found)]

    def due(self, queue: QueueName, now: float) -> list[str]:
        """Ids in `queue` whose mtime (the next attempt time, for deferred) has come."""
        directory = self.queue_directory(queue)
        due: list[tuple[float, str]] = []
        with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    mtime = entry.stat().st_mtime
                    if mtime <= now:
                        due.append((mtime, entry.name))
        return [name for _, name in sorted(due)]

    def find(self, queue_id: str) -> QueueName | None:
        for queue in ENVELOPE_QUEUES:
            if self.path_of(queue_id, queue).exists():
                return queue
        return None

    def load(self, queue_id: str, queue: QueueName) -> QueueFile:
        path = self.path_of(queue_id, queue)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
                mtime = os.fstat(handle.fileno()).st_mtime
        except FileNotFoundError:
            raise QueueError(f"{queue_id}: no such message in {queue.value}") from None
        envelope, recipients, attempts = parse_envelope_file(data, queue_id)
        return QueueFile(
            queue_id,
            queue,
            path,
            self.content_path(queue_id),
            envelope,
            recipients,
            attempts,
            mtime,
        )

    def entries(self, queues: Iterable[QueueName] = ENVELOPE_QUEUES) -> Iterator[QueueFile]:
        """Every readable message in `queues` (for postqueue -p); unreadable ones skipped."""
        for queue in queues:
            for queue_id in self.ids(queue):
                try:
                    yield self.load(queue_id, queue)
                except QueueError:
                    continue

    # -- state changes ------------------------------------------------------------------------

    def move(
        self,
        queue_id: str,
        source: QueueName,
        target: QueueName,
        next_attempt: float | None = None,
        *,
        durable: bool = True,
    ) -> None:
        """Rename the envelope into `target`. `next_attempt` sets its mtime (deferred mail's
        retry time, as Postfix keeps it); otherwise the mtime is now.

        The queue manager's own moves pass durable=False: a move lost in a crash leaves the
        envelope in incoming/ or active/, and both are delivered again after `recover`, with
        recipients already marked done skipped. Only the marks must be durable."""
        old = self.path_of(queue_id, source)
        new = self.path_of(queue_id, target)
        when = self.clock() if next_attempt is None else next_attempt
        try:
            os.utime(old, (self.clock(), when))
            os.rename(old, new)
        except FileNotFoundError:
            raise QueueError(f"{queue_id}: no such message in {source.value}") from None
        if durable:
            self.sync(target)
            self.sync(source)

    def mark(self, entry: QueueFile, indexes: Iterable[int], state: RecipientState) -> None:
        """Set recipients' state in place, then fsync (a one-byte overwrite per recipient)."""
        self.update(entry, marks={index: state for index in indexes})

    def record(
        self,
        entry: QueueFile,
        results: Iterable[AttemptResult],
        attempt: tuple[float, float] | None = None,
    ) -> None:
        """Append attempt results (and an attempt record), then fsync."""
        self.update(entry, results, attempt=attempt)

    def update(
        self,
        entry: QueueFile,
        results: Iterable[AttemptResult] = (),
        marks: dict[int, RecipientState] | None = None,
        attempt: tuple[float, float] | None = None,
        *,
        durable: bool = True,
    ) -> None:
        """Append results, overwrite recipients' state bytes, and fsync once for all of it.

        durable=False skips the fsync: a mark that a power failure loses only means one more
        attempt for that recipient ("at most once more"), never a lost message, which is how
        Postfix's queue manager treats delivery records too."""
        lines = []
        for result in results:
            lines.append("L " + json.dumps(result.to_json(), ensure_ascii=False))
            if 0 <= result.index < len(entry.recipients):
                entry.recipients[result.index].last = result
        if attempt is not None:
            lines.append("A " + json.dumps({"time": attempt[0], "next": attempt[1]}))
            entry.attempts += 1
        marks = marks or {}
        if not lines and not marks:
            return
        with open(entry.path, "r+b") as handle:
            if lines:
                handle.seek(0, os.SEEK_END)
                handle.write(("\n".join(lines) + "\n").encode("utf-8"))
            for index, state in marks.items():
                recipient = entry.recipients[index]
                handle.seek(recipient.offset)
                handle.write(state.value.encode())
                recipient.state = state
            handle.flush()
            if durable:
                os.fsync(handle.fileno())

    def remove(
        self, queue_id: str, queue: QueueName | None = None, *, durable: bool = True
    ) -> bool:
        """Delete a message (envelope first, so no state ever lacks its content). A removal
        lost in a crash brings back a message whose recipients are all done, which the queue
        manager removes again: the queue manager passes durable=False."""
        queues = [queue] if queue is not None else list(ENVELOPE_QUEUES)
        removed = False
        for name in queues:
            try:
                self.path_of(queue_id, name).unlink()
                removed = True
                if durable:
                    self.sync(name)
            except FileNotFoundError:
                continue
        if removed:
            self.content_path(queue_id).unlink(missing_ok=True)
        return removed

    def recover(self) -> list[str]:
        """At start: interrupted deliveries go back to incoming; half-written files go away.

        A content file without an envelope is the remains of a receive that never got its 250
        (only a running master writes them, and it is not running yet)."""
        moved = []
        for queue_id in self.ids(QueueName.ACTIVE):
            with contextlib.suppress(QueueError):
                self.move(queue_id, QueueName.ACTIVE, QueueName.INCOMING)
                moved.append(queue_id)
        known = set()
        for queue in (*ENVELOPE_QUEUES, QueueName.CORRUPT):
            directory = self.queue_directory(queue)
            with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        Path(entry.path).unlink(missing_ok=True)
                    else:
                        known.add(entry.name)
        with (
            contextlib.suppress(FileNotFoundError),
            os.scandir(self.directory / CONTENT_DIRECTORY) as entries,
        ):
            for entry in entries:
                if entry.name not in known:
                    log.warning("%s: removing content without an envelope", entry.name)
                    Path(entry.path).unlink(missing_ok=True)
        return moved

    def set_corrupt(self, queue_id: str, queue: QueueName) -> None:
        with contextlib.suppress(QueueError):
            self.move(queue_id, queue, QueueName.CORRUPT)

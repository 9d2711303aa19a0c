"""The mail queue on disk: queue ids, queue files, and crash-safe moves between queue states.

Theory of operation. Under `queue_directory`:

    incoming/QUEUEID     mail that is complete and waits for the queue manager
    active/QUEUEID       mail the queue manager is delivering now
    deferred/QUEUEID     mail that waits for a retry; the file's mtime is the next attempt
    hold/QUEUEID         mail put on hold (postsuper -h)
    corrupt/QUEUEID      queue files that could not be read
    maildrop/            files posted by `sealmail sendmail`, read by pickup (sealmail.mta.pickup)

Queues named in `hash_queue_names` (default: deferred) keep their files `hash_queue_depth` levels
of one-character subdirectories down (deferred/Q/QUEUEID), as Postfix does, so no directory
grows past a few thousand entries. Postfix hashes on the fast-changing microsecond digits of its
ids; the subdirectories here are the id's fastest-changing clock digits (the 7th, then the 6th
character, ...). Every reader walks whatever subdirectories a queue has, so mail written under
another layout is still found; `restructure` (postsuper -s, run by the master at start) moves
each file where the current layout wants it, one rename at a time.

One message is one queue file, envelope and content together (as Postfix keeps it), so a
message's state is the directory its file is in and a state change is one rename(2), which is
atomic: after a crash the message is in exactly one queue. Receiving writes the whole file under
a temporary name in incoming/, fsyncs it, renames it to its queue id and fsyncs the directory:
only then may the SMTP server say 250 (issue 8: "fsync'd before the 250"), and it cost one file
fsync and a share of one directory fsync. A master that starts moves everything in active/ back
to incoming/ (`recover`), so mail whose delivery was interrupted is delivered again; recipients
already marked done are skipped, so a crash delivers each recipient at most once more.

The queue id is the arrival time in microseconds and the file's inode number: no two live queue
files share an inode, so ids never clash (Postfix's long queue ids are made the same way).

The file, in order:

    sealmail-queue 2 ENVELOPE_OCTETS CONTENT_OCTETS
    E {"sender": ..., "arrival": ..., ...}          the message's envelope
    R P {"address": ..., "original": ..., ...}      one per recipient; the byte after "R " is
                                                    its state, rewritten in place (as Postfix
                                                    overwrites a recipient record's type)
    <the message content: CONTENT_OCTETS octets, headers and body, CRLF>
    L {"index": 0, "status": "deferred", ...}       appended: a delivery attempt's result
    A {"time": ..., "next": ...}                    appended: a deferred attempt
    W {"time": ...}                                 appended: the delay warning went out

Directory fsyncs are shared by concurrent writers (`DirectorySync`): many messages arriving at the
same time pay for one directory fsync, while each still waits until its own rename is durable.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sealmail.durable import fsync_directory
from sealmail.mta.config.parameters import MAIN

if TYPE_CHECKING:
    from sealmail.config.schema import Option

_T = TypeVar("_T")

log = logging.getLogger("sealmail.mta.queue")

MAGIC = "sealmail-queue 2"


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
MAILDROP_DIRECTORY = "maildrop"
# A queue file in maildrop with the owner's execute bit asks pickup to clean it again (postsuper
# -r); pickup's own files never have it (Postfix marks queue file states with mode bits too).
REQUEUE_MODE = 0o700
DEFAULT_HASHED = frozenset({QueueName.DEFERRED})  # Postfix's hash_queue_names = deferred, defer
MAX_HASH_DEPTH = 8  # levels a reader looks through for a file written under another layout
_HASH_SOURCE = 7  # the clock part of an id (see new_queue_id)
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
    requeued_as: str = ""  # postsuper -r: the id pickup gave this file (see sealmail.mta.pickup)
    smtputf8: bool = False  # MAIL ... SMTPUTF8 (RFC 6531): the sender asked for it

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
            **({"requeued_as": self.requeued_as} if self.requeued_as else {}),
            **({"smtputf8": True} if self.smtputf8 else {}),
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


@dataclass(frozen=True, slots=True)
class MessageContent:
    """Where a queued message's content lies: a byte range of its queue file (or a whole file,
    length -1, for agents handed a message that is not in the queue)."""

    path: Path
    offset: int = 0
    length: int = -1

    def read(self) -> bytes:
        """The content, read whole: queue files are bounded by message_size_limit. Blocking."""
        with open(self.path, "rb") as handle:
            if self.offset:
                handle.seek(self.offset)
            return handle.read(self.length) if self.length >= 0 else handle.read()


@dataclass(slots=True)
class QueueFile:
    """A loaded queue file: envelope, recipients and where the content lies."""

    queue_id: str
    queue: QueueName
    path: Path
    content: MessageContent
    envelope: Envelope
    recipients: list[QueuedRecipientEntry]
    attempts: int = 0
    mtime: float = 0.0
    warned: bool = False  # the delay warning went out (delay_warning_time)

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


def _encode(number: int, width: int) -> str:
    digits: list[str] = []
    while number or len(digits) < width:
        number, rest = divmod(number, len(_ID_ALPHABET))
        digits.append(_ID_ALPHABET[rest])
    return "".join(reversed(digits))


def new_queue_id(inode: int, clock: Callable[[], float] = time.time) -> str:
    """7 characters of the microsecond clock (their last 7 base-31 digits), then the inode
    number of the message's queue file (at least 5 characters): unique among live queue files,
    which is all a queue id must be, and sortable by arrival within a few hours."""
    return _encode(int(clock() * 1_000_000) % len(_ID_ALPHABET) ** 7, 7) + _encode(inode, 5)


def is_queue_id(text: str) -> bool:
    return 6 <= len(text) <= 32 and all(c in _ID_ALPHABET for c in text)


def names_inode(queue_id: str, inode: int) -> bool:
    """Whether `queue_id` was made for the file with this inode number (new_queue_id)."""
    return len(queue_id) > 7 and queue_id[7:] == _encode(inode, 5)


def hash_directories(queue_id: str, depth: int) -> tuple[str, ...]:
    """The subdirectories of a hashed queue that hold `queue_id`: one character per level, the
    clock part's last digit first (it changes every microsecond), then the one before; "_" once
    the id runs out, as Postfix's dir_forest pads a short name."""
    source = queue_id[:_HASH_SOURCE][::-1]
    return tuple(source[level] if level < len(source) else "_" for level in range(depth))


def _is_hash_directory(name: str) -> bool:
    return len(name) == 1 and (name in _ID_ALPHABET or name == "_")


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
    """The E and R records of a new queue file (every recipient pending)."""
    lines = ["E " + json.dumps(envelope.to_json(), ensure_ascii=False)]
    for record in envelope.recipients:
        lines.append(
            f"R {RecipientState.PENDING.value} " + json.dumps(record.to_json(), ensure_ascii=False)
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_queue_file(envelope: Envelope, content: bytes) -> bytes:
    records = render_envelope(envelope)
    return f"{MAGIC} {len(records)} {len(content)}\n".encode() + records + content


def parse_header(line: bytes, queue_id: str = "?") -> tuple[int, int]:
    """(envelope octets, content octets) from a queue file's first line."""
    magic, _, sizes = line.rstrip(b"\n").rpartition(b" ")
    magic, _, records = magic.rpartition(b" ")
    if magic != MAGIC.encode() or not records.isdigit() or not sizes.isdigit():
        raise CorruptQueueFile(f"{queue_id}: not a sealmail queue file")
    return int(records), int(sizes)


@dataclass(slots=True)
class _Records:
    """What a queue file's records say, as they are read."""

    queue_id: str
    envelope: dict[str, Any] | None = None
    recipients: list[QueuedRecipientEntry] = field(default_factory=list)
    attempts: int = 0
    warned: bool = False

    def read(self, data: bytes, base: int, *, appended: bool) -> None:
        """Records in `data`, which starts at file offset `base`. Envelope records come before
        the content, results and attempts after it."""
        offset = base
        for raw in data.splitlines(keepends=True):
            start = offset
            offset += len(raw)
            if not raw.endswith(b"\n"):
                if appended:
                    break  # a torn append at the end: ignore it, it was never complete
                raise CorruptQueueFile(f"{self.queue_id}: envelope records are cut short")
            line = raw[:-1].decode("utf-8", "replace")
            kind = line[:2]
            try:
                if kind == "E " and not appended:
                    self.envelope = json.loads(line[2:])
                elif kind == "R " and not appended:
                    state = RecipientState(line[2])
                    record = RecipientRecord.from_json(json.loads(line[4:]))
                    self.recipients.append(
                        QueuedRecipientEntry(len(self.recipients), record, state, start + 2)
                    )
                elif kind == "L " and appended:
                    item = json.loads(line[2:])
                    result = AttemptResult(
                        int(item["index"]),
                        str(item["status"]),
                        str(item["dsn"]),
                        str(item["text"]),
                        str(item["relay"]),
                        float(item["time"]),
                    )
                    if 0 <= result.index < len(self.recipients):
                        self.recipients[result.index].last = result
                elif kind == "A " and appended:
                    self.attempts += 1
                elif kind == "W " and appended:
                    self.warned = True
                else:
                    raise CorruptQueueFile(f"{self.queue_id}: unexpected record {line[:20]!r}")
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise CorruptQueueFile(
                    f"{self.queue_id}: bad record {line[:40]!r}: {exc}"
                ) from None

    def finish(self) -> tuple[Envelope, list[QueuedRecipientEntry], int]:
        data = self.envelope
        if data is None:
            raise CorruptQueueFile(f"{self.queue_id}: no envelope record")
        try:
            envelope = Envelope(
                sender=str(data["sender"]),
                recipients=tuple(r.record for r in self.recipients),
                arrival=float(data["arrival"]),
                size=int(data.get("size", 0)),
                client=str(data.get("client", "")),
                protocol=str(data.get("protocol", "")),
                helo=str(data.get("helo", "")),
                sasl_username=str(data.get("sasl_username", "")),
                ret=str(data.get("ret", "")),
                envid=str(data.get("envid", "")),
                is_bounce=bool(data.get("is_bounce", False)),
                message_id=str(data.get("message_id", "")),
                requeued_as=str(data.get("requeued_as", "")),
                smtputf8=bool(data.get("smtputf8", False)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptQueueFile(f"{self.queue_id}: bad envelope record: {exc}") from None
        return envelope, self.recipients, self.attempts


def parse_queue_file(
    data: bytes, queue_id: str = "?"
) -> tuple[Envelope, list[QueuedRecipientEntry], int, tuple[int, int]]:
    """A whole queue file: (envelope, recipients with their state offsets and last results,
    attempts, (content offset, content octets))."""
    first, newline, _ = data.partition(b"\n")
    if not newline:
        raise CorruptQueueFile(f"{queue_id}: not a sealmail queue file")
    records_size, content_size = parse_header(first, queue_id)
    base = len(first) + 1
    content_at = base + records_size
    if len(data) < content_at + content_size:
        raise CorruptQueueFile(f"{queue_id}: shorter than its header says")
    records = _Records(queue_id)
    records.read(data[base:content_at], base, appended=False)
    records.read(data[content_at + content_size :], content_at + content_size, appended=True)
    envelope, recipients, attempts = records.finish()
    return envelope, recipients, attempts, (content_at, content_size)


# --------------------------------------------------------------------------------------------
# The queue


class MessageWriter:
    """A message being received: its queue id is reserved by a temporary file in incoming/.

    Write the content, then `commit(envelope)`; `abort()` (or an exception in a `with`) removes
    what was written. Blocking: call from a worker thread in asyncio code.
    """

    def __init__(self, queue: Queue, queue_id: str, fd: int, temporary: Path) -> None:
        self.queue = queue
        self.queue_id = queue_id
        self._fd = fd
        self._temporary = temporary
        self._parts: list[bytes] = []
        self.size = 0
        self.committed = False

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self.size += len(data)

    def commit(self, envelope: Envelope, target: QueueName = QueueName.INCOMING) -> str:
        """Make the message durable in `target` (incoming, or hold): one write, one file
        fsync, one rename, a share of one directory fsync. Returns the queue id."""
        final = self.store(self.render(envelope), target)
        self.queue.sync_directory(final.parent)
        self.committed = True
        return self.queue_id

    def render(self, envelope: Envelope) -> bytes:
        """The whole queue file (CPU only: callers in an event loop may run it there)."""
        return render_queue_file(envelope, b"".join(self._parts))

    def store(self, data: bytes, target: QueueName) -> Path:
        """Write and fsync the file, then rename it into `target`; durable once the caller has
        fsync'd the directory it landed in (the returned path's parent) too. Blocking."""
        final = self.queue.path_of(self.queue_id, target)
        self.store_at(data, final)
        return final

    def store_at(self, data: bytes, path: Path) -> None:
        """Write and fsync the file, then rename it to `path` (replacing a file there: pickup
        puts a requeued message's new file over the old one, see sealmail.mta.pickup)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self.queue.place(self._temporary, path)

    def abort(self) -> None:
        if self.committed:
            return
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> MessageWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.abort()


@dataclass
class Queue:
    """The queue directory. Methods block on disk: run them in a thread from asyncio code.

    `hashed` and `hash_depth` are main.cf's hash_queue_names and hash_queue_depth: where new
    files go. Files are found wherever they are (see the module text)."""

    directory: Path
    clock: Callable[[], float] = time.time
    hashed: frozenset[QueueName] = DEFAULT_HASHED
    hash_depth: int = 1
    _syncs: dict[Path, DirectorySync] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if not 1 <= self.hash_depth <= MAX_HASH_DEPTH:
            raise ValueError(f"hash_queue_depth must be 1 to {MAX_HASH_DEPTH}")

    @classmethod
    def from_config(cls, main: QueueSettings, clock: Callable[[], float] = time.time) -> Queue:
        """The queue of a main.cf: queue_directory, hash_queue_names, hash_queue_depth. Names
        of Postfix's log queues (defer, bounce, trace, flush), which sealmail keeps inside the
        queue file, have nothing to hash."""
        names = {name.lower() for name in main.get(MAIN.hash_queue_names)}
        hashed = frozenset(q for q in QueueName if q.value in names)
        return cls(Path(main.instance_path(MAIN.queue_directory)), clock, hashed,
                   main.get(MAIN.hash_queue_depth))

    # -- layout -------------------------------------------------------------------------------

    def create_directories(self) -> None:
        """Make the queue's directories (mode 700, maildrop 1733 so any local user may post)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in [*(q.value for q in QueueName), PUBLIC_DIRECTORY]:
            (self.directory / name).mkdir(mode=0o700, exist_ok=True)
        maildrop = self.directory / MAILDROP_DIRECTORY
        maildrop.mkdir(exist_ok=True)
        os.chmod(maildrop, 0o1733)
        os.chmod(self.directory / PUBLIC_DIRECTORY, 0o755)

    def queue_directory(self, queue: QueueName) -> Path:
        return self.directory / queue.value

    def path_of(self, queue_id: str, queue: QueueName) -> Path:
        """Where the current layout puts `queue_id` in `queue` (see `locate` for reading)."""
        base = self.directory / queue.value
        if queue in self.hashed:
            return base.joinpath(*hash_directories(queue_id, self.hash_depth), queue_id)
        return base / queue_id

    def locate(self, queue_id: str, queue: QueueName) -> Path | None:
        """Where `queue_id`'s file in `queue` is: where the layout puts it, or under another
        layout (flat, or hashed at another depth) that a change of main.cf left it in."""
        canonical = self.path_of(queue_id, queue)
        if canonical.exists():
            return canonical
        base = self.directory / queue.value
        candidates = [base / queue_id] + [
            base.joinpath(*hash_directories(queue_id, depth), queue_id)
            for depth in range(1, MAX_HASH_DEPTH + 1)]
        for path in candidates:
            if path != canonical and path.exists():
                return path
        return None

    def place(self, source: Path, target: Path) -> None:
        """rename(2) `source` to `target`, making target's hash directories first when they are
        missing (each new directory made durable before anything is renamed into it)."""
        try:
            os.rename(source, target)
        except FileNotFoundError:
            if not os.path.lexists(source):
                raise
            # Another thread may have made the directory since our rename failed: making it
            # is idempotent, and the second rename settles it.
            self._make_directories(target.parent)
            os.rename(source, target)

    def _make_directories(self, directory: Path) -> None:
        missing = []
        while not directory.is_dir():
            if directory.parent == self.directory or directory.parent == directory:
                # Only hash directories are made here; a queue directory is the installer's.
                raise FileNotFoundError(errno.ENOENT, "no such queue directory", str(directory))
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
                if os.geteuid() == 0:
                    # root's tools (postsuper) make a directory the queue's owner can use.
                    owner = os.stat(path.parent)
                    os.chown(path, owner.st_uid, owner.st_gid)
            self.sync_directory(path.parent)

    @property
    def maildrop(self) -> Path:
        return self.directory / MAILDROP_DIRECTORY

    @property
    def control_socket(self) -> Path:
        return self.directory / PUBLIC_DIRECTORY / "qmgr"

    def sync_directory(self, directory: Path) -> None:
        """fsync `directory`, shared with concurrent callers (DirectorySync)."""
        found = self._syncs.get(directory)
        if found is None:
            found = self._syncs.setdefault(directory, DirectorySync(directory))
        found.sync()

    def sync(self, queue: QueueName) -> None:
        """fsync a queue's top directory (an unhashed queue's files live there)."""
        self.sync_directory(self.queue_directory(queue))

    # -- receiving ----------------------------------------------------------------------------

    def new_message(self) -> MessageWriter:
        """Reserve a queue id: a temporary file in incoming/, whose inode makes the id."""
        incoming = self.queue_directory(QueueName.INCOMING)
        for _ in range(100):
            temporary = incoming / f".{secrets.token_hex(8)}.tmp"
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            return MessageWriter(self, new_queue_id(os.fstat(fd).st_ino, self.clock), fd,
                                 temporary)
        raise QueueError("cannot allocate a queue id")

    def enqueue(
        self, envelope: Envelope, content: bytes, target: QueueName = QueueName.INCOMING
    ) -> str:
        """Write a whole message at once (bounces, pickup); returns its queue id."""
        with self.new_message() as writer:
            writer.write(content)
            return writer.commit(envelope, target)

    # -- reading ------------------------------------------------------------------------------

    def files(self, queue: QueueName) -> Iterator[tuple[str, Path, float]]:
        """(queue id, path, mtime) of every file in `queue`, hashed or not; temporary files and
        anything that is not a hash directory are skipped."""
        pending = [(self.queue_directory(queue), 0)]
        while pending:
            directory, level = pending.pop()
            with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if level < MAX_HASH_DEPTH and _is_hash_directory(entry.name):
                                pending.append((Path(entry.path), level + 1))
                            continue
                        if entry.is_file(follow_symlinks=False):
                            yield entry.name, Path(entry.path), entry.stat().st_mtime
                    except FileNotFoundError:
                        continue

    def ids(self, queue: QueueName) -> list[str]:
        """Queue ids in `queue` (temporary files skipped), oldest first by mtime."""
        return [name for _, name in sorted((mtime, name) for name, _, mtime in self.files(queue))]

    def due(self, queue: QueueName, now: float) -> list[str]:
        """Ids in `queue` whose mtime (the next attempt time, for deferred) has come."""
        due = sorted((mtime, name) for name, _, mtime in self.files(queue) if mtime <= now)
        return [name for _, name in due]

    def find(self, queue_id: str) -> QueueName | None:
        for queue in ENVELOPE_QUEUES:
            if self.locate(queue_id, queue) is not None:
                return queue
        return None

    def load(self, queue_id: str, queue: QueueName) -> QueueFile:
        """The envelope and results of a queued message; the content is left on disk."""
        path = self.locate(queue_id, queue)
        records = _Records(queue_id)
        try:
            if path is None:
                raise FileNotFoundError(queue_id)
            with open(path, "rb") as handle:
                mtime = os.fstat(handle.fileno()).st_mtime
                first = handle.readline(200)
                records_size, content_size = parse_header(first, queue_id)
                base = len(first)
                envelope_data = handle.read(records_size)
                if len(envelope_data) < records_size:
                    raise CorruptQueueFile(f"{queue_id}: shorter than its header says")
                records.read(envelope_data, base, appended=False)
                content_at = base + records_size
                handle.seek(content_at + content_size)
                records.read(handle.read(), content_at + content_size, appended=True)
        except FileNotFoundError:
            raise QueueError(f"{queue_id}: no such message in {queue.value}") from None
        envelope, recipients, attempts = records.finish()
        return QueueFile(
            queue_id,
            queue,
            path,
            MessageContent(path, content_at, content_size),
            envelope,
            recipients,
            attempts,
            mtime,
            records.warned,
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
        """Rename the queue file into `target`. `next_attempt` sets its mtime (deferred mail's
        retry time, as Postfix keeps it; deferred without one: now); other moves keep it.

        The queue manager's own moves pass durable=False: a move lost in a crash leaves the
        envelope in incoming/ or active/, and both are delivered again after `recover`, with
        recipients already marked done skipped. Only the marks must be durable."""
        old = self.locate(queue_id, source)
        new = self.path_of(queue_id, target)
        try:
            if old is None:
                raise FileNotFoundError(queue_id)
            if next_attempt is not None or target is QueueName.DEFERRED:
                when = self.clock() if next_attempt is None else next_attempt
                os.utime(old, (self.clock(), when))
            self.place(old, new)
        except FileNotFoundError:
            raise QueueError(f"{queue_id}: no such message in {source.value}") from None
        if durable:
            self.sync_directory(new.parent)
            self.sync_directory(old.parent)

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
        warned: float | None = None,
    ) -> None:
        """Append results, overwrite recipients' state bytes, and fsync once for all of it.
        `warned` records the time the delay warning went out (it goes out once).

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
        if warned is not None:
            lines.append("W " + json.dumps({"time": warned}))
            entry.warned = True
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
        """Delete a message. A removal lost in a crash brings back a message whose recipients
        are all done, which the queue manager removes again: it passes durable=False."""
        queues = [queue] if queue is not None else list(ENVELOPE_QUEUES)
        removed = False
        for name in queues:
            path = self.locate(queue_id, name)
            if path is None:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed = True
            if durable:
                self.sync_directory(path.parent)
        return removed

    def recover(self) -> list[str]:
        """At start: interrupted deliveries go back to incoming; half-written files (a receive
        that never got its 250: only a running master writes them) go away."""
        moved = []
        for queue_id in self.ids(QueueName.ACTIVE):
            with contextlib.suppress(QueueError):
                self.move(queue_id, QueueName.ACTIVE, QueueName.INCOMING)
                moved.append(queue_id)
        for queue in (*ENVELOPE_QUEUES, QueueName.CORRUPT):
            for directory in self._directories(queue):
                with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            Path(entry.path).unlink(missing_ok=True)
        return moved

    def restructure(self) -> list[tuple[str, QueueName]]:
        """postsuper -s: move every queue file to where hash_queue_names and hash_queue_depth
        want it, then remove hash directories the layout no longer uses (empty ones only).

        Each move is one rename(2) within its queue, made durable before the next: a crash at
        any point leaves every message in exactly one place, in the queue it was in, and
        running this again finishes the job. Returns the (queue id, queue) pairs moved."""
        moved: list[tuple[str, QueueName]] = []
        for queue in QueueName:
            for queue_id, path, _ in list(self.files(queue)):
                if not is_queue_id(queue_id):
                    continue
                target = self.path_of(queue_id, queue)
                if path == target:
                    continue
                try:
                    self.place(path, target)
                except FileNotFoundError:
                    continue  # delivered or moved meanwhile by a running queue manager
                self.sync_directory(target.parent)
                self.sync_directory(path.parent)
                moved.append((queue_id, queue))
            self._remove_unused_directories(queue)
        return moved

    def _directories(self, queue: QueueName) -> list[Path]:
        """A queue's top directory and every hash directory below it, deepest last."""
        found = [self.queue_directory(queue)]
        for directory in found:
            if len(directory.relative_to(self.queue_directory(queue)).parts) >= MAX_HASH_DEPTH:
                continue
            with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
                found += [Path(e.path) for e in entries
                          if _is_hash_directory(e.name) and e.is_dir(follow_symlinks=False)]
        return found

    def _remove_unused_directories(self, queue: QueueName) -> None:
        keep = self.hash_depth if queue in self.hashed else 0
        top = self.queue_directory(queue)
        for directory in reversed(self._directories(queue)[1:]):
            if len(directory.relative_to(top).parts) > keep:
                with contextlib.suppress(OSError):  # not empty: a file arrived meanwhile
                    directory.rmdir()

    def requeue(self, queue_id: str, source: QueueName) -> Path:
        """postsuper -r: mark the file for cleanup again (REQUEUE_MODE) and rename it into
        maildrop/ under its queue id, where pickup finds it. One rename: the message is in its
        queue or in maildrop, never in both or neither."""
        path = self.locate(queue_id, source)
        if path is None:
            raise QueueError(f"{queue_id}: no such message in {source.value}")
        target = self.maildrop / queue_id
        if os.path.lexists(target):
            raise QueueError(f"{queue_id}: already waiting in maildrop for pickup")
        try:
            os.chmod(path, REQUEUE_MODE)  # a crash right after leaves a harmless mode behind
            os.utime(path)  # as Postfix: its time in maildrop starts now
            os.rename(path, target)
        except FileNotFoundError:
            raise QueueError(f"{queue_id}: no such message in {source.value}") from None
        self.sync_directory(self.maildrop)
        self.sync_directory(path.parent)
        return target

    def set_corrupt(self, queue_id: str, queue: QueueName) -> None:
        with contextlib.suppress(QueueError):
            self.move(queue_id, queue, QueueName.CORRUPT)


class QueueSettings(Protocol):
    """What `Queue.from_config` reads of a main.cf (sealmail.mta.config.MainConfig)."""

    def get(self, parameter: Option[_T]) -> _T: ...

    def instance_path(self, parameter: Option[Any] | str) -> str: ...

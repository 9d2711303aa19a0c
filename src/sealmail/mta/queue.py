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

The records and their encoding live in queue_file.py (split out for issue 19), this module the
directories, ids and moves.
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

# The queue file format (queue_file.py), re-exported: importers of this module keep working.
from sealmail.mta.queue_file import MAGIC as MAGIC
from sealmail.mta.queue_file import AttemptResult as AttemptResult
from sealmail.mta.queue_file import CorruptQueueFile as CorruptQueueFile
from sealmail.mta.queue_file import Envelope as Envelope
from sealmail.mta.queue_file import MessageContent as MessageContent
from sealmail.mta.queue_file import QueuedRecipientEntry as QueuedRecipientEntry
from sealmail.mta.queue_file import QueueError as QueueError
from sealmail.mta.queue_file import RecipientRecord as RecipientRecord
from sealmail.mta.queue_file import RecipientState as RecipientState
from sealmail.mta.queue_file import Records as Records
from sealmail.mta.queue_file import parse_header as parse_header
from sealmail.mta.queue_file import parse_queue_file as parse_queue_file
from sealmail.mta.queue_file import render_envelope as render_envelope
from sealmail.mta.queue_file import render_queue_file as render_queue_file

if TYPE_CHECKING:
    from sealmail.config.schema import Option

_T = TypeVar("_T")

log = logging.getLogger("sealmail.mta.queue")


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

    def replace_content(self, data: bytes) -> None:
        """What was written so far, replaced before the commit (a milter's edits)."""
        self._parts = [data]
        self.size = len(data)

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
        """Reserve a queue id: a temporary file in incoming/, whose inode makes the id. Its name
        carries the writer's pid, so the master removes what a killed smtpd left half-written
        (`remove_temporary`) without waiting for its own next start."""
        incoming = self.queue_directory(QueueName.INCOMING)
        for _ in range(100):
            temporary = incoming / f".{os.getpid()}.{secrets.token_hex(8)}.tmp"
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
        records = Records(queue_id)
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

    def remove_temporary(self, pid: int) -> int:
        """The half-written receives of process `pid`, which died without its 250 being sent
        (nothing in them was accepted): removed, and how many."""
        directory = self.queue_directory(QueueName.INCOMING)
        removed = 0
        with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(f".{pid}.") and entry.name.endswith(".tmp"):
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
        return removed

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

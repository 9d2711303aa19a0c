"""Change notification between nodes: who changed which mailbox, so IMAP IDLE hears of it
without a database connection of its own.

Theory of operation
-------------------
Never inside a data transaction: a NOTIFY there would take PostgreSQL's notification queue lock
at every commit and serialize every delivery of the site. Instead `Database.write` hands the
mailboxes a committed transaction changed (name, new highestmodseq) to `ChangeFeed.publish`
after the commit. That updates this node's own view at once and queues the change; one sender
thread per process sends what queued meanwhile as one NOTIFY per batch (coalesced: a mailbox
that changed ten times is sent once, with its last modseq), in a transaction of its own.

Each process that asks (`changed`: imapd's IDLE, once per session tick) keeps ONE listening
connection (application_name `sealmail-listen`) on CHANNEL, started on first use, so lmtpd
never opens one. It keeps `known`: the highest modseq heard of per mailbox name. IDLE compares
its session's modseq with that, in memory: an idle session holds no connection.

A notification can be lost (the listening connection dropped, PostgreSQL restarted, a sender
that died between commit and NOTIFY). The backstop: every `poll_interval` seconds, and at once
after (re)connecting, the listener reads the highestmodseq of every mailbox some session asked
about lately, with the connection it already holds. So any change reaches IDLE within the poll
interval, and within a few milliseconds when nothing is lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "sealmail_changes"
APPLICATION_NAME = "sealmail-listen"
# A deleted (or renamed-away) mailbox: above any modseq, so a session watching it looks again.
GONE = 1 << 62
_PAYLOAD_LIMIT = 7000  # bytes; PostgreSQL refuses payloads of 8000 and more
_WATCH_SECONDS = 120.0  # a mailbox nobody asked about for this long is no longer polled
_RECONNECT_SECONDS = 1.0


def payloads(changes: Mapping[str, int]) -> list[str]:
    """`changes` as NOTIFY payloads (JSON lists of [name, modseq]), each under the limit."""
    out: list[str] = []
    batch: list[tuple[str, int]] = []
    size = 2
    for name, modseq in changes.items():
        item = len(json.dumps([name, modseq])) + 1
        if batch and size + item > _PAYLOAD_LIMIT:
            out.append(json.dumps(batch))
            batch, size = [], 2
        batch.append((name, modseq))
        size += item
    if batch:
        out.append(json.dumps(batch))
    return out


def parse_payload(payload: str) -> dict[str, int]:
    """What one NOTIFY says; nothing for a payload this sealmail did not write."""
    try:
        items = json.loads(payload)
        return {str(name): int(modseq) for name, modseq in items}
    except (ValueError, TypeError):
        log.warning("ignored a malformed change notification (%d bytes)", len(payload))
        return {}


class ChangeFeed:
    """One process's view of which mailboxes changed, fed by LISTEN and the poll."""

    def __init__(
        self,
        dsn: str,
        send: Callable[[list[str]], None],
        poll_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dsn = dsn
        self._send = send  # sends payloads in a transaction of its own (Database.notify)
        self.poll_interval = poll_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, int] = {}
        self._watched: dict[str, float] = {}  # name -> when a session last asked
        self._pending: dict[str, int] = {}
        self._wake_sender = threading.Event()
        self._closed = threading.Event()
        self._sender: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self.listening = threading.Event()  # set while the LISTEN connection is up (tests)
        self.polls = 0  # backstop polls done (tests, logs)

    # -- what the store's writers call ------------------------------------------------------

    def publish(self, changes: Mapping[str, int]) -> None:
        """After a commit: these mailboxes are now at these modseqs (GONE: deleted)."""
        if not changes or self._closed.is_set():
            return
        with self._lock:
            for name, modseq in changes.items():
                self._raise(name, modseq)
                self._pending[name] = max(modseq, self._pending.get(name, 0))
            if self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_loop, name="sealmail-notify", daemon=True
                )
                self._sender.start()
        self._wake_sender.set()

    def _raise(self, name: str, modseq: int) -> None:
        if modseq > self._known.get(name, 0):
            self._known[name] = modseq

    def _send_loop(self) -> None:
        while not self._closed.is_set():
            self._wake_sender.wait()
            self._wake_sender.clear()
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                continue
            try:
                self._send(payloads(pending))
            except Exception as exc:
                log.warning("change notification not sent (%s); nodes learn of it by polling",
                            exc)

    # -- what IDLE calls --------------------------------------------------------------------

    def changed(self, name: str, highestmodseq: int) -> bool:
        """Whether `name` changed since a session saw it at `highestmodseq`, from memory."""
        self._start_listening()
        with self._lock:
            self._watched[name] = self._clock()
            return self._known.get(name, 0) > highestmodseq

    def _start_listening(self) -> None:
        if self._listener is not None:
            return
        with self._lock:
            if self._listener is None and not self._closed.is_set():
                self._listener = threading.Thread(
                    target=self._listen_loop, name="sealmail-listen", daemon=True
                )
                self._listener.start()

    def _listen_loop(self) -> None:
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True,
                                     application_name=APPLICATION_NAME) as conn:
                    conn.execute(f"LISTEN {CHANNEL}".encode())
                    self.listening.set()
                    self._listen(conn)
            except psycopg.Error as exc:
                if not self._closed.is_set():
                    log.warning("change notifications: %s; polling every %gs meanwhile",
                                str(exc).strip(), self.poll_interval)
            finally:
                self.listening.clear()
            self._closed.wait(_RECONNECT_SECONDS)

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        due = 0.0  # poll at once: what changed while nobody listened
        while not self._closed.is_set():
            now = self._clock()
            if now >= due:
                self._poll(conn)
                due = now + self.poll_interval
            # At most a second per wait, so close() is noticed soon.
            for note in conn.notifies(timeout=min(1.0, max(0.0, due - now))):
                self._apply(parse_payload(note.payload))

    def _apply(self, changes: Mapping[str, int]) -> None:
        with self._lock:
            for name, modseq in changes.items():
                self._raise(name, modseq)

    def _poll(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """The backstop: the real highestmodseq of every mailbox watched lately."""
        cutoff = self._clock() - _WATCH_SECONDS
        with self._lock:
            for name in [n for n, when in self._watched.items() if when < cutoff]:
                del self._watched[name]
                self._known.pop(name, None)
            names = list(self._watched)
        if not names:
            return
        rows = conn.execute(
            "SELECT name, highestmodseq FROM mailboxes WHERE name = ANY(%s)", (names,)
        ).fetchall()
        found = {str(name): int(str(modseq)) for name, modseq in rows}
        with self._lock:
            for name in names:
                modseq = found.get(name, GONE)
                if name not in found or modseq > self._known.get(name, 0):
                    self._known[name] = modseq
                elif name in found and self._known.get(name) == GONE:
                    self._known[name] = modseq  # made again since
            self.polls += 1

    def close(self) -> None:
        self._closed.set()
        self._wake_sender.set()

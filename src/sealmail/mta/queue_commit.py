"""The thread that makes received messages durable in the queue for an event loop (smtpd).

The queue itself (`sealmail.mta.queue`) is files and blocking calls with no event loop; this is
the MTA's I/O side of it: one thread per receiving process, batches of messages per fsync, and
the loop woken once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, SimpleQueue

from sealmail.mta.queue import Envelope, MessageWriter, Queue, QueueError, QueueName

log = logging.getLogger("sealmail.mta.queue")


class CommitThread:
    """One thread per receiving process that makes messages durable, a batch at a time.

    The event loop does a message's CPU work itself (cleanup, rendering the queue file) and
    hands the finished file here; the thread writes and fsyncs every file that is waiting,
    renames them into their queue, fsyncs each directory once for the batch, and wakes the
    loop once for all of them. A thread hop per message (asyncio.to_thread, with the GIL passed
    back and forth during the cleanup) cost the SMTP server more CPU than the disk did.

    It also creates the temporary files of the next messages ahead (`reserve` takes one): a
    file's creation waits for the journal while another fsync runs, which stalled the loop.
    """

    SPARES = 8

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._jobs: SimpleQueue[_Commit | None] = SimpleQueue()
        self._spares: deque[MessageWriter] = deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def reserve(self) -> MessageWriter:
        """A new message's writer (and so its queue id), a spare one when there is one."""
        try:
            return self._spares.popleft()
        except IndexError:
            return self.queue.new_message()

    async def commit(
        self, writer: MessageWriter, envelope: Envelope, target: QueueName = QueueName.INCOMING
    ) -> str:
        """Returns the queue id once the file and its directory entry are on disk; an OSError
        leaves nothing behind. Not cancellable: the file may still become durable."""
        data = writer.render(envelope)
        loop = asyncio.get_running_loop()
        job = _Commit(writer, data, target, loop, loop.create_future())
        self._start()
        self._jobs.put(job)
        await asyncio.shield(job.done)
        return writer.queue_id

    def close(self) -> None:
        """Let the thread end after the commits handed to it so far; drop the spares."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        while self._spares:
            self._spares.popleft().abort()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="queue-commit",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch, ending = [first], False
            while not ending:
                try:
                    job = self._jobs.get_nowait()
                except Empty:
                    break
                if job is None:
                    ending = True  # after this batch
                else:
                    batch.append(job)
            self._store(batch)
            if ending:
                return
            self._make_spares()

    def _make_spares(self) -> None:
        try:
            while len(self._spares) < self.SPARES:
                self._spares.append(self.queue.new_message())
        except (OSError, QueueError) as exc:  # reserve() makes its own; the next batch retries
            log.warning("cannot create spare queue files: %s", exc)

    @staticmethod
    def _store(batch: list[_Commit]) -> None:
        failures: dict[int, BaseException] = {}
        directories: dict[Path, tuple[Queue, list[int]]] = {}
        for number, job in enumerate(batch):
            try:
                final = job.writer.store(job.data, job.target)
            except (OSError, QueueError) as exc:
                failures[number] = exc
                job.writer.abort()
                continue
            directories.setdefault(final.parent, (job.writer.queue, []))[1].append(number)
        for directory, (queue, numbers) in directories.items():
            try:
                queue.sync_directory(directory)
            except OSError as exc:
                for number in numbers:
                    failures[number] = exc
        for number, job in enumerate(batch):
            if number not in failures:
                job.writer.committed = True
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for number, job in enumerate(batch):
            by_loop.setdefault(job.loop, []).append((job.done, failures.get(number)))
        for loop, outcomes in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, outcomes)


_Outcome = tuple["asyncio.Future[None]", BaseException | None]


@dataclass(slots=True)
class _Commit:
    writer: MessageWriter
    data: bytes
    target: QueueName
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


def _settle(outcomes: list[_Outcome]) -> None:
    for done, failure in outcomes:
        if done.cancelled():
            continue
        if failure is None:
            done.set_result(None)
        else:
            done.set_exception(failure)

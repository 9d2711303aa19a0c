"""The hard links of a delivery's copies into their mailbox directories (store.disk.commit).

A link's name is its uid, drawn under SQLite's write lock, so the links are made inside the
group commit's locked span (the commit turn, then the write lock: store.locks.CommitTurn), and
under `sealmail master` the other lmtpd waits for them. At 50 recipients they were a third of
that span's CPU (~17 us a link on ext4: a directory insert each; docs/benchmarks.md, lock18).
A big batch's links are made by a thread of their own (`Linker`) while the committing thread
writes the batch's index rows (the two release the GIL in their system calls and SQLite steps),
and the commit waits for both before its directory fsyncs and its COMMIT: every link is still
made before the COMMIT names it, as before, so a crash leaves the same debris above uidnext.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence

PARALLEL_LINKS = 16  # copies in a batch from which its links are the Linker's: fewer cost less
# than the hand-off (a one-recipient batch links in ~20 us)

Pairs = Sequence[tuple[str, str]]  # (stage file, the copy's path in its mailbox directory)


def link(stage: str, path: str) -> None:
    """Link `stage` at `path`; debris there (a delivery that never committed: uid >= uidnext,
    which the caller's write lock guarantees) is replaced."""
    try:
        os.link(stage, path)
    except FileExistsError:
        os.unlink(path)
        os.link(stage, path)


def link_all(pairs: Pairs) -> OSError | None:
    """Every link of `pairs` in order; the first error stops them and is returned."""
    for stage, path in pairs:
        try:
            link(stage, path)
        except OSError as exc:
            return exc
    return None


class Links:
    """Links under way in the Linker's thread."""

    __slots__ = ("_done", "error")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()  # released once the links are made (or failed)
        self.error: OSError | None = None

    def made(self, error: OSError | None) -> None:
        self.error = error
        self._done.release()

    def finish(self) -> None:
        """Wait for the links; their first error is raised. Always called before the locked
        span ends: no link of a rolled-back batch may be made after its cleanup."""
        self._done.acquire()
        if self.error is not None:
            raise self.error


class Linker:
    """One thread per process that makes big batches' links (see the top); started on first
    use, and again in a forked child (threads do not fork)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Pairs, Links] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid = 0

    def start(self, pairs: Pairs) -> Links:
        """`pairs` linked in the thread; the caller calls `finish()` on what this returns.
        A thread that cannot start leaves them to the caller's thread, done here."""
        links = Links()
        if not self._running():
            links.made(link_all(pairs))
            return links
        self._jobs.put((pairs, links))
        return links

    def _running(self) -> bool:
        with self._lock:
            if self._pid == os.getpid():
                return True
            self._jobs = queue.SimpleQueue()  # a forked child's own
            thread = threading.Thread(target=self._run, args=(self._jobs,), name="link",
                                      daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't start new thread": the next batch tries again
                return False
            self._pid = os.getpid()
            return True

    @staticmethod
    def _run(jobs: queue.SimpleQueue[tuple[Pairs, Links] | None]) -> None:
        while (job := jobs.get()) is not None:
            pairs, links = job
            try:
                error = link_all(pairs)
            except Exception as exc:  # a bug, not a link's OSError: the commit still ends
                error = OSError(f"links failed: {exc!r}")
            links.made(error)

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._jobs.put(None)
            self._pid = 0

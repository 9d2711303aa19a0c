"""IdleWatch: one timer per service looks at the mailbox of every session in IDLE.

An idling session used to wake on its own every `idle_poll_interval` (0.25 s): its read cut
short by its timer, a look at its mailbox in a worker thread, the read again. 200 sessions
idling on mailboxes where nothing happened cost the two workers 450-493 us of CPU per session
and second, four hops to a thread and four cancelled reads per session and second for nothing.

Now an idling session waits on its read for the whole autologout time, and the service's one
timer looks at each idling session's mailbox every interval (`ImapSession.has_news`, one index
row, nothing read at all when nothing was committed since the last look): on the loop where
quick commands may read there (`ImapService.quick_commands`), else all of them in one hop to a
thread. A session with news has its read cut short (`ReadDeadline.reschedule`) and sends the
news itself. News is a state, not an event: what arrives while its session is busy sending
earlier news is seen at the next tick, so nothing is missed, and it is heard within one interval
as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from sealmail.server.imapd.threads import in_thread

if TYPE_CHECKING:
    from sealmail.server.imapd.connection import ImapConnection

__all__ = ["IdleWatch"]

log = logging.getLogger("sealmail.imapd")


class IdleWatch:
    """The sessions of one service that are in IDLE, and the timer that looks at them."""

    def __init__(self, interval: float, executor: Executor, on_loop: bool) -> None:
        self._interval = interval
        self._executor = executor
        self._on_loop = on_loop
        self._idlers: dict[ImapConnection, None] = {}  # an ordered set
        self._task: asyncio.Task[None] | None = None

    def add(self, idler: ImapConnection) -> None:
        """`idler` is idling: look at its mailbox from the next tick on."""
        self._idlers[idler] = None
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def discard(self, idler: ImapConnection) -> None:
        self._idlers.pop(idler, None)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._idlers:
                await asyncio.sleep(self._interval)
                idlers = list(self._idlers)
                if self._on_loop:
                    woken = _with_news(idlers)
                else:
                    woken = await in_thread(self._executor, _with_news, idlers)
                now = loop.time()
                for idler in woken:
                    if idler in self._idlers:
                        idler.reads.reschedule(now)
        finally:
            self._task = None


def _with_news(idlers: Sequence[ImapConnection]) -> list[ImapConnection]:
    """Those of `idlers` whose mailbox has news; one whose look fails is woken too, so that its
    own `poll` meets the failure and the session reports it."""
    woken = []
    for idler in idlers:
        session = idler.session
        try:
            if session is not None and session.has_news():
                woken.append(idler)
        except Exception:
            log.exception("%s: cannot look at the mailbox while idling", idler.session_id)
            woken.append(idler)
    return woken

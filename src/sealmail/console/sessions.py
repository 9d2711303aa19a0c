"""Console sessions: who is logged in, and the CSRF token each form must carry back.

A session is a random token in a cookie (HttpOnly, SameSite=Strict, Secure over TLS) mapped, in
the console's memory only, to the admin and a second random token that every POST form carries
(the synchronizer token pattern): a page of another site can make a browser send the cookie, but
cannot read the form's token. The login form, before any session, gets its own token in a
short-lived cookie and in the form (double submit). Sessions end after `idle` seconds unused, at
`lifetime` at the latest, and at logout; a restart of the console ends them all.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "sealmail_console"
LOGIN_COOKIE = "sealmail_console_login"


@dataclass(slots=True)
class Session:
    user: str
    csrf: str
    created: float
    used: float


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens (an empty one never matches)."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


class Sessions:
    def __init__(self, idle: float = 1800.0, lifetime: float = 12 * 3600.0,
                 capacity: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self.capacity = capacity
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, user: str) -> tuple[str, Session]:
        """A new session for `user`: its cookie token and the session."""
        now = self.clock()
        token = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), now, now)
        self._sessions[token] = session
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)  # the oldest session goes first
        return token, session

    def find(self, token: str) -> Session | None:
        session = self._sessions.get(token) if token else None
        if session is None:
            return None
        now = self.clock()
        if now - session.used > self.idle or now - session.created > self.lifetime:
            del self._sessions[token]
            return None
        session.used = now
        self._sessions.move_to_end(token)
        return session

    def close(self, token: str) -> None:
        self._sessions.pop(token, None)

    def __len__(self) -> int:
        return len(self._sessions)

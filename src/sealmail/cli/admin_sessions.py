"""`sealmail admin who [-u USER]` and `sealmail admin kick -u USER`: doveadm's who and kick for
the store's live IMAP and POP3 sessions, from the registry the workers keep (sealmail.sessions).

`who` prints one line per session: user, service, protocol, remote address, pid, session id,
login time and the selected mailbox, named as IMAP shows it to that user (the registry holds the
store's internal name: `user.alice.Sent` is alice's `INBOX.Sent`, or `Sent` with altnamespace).
`kick` asks each worker holding one of the user's sessions to end it (IMAP `* BYE`, POP3 `-ERR`,
as Dovecot's kick), waits until they are gone, and prints doveadm's `kicked connections from the
following users:` list.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sealmail.imap.namespace import UserNamespace
from sealmail.sessions import LiveSession, kick, list_sessions
from sealmail.store.names import user_inbox

HEADINGS = ("username", "service", "proto", "remote", "pid", "session", "login", "mailbox")
KICK_WAIT = 10.0


def _external(session: LiveSession, separator: str, alternate: bool) -> str:
    """The session's mailbox as its user sees it over IMAP (UTF-8, as RFC 6855 shows it)."""
    local, _, domain = session.user.partition("@")
    view = UserNamespace(user_inbox(local, domain or None), separator, alternate)
    return view.to_external(session.mailbox, utf8=True)


def _row(session: LiveSession, separator: str, alternate: bool) -> tuple[str, ...]:
    login = datetime.fromtimestamp(session.login_time).strftime("%Y-%m-%d %H:%M:%S")
    mailbox = _external(session, separator, alternate) if session.mailbox else "-"
    return (session.user, session.service, session.protocol, session.remote or "-",
            str(session.pid), session.session_id, login, mailbox)


def who(directory: Path, user: str | None, out: Callable[[str], None], separator: str = ".",
        alternate: bool = False) -> int:
    """`separator` and `alternate`: imapd.conf's hierarchy separator and altnamespace."""
    rows = [HEADINGS, *(_row(s, separator, alternate) for s in list_sessions(directory, user))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADINGS))]
    for row in rows:
        out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def kick_user(directory: Path, user: str, out: Callable[[str], None],
              err: Callable[[str], None]) -> int:
    asked = kick(directory, user)
    if not asked:
        err(f"sealmail admin: kick: no sessions of {user}")
        return 1
    ids = {s.session_id for s in asked}
    deadline = time.monotonic() + KICK_WAIT
    while time.monotonic() < deadline:
        if not ids & {s.session_id for s in list_sessions(directory, user)}:
            break
        time.sleep(0.05)
    else:
        err(f"sealmail admin: kick: {user}: sessions still open after {KICK_WAIT:.0f}s")
        return 1
    out("kicked connections from the following users:")
    out(f"{user} ({len(asked)})")
    return 0

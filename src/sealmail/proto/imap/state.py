"""The IMAP connection's states as data (RFC 9051 3, figure "Flow of IMAP4 Connection").

    (connection) --greeting OK--> NOT_AUTHENTICATED --LOGIN/AUTHENTICATE OK--> AUTHENTICATED
    (connection) --PREAUTH-----------------------------------------------> AUTHENTICATED
    AUTHENTICATED --SELECT/EXAMINE OK--> SELECTED --CLOSE/UNSELECT OK--> AUTHENTICATED
    SELECTED --SELECT/EXAMINE NO--> AUTHENTICATED   (RFC 9051 6.3.2: a failed SELECT closes
                                                     the mailbox that was selected)
    (any) --LOGOUT OK, BYE, too many bad commands--> LOGOUT

Each command class declares the states it is legal in (`Command.states`); the connection checks
that once, before the host sees the command. `TRANSITIONS` says which tagged result of which
command moves the connection: the host never sets a state by hand, it only answers commands.
"""

from __future__ import annotations

import enum

__all__ = ["ANY", "AUTHENTICATED_OR_SELECTED", "TRANSITIONS", "ConnectionState", "next_state"]


class ConnectionState(enum.Enum):
    NOT_AUTHENTICATED = enum.auto()
    AUTHENTICATED = enum.auto()
    SELECTED = enum.auto()
    LOGOUT = enum.auto()


_S = ConnectionState
ANY = frozenset({_S.NOT_AUTHENTICATED, _S.AUTHENTICATED, _S.SELECTED})
AUTHENTICATED_OR_SELECTED = frozenset({_S.AUTHENTICATED, _S.SELECTED})

# (command name, tagged status) -> state after; a missing entry means "no change".
TRANSITIONS: dict[tuple[str, str], ConnectionState] = {
    ("LOGIN", "OK"): _S.AUTHENTICATED,
    ("AUTHENTICATE", "OK"): _S.AUTHENTICATED,
    ("SELECT", "OK"): _S.SELECTED,
    ("EXAMINE", "OK"): _S.SELECTED,
    ("SELECT", "NO"): _S.AUTHENTICATED,
    ("EXAMINE", "NO"): _S.AUTHENTICATED,
    ("CLOSE", "OK"): _S.AUTHENTICATED,
    ("UNSELECT", "OK"): _S.AUTHENTICATED,
    ("LOGOUT", "OK"): _S.LOGOUT,
}


def next_state(state: ConnectionState, command: str, status: str) -> ConnectionState:
    """The state after `command` got the tagged `status` (OK / NO / BAD) in `state`."""
    if state is _S.LOGOUT:
        return state  # BYE was sent: the tagged reply to LOGOUT (or any) changes nothing
    return TRANSITIONS.get((command, status), state)

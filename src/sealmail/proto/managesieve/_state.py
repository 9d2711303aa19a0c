"""The ManageSieve session as data: states, commands, their arguments and where they are legal.

Story of a session (RFC 5804 sections 1.7, 2):

    greeting (capabilities, OK)
    NOT_AUTHENTICATED --AUTHENTICATE--> AUTH (SASL strings) --OK--> AUTHENTICATED
        |   \\                               \\--NO, "*" cancel--> NOT_AUTHENTICATED
        |    \\--STARTTLS OK--> TLS_WAIT --tls_started(): capabilities, OK--> NOT_AUTHENTICATED
        \\--LOGOUT / BYE / end of stream--> CLOSED
    AUTHENTICATED --UNAUTHENTICATE--> NOT_AUTHENTICATED;  --LOGOUT--> CLOSED

`LEGAL` says, for each command, the states where it may run, and `ARGUMENTS` the shape of its
arguments; the engine checks both once before a command's own code runs.
"""

from __future__ import annotations

import enum

__all__ = ["ARGUMENTS", "LEGAL", "Argument", "Command", "SessionState"]


class SessionState(enum.Enum):
    NOT_AUTHENTICATED = enum.auto()
    AUTH = enum.auto()  # a SASL exchange runs: each client line is one base64 string
    TLS_WAIT = enum.auto()  # OK sent to STARTTLS; the driver does the handshake
    AUTHENTICATED = enum.auto()
    CLOSED = enum.auto()


class Command(enum.Enum):
    AUTHENTICATE = "AUTHENTICATE"
    STARTTLS = "STARTTLS"
    LOGOUT = "LOGOUT"
    CAPABILITY = "CAPABILITY"
    HAVESPACE = "HAVESPACE"
    PUTSCRIPT = "PUTSCRIPT"
    LISTSCRIPTS = "LISTSCRIPTS"
    SETACTIVE = "SETACTIVE"
    GETSCRIPT = "GETSCRIPT"
    DELETESCRIPT = "DELETESCRIPT"
    RENAMESCRIPT = "RENAMESCRIPT"
    CHECKSCRIPT = "CHECKSCRIPT"
    NOOP = "NOOP"
    UNAUTHENTICATE = "UNAUTHENTICATE"


class Argument(enum.Enum):
    STRING = enum.auto()
    NUMBER = enum.auto()
    OPTIONAL_STRING = enum.auto()  # may be left out; only last in a list


_S = SessionState
_ANY = frozenset({_S.NOT_AUTHENTICATED, _S.AUTHENTICATED})
_BEFORE = frozenset({_S.NOT_AUTHENTICATED})
_AFTER = frozenset({_S.AUTHENTICATED})

LEGAL: dict[Command, frozenset[SessionState]] = {
    Command.AUTHENTICATE: _BEFORE,
    # RFC 5804 2.2: STARTTLS is for the non-authenticated state.
    Command.STARTTLS: _BEFORE,
    Command.LOGOUT: _ANY,
    Command.CAPABILITY: _ANY,
    Command.NOOP: _ANY,
    Command.HAVESPACE: _AFTER,
    Command.PUTSCRIPT: _AFTER,
    Command.LISTSCRIPTS: _AFTER,
    Command.SETACTIVE: _AFTER,
    Command.GETSCRIPT: _AFTER,
    Command.DELETESCRIPT: _AFTER,
    Command.RENAMESCRIPT: _AFTER,
    Command.CHECKSCRIPT: _AFTER,
    Command.UNAUTHENTICATE: _AFTER,
}

_A = Argument
ARGUMENTS: dict[Command, tuple[Argument, ...]] = {
    Command.AUTHENTICATE: (_A.STRING, _A.OPTIONAL_STRING),  # auth-type [SP initial response]
    Command.STARTTLS: (),
    Command.LOGOUT: (),
    Command.CAPABILITY: (),
    Command.HAVESPACE: (_A.STRING, _A.NUMBER),
    Command.PUTSCRIPT: (_A.STRING, _A.STRING),
    Command.LISTSCRIPTS: (),
    Command.SETACTIVE: (_A.STRING,),
    Command.GETSCRIPT: (_A.STRING,),
    Command.DELETESCRIPT: (_A.STRING,),
    Command.RENAMESCRIPT: (_A.STRING, _A.STRING),
    Command.CHECKSCRIPT: (_A.STRING,),
    Command.NOOP: (_A.OPTIONAL_STRING,),
    Command.UNAUTHENTICATE: (),
}

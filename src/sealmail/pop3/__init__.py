"""POP3 glue: between the sans-I/O core (sealmail.proto.pop3) and the store.

The maildrop as one POP3 session holds it (`LockedMaildrop`: the INBOX under the POP lock,
listed at login, changed only at QUIT), and the one mapping from store errors to POP3 replies
(`errors`). The asyncio daemon is sealmail.server.pop3d.
"""

from sealmail.pop3.errors import maildrop_error, message_error, update_error
from sealmail.pop3.maildrop import LockedMaildrop, PopLock, TooSoon

__all__ = [
    "LockedMaildrop",
    "PopLock",
    "TooSoon",
    "maildrop_error",
    "message_error",
    "update_error",
]

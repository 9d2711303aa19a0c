"""IMAP session logic: between the sans-I/O core (sealmail.proto.imap) and the store.

One module per command family (mailboxes, messages, fetching, searching, access), the selected
mailbox view (selected), names as users see them (namespace), and the one mapping from store
errors to IMAP replies (errors). The asyncio daemon is sealmail.server.imapd.
"""

from sealmail.imap.errors import CommandFailed, store_failure
from sealmail.imap.namespace import UserNamespace
from sealmail.imap.selected import MailboxGone, SelectedMailbox, SyncOptions
from sealmail.imap.session import ENABLEABLE, HANDLERS, ImapSession

__all__ = [
    "ENABLEABLE",
    "HANDLERS",
    "CommandFailed",
    "ImapSession",
    "MailboxGone",
    "SelectedMailbox",
    "SyncOptions",
    "UserNamespace",
    "store_failure",
]

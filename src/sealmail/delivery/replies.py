"""The ONE table from store and delivery failures to LMTP replies (Cyrus's imap/lmtp_err.et).

lmtpd and deliver both answer through `reply_for`; nothing else in sealmail writes an LMTP failure
reply for a store error.
"""

from __future__ import annotations

from functools import lru_cache

from sealmail.proto.smtp import Reply
from sealmail.store import errors

RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")

_TABLE: dict[type[errors.StoreError], Reply] = {
    errors.MailboxNotFound: Reply(550, "5.1.1", "Mailbox unknown"),
    errors.InvalidMailboxName: Reply(550, "5.1.1", "Mailbox unknown"),
    errors.PermissionDenied: Reply(550, "5.7.1", "Permission denied"),
    errors.OverQuota: Reply(452, "4.2.2", "Over quota"),
    errors.MessageTooLarge: Reply(552, "5.2.3", "Message size exceeds fixed maximum message size"),
    errors.InvalidMessage: Reply(554, "5.6.0", "Message contains invalid header"),
    # RFC 5321 4.2.2's 452 "insufficient system storage", RFC 3463 X.3.1 "mail system full"
    # (not X.2.2, the recipient's own mailbox): Dovecot's answer too; the MTA retries.
    errors.DiskFull: Reply(452, "4.3.1", "Insufficient system storage"),
    errors.MailboxBusy: Reply(451, "4.4.5", "Mailbox busy, try again later"),
    errors.MailboxCorrupt: Reply(451, "4.3.0", "Mailbox needs repair, try again later"),
}

@lru_cache(maxsize=1024)
def delivered(session_id: str, *, duplicate: bool = False) -> Reply:
    """The 250 for a delivered recipient names lmtpd's session, as Cyrus's does: the MTA logs
    the reply (`status=sent (250 2.1.5 Ok SESSIONID=<...>)`), which joins its log to the store's.
    One object per session (replies are immutable): 50 recipients' 250s are built and checked
    once, and the LMTP core renders a reply answered again only once (proto.smtp.server)."""
    text = "Ok (duplicate suppressed)" if duplicate else "Ok"
    return Reply(250, "2.1.5", f"{text} SESSIONID=<{session_id}>")


OVER_QUOTA_PERMANENT = Reply(552, "5.2.2", "Over quota")
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error, try again later")


def reply_for(error: BaseException, *, over_quota_permanent: bool = False) -> Reply:
    """The LMTP reply for a failed recipient; the error's own text refines the default where set."""
    if isinstance(error, errors.OverQuota) and over_quota_permanent:
        return OVER_QUOTA_PERMANENT
    for kind in type(error).__mro__:
        reply = _TABLE.get(kind)
        if reply is not None:
            if isinstance(error, errors.InvalidMessage) and str(error):
                return Reply(reply.code, reply.enhanced, str(error))
            return reply
    return INTERNAL_ERROR

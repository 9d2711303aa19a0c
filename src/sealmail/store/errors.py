"""Protocol-neutral store errors (after Dovecot's `enum mail_error`).

The store says *what* went wrong; each protocol maps these to its own reply in exactly one place
(LMTP: sealmail.delivery.replies; IMAP and POP3 in their own cores). `temporary` tells a delivery
agent whether the sender should retry.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises on purpose."""

    temporary: bool = True


class MailboxNotFound(StoreError):
    temporary = False


class MailboxExists(StoreError):
    temporary = False


class InvalidMailboxName(StoreError):
    temporary = False


class PermissionDenied(StoreError):
    """The identity lacks the ACL right the operation needs."""

    temporary = False


class OverQuota(StoreError):
    """A quota root would exceed its storage or message limit."""

    temporary = True


class MessageTooLarge(StoreError):
    temporary = False


class InvalidMessage(StoreError):
    """The message cannot be stored as it is (NUL bytes, bare LF, broken header block)."""

    temporary = False


class DiskFull(StoreError):
    """ENOSPC/EDQUOT on a partition."""

    temporary = True


class MailboxBusy(StoreError):
    """A lock or a concurrency slot could not be had in time; try again later."""

    temporary = True


class MailboxCorrupt(StoreError):
    """The index and the files disagree; `sealmail reconstruct` repairs it."""

    temporary = True


class InvalidRights(StoreError):
    """A rights string or an ACL identifier is malformed (IMAP answers BAD)."""

    temporary = False


class InvalidQuota(StoreError):
    """A quota limit that is not a non-negative whole number."""

    temporary = False


class PartitionNotFound(StoreError):
    """A partition name with no `partition-NAME` in imapd.conf."""

    temporary = False


class NoSuchMessage(StoreError):
    """No message with that UID in the mailbox (it was never there or was expunged)."""

    temporary = False


class StoreUnavailable(StoreError):
    """The store's database cannot be reached or answered with an error; try again later."""

    temporary = True

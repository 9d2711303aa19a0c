"""Delivery agents of the MTA: what the queue manager hands a message to, per master.cf transport.

The queue manager (sealmail.mta.qmgr) builds one `DeliveryRequest` per (transport, nexthop,
recipient batch) and awaits the agent's `deliver(request)`; the agent returns one
`RecipientResult` per recipient, in order, and never raises for a delivery failure (an exception
is a bug, and the queue manager defers every recipient with 4.3.0 when it sees one).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from sealmail.mta.config import MainConfig
from sealmail.mta.queue import MessageContent


class Status(enum.Enum):
    SENT = "sent"  # delivered: the recipient is done
    DEFERRED = "deferred"  # try again later (4xx, connection failure, timeout)
    BOUNCED = "bounced"  # permanent failure (5xx): a DSN goes to the sender


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    address: str  # the recipient to deliver to (after virtual_alias_maps etc.)
    original: str  # as it entered the queue (ORCPT, original_recipient)
    index: int  # its position in the queue file, so results go back to the right entry
    notify: tuple[str, ...] = ()  # DSN NOTIFY (RFC 3461), empty = default


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    queue_id: str
    sender: str  # "" for the null sender
    recipients: tuple[QueuedRecipient, ...]
    transport: str  # master.cf service name: "lmtp", "cyrus", "cyrus-inet", "smtp", ...
    nexthop: str  # as the routing decided: "unix:/path", "inet:host:port", "[host]:port", ...
    message: MessageContent  # where the content lies (headers + body, CRLF)
    size: int
    arrival_time: float
    # main.cf with this transport's master.cf -o overrides (MasterService.effective(main)).
    settings: MainConfig
    smtputf8: bool = False  # the sender declared SMTPUTF8 (RFC 6531; agents/smtputf8.py)
    # The queue manager lets the session stay open for the destination's next delivery
    # (Postfix's DEL_REQ_FLAG_CONN_STORE, *_connection_cache_on_demand; mta/concurrency.py).
    cache_session: bool = True


@dataclass(frozen=True, slots=True)
class RecipientResult:
    index: int  # QueuedRecipient.index
    status: Status
    dsn: str  # enhanced status code, e.g. "2.0.0", "4.4.1", "5.1.1"
    text: str  # the remote reply or our explanation, e.g. "250 2.1.5 Ok"
    relay: str  # e.g. "lmtp.example.com[127.0.0.1]:2003", "/var/imap/socket/lmtp", "none"
    # The destination failed, not this recipient (no connection, a broken session): Postfix's
    # "hop status", which the queue manager's concurrency scheduler counts against the
    # destination (sealmail.mta.concurrency).
    hop_failure: bool = False


class DeliveryAgent(Protocol):
    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]: ...

    async def close(self) -> None: ...


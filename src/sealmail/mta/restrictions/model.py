"""What the restriction engine reasons about: the stages, what is known of the session, and
what a check can answer. Pure data; no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "CLIENT",
    "DATA",
    "END_OF_DATA",
    "HELO",
    "RECIPIENT",
    "RELAY",
    "SENDER",
    "STAGES",
    "ClientNames",
    "Deferral",
    "Facts",
    "MessageActions",
    "NameStatus",
    "Stage",
    "Status",
]


class Status(enum.IntEnum):
    """A check's answer, as Postfix's SMTPD_CHECK_*: no decision, permit, reject."""

    DUNNO = 0
    OK = 1
    REJECT = 2


@dataclass(frozen=True, slots=True)
class Stage:
    """One smtpd_*_restrictions list and how its refusals read."""

    parameter: str  # smtpd_client_restrictions
    reply_class: str  # "Client host": "<name>: Client host rejected: ..."
    default_access: str | None  # the check a bare type:table stands for in this list


CLIENT = Stage("smtpd_client_restrictions", "Client host", "check_client_access")
HELO = Stage("smtpd_helo_restrictions", "Helo command", "check_helo_access")
SENDER = Stage("smtpd_sender_restrictions", "Sender address", "check_sender_access")
RELAY = Stage("smtpd_relay_restrictions", "Recipient address", "check_recipient_access")
RECIPIENT = Stage("smtpd_recipient_restrictions", "Recipient address", "check_recipient_access")
DATA = Stage("smtpd_data_restrictions", "Data command", None)
END_OF_DATA = Stage("smtpd_end_of_data_restrictions", "End-of-data", None)
STAGES = (CLIENT, HELO, SENDER, RELAY, RECIPIENT, DATA, END_OF_DATA)


class NameStatus(enum.Enum):
    """How a client name lookup went (Postfix's SMTPD_PEER_CODE_*)."""

    OK = "ok"
    TEMPORARY = "temporary"  # the DNS failed: ask again later (450)
    PERMANENT = "permanent"  # no PTR record, or no such name
    FORGED = "forged"  # the PTR name does not resolve back to the address


@dataclass(frozen=True, slots=True)
class ClientNames:
    """The client's names: `name` is the verified one (PTR whose A/AAAA has the address),
    `reverse_name` the PTR name alone; "unknown" when there is none."""

    name: str = "unknown"
    name_status: NameStatus = NameStatus.PERMANENT
    reverse_name: str = "unknown"
    reverse_status: NameStatus = NameStatus.PERMANENT


@dataclass
class Facts:
    """What smtpd knows of the session when a stage is evaluated; smtpd keeps it current."""

    client_address: str = ""  # "" for a local (UNIX-socket) client
    client_port: str = ""
    server_address: str = ""
    server_port: str = ""
    names: ClientNames = field(default_factory=ClientNames)
    helo: str | None = None  # None before HELO/EHLO
    sender: str | None = None  # None outside a transaction, "" for <>
    recipient: str | None = None  # only while RCPT is checked
    recipient_count: int = 0  # accepted recipients of the transaction
    protocol: str = "SMTP"
    where: str = "CONNECT"  # the command under way, as Postfix logs it
    queue_id: str = ""
    instance: str = ""  # one per transaction, for policy servers that cache per message
    sasl_method: str = ""
    sasl_username: str = ""
    size: int = 0  # MAIL's SIZE=, then the message's size at END-OF-MESSAGE
    tls_protocol: str = ""
    tls_cipher: str = ""
    tls_bits: int = 0
    ill_pipelining: bool = False  # the client sent ahead where it may not (RFC 2920)
    smtputf8: bool = False

    @property
    def namaddr(self) -> str:
        """`name[address]` as Postfix logs and quotes a client."""
        if not self.client_address:
            return "localhost[local]"
        return f"{self.names.name}[{self.client_address}]"


@dataclass(frozen=True, slots=True)
class Deferral:
    """A refusal kept for later by defer_if_permit / defer_if_reject."""

    error_class: str
    code: int
    dsn: str
    text: str


@dataclass
class MessageActions:
    """What access-table actions asked to do with the message (HOLD, DISCARD, ...)."""

    hold: str = ""  # the reason, when held
    discard: str = ""
    prepend: list[str] = field(default_factory=list)  # header lines to add on top
    redirect: str = ""
    filter: str = ""  # transport:destination

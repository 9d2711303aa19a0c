"""The queue file format: the records a queue file holds, and how they are written and read.

Split from queue.py (issue 19: no module over ~800 lines). This module is pure data and bytes:
the envelope and recipient records, an attempt's result, where the content lies, and the
encoding described in queue.py's docstring (the header line, then E, R, content, L/A/W records),
with no directories, renames or fsyncs; queue.py keeps the queue directories, the ids and the
crash-safe moves, and re-exports these names.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MAGIC",
    "AttemptResult",
    "CorruptQueueFile",
    "Envelope",
    "MessageContent",
    "QueueError",
    "QueuedRecipientEntry",
    "RecipientRecord",
    "RecipientState",
    "Records",
    "parse_header",
    "parse_queue_file",
    "render_envelope",
    "render_queue_file",
]

MAGIC = "sealmail-queue 2"


class QueueError(Exception):
    """A queue operation failed (unreadable file, unknown queue id, bad directory)."""


class CorruptQueueFile(QueueError):
    """A queue file cannot be parsed; the queue manager moves it to corrupt/."""


class RecipientState(enum.Enum):
    """One byte in the queue file, overwritten in place when the recipient is done."""

    PENDING = "P"  # not yet delivered
    SENT = "S"  # delivered (or discarded): done
    BOUNCED = "B"  # failed for good; a non-delivery notice is still owed to the sender
    DONE = "D"  # failed for good and the notice is queued (or none was due): done

    @property
    def final(self) -> bool:
        return self in (RecipientState.SENT, RecipientState.DONE)


@dataclass(frozen=True, slots=True)
class RecipientRecord:
    """A recipient as it enters the queue."""

    address: str
    original: str = ""  # as the client gave it (before virtual_alias_maps); "" = same
    notify: tuple[str, ...] = ()  # DSN NOTIFY (RFC 3461 4.1)
    orcpt: str = ""  # DSN ORCPT (RFC 3461 4.2), as given

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "original": self.original or self.address,
            "notify": list(self.notify),
            "orcpt": self.orcpt,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecipientRecord:
        return cls(
            str(data["address"]),
            str(data.get("original") or data["address"]),
            tuple(str(n) for n in data.get("notify", ())),
            str(data.get("orcpt", "")),
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the queue keeps besides the content: sender, recipients and where mail came from."""

    sender: str  # "" for the null sender <>
    recipients: tuple[RecipientRecord, ...]
    arrival: float = 0.0
    size: int = 0  # octets of content
    client: str = ""  # "unknown[127.0.0.1]" or "local"
    protocol: str = ""  # ESMTP, ESMTPSA, SMTP, local
    helo: str = ""
    sasl_username: str = ""
    ret: str = ""  # DSN RET=FULL|HDRS (RFC 3461 4.3)
    envid: str = ""  # DSN ENVID (RFC 3461 4.4)
    is_bounce: bool = False  # a notice we made ourselves: bounce_queue_lifetime applies
    message_id: str = ""
    requeued_as: str = ""  # postsuper -r: the id pickup gave this file (see sealmail.mta.pickup)
    smtputf8: bool = False  # MAIL ... SMTPUTF8 (RFC 6531): the sender asked for it

    def to_json(self) -> dict[str, Any]:
        return {
            "sender": self.sender,
            "arrival": self.arrival,
            "size": self.size,
            "client": self.client,
            "protocol": self.protocol,
            "helo": self.helo,
            "sasl_username": self.sasl_username,
            "ret": self.ret,
            "envid": self.envid,
            "is_bounce": self.is_bounce,
            "message_id": self.message_id,
            **({"requeued_as": self.requeued_as} if self.requeued_as else {}),
            **({"smtputf8": True} if self.smtputf8 else {}),
        }


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """An `L` record: what happened to one recipient in one delivery attempt."""

    index: int
    status: str  # "sent", "deferred", "bounced", "expired"
    dsn: str
    text: str
    relay: str
    time: float

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status,
            "dsn": self.dsn,
            "text": self.text,
            "relay": self.relay,
            "time": self.time,
        }


@dataclass(slots=True)
class QueuedRecipientEntry:
    index: int
    record: RecipientRecord
    state: RecipientState
    offset: int  # file offset of the state byte
    last: AttemptResult | None = None


@dataclass(frozen=True, slots=True)
class MessageContent:
    """Where a queued message's content lies: a byte range of its queue file (or a whole file,
    length -1, for agents handed a message that is not in the queue)."""

    path: Path
    offset: int = 0
    length: int = -1

    def read(self) -> bytes:
        """The content, read whole: queue files are bounded by message_size_limit. Blocking."""
        with open(self.path, "rb") as handle:
            if self.offset:
                handle.seek(self.offset)
            return handle.read(self.length) if self.length >= 0 else handle.read()


def render_envelope(envelope: Envelope) -> bytes:
    """The E and R records of a new queue file (every recipient pending)."""
    lines = ["E " + json.dumps(envelope.to_json(), ensure_ascii=False)]
    for record in envelope.recipients:
        lines.append(
            f"R {RecipientState.PENDING.value} " + json.dumps(record.to_json(), ensure_ascii=False)
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_queue_file(envelope: Envelope, content: bytes) -> bytes:
    records = render_envelope(envelope)
    return f"{MAGIC} {len(records)} {len(content)}\n".encode() + records + content


def parse_header(line: bytes, queue_id: str = "?") -> tuple[int, int]:
    """(envelope octets, content octets) from a queue file's first line."""
    magic, _, sizes = line.rstrip(b"\n").rpartition(b" ")
    magic, _, records = magic.rpartition(b" ")
    if magic != MAGIC.encode() or not records.isdigit() or not sizes.isdigit():
        raise CorruptQueueFile(f"{queue_id}: not a sealmail queue file")
    return int(records), int(sizes)


@dataclass(slots=True)
class Records:
    """What a queue file's records say, as they are read."""

    queue_id: str
    envelope: dict[str, Any] | None = None
    recipients: list[QueuedRecipientEntry] = field(default_factory=list)
    attempts: int = 0
    warned: bool = False

    def read(self, data: bytes, base: int, *, appended: bool) -> None:
        """Records in `data`, which starts at file offset `base`. Envelope records come before
        the content, results and attempts after it."""
        offset = base
        for raw in data.splitlines(keepends=True):
            start = offset
            offset += len(raw)
            if not raw.endswith(b"\n"):
                if appended:
                    break  # a torn append at the end: ignore it, it was never complete
                raise CorruptQueueFile(f"{self.queue_id}: envelope records are cut short")
            line = raw[:-1].decode("utf-8", "replace")
            kind = line[:2]
            try:
                if kind == "E " and not appended:
                    self.envelope = json.loads(line[2:])
                elif kind == "R " and not appended:
                    state = RecipientState(line[2])
                    record = RecipientRecord.from_json(json.loads(line[4:]))
                    self.recipients.append(
                        QueuedRecipientEntry(len(self.recipients), record, state, start + 2)
                    )
                elif kind == "L " and appended:
                    item = json.loads(line[2:])
                    result = AttemptResult(
                        int(item["index"]),
                        str(item["status"]),
                        str(item["dsn"]),
                        str(item["text"]),
                        str(item["relay"]),
                        float(item["time"]),
                    )
                    if 0 <= result.index < len(self.recipients):
                        self.recipients[result.index].last = result
                elif kind == "A " and appended:
                    self.attempts += 1
                elif kind == "W " and appended:
                    self.warned = True
                else:
                    raise CorruptQueueFile(f"{self.queue_id}: unexpected record {line[:20]!r}")
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise CorruptQueueFile(
                    f"{self.queue_id}: bad record {line[:40]!r}: {exc}"
                ) from None

    def finish(self) -> tuple[Envelope, list[QueuedRecipientEntry], int]:
        data = self.envelope
        if data is None:
            raise CorruptQueueFile(f"{self.queue_id}: no envelope record")
        try:
            envelope = Envelope(
                sender=str(data["sender"]),
                recipients=tuple(r.record for r in self.recipients),
                arrival=float(data["arrival"]),
                size=int(data.get("size", 0)),
                client=str(data.get("client", "")),
                protocol=str(data.get("protocol", "")),
                helo=str(data.get("helo", "")),
                sasl_username=str(data.get("sasl_username", "")),
                ret=str(data.get("ret", "")),
                envid=str(data.get("envid", "")),
                is_bounce=bool(data.get("is_bounce", False)),
                message_id=str(data.get("message_id", "")),
                requeued_as=str(data.get("requeued_as", "")),
                smtputf8=bool(data.get("smtputf8", False)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptQueueFile(f"{self.queue_id}: bad envelope record: {exc}") from None
        return envelope, self.recipients, self.attempts


def parse_queue_file(
    data: bytes, queue_id: str = "?"
) -> tuple[Envelope, list[QueuedRecipientEntry], int, tuple[int, int]]:
    """A whole queue file: (envelope, recipients with their state offsets and last results,
    attempts, (content offset, content octets))."""
    first, newline, _ = data.partition(b"\n")
    if not newline:
        raise CorruptQueueFile(f"{queue_id}: not a sealmail queue file")
    records_size, content_size = parse_header(first, queue_id)
    base = len(first) + 1
    content_at = base + records_size
    if len(data) < content_at + content_size:
        raise CorruptQueueFile(f"{queue_id}: shorter than its header says")
    records = Records(queue_id)
    records.read(data[base:content_at], base, appended=False)
    records.read(data[content_at + content_size :], content_at + content_size, appended=True)
    envelope, recipients, attempts = records.finish()
    return envelope, recipients, attempts, (content_at, content_size)

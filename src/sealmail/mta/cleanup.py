"""cleanup: what happens to every message before it enters the queue.

As Postfix's cleanup(8): a Received: header goes on top; Message-ID:, Date: and From: are added
when missing (RFC 5322 3.6: Date and From are required, Message-ID should be present); Bcc:,
Resent-Bcc: and Content-Length: are dropped (Postfix 3's message_drop_headers); line ends become
CRLF; a message with more than hopcount_limit Received:/Delivered-To: headers is refused as a
loop. Recipients are rewritten through virtual_alias_maps (virtual(5)):

- keys tried: `user+ext@domain`, `user@domain`, for local domains `user+ext` and `user`, then
  `@domain`; a result is a list of addresses separated by commas and/or whitespace;
- results are looked up again (recursive). An address that maps to itself, or that appears among
  its own ancestors (a loop), is kept as it is and not expanded further;
- when a key without the extension matched and propagate_unmatched_extensions names `virtual`,
  the extension is appended to each result's local part (recipient_delimiter aware);
- more than virtual_alias_recursion_limit levels, more than virtual_alias_expansion_limit
  addresses from one recipient, or an address longer than virtual_alias_address_length_limit
  refuses the message with 451 4.3.0, as Postfix does ("try again later").

Duplicate final recipients are delivered once. Blocking-free and pure except for table lookups.
"""

from __future__ import annotations

import email.utils
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sealmail.config.schema import Option
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.queue import Envelope, MessageWriter, Queue, RecipientRecord
from sealmail.mta.routing import RoutingPolicy, split_address

_T = TypeVar("_T")
log = logging.getLogger("sealmail.mta.cleanup")

Lookup = Callable[[str], "str | None"]

_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_DROPPED = frozenset({b"bcc", b"resent-bcc", b"content-length"})
_HOP_HEADERS = frozenset({b"received", b"delivered-to"})


class CleanupError(Exception):
    """The message cannot be queued; `code` and `dsn` are the SMTP reply to give."""

    def __init__(self, code: int, dsn: str, text: str) -> None:
        super().__init__(f"{code} {dsn} {text}")
        self.code = code
        self.dsn = dsn
        self.text = text


@dataclass(frozen=True, slots=True)
class Submission:
    """A message as smtpd or pickup hands it to cleanup."""

    sender: str
    recipients: tuple[RecipientRecord, ...]
    content: bytes
    queue_id: str
    arrival: float
    protocol: str = "ESMTP"  # ESMTP, ESMTPS, ESMTPA, ESMTPSA, SMTP; "local" for pickup
    helo: str = ""
    client_name: str = "unknown"
    client_address: str = ""
    local_uid: int | None = None  # pickup: the posting user's uid
    sasl_username: str = ""
    received_at: float = 0.0  # the Received: header's time, when not the arrival (requeued mail)
    smtputf8: bool = False  # MAIL ... SMTPUTF8 (RFC 6531)


@dataclass(frozen=True, slots=True)
class CleanedMessage:
    content: bytes
    recipients: tuple[RecipientRecord, ...]
    message_id: str


@dataclass
class CleanupSettings:
    myhostname: str
    mail_name: str = "sealmail"
    hopcount_limit: int = 50
    recursion_limit: int = 1000
    expansion_limit: int = 1000
    address_length_limit: int = 1000
    propagate_virtual_extension: bool = True
    authenticated_header: bool = False
    alias_maps: Sequence[Lookup] = field(default_factory=tuple)


def _header_lines(content: bytes) -> tuple[list[bytes], bytes]:
    """Split into header fields (each with its continuation lines, CRLF ends) and the body."""
    normalized = normalize_line_ends(content)
    headers: list[bytes] = []
    position = 0
    length = len(normalized)
    while position < length:
        end = normalized.find(b"\r\n", position)
        end = length if end < 0 else end + 2
        line = normalized[position:end]
        if line in (b"\r\n", b""):
            break
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += line
        elif _FIELD_NAME.match(line):
            headers.append(line)
        else:
            return headers, normalized[position:]  # not a header: the body starts here
        position = end
    return headers, normalized[position:]


def normalize_line_ends(content: bytes) -> bytes:
    """Every line end as CRLF (a bare LF or bare CR too), and a final CRLF."""
    if not content:
        return b""
    text = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") else text + b"\r\n"


def field_name(line: bytes) -> bytes:
    return line.split(b":", 1)[0].strip().lower()


def format_date(when: float) -> str:
    """RFC 5322 3.3 date-time in local time, with the zone name as Postfix writes it."""
    moment = datetime.fromtimestamp(when).astimezone()
    zone = moment.tzname() or ""
    text = email.utils.format_datetime(moment)
    return f"{text} ({zone})" if zone and not zone.startswith(("+", "-")) else text


class Cleanup:
    """Headers and recipient rewriting for one MTA configuration."""

    def __init__(self, settings: CleanupSettings, policy: RoutingPolicy) -> None:
        self.settings = settings
        self.policy = policy

    # -- recipients ---------------------------------------------------------------------------

    def _lookup(self, key: str) -> str | None:
        for table in self.settings.alias_maps:
            found = table(key)
            if found is not None:
                return found
        return None

    def _alias_targets(self, address: str) -> list[str] | None:
        local_part, domain = split_address(address)
        user, extension = self.policy.split_extension(local_part)
        keys: list[tuple[str, bool]] = []
        if domain:
            if extension:
                keys.append((f"{local_part}@{domain}", False))
            keys.append((f"{user}@{domain}", bool(extension)))
        if not domain or self.policy.is_local_domain(domain):
            if extension:
                keys.append((local_part, False))
            keys.append((user, bool(extension)))
        if domain:
            keys.append((f"@{domain}", False))
        for key, add_extension in keys:
            found = self._lookup(key)
            if found is None:
                continue
            targets = [t for t in found.replace(",", " ").split() if t]
            if add_extension and self.settings.propagate_virtual_extension:
                targets = [_with_extension(t, extension) for t in targets]
            return targets
        return None

    def expand(self, address: str) -> list[str]:
        """The final addresses for one recipient (see the module text); CleanupError if a limit
        is passed."""
        if not self.settings.alias_maps:
            return [address]
        results: list[str] = []
        settings = self.settings

        def walk(current: str, ancestry: tuple[str, ...]) -> None:
            if len(ancestry) > settings.recursion_limit:
                log.warning("unreasonable virtual_alias_maps map nesting for %s", address)
                raise CleanupError(451, "4.3.0", "Error: too many levels of alias nesting")
            targets = self._alias_targets(current)
            if targets is None:
                results.append(current)
                return
            lowered = {a.lower() for a in (*ancestry, current)}
            for target in targets:
                if len(target) > settings.address_length_limit:
                    log.warning("unreasonable virtual_alias_maps result length for %s", address)
                    raise CleanupError(451, "4.3.0", "Error: alias expansion result too long")
                if target.lower() in lowered:
                    results.append(target)  # maps to itself or loops back: stop here
                else:
                    walk(target, (*ancestry, current))
                if len(results) > settings.expansion_limit:
                    log.warning("unreasonable virtual_alias_maps map expansion size for %s",
                                address)
                    raise CleanupError(451, "4.3.0", "Error: too many alias expansion results")

        walk(address, ())
        return results

    def recipients(self, given: Sequence[RecipientRecord]) -> tuple[RecipientRecord, ...]:
        """Expanded recipients, each final address once (first wins), originals kept."""
        seen: set[str] = set()
        out: list[RecipientRecord] = []
        for record in given:
            original = record.original or record.address
            for address in self.expand(record.address):
                key = address.lower()
                if key in seen:
                    continue
                seen.add(key)
                out.append(RecipientRecord(address, original, record.notify, record.orcpt))
        return tuple(out)

    # -- headers ------------------------------------------------------------------------------

    def received(self, submission: Submission, recipients: Sequence[RecipientRecord]) -> bytes:
        host = self.settings.myhostname
        name = self.settings.mail_name
        when = format_date(submission.received_at or submission.arrival)
        if submission.local_uid is not None:
            lines = [f"Received: by {host} ({name}, from userid {submission.local_uid})",
                     f"\tid {submission.queue_id}; {when}"]
        else:
            helo = submission.helo or submission.client_name
            client = f"{submission.client_name} [{submission.client_address}]"
            lines = [f"Received: from {helo} ({client})"]
            if submission.sasl_username and self.settings.authenticated_header:
                lines.append(f"\t(Authenticated sender: {submission.sasl_username})")
            protocol = submission.protocol
            if submission.smtputf8 and protocol.startswith("ESMTP"):
                # RFC 6531 3.7.3: UTF8SMTP, UTF8SMTPA, UTF8SMTPS, UTF8SMTPSA.
                protocol = "UTF8SMTP" + protocol.removeprefix("ESMTP")
            lines.append(f"\tby {host} ({name}) with {protocol} id {submission.queue_id}")
            if len(recipients) == 1:
                lines.append(f"\tfor <{recipients[0].original or recipients[0].address}>; {when}")
            else:
                lines[-1] += f"; {when}"
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def process(self, submission: Submission) -> CleanedMessage:
        """The message as it is queued; CleanupError when it must be refused."""
        recipients = self.recipients(submission.recipients)
        headers, body = _header_lines(submission.content)
        hops = sum(1 for h in headers if field_name(h) in _HOP_HEADERS)
        if hops > self.settings.hopcount_limit:
            # RFC 5321 6.3: a loop is detected by counting Received: headers.
            raise CleanupError(554, "5.4.6", "Error: too many hops")
        kept = [h for h in headers if field_name(h) not in _DROPPED]
        names = {field_name(h) for h in kept}
        added: list[bytes] = []
        message_id = ""
        if b"message-id" in names:
            for header in kept:
                if field_name(header) == b"message-id":
                    message_id = header.split(b":", 1)[1].decode("utf-8", "replace").strip()
                    break
        else:
            stamp = datetime.fromtimestamp(submission.arrival).strftime("%Y%m%d%H%M%S")
            message_id = f"<{stamp}.{submission.queue_id}@{self.settings.myhostname}>"
            added.append(f"Message-Id: {message_id}\r\n".encode())
        if b"date" not in names:
            added.append(f"Date: {format_date(submission.arrival)}\r\n".encode())
        if b"from" not in names:
            sender = submission.sender or f"MAILER-DAEMON@{self.settings.myhostname}"
            added.append(f"From: {sender}\r\n".encode())
        received = self.received(submission, recipients)
        separator = b"" if body.startswith(b"\r\n") else b"\r\n"
        content = b"".join([received, *kept, *added, separator, body])
        return CleanedMessage(content, recipients, message_id)


def _with_extension(address: str, extension: str) -> str:
    local_part, at, domain = address.rpartition("@")
    if not at:
        return address + extension
    return f"{local_part}{extension}@{domain}"


def prepare_message(
    writer: MessageWriter,
    cleanup: Cleanup,
    *,
    sender: str,
    recipients: Sequence[RecipientRecord],
    content: bytes,
    arrival: float,
    protocol: str = "ESMTP",
    helo: str = "",
    client_name: str = "unknown",
    client_address: str = "",
    local_uid: int | None = None,
    sasl_username: str = "",
    ret: str = "",
    envid: str = "",
    smtputf8: bool = False,
) -> tuple[MessageWriter, Envelope, CleanedMessage]:
    """Clean a message for the queue under `writer`'s queue id: the content written to the
    writer, the envelope made. Nothing is durable until the writer commits it; a CleanupError
    aborts the writer. CPU only (and lookup tables), so an event loop may run it."""
    try:
        submission = Submission(
            sender=sender, recipients=tuple(recipients), content=content,
            queue_id=writer.queue_id, arrival=arrival, protocol=protocol, helo=helo,
            client_name=client_name, client_address=client_address, local_uid=local_uid,
            sasl_username=sasl_username, smtputf8=smtputf8)
        cleaned = cleanup.process(submission)
    except BaseException:
        writer.abort()
        raise
    writer.write(cleaned.content)
    client = "local" if local_uid is not None else f"{client_name}[{client_address}]"
    envelope = Envelope(
        sender=sender, recipients=cleaned.recipients, arrival=arrival,
        size=len(cleaned.content), client=client, protocol=protocol, helo=helo,
        sasl_username=sasl_username, ret=ret, envid=envid, message_id=cleaned.message_id,
        smtputf8=smtputf8)
    return writer, envelope, cleaned


def queue_message(
    queue: Queue, cleanup: Cleanup, **submission: Any
) -> tuple[str, CleanedMessage]:
    """Clean a message and queue it durably in incoming; returns (queue id, what was queued).

    Blocking (fsync): call it from a worker thread. When it returns, the message is on disk and
    the caller may confirm it. Takes prepare_message's keywords."""
    writer, envelope, cleaned = prepare_message(queue.new_message(), cleanup, **submission)
    with writer:
        queue_id = writer.commit(envelope)
    log_queued(queue_id, cleaned)
    return queue_id, cleaned


def log_queued(queue_id: str, cleaned: CleanedMessage) -> None:
    log.info("%s: message-id=%s", queue_id, cleaned.message_id)


def cleanup_from_config(config: MainConfigLike) -> Cleanup:
    """Cleanup for an MTA configuration (its virtual_alias_maps opened now)."""
    from sealmail.mta.config import open_table

    tables = [open_table(spec).lookup for spec in config.get(MAIN.virtual_alias_maps)]
    settings = CleanupSettings(
        myhostname=config.get(MAIN.myhostname),
        mail_name=config.get(MAIN.mail_name),
        hopcount_limit=config.get(MAIN.hopcount_limit),
        recursion_limit=config.get(MAIN.virtual_alias_recursion_limit),
        expansion_limit=config.get(MAIN.virtual_alias_expansion_limit),
        address_length_limit=config.get(MAIN.virtual_alias_address_length_limit),
        propagate_virtual_extension="virtual" in config.get(MAIN.propagate_unmatched_extensions),
        authenticated_header=config.get(MAIN.smtpd_sasl_authenticated_header),
        alias_maps=tables,
    )
    return Cleanup(settings, RoutingPolicy.from_config(config))


class MainConfigLike(Protocol):
    def get(self, parameter: Option[_T]) -> _T: ...

    def value(self, name: str) -> str: ...

    def words(self, name: str) -> tuple[str, ...]: ...

    def maps(self, name: str) -> tuple[str, ...]: ...

    def integer(self, name: str) -> int: ...

    def boolean(self, name: str) -> bool: ...

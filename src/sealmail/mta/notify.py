"""Who gets which delivery status notice, and from whom: Postfix's bounce(8) rules. Pure.

When recipients of a message fail for good (or it waits longer than delay_warning_time), the
queue manager asks here which notices to queue (sealmail.mta.bounce builds them):

- mail from a real sender: a notice to that sender, with the recipients whose DSN NOTIFY asks
  for it (FAILURE, or DELAY for a warning; none given counts as asked, RFC 3461 4.1); and when
  notify_classes names `bounce` (`delay` for a warning) a postmaster's copy, with every such
  recipient and the original's headers only, to bounce_notice_recipient (delay_notice_recipient).
- mail from the null sender (a bounce that bounced): when notify_classes names `2bounce` or
  `bounce`, a double bounce with the whole message to 2bounce_notice_recipient; else nothing.
  Null-sender mail gets no delay warning.
- mail from double_bounce_sender (a postmaster notice that bounced): nothing, ever ("never send a
  triple bounce"); and mail *to* that local address is discarded by the queue manager.

Notices to a sender go from <>, notices to the postmaster from double_bounce_sender@myhostname:
whatever happens to them, no notice about them can loop back. The postmaster notices of smtpd
(resource, software, policy, protocol: sealmail.mta.smtpd_notice) go to error_notice_recipient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sealmail.config.schema import Option
from sealmail.mta.bounce import BounceRequest, FailedRecipient, Template
from sealmail.mta.config.parameters import MAIN, NOTIFY_CLASSES, TWO_BOUNCE_NOTICE_RECIPIENT
from sealmail.mta.queue import Envelope

T = TypeVar("T")

__all__ = ["NOTIFY_CLASSES", "Notice", "NotifySettings", "Owed", "delay_notices",
           "failure_notices"]


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """main.cf's notify_classes, the *_notice_recipient addresses (qualified with @$myorigin as
    cleanup would), double_bounce_sender, and what the notices' text needs."""

    classes: frozenset[str]
    bounce_recipient: str
    double_bounce_recipient: str
    delay_recipient: str
    error_recipient: str
    double_bounce_sender: str  # the local part, as main.cf has it
    myhostname: str
    mail_name: str = "sealmail"
    bounce_size_limit: int = 50000
    delay_warning_time: float = 0.0
    maximal_queue_lifetime: float = 5 * 86400.0

    @classmethod
    def from_config(cls, main: NotifyConfig) -> NotifySettings:
        origin = main.get(MAIN.myorigin)

        def recipient(parameter: Option[str]) -> str:
            address = main.get(parameter).strip()
            return address if "@" in address else f"{address}@{origin}"

        return cls(
            classes=frozenset(w.lower() for w in main.get(MAIN.notify_classes)),
            bounce_recipient=recipient(MAIN.bounce_notice_recipient),
            double_bounce_recipient=recipient(TWO_BOUNCE_NOTICE_RECIPIENT),
            delay_recipient=recipient(MAIN.delay_notice_recipient),
            error_recipient=recipient(MAIN.error_notice_recipient),
            double_bounce_sender=main.get(MAIN.double_bounce_sender).strip(),
            myhostname=main.get(MAIN.myhostname),
            mail_name=main.get(MAIN.mail_name),
            bounce_size_limit=main.get(MAIN.bounce_size_limit),
            delay_warning_time=float(main.get(MAIN.delay_warning_time)),
            maximal_queue_lifetime=float(main.get(MAIN.maximal_queue_lifetime)),
        )

    @property
    def double_bounce_address(self) -> str:
        """The sender of postmaster notices (Postfix's mail_addr_double_bounce)."""
        return f"{self.double_bounce_sender}@{self.myhostname}"

    def is_double_bounce(self, address: str, local_domain: bool) -> bool:
        """Mail to this address is discarded: the double-bounce address of this host."""
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, ""
        ours = local_domain or not domain or domain.lower() == self.myhostname.lower()
        return ours and local.lower() == self.double_bounce_sender.lower()

    def wants(self, notify_class: str) -> bool:
        return notify_class in self.classes


@dataclass(frozen=True, slots=True)
class Owed:
    """A recipient a notice may report: what happened, and what its DSN NOTIFY asked."""

    failed: FailedRecipient
    notify: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Notice:
    """One notice to queue: its envelope, and what its text says."""

    sender: str  # "" or the double-bounce address
    recipient: str
    what: str  # the log line's words: "sender non-delivery notification", ...
    template: Template
    postmaster_copy: bool
    recipients: tuple[FailedRecipient, ...]
    headers_only: bool

    def request(self, settings: NotifySettings, queue_id: str, envelope: Envelope,
                original: bytes) -> BounceRequest:
        """What sealmail.mta.bounce.build_bounce needs to write this notice."""
        return BounceRequest(
            queue_id=queue_id, sender=envelope.sender, arrival=envelope.arrival,
            reporting_mta=settings.myhostname, failed=self.recipients, original=original,
            mail_name=settings.mail_name, return_headers_only=self.headers_only,
            size_limit=settings.bounce_size_limit, envid=envelope.envid,
            template=self.template, to=self.recipient, postmaster_copy=self.postmaster_copy,
            retry_until=envelope.arrival + settings.maximal_queue_lifetime,
            warning_hours=int(settings.delay_warning_time // 3600),
            lifetime_days=int(settings.maximal_queue_lifetime // 86400),
            smtputf8=envelope.smtputf8,
        )


def _asked(owed: Owed, word: str) -> bool:
    """RFC 3461 4.1: no NOTIFY is the default (failures and delays); NEVER asks for nothing."""
    return not owed.notify or word in {n.upper() for n in owed.notify}


def failure_notices(settings: NotifySettings, envelope: Envelope,
                    owed: Sequence[Owed]) -> tuple[list[Notice], str]:
    """The notices for recipients that failed for good, and why none when there are none."""
    everyone = tuple(o.failed for o in owed)
    sender = envelope.sender
    if sender.lower() == settings.double_bounce_address.lower():
        return [], "undeliverable postmaster notification discarded"
    if not sender:
        if not (settings.wants("2bounce") or settings.wants("bounce")):
            return [], "undeliverable notice from <> discarded (notify_classes has no 2bounce)"
        return [Notice(settings.double_bounce_address, settings.double_bounce_recipient,
                       "postmaster non-delivery notification", Template.FAILURE, True,
                       everyone, headers_only=False)], ""
    notices = []
    asked = tuple(o.failed for o in owed if _asked(o, "FAILURE"))
    if asked:
        headers_only = envelope.ret.upper() == "HDRS"
        notices.append(Notice("", sender, "sender non-delivery notification", Template.FAILURE,
                              False, asked, headers_only))
    if settings.wants("bounce"):
        notices.append(Notice(settings.double_bounce_address, settings.bounce_recipient,
                              "postmaster non-delivery notification", Template.FAILURE, True,
                              everyone, headers_only=True))
    return notices, "" if notices else "no notice asked for (DSN NOTIFY)"


def delay_notices(settings: NotifySettings, envelope: Envelope,
                  owed: Sequence[Owed]) -> list[Notice]:
    """The delay warnings for recipients still waiting (Postfix sends none for <> mail)."""
    sender = envelope.sender
    if not sender or sender.lower() == settings.double_bounce_address.lower():
        return []
    notices = []
    asked = tuple(o.failed for o in owed if _asked(o, "DELAY"))
    if asked:
        notices.append(Notice("", sender, "sender delay notification", Template.DELAY, False,
                              asked, headers_only=True))
    if settings.wants("delay"):
        notices.append(Notice(settings.double_bounce_address, settings.delay_recipient,
                              "postmaster delay notification", Template.DELAY, True,
                              tuple(o.failed for o in owed), headers_only=True))
    return notices


class NotifyConfig(Protocol):
    """What NotifySettings.from_config reads (sealmail.mta.config.MainConfig)."""

    def get(self, parameter: Option[T]) -> T: ...

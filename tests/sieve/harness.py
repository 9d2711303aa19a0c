"""Helpers for running scripts: a fixed clock, in-memory trackers and include store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sealmail.sieve import (
    Envelope,
    SieveContext,
    SieveLimits,
    SieveResult,
    compile_script,
    run,
)
from sealmail.sieve.context import IncludeLocation

NOW = datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC)
MESSAGE = (
    b"Return-Path: <coyote@desert.example.org>\r\n"
    b"From: Coyote <coyote@desert.example.org>\r\n"
    b"To: roadrunner@acme.example.com\r\n"
    b"Subject: I have a present for you\r\n"
    b"Date: Mon, 07 Jan 2008 14:09:12 -0500\r\n"
    b"Message-ID: <1234@desert.example.org>\r\n"
    b"\r\n"
    b"Look, I'm sorry about the whole anvil thing.\r\n"
)
ENVELOPE = Envelope("coyote@desert.example.org", "roadrunner@acme.example.com")


@dataclass
class Trackers:
    """In-memory stand-ins for the host's duplicate and vacation databases."""

    seen_keys: set[str] = field(default_factory=set)
    answered: set[tuple[str, str]] = field(default_factory=set)
    scripts: dict[tuple[str, str], str] = field(default_factory=dict)

    def seen(self, key: str) -> bool:
        return key in self.seen_keys

    def responded(self, key: str, sender: str) -> bool:
        return (key, sender) in self.answered

    def load(self, location: IncludeLocation, name: str) -> str | None:
        return self.scripts.get((location, name))


def execute(
    text: str,
    message: bytes = MESSAGE,
    envelope: Envelope = ENVELOPE,
    *,
    trackers: Trackers | None = None,
    mailboxes: set[str] | None = None,
    limits: SieveLimits | None = None,
    **context: object,
) -> SieveResult:
    trackers = trackers or Trackers()
    ctx = SieveContext(
        now=NOW,
        mailbox_exists=None if mailboxes is None else mailboxes.__contains__,
        include_loader=trackers.load,
        duplicates=trackers,
        vacation=trackers,
        **context,  # type: ignore[arg-type]
    )
    return run(compile_script(text, limits=limits), message, envelope, ctx, limits)

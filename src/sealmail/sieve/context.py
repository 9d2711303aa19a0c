"""What the host hands a script run: the envelope, the callbacks to the world, and the limits.

Sieve never opens a mailbox, a file or a socket: whether a mailbox exists, the text of an included
script, and the duplicate and vacation databases come through these Protocols. Writes to the two
databases are left to the host, after delivery succeeded: the run returns what to record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

IncludeLocation = Literal["personal", "global"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP/LMTP envelope: `sender` "" is the null reverse-path; addresses have no brackets."""

    sender: str
    recipient: str
    auth: str | None = None
    original_recipient: str | None = None


class IncludeLoader(Protocol):
    """Returns the text of a script by location and name, or None when there is no such script."""

    def __call__(self, location: IncludeLocation, name: str) -> str | None: ...


class DuplicateTracker(Protocol):
    """RFC 7352: has `key` been recorded and not yet expired?"""

    def seen(self, key: str) -> bool: ...


class VacationTracker(Protocol):
    """RFC 5230 section 4.2: was `sender` answered for `key` within its period?"""

    def responded(self, key: str, sender: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class SieveLimits:
    """Explicit bounds on what one script may cost (compile and run)."""

    max_script_size: int = 1 << 20
    max_nesting: int = 64
    max_actions: int = 64
    max_redirects: int = 8
    max_include_depth: int = 10
    max_regex_program: int = 2000
    max_regex_steps: int = 2_000_000
    max_variable_size: int = 8192
    max_variables: int = 1024
    max_match_values: int = 10_000


@dataclass(frozen=True)
class SieveContext:
    """Everything a run needs besides the script, the message and the envelope.

    `mailbox_exists` None means "unknown": mailboxexists is true and no fileinto falls back.
    `user_addresses` are the user's own addresses for vacation's checks (RFC 5230 section 4.5),
    besides the envelope recipient. `now` is the injected clock (currentdate, date, vacation).
    """

    now: datetime
    mailbox_exists: Callable[[str], bool] | None = None
    include_loader: IncludeLoader | None = None
    duplicates: DuplicateTracker | None = None
    vacation: VacationTracker | None = None
    user_addresses: tuple[str, ...] = ()
    subaddress_delimiter: str = "+"
    environment: Mapping[str, str] = field(default_factory=dict)
    vacation_min_seconds: int = 0
    vacation_max_seconds: int = 90 * 86400
    vacation_default_seconds: int = 7 * 86400

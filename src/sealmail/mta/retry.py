"""When deferred mail is tried again, and when it is given up. Pure: the caller passes the time.

Postfix's rules (postconf(5), qmgr(8)), which we keep:

- After a failed attempt a message waits before it is tried again; the wait doubles with each
  attempt, from minimal_backoff_time up to maximal_backoff_time.
- The deferred queue is scanned every queue_run_delay, so a message is tried at the first scan
  after its wait has passed (never earlier than the wait).
- A message older than maximal_queue_lifetime (bounce_queue_lifetime for our own non-delivery
  notices) is returned to the sender at its next failed attempt. A lifetime of 0 means mail
  that cannot be delivered at the first attempt is returned at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sealmail.mta.config.parameters import MAIN, Parameter


class TimeSettings(Protocol):
    """What the schedule reads: time parameters, in seconds (MainConfig.get)."""

    def get(self, parameter: Parameter[int]) -> int: ...


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    minimal_backoff: float = 300.0
    maximal_backoff: float = 4000.0
    queue_run_delay: float = 300.0
    maximal_queue_lifetime: float = 5 * 86400.0
    bounce_queue_lifetime: float = 5 * 86400.0

    def __post_init__(self) -> None:
        for name in ("minimal_backoff", "maximal_backoff", "queue_run_delay",
                     "maximal_queue_lifetime", "bounce_queue_lifetime"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @classmethod
    def from_config(cls, config: TimeSettings) -> RetrySchedule:
        minimal = float(config.get(MAIN.minimal_backoff_time))
        # Postfix warns and raises maximal_backoff_time to minimal_backoff_time when it is less.
        maximal = max(float(config.get(MAIN.maximal_backoff_time)), minimal)
        return cls(
            minimal_backoff=minimal,
            maximal_backoff=maximal,
            queue_run_delay=float(config.get(MAIN.queue_run_delay)),
            maximal_queue_lifetime=float(config.get(MAIN.maximal_queue_lifetime)),
            bounce_queue_lifetime=float(config.get(MAIN.bounce_queue_lifetime)),
        )

    def backoff(self, attempts: int) -> float:
        """The wait after the `attempts`-th failed attempt (1 = the first failure)."""
        if attempts < 1:
            return 0.0
        wait = self.minimal_backoff
        for _ in range(attempts - 1):
            wait *= 2
            if wait >= self.maximal_backoff:
                return self.maximal_backoff
        return min(wait, self.maximal_backoff)

    def next_attempt(self, attempts: int, now: float) -> float:
        """The time a message that just failed its `attempts`-th attempt becomes due again."""
        return now + self.backoff(attempts)

    def lifetime(self, is_bounce: bool) -> float:
        return self.bounce_queue_lifetime if is_bounce else self.maximal_queue_lifetime

    def expired(self, arrival: float, now: float, is_bounce: bool = False) -> bool:
        """True when a message that failed now must be returned instead of deferred."""
        return now - arrival >= self.lifetime(is_bounce)

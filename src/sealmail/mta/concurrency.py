"""How many deliveries to one destination run at once: Postfix qmgr's concurrency scheduler. Pure.

Postfix's SCHEDULER_README, with its default feedback of 1 (the `*_feedback` parameters are
accepted with that meaning only):

- A destination (a transport's next hop; the recipient itself when the transport delivers one
  recipient at a time) starts with a window of `initial_destination_concurrency` deliveries in
  parallel ("slow start"), at most `<transport>_destination_concurrency_limit` (0: no limit).
- A delivery that does not fail at the destination's door grows the window by one, up to the
  limit, and not beyond the busy deliveries plus the initial window (so an idle destination's
  window does not run away).
- A delivery that fails at the door (no connection, a broken session, a refused greeting: the
  agent's `hop_failure`) shrinks the window by one, down to 1, and counts 1/window of a failed
  "pseudo-cohort". At `<transport>_destination_concurrency_failed_cohort_limit` failed cohorts
  (default 1: with a window of 1, one failure) the destination is declared dead: nothing more is
  tried there for minimal_backoff_time, and its waiting mail is deferred at once with
  "delivery temporarily suspended: <the failure>". Then it is tried again from the initial
  window.

Session caching on demand (`*_connection_cache_on_demand`, Postfix qmgr_entry_select): a
destination's deliveries may keep their SMTP/LMTP session open for the next one once a delivery
starts within a second of the last one ending ("back to back"), and for as long as deliveries
keep coming that way or run side by side. A burst no bigger than the initial window opens no
cached sessions; a steady stream reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass

SUSPENDED = "delivery temporarily suspended: "


@dataclass(frozen=True, slots=True)
class ConcurrencyPolicy:
    """A transport's scheduler parameters."""

    limit: int = 20  # <transport>_destination_concurrency_limit; 0: none
    initial: int = 5  # <transport>_initial_destination_concurrency
    failed_cohort_limit: int = 1  # <transport>_destination_concurrency_failed_cohort_limit
    dead_time: float = 300.0  # minimal_backoff_time: how long a dead destination rests

    def __post_init__(self) -> None:
        if self.limit < 0 or self.initial < 1 or self.failed_cohort_limit < 0:
            raise ValueError("concurrency limits must not be negative; the initial window "
                             "must be at least 1")


@dataclass(slots=True)
class DestinationWindow:
    """One destination's window, its busy deliveries, and whether it is dead (throttled)."""

    policy: ConcurrencyPolicy
    window: int = 0
    busy: int = 0
    failed_cohorts: float = 0.0
    dead_until: float | None = None
    dead_dsn: str = ""
    dead_reason: str = ""
    last_done: float = float("-inf")
    caching: bool = False

    def __post_init__(self) -> None:
        if not self.window:
            self.window = self._initial()

    def _initial(self) -> int:
        limit = self.policy.limit
        return min(self.policy.initial, limit) if limit else self.policy.initial

    def dead(self, now: float) -> bool:
        """Throttled now? A rest that is over brings the destination back (its window: the
        deliveries still busy, or the initial one)."""
        if self.dead_until is None:
            return False
        if now < self.dead_until:
            return True
        self.dead_until = None
        self.dead_dsn = self.dead_reason = ""
        self.failed_cohorts = 0.0
        self.window = self.busy or self._initial()
        return False

    def revive(self) -> None:
        """postqueue -f: a dead destination is tried again now (Postfix's flush of dead sites)."""
        if self.dead_until is not None:
            self.dead_until = float("-inf")

    def idle(self, now: float) -> bool:
        """Nothing busy, not dead, nothing finished within the back-to-back second: the
        scheduler may forget this destination (it starts over from the initial window)."""
        return not self.busy and not self.dead(now) and self.last_done + 1 < now

    def may_start(self, now: float) -> bool:
        return not self.dead(now) and self.busy < self.window

    def start(self, now: float) -> bool:
        """A delivery starts; returns whether its session may be kept for the next one."""
        self.busy += 1
        back_to_back = self.last_done + 1 >= now
        if not self.caching:
            self.caching = back_to_back  # up to speed: not for a mere burst
        elif not (self.busy > 1 or back_to_back):
            self.caching = False  # running out of steam
        return self.caching

    def succeeded(self, now: float) -> None:
        """A delivery ended without a failure at the destination (positive feedback)."""
        self.busy -= 1
        self.last_done = now
        self.failed_cohorts = 0.0
        if self.dead_until is not None:
            return
        limit = self.policy.limit
        if (not limit or self.window < limit) and self.window < self.busy + 1 + self._initial():
            self.window += 1

    def failed(self, now: float, dsn: str, reason: str) -> bool:
        """A delivery failed at the destination (negative feedback); True when that made the
        destination dead."""
        self.busy -= 1
        self.last_done = now
        if self.dead_until is not None:
            return False
        self.failed_cohorts += 1.0 / self.window
        limit = self.policy.failed_cohort_limit
        if limit and self.failed_cohorts >= limit:
            self.dead_until = now + self.policy.dead_time
            self.dead_dsn = dsn
            self.dead_reason = SUSPENDED + reason
            return True
        self.window = max(1, self.window - 1)
        return False

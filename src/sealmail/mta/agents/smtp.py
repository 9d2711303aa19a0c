"""The smtp delivery agent (Postfix's smtp(8)) relaying to `relayhost` (no DNS MX lookups here).

A request's next hop is used as routed (`[host]:port`, `host:port`, `inet:...`); when the queue
manager leaves it empty or names the destination domain itself, `relayhost` decides. A bracketed
host is used as written, as Postfix does; an unbracketed one would need MX lookups, which sealmail
does not do, so it is connected to directly (documented). Parameters are the `smtp_*` family.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sealmail.mta.agents import DeliveryRequest
from sealmail.mta.agents.session import ClientAgent
from sealmail.mta.config.parameters import MAIN, SMTP_CLIENT
from sealmail.proto.smtp import Mode

__all__ = ["SmtpAgent"]

_SMTP_PORT = 25


class SmtpAgent(ClientAgent):
    """SMTP (RFC 5321) to a relay host, sharing the client core and driver with lmtp."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(SMTP_CLIENT, Mode.SMTP, _SMTP_PORT, clock)

    def nexthop_for(self, request: DeliveryRequest) -> str:
        relayhost = request.settings.get(MAIN.relayhost).strip()
        nexthop = request.nexthop.strip()
        names_a_domain = bool(nexthop) and ":" not in nexthop and "[" not in nexthop
        if relayhost and (not nexthop or names_a_domain):
            return relayhost
        return nexthop or relayhost

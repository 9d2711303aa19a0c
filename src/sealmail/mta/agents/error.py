"""The `error` delivery agent: every recipient fails with the text in the next hop (error(8)).

`error:5.1.1 User unknown` (transport_maps, or the virtual alias class) bounces with that status
and text; a next hop without a status code bounces with 5.0.0. A 4.x.x code defers, which is how
Postfix's `retry` transport behaves, so both names may point to this agent.
"""

from __future__ import annotations

import re

from sealmail.mta.agents import DeliveryRequest, RecipientResult, Status

_STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")


def explain(nexthop: str, default_status: str = "5.0.0") -> tuple[str, str]:
    """`5.1.1 text` -> ("5.1.1", "text"); `text` -> (default_status, "text")."""
    code, _, text = nexthop.strip().partition(" ")
    if _STATUS.fullmatch(code) and not code.startswith("2"):
        return code, text.strip() or "delivery failed"
    return default_status, nexthop.strip() or "delivery failed"


class ErrorAgent:
    """Stateless; one instance serves every `error` service of master.cf."""

    def __init__(self, default_status: str = "5.0.0") -> None:
        self.default_status = default_status

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        status_code, text = explain(request.nexthop, self.default_status)
        status = Status.DEFERRED if status_code.startswith("4") else Status.BOUNCED
        return [RecipientResult(r.index, status, status_code, text, "none")
                for r in request.recipients]

    async def close(self) -> None:
        return None


class RetryAgent(ErrorAgent):
    """Postfix's `retry` transport: every recipient is deferred (4.0.0 unless the text says)."""

    def __init__(self) -> None:
        super().__init__("4.0.0")

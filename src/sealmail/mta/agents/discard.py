"""The `discard` delivery agent: every recipient counts as delivered, and nothing is sent
(discard(8)); the next hop's text is the reason in the log."""

from __future__ import annotations

from sealmail.mta.agents import DeliveryRequest, RecipientResult, Status


class DiscardAgent:
    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        reason = request.nexthop.strip() or "discarded"
        return [RecipientResult(r.index, Status.SENT, "2.0.0", reason, "none")
                for r in request.recipients]

    async def close(self) -> None:
        return None

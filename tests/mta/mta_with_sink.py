"""Run sealmail's MTA master with a file sink as its `lmtp` agent (for crash tests).

    python -m tests.mta.mta_with_sink CONFIG_DIR SINK_DIR

The sink writes each delivered message to SINK_DIR/<queue id>.<index>.eml. While SINK_DIR/hold
exists it does not answer, so a test can kill the master in the middle of a delivery.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from sealmail.mta.agents import DeliveryAgent, DeliveryRequest, RecipientResult, Status
from sealmail.mta.config import MainConfig, MasterService
from sealmail.mta.master import load_agent, run_foreground


class FileSink:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        logging.getLogger("sealmail.mta.sink").info("%s: sink got the delivery",
                                                    request.queue_id)
        while (self.directory / "hold").exists():
            await asyncio.sleep(0.02)
        content = request.message.read()
        results = []
        for recipient in request.recipients:
            path = self.directory / f"{request.queue_id}.{recipient.index}.eml"
            path.write_bytes(f"X-Rcpt: {recipient.address}\r\n".encode() + content)
            results.append(RecipientResult(recipient.index, Status.SENT, "2.0.0",
                                           "250 2.0.0 written", "sink"))
        return results

    async def close(self) -> None:
        return None


def main() -> int:
    config_dir, sink_dir = Path(sys.argv[1]), Path(sys.argv[2])
    sink = FileSink(sink_dir)

    def factory(service: MasterService, settings: MainConfig) -> DeliveryAgent:
        return sink if service.command == "lmtp" else load_agent(service, settings)

    return run_foreground(config_dir, agent_factory=factory)


if __name__ == "__main__":
    sys.exit(main())

"""SMTPUTF8 (RFC 6531) on the way out, as Postfix's smtp(8) and lmtp(8) decide it. Pure.

A message whose sender declared SMTPUTF8 (kept in its queue file) is sent with MAIL's SMTPUTF8
parameter to a server that offers the extension. To one that does not, it still goes when
nothing in it needs the extension (every envelope address and header is ASCII); when something
does, the recipients bounce with 5.6.7, in Postfix 3.7's words: "SMTPUTF8 is required, but was
not offered by host ...". A message that did not declare it is never sent with it.
"""

from __future__ import annotations

from sealmail.mta.agents import DeliveryRequest, Status

__all__ = ["Smtputf8Required", "mail_parameters", "requires_smtputf8"]


class Smtputf8Required(Exception):
    """The message needs SMTPUTF8 and the server does not offer it: a permanent failure."""

    status = Status.BOUNCED
    dsn = "5.6.7"

    def __init__(self, relay: str) -> None:
        super().__init__(f"SMTPUTF8 is required, but was not offered by host {relay}")


def _headers(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[:end]


def requires_smtputf8(request: DeliveryRequest, content: bytes) -> bool:
    """Postfix's DELIVERY_REQUIRES_SMTPUTF8: declared, and UTF-8 in an envelope address of
    this delivery or in a header."""
    if not request.smtputf8:
        return False
    addresses = [request.sender, *(r.address for r in request.recipients)]
    return not all(a.isascii() for a in addresses) or not _headers(content).isascii()


def mail_parameters(request: DeliveryRequest, content: bytes, offered: bool,
                    relay: str) -> list[str]:
    """MAIL's SMTPUTF8 parameter when it is wanted and offered; raises Smtputf8Required when
    the message needs it and the server does not offer it."""
    if offered:
        return ["SMTPUTF8"] if request.smtputf8 else []
    if requires_smtputf8(request, content):
        raise Smtputf8Required(relay)
    return []

"""IMAP URLs naming one message or part (RFC 5092), with RFC 4467's URLAUTH components.

    imapurl      = "imap://" iserver ipath-query                      ; RFC 5092 11
    iserver      = [iuserinfo "@"] host [":" port]
    imessagepart = imailbox-ref iuid [isection] [ipartial] [iurlauth]
    imailbox-ref = enc-mailbox [uidvalidity]       ; uidvalidity = ";UIDVALIDITY=" nz-number
    iuid         = "/" ";UID=" nz-number           ; isection = "/" ";SECTION=" enc-section
    ipartial     = "/" ";PARTIAL=" number ["." nz-number]
    iurlauth     = iurlauth-rump [iua-verifier]     ; RFC 4467 7
    iurlauth-rump = [";EXPIRE=" date-time] ";URLAUTH=" access
    access       = ("submit+" enc-user) / ("user+" enc-user) / "authuser" / "anonymous"
    iua-verifier = ":" uauth-mechanism ":" enc-urlauth

CATENATE (RFC 4469 3) takes the relative form ("/mailbox/;UID=n..."); URLAUTH the absolute one.
Keys are matched without regard to case (imaptest writes ";uid="), and ";URLAUTH" may follow
the UID (RFC 4467's examples do) as well as a section. The mailbox keeps "/" (a hierarchy
separator may be one), so it ends at the first "/;".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from sealmail.proto.imap.errors import BadCommand

__all__ = ["ImapUrl", "UrlError", "parse_imap_url"]

_SERVER = re.compile(r"imap://(?:([^@/]*)@)?([^/:@]+)(?::([0-9]{1,5}))?(?=/)", re.IGNORECASE)
_PARAM = re.compile(r";([A-Za-z]+)=([^;]*)")
_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
_PARTIAL = re.compile(r"([0-9]{1,10})(?:\.([1-9][0-9]{0,9}))?")
_VERIFIER = re.compile(r"(.*):([A-Za-z0-9-]+):([0-9A-Fa-f]{32,})")
MAX_URL_LENGTH = 8192


class UrlError(BadCommand):
    """An IMAP URL that does not parse; the command naming it fails."""


@dataclass(frozen=True, slots=True)
class ImapUrl:
    mailbox: str  # as in the URL, percent-decoded (UTF-8, RFC 5092 6)
    uid: int
    uidvalidity: int | None = None
    section: str | None = None  # as sent ("1.2", "HEADER", "TEXT"), percent-decoded
    partial: tuple[int, int | None] | None = None
    user: str | None = None  # the owner the absolute form names
    host: str | None = None
    port: int | None = None
    expire: str | None = None
    access: str | None = None  # "user+NAME", "submit+NAME", "authuser", "anonymous"
    mechanism: str | None = None  # of the verifier, upper case ("INTERNAL")
    token: str | None = None  # hex, lower case
    rump: str = ""  # the URL up to the access identifier: what the verifier signs

    @property
    def absolute(self) -> bool:
        return self.host is not None


def _decode(text: str) -> str:
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise UrlError("URL is not UTF-8 after percent-decoding") from None


def parse_imap_url(url: str) -> ImapUrl:
    """An IMAP URL naming a message (relative "/mailbox/;UID=n" or absolute), or UrlError."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlError("URL too long")
    user = host = None
    port = None
    rest = url
    server = _SERVER.match(url)
    if server is not None:
        userinfo, host = server.group(1), server.group(2).lower()
        if userinfo is not None:
            user = _decode(userinfo.split(";", 1)[0]) or None
        port = int(server.group(3)) if server.group(3) else None
        rest = url[server.end():]
    elif url[:1] != "/" or url[:2] == "//":
        raise UrlError("Not an IMAP URL naming a message")
    split = rest.find("/;", 1)
    if split < 0:
        raise UrlError("IMAP URL names no message (no ;UID=)")
    mailbox_ref, params = rest[1:split], rest[split:]
    uidvalidity = None
    if ";" in mailbox_ref:
        mailbox_ref, validity = mailbox_ref.split(";", 1)
        key, _, value = validity.partition("=")
        if key.upper() != "UIDVALIDITY" or not _NUMBER.fullmatch(value):
            raise UrlError("Bad ;UIDVALIDITY= in IMAP URL")
        uidvalidity = int(value)
    if not mailbox_ref:
        raise UrlError("IMAP URL names no mailbox")
    fields: dict[str, str] = {}
    verifier = None
    position = 1  # of the segment in `params`, after its "/"
    for segment in params.split("/")[1:]:
        matches = list(_PARAM.finditer(segment))
        if not matches or "".join(m.group(0) for m in matches) != segment:
            raise UrlError("Bad parameter in IMAP URL")
        for match in matches:
            key, value = match.group(1).upper(), match.group(2)
            if key in fields or key not in ("UID", "SECTION", "PARTIAL", "EXPIRE", "URLAUTH"):
                raise UrlError(f"Bad or repeated ;{key[:16]}= in IMAP URL")
            if key == "URLAUTH":
                found = _VERIFIER.fullmatch(value)
                if found is not None:
                    value, verifier = found.group(1), found
                rump_end = len(url) - len(params) + position + match.start(2) + len(value)
                fields["RUMP"] = url[:rump_end]
            fields[key] = value
        position += len(segment) + 1
    uid = fields.get("UID", "")
    if not _NUMBER.fullmatch(uid):
        raise UrlError("IMAP URL needs ;UID=n")
    partial = None
    if "PARTIAL" in fields:
        found_partial = _PARTIAL.fullmatch(fields["PARTIAL"])
        if found_partial is None:
            raise UrlError("Bad ;PARTIAL= in IMAP URL")
        length = found_partial.group(2)
        partial = (int(found_partial.group(1)), int(length) if length else None)
    access = fields.get("URLAUTH")
    if access is not None:
        access = _decode(access)
        lowered = access.lower()
        if not (lowered in ("authuser", "anonymous") or (lowered.startswith(("user+", "submit+"))
                and len(access.split("+", 1)[1]) > 0)):
            raise UrlError("Bad ;URLAUTH= access identifier")
    return ImapUrl(
        mailbox=_decode(mailbox_ref),
        uid=int(uid),
        uidvalidity=uidvalidity,
        section=_decode(fields["SECTION"]) if "SECTION" in fields else None,
        partial=partial,
        user=user,
        host=host,
        port=port,
        expire=_decode(fields["EXPIRE"]) if "EXPIRE" in fields else None,
        access=access,
        mechanism=verifier.group(2).upper() if verifier else None,
        token=verifier.group(3).lower() if verifier else None,
        rump=fields.get("RUMP", ""),
    )

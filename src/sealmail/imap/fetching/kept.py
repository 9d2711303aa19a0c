"""The parses of messages kept in the index, and the forms rendered from them."""

from __future__ import annotations

from sealmail.proto.imap import ParsedMessage, parse_message, render_envelope
from sealmail.store.api import MailboxView
from sealmail.store.errors import NoSuchMessage

__all__ = ["StructureCache"]


class StructureCache:
    """The kept parses of one mailbox's messages for one command: read in one query, new ones
    parsed once and written back in one transaction (`flush`)."""

    def __init__(self, store: MailboxView, name: str, uids: list[int]) -> None:
        self.store = store
        self.name = name
        self._uids = uids
        self._loaded: dict[int, bytes] | None = None
        self._new: dict[int, bytes] = {}

    def get(self, uid: int, raw: bytes | None) -> tuple[ParsedMessage, bytes | None]:
        """The parse of `uid` and the message bytes if they had to be read."""
        if self._loaded is None:
            self._loaded = self.store.message_structures(self.name, self._uids)
        blob = self._loaded.get(uid)
        if blob is not None:
            try:
                return ParsedMessage.from_bytes(_unpack(blob)[1]), raw
            except ValueError:
                pass  # written by another version: parse again below
        if raw is None:
            raw = self.store.message_bytes(self.name, uid)
        parsed = parse_message(raw)
        self._keep(uid, parsed)
        return parsed, raw

    def envelope(self, uid: int) -> bytes | None:
        """ENVELOPE of `uid` as IMAP4rev1 writes it (no UTF-8 quoting): kept rendered beside
        the parse, so a FETCH ENVELOPE of a folder decodes nothing; None if the message is
        gone."""
        if self._loaded is None:
            self._loaded = self.store.message_structures(self.name, self._uids)
        blob = self._loaded.get(uid)
        if blob is not None:
            rendered, _ = _unpack(blob)
            if rendered is not None:
                return rendered
        try:
            parsed, _ = self.get(uid, None)
        except NoSuchMessage:
            return None
        rendered, _ = _unpack(self._loaded[uid])  # parsed just now, or kept without it
        return rendered if rendered is not None else _unpack(self._keep(uid, parsed))[0]

    def _keep(self, uid: int, parsed: ParsedMessage) -> bytes:
        assert self._loaded is not None
        rendered = render_envelope(parsed.envelope)
        blob = b"E%d:" % len(rendered) + rendered + parsed.to_bytes()
        self._loaded[uid] = self._new[uid] = blob
        return blob

    def flush(self) -> None:
        if self._new:
            new, self._new = self._new, {}
            self.store.save_message_structures(self.name, new)


def _unpack(blob: bytes) -> tuple[bytes | None, bytes]:
    """A kept structure: `E<length>:` and the rendered ENVELOPE, then `ParsedMessage.to_bytes`
    (blobs written before the envelope was kept have the latter alone)."""
    if blob[:1] != b"E":
        return None, blob
    length, _, rest = blob[1:].partition(b":")
    try:
        size = int(length)
    except ValueError:
        return None, blob
    return rest[:size], rest[size:]

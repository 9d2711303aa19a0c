"""FETCH (RFC 9051 6.4.5, 7.5.2; RFC 3516 BINARY; RFC 7162 CHANGEDSINCE / MODSEQ).

ENVELOPE and BODYSTRUCTURE come from the parse kept in the index (`ParsedMessage.to_bytes`),
made once per message by the first FETCH that needs it; body sections are cut from the stored
bytes by the part offsets of that parse, so no FETCH parses MIME again.

Three ways to answer, picked by the items asked for:

- only UID, FLAGS, MODSEQ, INTERNALDATE, RFC822.SIZE (what clients ask of every message when
  they open a mailbox), and ENVELOPE, which is kept rendered beside the parse: the responses
  are built as octets, a column per item over the view's per-message lists, thousands of
  messages per join;
- those plus whole messages or their top-level header (BODY[], RFC822, BODY[HEADER],
  BODY[HEADER.FIELDS (...)], RFC822.HEADER, PEEK or not, with a partial: what mail clients ask
  of every message when they list a folder): the same, with the files read in batches and the
  header cut out by one regular expression, framed as literals without re-encoding;
- anything else (BODYSTRUCTURE, sections, BINARY, ENVELOPE in a UTF-8 session): one
  `DataResponse` per message.

Large results go to the client in chunks while the rest is produced (`ImapSession.stream_out`).
Whatever the way, \\Seen is set first, in one store call, on the messages a non-PEEK body fetch
reads (RFC 9051 6.4.5), and their responses then carry FLAGS (and MODSEQ with CONDSTORE).
"""

from sealmail.imap.fetching.command import fetch, fetch_index_responses
from sealmail.imap.fetching.job import internaldate_text, render_flags
from sealmail.imap.fetching.kept import StructureCache

__all__ = ["StructureCache", "fetch", "fetch_index_responses", "internaldate_text",
           "render_flags"]

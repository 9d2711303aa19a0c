"""FETCH (RFC 9051 6.4.5, 7.5.2; RFC 3516 BINARY; RFC 7162 CHANGEDSINCE / MODSEQ).

ENVELOPE, BODYSTRUCTURE and BODY are rendered once per message, by the first FETCH that needs
them, and kept beside its parse in the index and in the process's memo (`kept`, `memo`); body
sections are cut from the stored bytes by the part offsets of that parse, so no FETCH parses
MIME again.

The ways to answer, picked by the items asked for (`command`):

- UID, FLAGS, MODSEQ, INTERNALDATE, RFC822.SIZE, the kept ENVELOPE / BODYSTRUCTURE / BODY and
  top-level header sections, with nothing to set \\Seen on (what imaptest and mail clients
  ask of a range of messages): the responses are built as octets, a column per item over the
  chunk, thousands of messages per join (`columns`; header fields the index keeps as sent
  without opening a file, `listing` when they are all that is asked besides index items);
- index items plus whole messages or their top-level header (BODY[], RFC822, BODY[HEADER],
  BODY[HEADER.FIELDS (...)], RFC822.HEADER, PEEK or not, with a partial): the files read in
  batches and the header cut out by one regular expression, framed as literals without
  re-encoding (`bodies`);
- anything else (body parts, BINARY, a kept form beside a body that sets \\Seen): one
  `DataResponse` per message (`generic`).

Large results go to the client in chunks while the rest is produced (`ImapSession.stream_out`).
Whatever the way, \\Seen is set first, in one store call, on the messages a non-PEEK body fetch
reads (RFC 9051 6.4.5), and their responses then carry FLAGS (and MODSEQ with CONDSTORE).
"""

from sealmail.imap.fetching.command import fetch, fetch_index_responses
from sealmail.imap.fetching.job import internaldate_text, render_flags
from sealmail.imap.fetching.kept import StructureCache

__all__ = ["StructureCache", "fetch", "fetch_index_responses", "internaldate_text",
           "render_flags"]

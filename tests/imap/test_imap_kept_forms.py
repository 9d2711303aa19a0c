"""ENVELOPE, BODYSTRUCTURE and BODY kept rendered (sealmail.imap.fetching.kept) answer octet for
octet what the generic way renders from a fresh parse: for random messages (8-bit and encoded
header text, quotes, NUL, long values, nested multiparts and message/rfc822), random item lists,
IMAP4rev1 and UTF-8 sessions, and each place the forms come from (just made, the process's
memo, the index's blob)."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.stores import SESSION_CONFIG, open_store, store_config

from sealmail.imap import ImapSession, fetching
from sealmail.imap.fetching import internaldate_text, kept, memo
from sealmail.proto.imap import ParserLimits, parse_command, render
from sealmail.store.api import DeliveryTarget, MessageStore

PIECES = [b"plain", b" ", b"caf\xc3\xa9", b"caf\xe9", b"=?utf-8?q?caf=C3=A9?=", b'"quoted"',
          b"back\\slash", b"(comment)", b"<a@b.example>", b"Ann <ann@example.org>", b",",
          b"group: x@y.example;", b"\x00", b"%d", b"x" * 1030, b"\xff\xfe", b"NIL", b"{3}"]
FIELDS = ["From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "In-Reply-To", "Reply-To",
          "Sender", "Content-Description", "Content-ID", "Content-Language", "Content-Location",
          "Content-Disposition", "References", "X-Custom"]
CONTENT_TYPES = [b"text/plain; charset=utf-8", b"text/html; name=\"caf\xc3\xa9.html\"",
                 b"application/octet-stream; name*=utf-8''caf%C3%A9", b"image/png"]
ITEMS = ["UID", "FLAGS", "ENVELOPE", "INTERNALDATE", "BODY", "BODYSTRUCTURE", "RFC822.SIZE",
         "MODSEQ", "BODY.PEEK[HEADER.FIELDS (From To Cc Subject References In-Reply-To "
         "Message-ID)]", "BODY.PEEK[HEADER.FIELDS (Subject)]<2.9>",
         # not listed in the index: from the files' headers
         "BODY.PEEK[HEADER.FIELDS (X-Custom Subject)]", "BODY.PEEK[HEADER]", "RFC822.HEADER",
         "BODY.PEEK[HEADER.FIELDS.NOT (Subject)]<0.40>"]

values = st.lists(st.sampled_from(PIECES), min_size=0, max_size=4).map(b"".join)
headers = st.lists(st.tuples(st.sampled_from(FIELDS), values), max_size=6)


@st.composite
def messages(draw: st.DrawFn, depth: int = 0) -> bytes:
    head = b"".join(f"{name}: ".encode() + value + b"\r\n" for name, value in draw(headers))
    kind = draw(st.sampled_from(["leaf", "multipart", "rfc822"] if depth < 2 else ["leaf"]))
    if kind == "leaf":
        content = draw(st.sampled_from(CONTENT_TYPES))
        return head + b"Content-Type: " + content + b"\r\n\r\n" + draw(values) + b"\r\n"
    if kind == "rfc822":
        inner = draw(messages(depth + 1))
        return head + b"Content-Type: message/rfc822\r\n\r\n" + inner
    parts = draw(st.lists(messages(depth + 1), min_size=1, max_size=3))
    body = b"".join(b"--sep\r\n" + part + b"\r\n" for part in parts) + b"--sep--\r\n"
    return head + b"Content-Type: multipart/mixed; boundary=sep\r\n\r\n" + body


def _run(session: ImapSession, line: str) -> bytes:
    responses = session.execute(parse_command(line.encode() + b"\r\n", ParserLimits(),
                                              utf8=session.utf8))
    return b"".join(render(r, session.utf8) for r in responses)


def _session(store: MessageStore, utf8: bool) -> ImapSession:
    session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
    if utf8:
        _run(session, "a ENABLE UTF8=ACCEPT")
    _run(session, "a EXAMINE INBOX")
    return session


def _generic(store: MessageStore, utf8: bool, line: str) -> bytes:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fetching.columns, "answers", lambda attributes: False)
        patch.setattr(fetching.bodies, "from_file", lambda attribute, listed=False: None)
        patch.setattr(fetching.command, "listed_plan", lambda attributes: None)
        patch.setattr(fetching.generic, "StructureCache", _NoKept)  # a fresh parse
        patch.setattr(fetching.generic, "memos_for", lambda store: memo.FetchMemos())
        return _run(_session(store, utf8), line)


class _NoKept(kept.StructureCache):
    def _blob(self, uid: int) -> bytes | None:
        return None

    def flush(self) -> None:
        self._new.clear()


# SEALMAIL_LONG=1: many more examples (a few minutes), outside the default run.
EXAMPLES = 1500 if os.environ.get("SEALMAIL_LONG") else 60


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(messages(), min_size=1, max_size=3),
       items=st.lists(st.sampled_from(ITEMS), min_size=1, max_size=5),
       utf8=st.booleans(), backend=st.sampled_from(["memory", "disk"]))
def test_kept_forms_are_the_fresh_rendering(raws: list[bytes], items: list[str], utf8: bool,
                                            backend: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = open_store(backend, store_config(Path(root)))
        try:
            store.create_mailbox("user.fred")
            for raw in raws:
                store.deliver(raw, [DeliveryTarget("user.fred")])
            line = f"t FETCH 1:* ({' '.join(items)})"
            expected = _generic(store, utf8, line)
            assert expected.count(b" FETCH (") == len(raws)
            # A session each: the first FETCH MODSEQ also announces HIGHESTMODSEQ.
            assert _run(_session(store, utf8), line) == expected  # made now (parsed, kept)
            assert _run(_session(store, utf8), line) == expected  # from the process's memo
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(fetching.columns, "memos_for", lambda store: memo.FetchMemos())
                assert _run(_session(store, utf8), line) == expected  # from the index's blobs
        finally:
            store.close()


def test_kept_forms_beside_header_fields_not_listed_read_no_parse(tmp_path: Path) -> None:
    store = open_store("disk", store_config(tmp_path))
    store.create_mailbox("user.fred")
    raw = b"X-Custom: \x00 odd\r\nSubject: s\r\n\r\nbody\r\n"
    store.deliver(raw, [DeliveryTarget("user.fred")])
    line = "t FETCH 1 (ENVELOPE BODY.PEEK[HEADER.FIELDS (X-Custom)] BODYSTRUCTURE)"
    expected = _generic(store, False, line)
    assert b"X-Custom: \x80 odd" in expected
    _run(_session(store, False), line)  # kept
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fetching.command, "fetch_generic", None)  # not the generic way
        patch.setattr(kept, "parse_message", None)  # no parse: the forms are kept
        assert _run(_session(store, False), line) == expected
    store.close()


def test_forms_of_another_version_are_rendered_again(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    store = open_store("memory", store_config(tmp_path))
    store.create_mailbox("user.fred")
    store.deliver(b"Subject: now\r\n\r\nbody\r\n", [DeliveryTarget("user.fred")])
    line = "t FETCH 1 (ENVELOPE BODY)"
    expected = _run(_session(store, False), line)
    blob = store.message_structures("user.fred", [1])[1]
    parse = blob[blob.index(b":") + 1 + sum(map(int, blob[3 : blob.index(b":")].split(b","))) :]
    stale = b"K0;" + kept.KeptForms(b"(old)", b"(old)", b"(old)").pack(parse)[3:]
    store.save_message_structures("user.fred", {1: stale})
    monkeypatch.setattr(fetching.columns, "memos_for", lambda store: memo.FetchMemos())
    assert _run(_session(store, False), line) == expected
    assert store.message_structures("user.fred", [1])[1].startswith(b"K1;")


@pytest.mark.parametrize("backend", ["memory", "disk"])
def test_a_body_section_again_takes_the_kept_parse(backend: str, tmp_path: Path) -> None:
    """A FETCH of a body section needs the parse's part offsets: after the first, this process
    keeps the parse, and reads neither the index's blob nor decodes it again."""
    store = open_store(backend, store_config(tmp_path))
    store.create_mailbox("user.fred")
    store.deliver(b"Subject: two\r\nContent-Type: multipart/mixed; boundary=sep\r\n\r\n"
                  b"--sep\r\nContent-Type: text/plain\r\n\r\nx\r\n--sep--\r\n",
                  [DeliveryTarget("user.fred")])
    line = "t FETCH 1 (BODY.PEEK[1] BODY.PEEK[TEXT] RFC822.HEADER)"
    expected = _generic(store, False, line)
    assert b"BODY[1] {1}\r\nx" in expected
    assert _run(_session(store, False), line) == expected  # parsed (or decoded), kept
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "message_structures", None)  # no blob read
        patch.setattr(kept, "parse_message", None)  # nor parsed
        patch.setattr(kept.ParsedMessage, "from_bytes", None)  # nor decoded
        assert _run(_session(store, False), line) == expected
    store.close()


def test_the_memo_keeps_at_most_its_capacity() -> None:
    memos: memo.MessageMemo[bytes] = memo.MessageMemo(capacity=3)
    memos.add("a", 1, {1: b"1", 2: b"2"})
    memos.add("b", 1, {1: b"1", 2: b"2"})  # "a" is dropped whole
    assert memos.lookup("a", 1, [1, 2]) == {}
    assert memos.lookup("b", 1, [1, 2, 3]) == {1: b"1", 2: b"2"}
    assert memos.lookup("b", 2, [1]) == {}  # another UIDVALIDITY: other messages
    memos.add("c", 1, {n: b"" for n in range(4)})  # more than it holds: not kept
    assert memos.lookup("c", 1, [0]) == {}


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.one_of(st.floats(0, 2**35), st.integers(0, 2**35).map(
    lambda n: n + 0.9999995), st.integers(0, 2**35).map(lambda n: n - 1e-7)))
def test_internaldate_is_what_datetime_writes(timestamp: float) -> None:
    when = datetime.fromtimestamp(timestamp, UTC)
    assert internaldate_text(timestamp) == when.strftime("%d-%b-%Y %H:%M:%S +0000").replace(
        when.strftime("%d-"), f"{when.day:2d}-", 1)


@pytest.mark.parametrize("backend", ["memory", "disk"])
def test_append_keeps_the_forms_a_fetch_would_make(backend: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An APPEND keeps the parse and forms of what it stored (MULTIAPPEND too): the first FETCH
    of them reads no file and parses nothing, and answers what a fresh parse renders; in the
    appending process it reads not even the index's blob (the memos). A message above
    KEEP_APPENDED_UP_TO is left to FETCH."""
    store = open_store(backend, store_config(tmp_path))
    store.create_mailbox("user.fred")
    raws = [b"From: Ann <ann@example.org>\r\nSubject: one\r\n\r\nbody\r\n",
            b"Subject: two\r\nContent-Type: multipart/mixed; boundary=sep\r\n\r\n"
            b"--sep\r\nContent-Type: text/plain\r\n\r\nx\r\n--sep--\r\n",
            b"Subject: three\r\n\r\n" + b"a longer body\r\n" * 10]
    monkeypatch.setattr(kept, "KEEP_APPENDED_UP_TO", len(raws[2]) - 1)
    assert max(map(len, raws[:2])) <= kept.KEEP_APPENDED_UP_TO
    session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
    literals = "".join(f" {{{len(raw)}+}}\r\n{raw.decode()}" for raw in raws[:2])
    assert b"t OK [APPENDUID" in _run(session, f"t APPEND INBOX{literals}")
    assert b"t OK [APPENDUID" in _run(session, f"t APPEND INBOX {{{len(raws[2])}+}}\r\n"
                                               f"{raws[2].decode()}")
    assert sorted(store.message_structures("user.fred", [1, 2, 3])) == [1, 2]
    line = "t FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY BODY.PEEK[1])"
    expected = _generic(store, False, line)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kept, "parse_message", None)  # no parse: the forms are kept
        patch.setattr(store, "message_structures", None)  # in this process's memos
        assert _run(_session(store, False), line) == expected
    line = "t FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY)"
    expected = _generic(store, False, line)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fetching.columns, "memos_for", lambda store: memo.FetchMemos())
        patch.setattr(kept, "parse_message", None)  # another process: the index's blobs
        patch.setattr(store, "message_bytes", None)  # and no file read
        assert _run(_session(store, False), line) == expected
    store.close()


def test_an_append_writes_its_kept_parse_in_its_own_commit(tmp_path: Path) -> None:
    """The kept parse of an appended message goes into the index with its row: one write
    transaction per APPEND, not a second one for the blob (docs/imapd.md)."""
    store = open_store("disk", store_config(tmp_path))
    store.create_mailbox("user.fred")
    session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
    index = store.spool.index
    statements: list[str] = []
    for conn in (index.connection(), index.writer()):
        conn.set_trace_callback(statements.append)
    raw = b"From: Ann <ann@example.org>\r\nSubject: one\r\n\r\nbody\r\n"
    assert b"t OK [APPENDUID" in _run(session, f"t APPEND INBOX {{{len(raw)}+}}\r\n"
                                               f"{raw.decode()}")
    assert statements.count("BEGIN IMMEDIATE") == 1
    assert not [s for s in statements if "INTO structures" in s and "EXISTS" in s]
    assert list(store.message_structures("user.fred", [1])) == [1]
    store.close()

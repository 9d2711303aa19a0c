"""The parser's fast paths give what the general way gives: the same command, or the same error
(type, text, tag, status, code), on usual, random and adversarial input.

The fast paths: the
command head in one regex (`parser._head`), the remembered FETCH / STORE tails
(`parser._remembered`), `SequenceSet.parse` splitting ranges without a second regex
(checked against the regex reading it replaced), and the connection's look for a literal at the
end of a line (`connection._literal_at_end`, against the search it replaced).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sealmail.proto.imap import BadCommand, Fetch, SequenceSet
from sealmail.proto.imap import fetch as fetch_module
from sealmail.proto.imap import parser as parser_module
from sealmail.proto.imap import sequence as sequence_module
from sealmail.proto.imap.connection import _LITERAL_AT_END as LITERAL_AT_END
from sealmail.proto.imap.connection import _literal_at_end as literal_at_end
from sealmail.proto.imap.errors import ImapError
from sealmail.proto.imap.parser import ParserLimits, parse_command
from sealmail.proto.imap.sequence import STAR
from sealmail.proto.imap.syntax import _DATE_TIME as DATE_TIME
from sealmail.proto.imap.syntax import _MONTH_NUMBER as MONTH_NUMBER
from sealmail.proto.imap.syntax import _UNESCAPE as UNESCAPE
from sealmail.proto.imap.syntax import QUOTED, Reader

# SEALMAIL_LONG=1: a longer search (the default run stays within a few seconds).
_EXAMPLES = 5000 if os.environ.get("SEALMAIL_LONG") else 200

# -- the general way ----------------------------------------------------------------------------

_OLD_SET = re.compile(r"(?:\*|[1-9][0-9]*)(?::(?:\*|[1-9][0-9]*))?"
                      r"(?:,(?:\*|[1-9][0-9]*)(?::(?:\*|[1-9][0-9]*))?)*")
_OLD_RANGE = re.compile(r"(\*|[0-9]+)(?::(\*|[0-9]+))?")


def _reference_set(text: str) -> tuple[tuple[int, int], ...] | str:
    """The ranges as the earlier parser read them, or "bad"."""
    if text == "$":
        return "saved"
    if not _OLD_SET.fullmatch(text):
        return "bad"
    ranges = []
    for first, last in _OLD_RANGE.findall(text):
        start = STAR if first == "*" else int(first)
        ranges.append((start, start if not last else STAR if last == "*" else int(last)))
    if max(n for pair in ranges for n in pair) > 0xFFFFFFFF:
        return "large"
    return tuple(ranges)


def _outcome(data: bytes, limits: ParserLimits, utf8: bool) -> object:
    try:
        return ("ok", parse_command(data, limits, utf8))
    except ImapError as error:
        return (type(error), error.text, error.tag, error.status, error.code)


def _general_way(patch: pytest.MonkeyPatch) -> None:
    """No fast path: the head read token by token, no remembered tail, no remembered FETCH
    items."""
    patch.setattr(parser_module, "_head", lambda reader: None)
    patch.setattr(parser_module, "REMEMBERED_TAIL", -1)
    patch.setattr(parser_module, "parse_fetch_attribute_list", lambda reader: None)


def _clear() -> None:
    parser_module._REMEMBERED.clear()
    fetch_module._ITEMS.clear()
    sequence_module._RANGES.clear()


def _both_ways(data: bytes, limits: ParserLimits, utf8: bool) -> tuple[object, object, object]:
    """(first fast outcome, last fast outcome, general outcome); the fast ones all equal: the
    command parsed three times (the memos of parts: seen, kept, used)."""
    _clear()
    fast = [_outcome(data, limits, utf8) for _ in range(3)]
    with pytest.MonkeyPatch.context() as patch:
        _general_way(patch)
        general = _outcome(data, limits, utf8)
    assert all(outcome == fast[0] for outcome in fast)
    return fast[0], fast[-1], general


# -- strategies: imaptest's shapes, their neighbours, and noise ------------------------------------

_NUMBERS = st.one_of(
    st.integers(1, 400).map(str),
    st.sampled_from(["*", "0", "01", "4294967295", "4294967296", "99999999999", "-1", "", "+5"]),
)
_RANGES = st.one_of(_NUMBERS, st.builds(lambda a, b: f"{a}:{b}", _NUMBERS, _NUMBERS))
_SETS = st.one_of(
    st.lists(_RANGES, min_size=1, max_size=12).map(",".join),
    st.sampled_from(["$", "1:*", "*", "1,", ",1", "1::2", "1:2:3", "$,1", "1 2", "\u0663"]),
    st.text(alphabet="0123456789:,*$", max_size=20),
)
_FETCH_TAILS = st.sampled_from([
    b"FLAGS", b"(FLAGS)", b"(UID FLAGS)", b"(UID ENVELOPE BODYSTRUCTURE)", b"ALL", b"FAST",
    b"FULL", b"(UID BODY.PEEK[HEADER.FIELDS (From To Subject)])", b"(BODY[]<0.100>)",
    b"(BODY.PEEK[1.2.MIME])", b"(BINARY.PEEK[1])", b"(UID) (CHANGEDSINCE 5)",
    b"(UID) (CHANGEDSINCE 5 VANISHED)", b"(UID) (VANISHED)", b"(FLAGS", b"FLAGS)", b"()",
    b"(FOO)", b"(BODY[MIME])", b"(BODY.PEEK[HEADER.FIELDS ({4}\r\nFrom)])", b"(((((FLAGS)))))",
    b"(UID FLAGS ENVELOPE INTERNALDATE BODY RFC822.SIZE BODYSTRUCTURE MODSEQ UID FLAGS)",
    b"(BODY.PEEK[HEADER.FIELDS (From To Cc Subject References In-Reply-To Message-ID)])",
    b"(BODY.PEEK[HEADER.FIELDS (\xc3\xa9)])", b"(FLAGS) ", b"FLAGS junk", b"",
])
_ITEM_WORDS = st.sampled_from([
    b"UID", b"FLAGS", b"uid", b"ENVELOPE", b"RFC822.SIZE", b"BODY", b"BODYSTRUCTURE", b"MODSEQ",
    b"INTERNALDATE", b"BODY[]", b"BODY[]<0.100>", b"BODY.PEEK[HEADER]", b"BODY.PEEK[1.2.MIME]",
    b"BODY.PEEK[HEADER.FIELDS (From To)]", b"BODY.PEEK[HEADER.FIELDS.NOT (Subject)]",
    b"BODY.PEEK[HEADER.FIELDS (\xc3\xa9)]", b'BODY.PEEK[HEADER.FIELDS ("a]b")]',
    b"BODY.PEEK[HEADER.FIELDS ({4}\r\nFrom)]", b"BODY.PEEK[HEADER.FIELDS ((From))]",
    b"BODY.PEEK[HEADER.FIELDS (a b c d e f g)]", b"BINARY.PEEK[1]", b"BINARY.SIZE[1]",
    b"BODY[MIME]", b"BODY[]<0.0>", b"BODY[]<5>", b"UIDX", b"FLAGS[1]", b"RFC822", b"(UID)",
    b"BODY[TEXT]<1.2><3.4>", b"BODY[HEADER", b"", b"ALL",
])
# An item list, changed in one octet now and then: the items' own fast path and its neighbours.
_ITEM_LISTS = st.builds(
    lambda words, gap, end: b"(" + gap.join(words) + b")" + end,
    st.lists(_ITEM_WORDS, min_size=1, max_size=6), st.sampled_from([b" ", b" ", b"  ", b""]),
    st.sampled_from([b"", b"", b"", b" (CHANGEDSINCE 5)", b" ", b")"]),
)
_STORE_TAILS = st.sampled_from([
    b"+FLAGS (\\Seen)", b"-FLAGS.SILENT (\\Deleted $Label1)", b"FLAGS ()", b"flags \\Seen",
    b"+FLAGS \\Seen \\Flagged", b"(UNCHANGEDSINCE 7) +FLAGS (\\Seen)", b"+FLAGS (\\Seen",
    b"(UNCHANGEDSINCE 0) FLAGS ()", b"*FLAGS (\\Seen)", b"+FLAGS (a b c d e f g h i j)",
    b"+FLAGS.SILENT", b"+FLAGS ( )", b"+FLAGS (\\Seen) ", b"",
])
_NAMES = st.sampled_from([
    b"FETCH", b"fetch", b"Store", b"STORE", b"UID FETCH", b"uid store", b"UID COPY", b"COPY",
    b"UID", b"UID NOOP", b"UID  FETCH", b"NOOP", b"EXPUNGE", b"UID EXPUNGE", b"FETCH2", b"F00",
    b"LOGIN", b"X", b"SEARCH", b"",
])
_TAGS = st.sampled_from([b"a1", b"A.7", b"*", b"+x", b"", b"t]", b"\xc3\xa9", b"a{1}", b"tag"])


@st.composite
def _commands(draw: st.DrawFn) -> bytes:
    name = draw(_NAMES)
    fetch_tails = st.one_of(_FETCH_TAILS, _ITEM_LISTS)
    tail = draw(_STORE_TAILS if b"STORE" in name.upper() else fetch_tails)
    sequence_set = draw(_SETS).encode("utf-8")
    separator = draw(st.sampled_from([b" ", b" ", b" ", b"  ", b""]))
    line = draw(_TAGS) + b" " + name + b" " + sequence_set + separator + tail
    if draw(st.booleans()):
        return line + b"\r\n"
    return line + draw(st.sampled_from([b"", b"\n", b" \r\n", b"\r\n\r\n"]))


_LIMITS = st.sampled_from([ParserLimits(), ParserLimits(max_depth=2, max_items=8),
                           ParserLimits(max_depth=3, max_items=10)])


# -- the properties ----------------------------------------------------------------------------


@settings(max_examples=_EXAMPLES)
@given(_commands(), _LIMITS, st.booleans())
@example(b"a FETCH 1:* FLAGS\r\n", ParserLimits(), False)
@example(b"a UID FETCH 1 (UID) (CHANGEDSINCE 5 VANISHED)\r\n", ParserLimits(), False)
@example(b"a FETCH 1 (UID) (CHANGEDSINCE 5 VANISHED)\r\n", ParserLimits(), False)
@example(b"a STORE 1 +FLAGS (a b c d e f g h i j)\r\n", ParserLimits(max_items=8), False)
@example(b"a UID 5\r\n", ParserLimits(), False)
@example(b"a UID\r\n", ParserLimits(), False)
@example(b"a FETCH 1 (UID FLAGS BODY.PEEK[HEADER.FIELDS (a b)])\r\n", ParserLimits(max_items=8),
         False)
def test_fast_and_general_ways_agree(data: bytes, limits: ParserLimits, utf8: bool) -> None:
    first, second, general = _both_ways(data, limits, utf8)
    assert first == second == general


@settings(max_examples=_EXAMPLES)
@given(_ITEM_LISTS, _LIMITS, st.booleans())
@example(b"(UID FLAGS BODY RFC822.SIZE)", ParserLimits(max_items=8), False)
@example(b"(UID FLAGS BODY RFC822.SIZE ENVELOPE)", ParserLimits(max_items=8), False)
@example(b"(UID BODY.PEEK[HEADER.FIELDS (a b c d)])", ParserLimits(max_items=8), False)
@example(b"(UID BODY.PEEK[HEADER.FIELDS (a b c d e)])", ParserLimits(max_items=8), False)
@example(b"(UID  FLAGS)", ParserLimits(), False)
@example(b"(BODY.PEEK[HEADER.FIELDS (\xc3\xa9)] UID)", ParserLimits(), True)
def test_item_lists_agree(items: bytes, limits: ParserLimits, utf8: bool) -> None:
    """FETCH's item list from remembered items (`fetch.parse_fetch_attribute_list`): the same
    items, limits and errors as read item by item, in a UTF-8 session or not, either first."""
    for uid in (b"", b"UID "):
        data = b"a " + uid + b"FETCH 1:3 " + items + b"\r\n"
        first, second, general = _both_ways(data, limits, utf8)
        assert first == second == general
        assert _outcome(data, limits, not utf8) == _general_outcome(data, limits, not utf8)


def _general_outcome(data: bytes, limits: ParserLimits, utf8: bool) -> object:
    with pytest.MonkeyPatch.context() as patch:
        _general_way(patch)
        return _outcome(data, limits, utf8)


@settings(max_examples=_EXAMPLES // 4)
@given(st.lists(st.tuples(_commands(), _LIMITS, st.booleans()), min_size=2, max_size=12))
@example([(b"a UID FETCH 1 (UID) (CHANGEDSINCE 5 VANISHED)\r\n", ParserLimits(), False),
          (b"b FETCH 1 (UID) (CHANGEDSINCE 5 VANISHED)\r\n", ParserLimits(), False),
          (b"c FETCH 1 (BODY.PEEK[HEADER.FIELDS (\xc3\xa9)])\r\n", ParserLimits(), True),
          (b"d FETCH 1 (BODY.PEEK[HEADER.FIELDS (\xc3\xa9)])\r\n", ParserLimits(), False),
          (b"e STORE 1 +FLAGS (a b c d e f g h i j)\r\n", ParserLimits(), False),
          (b"f STORE 1 +FLAGS (a b c d e f g h i j)\r\n", ParserLimits(max_items=8), False)])
def test_they_agree_over_a_session(commands: list[tuple[bytes, ParserLimits, bool]]) -> None:
    """One cache for many commands, as in a server: what one command left must not change
    how another, with the same tail, parses."""
    _agree_over_a_session(commands)


def _agree_over_a_session(commands: list[tuple[bytes, ParserLimits, bool]]) -> None:
    _clear()
    fast = [_outcome(*command) for command in commands]
    with pytest.MonkeyPatch.context() as patch:
        _general_way(patch)
        general = [_outcome(*command) for command in commands]
    assert fast == general


@settings(max_examples=_EXAMPLES)
@given(st.binary(max_size=60), _LIMITS)
def test_they_agree_on_noise(noise: bytes, limits: ParserLimits) -> None:
    first, second, general = _both_ways(b"a1 UID FETCH 1:3 " + noise + b"\r\n", limits, False)
    assert first == second == general
    first, second, general = _both_ways(noise + b"\r\n", limits, True)
    assert first == second == general


@settings(max_examples=_EXAMPLES)
@given(_SETS)
@example("4294967295:1,*")
@example("1:4294967296")
@example("1,99999999999")
@example("4294967296,x")
@example("1,,2")
@example("")
@example("5,\u0663")
def test_sequence_sets_read_as_before(text: str) -> None:
    """As the regex over the whole set read them (valid, invalid, too large), with a memo of
    ranges filled by the sets tried before."""
    expected = _reference_set(text)
    try:
        parsed = SequenceSet.parse(text)
    except BadCommand as error:
        wanted = "Invalid sequence set" if expected == "bad" else "Sequence number too large"
        assert expected in ("bad", "large") and error.text.startswith(wanted)
        return
    assert parsed == (SequenceSet(saved=True) if expected == "saved" else SequenceSet(expected))
    assert str(SequenceSet.parse(str(parsed))) == str(parsed)


def test_a_remembered_tail_is_read_once() -> None:
    _clear()
    parse_command(b"z FETCH 3 (UID FLAGS)\r\n")  # seen once: not kept
    parse_command(b"z UID FETCH 3 (UID FLAGS)\r\n")
    assert len(parser_module._REMEMBERED) == 0
    first = parse_command(b"a FETCH 1 (UID FLAGS)\r\n")
    again = parse_command(b"b UID FETCH 2:4 (UID FLAGS)\r\n")  # UID: another key
    second = parse_command(b"c FETCH 7,9:* (UID FLAGS)\r\n")
    assert isinstance(first, Fetch) and isinstance(second, Fetch) and isinstance(again, Fetch)
    assert second.attributes is first.attributes and again.attributes is not first.attributes
    assert (second.tag, second.sequence_set) == ("c", SequenceSet(((7, 7), (9, STAR))))
    assert len(parser_module._REMEMBERED) == 2


def test_the_cache_holds_at_most_its_bound() -> None:
    parser_module._REMEMBERED.clear()
    for n in range(parser_module.REMEMBERED_MAX + 10):
        for sequence_set in (1, 2):
            parse_command(f"a FETCH {sequence_set} (BODY.PEEK[HEADER.FIELDS (X-{n})])\r\n".encode())
    assert len(parser_module._REMEMBERED) == parser_module.REMEMBERED_MAX
    long_tail = b"(BODY.PEEK[HEADER.FIELDS (" + b" ".join([b"X-Long"] * 100) + b")])"
    parser_module._REMEMBERED.clear()
    parse_command(b"a FETCH 1 " + long_tail + b"\r\n")
    parse_command(b"a FETCH 2 " + long_tail + b"\r\n")
    assert len(parser_module._REMEMBERED) == 0  # over REMEMBERED_TAIL: parsed each time


@settings(max_examples=_EXAMPLES)
@given(st.text(alphabet="~{}+09 a", max_size=30).map(str.encode))
@example(b"a APPEND INBOX ~~{5}")
@example(b"{5}{6}")
@example(b"x{5}}")
@example(b"{123456789012345678901}")
def test_the_literal_at_the_end_is_found_as_by_a_search(line: bytes) -> None:
    """The connection finds a line's closing literal from its last "{" instead of searching
    the whole line; same match (span and groups) or none."""
    fast = literal_at_end(line)
    slow = LITERAL_AT_END.search(line)
    assert (fast and (fast.span(), fast.groups())) == (slow and (slow.span(), slow.groups()))


# -- usual commands, whole ----------------------------------------------------------------------

_RESTS = st.sampled_from([
    b"NOOP", b"noop", b"EXPUNGE", b"UID EXPUNGE 1:5", b"CHECK", b"LOGOUT", b"CAPABILITY",
    b"IDLE", b"NAMESPACE", b"UNSELECT", b"CLOSE", b'STATUS "INBOX" (MESSAGES UNSEEN RECENT)',
    b"STATUS inbox (UIDNEXT)", b'STATUS "INBOX" ()', b'STATUS "INBOX" (MESSAGES', b'LIST "" *',
    b'LIST "" %', b"LIST () \"\" (* %)", b'LIST "" * RETURN (STATUS (MESSAGES))',
    b'LSUB "" *', b'SELECT "INBOX" (CONDSTORE)', b"SELECT INBOX", b"EXAMINE Caf\xc3\xa9",
    b'SELECT "INBOX" (QRESYNC (1 5 1:9))', b"SELECT \"a", b"FETCH 7 (UID BODY.PEEK[1])",
    b"UID FETCH 1:* (FLAGS)", b"STORE 3 +FLAGS.SILENT \\Deleted", b"COPY 1:2 Trash",
    b"UID MOVE 5 Archive", b"SEARCH UNSEEN", b"UID SORT (DATE) UTF-8 ALL",
    b"THREAD REFERENCES UTF-8 ALL", b"ENABLE CONDSTORE", b'LOGIN "bench" "secret"',
    b"LOGIN bench secret", b"AUTHENTICATE PLAIN AGJlbmNoAHNlY3JldA==",
    b'APPEND "INBOX" {5+}\r\nhello',
    b'APPEND "INBOX" (\\Seen) "22-Feb-2008 17:06:23 +0000" {2}\r\nhi',
    b'ID ("name" "x")', b"NOOP ", b"", b" ", b"FETCH", b"X" * 300,
    b'GENURLAUTH "imap://a@h/INBOX;UIDVALIDITY=1/;UID=1;urlauth=anonymous" INTERNAL',
])


@st.composite
def _usual(draw: st.DrawFn) -> bytes:
    """A usual command, or one changed in one octet, after a tag (valid or not)."""
    rest = bytearray(draw(_RESTS))
    if rest and draw(st.booleans()):
        rest[draw(st.integers(0, len(rest) - 1))] = draw(st.sampled_from(b' ()"{}\\*%]\x00\xc3az'))
    return draw(_TAGS) + draw(st.sampled_from([b" ", b" ", b"", b"  "])) + bytes(rest) + b"\r\n"


@settings(max_examples=_EXAMPLES)
@given(_usual(), _LIMITS, st.booleans())
@example(b"a NOOP\r\n", ParserLimits(), False)
@example(b'a STATUS "INBOX" (MESSAGES UNSEEN RECENT)\r\n', ParserLimits(max_items=8), False)
@example(b"t] NOOP\r\n", ParserLimits(), False)
@example(b"a EXAMINE Caf\xc3\xa9\r\n", ParserLimits(), False)
def test_a_usual_command_is_the_general_ways(data: bytes, limits: ParserLimits,
                                               utf8: bool) -> None:
    first, second, general = _both_ways(data, limits, utf8)
    assert first == second == general


@settings(max_examples=_EXAMPLES // 4)
@given(st.lists(st.tuples(_usual(), _LIMITS, st.booleans()), min_size=2, max_size=16))
@example([(b"a NOOP\r\n", ParserLimits(), False), (b"*x NOOP\r\n", ParserLimits(), False),
          (b"b EXAMINE Caf\xc3\xa9\r\n", ParserLimits(), True),
          (b"c EXAMINE Caf\xc3\xa9\r\n", ParserLimits(), False),
          (b'd STATUS "INBOX" (MESSAGES UNSEEN RECENT)\r\n', ParserLimits(), False),
          (b'e STATUS "INBOX" (MESSAGES UNSEEN RECENT)\r\n', ParserLimits(max_depth=2,
                                                                          max_items=8), False)])
def test_usual_commands_agree_over_a_session(
        commands: list[tuple[bytes, ParserLimits, bool]]) -> None:
    _agree_over_a_session(commands)


def test_the_memos_of_items_and_ranges_hold_at_most_their_bounds() -> None:
    _clear()
    for n in range(1, 3 * sequence_module._Ranges.MAX):
        SequenceSet.parse(f"{n},{n}:{n + 1}")
    assert 0 < len(sequence_module._RANGES) <= sequence_module._Ranges.MAX
    for n in range(fetch_module.ITEMS_MAX + 10):
        parse_command(f"a FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (X-{n})] FLAGS)\r\n".encode())
    assert len(fetch_module._ITEMS) == fetch_module.ITEMS_MAX
    assert (b"UID", parser_module.Reader) in fetch_module._ITEMS  # used by every command


# -- flag lists, quoted strings, date-times ----------------------------------------------------

_FLAG_WORDS = st.sampled_from([
    b"\\Seen", b"\\seen", b"\\Deleted", b"\\Answered", b"$Label1", b"Junk", b"\\*", b"\\", b"",
    b"a]b", b"\\\\Seen", b"(x)", b"\xc3\xa9", b"NIL", b'"q"', b"{1}", b"%", b"\\Recent", b"x" * 40,
])
_FLAG_LISTS = st.builds(
    lambda words, gap, start, end: start + gap.join(words) + end,
    st.lists(_FLAG_WORDS, max_size=10), st.sampled_from([b" ", b" ", b" ", b"  ", b""]),
    st.sampled_from([b"(", b"(", b"(", b"", b"( "]),
    st.sampled_from([b")", b")", b")", b"", b" )"]),
)


def _read(reader: Reader, read: Callable[[Reader], object]) -> object:
    try:
        value = read(reader)
    except ImapError as error:
        return (type(error), error.text)
    return (value, reader.pos, reader.items, reader.untouched())


@settings(max_examples=_EXAMPLES)
@given(_FLAG_LISTS, st.sampled_from([b"", b" rest", b")"]), st.integers(0, 2), _LIMITS)
@example(b"(a b c d e f g h i)", b"", 0, ParserLimits(max_items=8))
@example(b"(a b c d e f g h)", b"", 0, ParserLimits(max_items=8))
@example(b"(\\Seen)", b"", 2, ParserLimits(max_depth=2, max_items=8))
def test_a_flag_list_reads_as_flag_by_flag(flags: bytes, after: bytes, depth: int,
                                           limits: ParserLimits) -> None:
    """`Reader.flag_list` (one regex step) against `paren_list` of `Reader.flag`: the same
    flags, position, count and nesting, or the same error; from any depth and count."""
    def reader() -> Reader:
        new = Reader(b"x " + flags + after, limits.max_depth, limits.max_items)
        new.pos = 2
        for _ in range(depth):
            new.enter()
        new.count_item(depth)
        return new

    fast = _read(reader(), Reader.flag_list)
    general = _read(reader(), lambda r: tuple(r.paren_list(Reader.flag)))
    assert fast == general


_QUOTED_TEXT = st.text(alphabet='ab\\"\r\n\x00 é', max_size=12).map(
    lambda text: b'"' + text.encode() + b'"')


@settings(max_examples=_EXAMPLES)
@given(st.one_of(_QUOTED_TEXT, st.binary(max_size=12).map(lambda raw: b'"' + raw + b'"')))
@example(b'"a\\"b"')
@example(b'"a\\\\"')
def test_a_quoted_string_reads_as_before(wire: bytes) -> None:
    def before(reader: Reader) -> bytes:
        match = QUOTED.match(reader.data, reader.pos)
        if not match:
            raise reader.fail("a quoted string")
        reader.pos = match.end()
        return UNESCAPE.sub(rb"\1", match.group(1))

    assert _read(Reader(wire), Reader.quoted) == _read(Reader(wire), before)


_DATE_TIMES = st.builds(
    lambda day, month, year, time, sign, zone: (
        f'"{day}-{month}-{year} {time} {sign}{zone}"'.encode()),
    st.sampled_from(["1", " 7", "07", "31", "30", "29", "00", "32", "99", "  7", "7 "]),
    st.sampled_from(["Jan", "feb", "FEB", "Mar", "Xyz", "Ma", "Dec"]),
    st.sampled_from(["2008", "1999", "2024", "0000", "9999", "200"]),
    st.sampled_from(["17:06:23", "00:00:00", "23:59:59", "24:00:00", "12:60:00", "1:2:3"]),
    st.sampled_from(["+", "-", "", "*"]),
    st.sampled_from(["0000", "0200", "2359", "2400", "9999", "0060", "0530", "200"]),
)


@settings(max_examples=_EXAMPLES)
@given(_DATE_TIMES)
@example(b'"22-Feb-2008 17:06:23 +0000"')
@example(b'"29-Feb-2023 17:06:23 +0000"')
def test_a_date_time_reads_as_before(wire: bytes) -> None:
    def before(reader: Reader) -> datetime:
        match = DATE_TIME.match(reader.data, reader.pos)
        if not match:
            raise reader.fail("a date-time")
        reader.pos = match.end()
        day, month, year, hour, minute, second, sign, zh, zm = (
            g.decode() for g in match.groups())
        try:
            offset = timedelta(hours=int(zh), minutes=int(zm))
            zone = timezone(-offset if sign == "-" else offset)
            return datetime(int(year), MONTH_NUMBER[month.upper()], int(day.strip()),
                            int(hour), int(minute), int(second), tzinfo=zone)
        except (KeyError, ValueError):
            raise BadCommand(f"Invalid date-time {match.group(0).decode()!r}") from None

    for _ in range(2):  # the second time with the zone made the first
        fast, general = _read(Reader(wire), Reader.date_time), _read(Reader(wire), before)
        assert fast == general
        if isinstance(fast, tuple) and isinstance(fast[0], datetime):
            assert fast[0].utcoffset() == general[0].utcoffset()  # type: ignore[index]

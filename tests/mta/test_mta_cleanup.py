"""cleanup: added headers, Received:, dropped headers, hop limit, virtual_alias_maps."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.mta.cleanup import (
    Cleanup,
    CleanupError,
    CleanupSettings,
    Submission,
    normalize_line_ends,
)
from sealmail.mta.queue import RecipientRecord
from sealmail.mta.routing import RoutingPolicy

POLICY = RoutingPolicy(myhostname="mx.example.com",
                       mydestination=frozenset({"example.com", "mx.example.com"}),
                       recipient_delimiter="+")


def table(entries: dict[str, str]) -> Callable[[str], str | None]:
    return lambda key: entries.get(key.lower())


def cleanup(aliases: dict[str, str] | None = None, **settings: object) -> Cleanup:
    maps = (table(aliases),) if aliases is not None else ()
    return Cleanup(CleanupSettings(myhostname="mx.example.com", alias_maps=maps,
                                   **settings), POLICY)  # type: ignore[arg-type]


def submission(content: bytes, *recipients: str, **fields: object) -> Submission:
    values: dict[str, object] = {
        "sender": "alice@example.org",
        "recipients": tuple(RecipientRecord(r, r) for r in (recipients or ("bob@example.com",))),
        "content": content, "queue_id": "BCDF1234GHJK", "arrival": 1_700_000_000.0,
        "helo": "client.test", "client_address": "127.0.0.1",
    }
    values.update(fields)
    return Submission(**values)  # type: ignore[arg-type]


def headers(content: bytes) -> list[str]:
    head = content.split(b"\r\n\r\n", 1)[0].decode()
    return [line.split(":", 1)[0] for line in head.split("\r\n") if not line.startswith("\t")]


def test_missing_headers_are_added_after_the_given_ones() -> None:
    result = cleanup().process(submission(b"Subject: hi\n\nbody\n"))
    assert headers(result.content) == ["Received", "Subject", "Message-Id", "Date", "From"]
    assert result.message_id == "<" + result.content.split(b"Message-Id: <")[1].split(b">")[0] \
        .decode() + ">"
    assert b"From: alice@example.org\r\n" in result.content
    assert result.content.endswith(b"\r\n\r\nbody\r\n")


def test_present_headers_are_kept_and_bcc_dropped() -> None:
    message = (b"From: A <a@x.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
               b"Message-ID: <given@x.test>\r\nBcc: secret@x.test\r\nContent-Length: 9\r\n"
               b"\r\nbody\r\n")
    result = cleanup().process(submission(message))
    assert headers(result.content) == ["Received", "From", "Date", "Message-ID"]
    assert result.message_id == "<given@x.test>"
    assert b"secret" not in result.content


def test_received_header_for_smtp_and_for_pickup() -> None:
    smtp = cleanup().process(submission(b"\r\nx\r\n", protocol="ESMTPS"))
    first = smtp.content.split(b"\r\n\r\n")[0].decode()
    assert first.startswith("Received: from client.test (unknown [127.0.0.1])\r\n\tby "
                            "mx.example.com (sealmail) with ESMTPS id BCDF1234GHJK\r\n\tfor "
                            "<bob@example.com>; ")
    local = cleanup().process(submission(b"x\n", local_uid=1000))
    assert local.content.startswith(
        b"Received: by mx.example.com (sealmail, from userid 1000)\r\n\tid BCDF1234GHJK; ")


def test_body_without_header_block() -> None:
    result = cleanup().process(submission(b"just a line of text\n"))
    assert result.content.endswith(b"\r\n\r\njust a line of text\r\n")


def test_too_many_hops() -> None:
    looped = b"Received: from a\r\n" * 4 + b"\r\nx\r\n"
    with pytest.raises(CleanupError) as caught:
        cleanup(hopcount_limit=3).process(submission(looped))
    assert (caught.value.code, caught.value.dsn) == (554, "5.4.6")


def test_virtual_alias_expansion_recursive_with_originals() -> None:
    c = cleanup({"team@example.com": "bob@example.com, list@example.com",
                 "list@example.com": "carol@example.net dave@example.net"})
    result = c.process(submission(b"x\n", "team@example.com"))
    assert [(r.address, r.original) for r in result.recipients] == [
        ("bob@example.com", "team@example.com"),
        ("carol@example.net", "team@example.com"),
        ("dave@example.net", "team@example.com")]


def test_alias_loops_and_self_references_end() -> None:
    c = cleanup({"a@example.com": "b@example.com", "b@example.com": "a@example.com",
                 "self@example.com": "self@example.com, other@example.net"})
    assert c.expand("a@example.com") == ["a@example.com"]
    assert c.expand("self@example.com") == ["self@example.com", "other@example.net"]


def test_alias_keys_with_delimiter_local_part_and_catchall() -> None:
    c = cleanup({"bob@example.com": "robert@example.net", "sales": "s@example.net",
                 "@catch.test": "postmaster@example.net",
                 "bob+exact@example.com": "exact@example.net"})
    assert c.expand("bob+news@example.com") == ["robert+news@example.net"]
    assert c.expand("bob+exact@example.com") == ["exact@example.net"]
    assert c.expand("sales@example.com") == ["s@example.net"]  # local domain: bare user key
    assert c.expand("sales@other.test") == ["sales@other.test"]
    assert c.expand("anyone@catch.test") == ["postmaster@example.net"]


def test_extension_not_propagated_when_switched_off() -> None:
    c = cleanup({"bob@example.com": "robert@example.net"}, propagate_virtual_extension=False)
    assert c.expand("bob+news@example.com") == ["robert@example.net"]


def test_expansion_limits_refuse_with_451() -> None:
    wide = cleanup({"all@example.com": " ".join(f"u{i}@x.test" for i in range(20))},
                   expansion_limit=10)
    with pytest.raises(CleanupError) as caught:
        wide.expand("all@example.com")
    assert (caught.value.code, caught.value.dsn) == (451, "4.3.0")
    chain = {f"l{i}@example.com": f"l{i + 1}@example.com" for i in range(50)}
    with pytest.raises(CleanupError):
        cleanup(chain, recursion_limit=10).expand("l0@example.com")


def test_duplicate_recipients_delivered_once() -> None:
    c = cleanup({"a@example.com": "z@x.test", "b@example.com": "z@x.test"})
    result = c.recipients([RecipientRecord("a@example.com"), RecipientRecord("b@example.com"),
                           RecipientRecord("Z@x.test")])
    assert [r.address for r in result] == ["z@x.test"]


@given(st.binary(max_size=400))
def test_never_crashes_and_always_crlf(data: bytes) -> None:
    result = cleanup().process(submission(data))
    assert b"\n" not in result.content.replace(b"\r\n", b"")
    assert b"\r" not in result.content.replace(b"\r\n", b"")


@given(st.binary(max_size=200))
def test_normalize_is_idempotent(data: bytes) -> None:
    once = normalize_line_ends(data)
    assert normalize_line_ends(once) == once

"""URLAUTH (RFC 4467) and URLFETCH's BINARY / BODYPARTSTRUCTURE (RFC 5524) as transcripts:
imaptest's urlauth, urlauth2 (a second user) and urlauth-binary groups, and what must fetch NIL
or be refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.imap.test_imap_append_ext import raw_say
from tests.imap.test_imaptest_findings import Client, deliver, expect, selected
from tests.support.stores import SESSION_CONFIG

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.imap import ImapSession
from sealmail.store.api import AccessKeys, MessageStore

BODY = b"From: a@example.org\r\nSubject: one\r\n\r\nHello\r\n"
NESTED = (b"From: user@domain.org\r\nMime-Version: 1.0\r\nContent-Type: multipart/mixed;"
          b' boundary="foo"\r\n\r\n--foo\r\nContent-Type: message/rfc822\r\n\r\n'
          b'From: sub@domain.org\r\nSubject: submsg\r\nContent-Type: multipart/alternative;'
          b' boundary="sub1"\r\n\r\n--sub1\r\nContent-Type: text/plain\r\n'
          b"Content-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8gd29y\r\nbGQ=\r\n\r\n"
          b"--sub1--\r\n\r\n--foo--\r\n")


def q(url: str) -> str:
    """A URL as the server writes it: an atom when it can be one."""
    return f'"{url}"' if " " in url else url


def as_user(store: MessageStore, user: str, config: object = SESSION_CONFIG) -> Client:
    client = Client(store)
    client.session = ImapSession(store, config, user, f"user.{user}")  # type: ignore[arg-type]
    return client


def genurlauth(client: Client, rump: str) -> str:
    got = client.say(f'g GENURLAUTH "{rump}" INTERNAL')
    assert got[-1] == "g OK GENURLAUTH completed", got
    match = re.fullmatch(r'\* GENURLAUTH "?([^"]*)"?', got[0])
    assert match, got
    assert re.fullmatch(re.escape(rump) + ":INTERNAL:[0-9a-f]{40}", match.group(1))
    return match.group(1)


def test_urlauth_fetch_and_resetkey(store: MessageStore) -> None:
    assert isinstance(store, AccessKeys)
    deliver(store, BODY)
    client = selected(store)
    url = genurlauth(client, "imap://fred@example.org/INBOX/;uid=1;urlauth=user+fred")
    expect(client.say(f'f URLFETCH "{url}"'), f'* URLFETCH {q(url)} {{{len(BODY)}}}',
           *BODY.decode().splitlines(), "", "f OK URLFETCH completed")
    expect(client.say("r RESETKEY INBOX"), "r OK RESETKEY completed")
    expect(client.say(f'f URLFETCH "{url}"'), f'* URLFETCH {q(url)} NIL',
           "f OK URLFETCH completed")
    # A new key gives a new URL that works; RESETKEY without a mailbox resets them all.
    again = genurlauth(client, "imap://fred@example.org/INBOX/;uid=1;urlauth=user+fred")
    assert again != url
    client.say("r RESETKEY")
    assert client.say(f'f URLFETCH "{again}"')[0].endswith("NIL")


def test_a_second_user_fetches_authuser_urls_only(store: MessageStore) -> None:
    store.create_mailbox("user.barney")
    deliver(store, BODY)
    fred = selected(store)
    shared = genurlauth(fred, "imap://fred@example.org/INBOX/;uid=1;urlauth=authuser")
    own = genurlauth(fred, "imap://fred@example.org/INBOX/;uid=1;urlauth=user+fred")
    part = genurlauth(fred, "imap://fred@example.org/INBOX/;uid=1/;section=TEXT;urlauth=authuser")
    barney = as_user(store, "barney")
    assert barney.say(f'f URLFETCH "{shared}"')[0] == f'* URLFETCH {q(shared)} {{{len(BODY)}}}'
    expect(barney.say(f'f URLFETCH "{part}"'), f'* URLFETCH {q(part)} {{7}}', "Hello", "",
           "f OK URLFETCH completed")
    assert barney.say(f'f URLFETCH "{own}"')[0] == f'* URLFETCH {q(own)} NIL'
    fred.say("r RESETKEY INBOX")
    assert barney.say(f'f URLFETCH "{shared}"')[0] == f'* URLFETCH {q(shared)} NIL'


def test_submit_access_needs_a_submit_user(store: MessageStore) -> None:
    store.create_mailbox("user.submit")
    deliver(store, BODY)
    url = genurlauth(selected(store), "imap://fred@x/INBOX/;uid=1;urlauth=submit+fred")
    assert as_user(store, "fred").say(f'f URLFETCH "{url}"')[0].endswith(" NIL")
    config = parse_imapd_conf("urlauth_submit_users: submit\n", "imapd.conf")
    got = as_user(store, "submit", config).say(f'f URLFETCH "{url}"')
    assert got[0].endswith(f"{{{len(BODY)}}}"), got


def test_forged_expired_and_foreign_urls_fetch_nil(store: MessageStore) -> None:
    deliver(store, BODY)
    client = selected(store)
    url = genurlauth(client, "imap://fred@x/INBOX/;uid=1;urlauth=user+fred")
    forged = url[:-1] + ("0" if url[-1] != "0" else "1")
    expired = genurlauth(client, "imap://fred@x/INBOX/;uid=1;expire=2001-01-01T00:00:00Z;"
                                 "urlauth=user+fred")
    for bad in (forged, expired, url.replace(";uid=1", ";uid=7"), "imap://fred@x/INBOX/;uid=1",
                "/INBOX/;uid=1", "not a url", url.replace(":INTERNAL:", ":OTHER:")):
        assert client.say(f'f URLFETCH "{bad}"')[0] == f'* URLFETCH {q(bad)} NIL', bad


@pytest.mark.parametrize("rump", [
    "imap://barney@x/INBOX/;uid=1;urlauth=user+fred",  # someone else's mailbox
    "imap://fred@x/INBOX/;uid=1",  # no access identifier
    "/INBOX/;uid=1;urlauth=authuser",  # not absolute
    "imap://fred@x/Nowhere/;uid=1;urlauth=authuser",
    "imap://fred@x/INBOX/;uid=1;urlauth=authuser:INTERNAL:" + "0" * 40,  # already signed
    "imap://fred@x/INBOX/;uid=1;urlauth=bogus",
])
def test_genurlauth_refuses(store: MessageStore, rump: str) -> None:
    client = selected(store)
    assert client.say(f'g GENURLAUTH "{rump}" INTERNAL')[-1].startswith("g NO"), rump


def test_bad_urlauth_syntax(store: MessageStore) -> None:
    client = selected(store)
    for bad in (b"g GENURLAUTH", b'g GENURLAUTH "imap://fred@x/INBOX/;uid=1"',
                b"g URLFETCH", b'g URLFETCH ("u" FOO)', b'g URLFETCH ("u" BODY BINARY)',
                b'g URLFETCH ("u"', b"g RESETKEY INBOX (x)"):
        assert raw_say(client, bad)[-1].startswith("g BAD"), bad
    got = client.say('g GENURLAUTH "imap://fred@x/INBOX/;uid=1;urlauth=authuser" HMAC')
    assert got[-1].startswith("g NO")


def test_urlfetch_binary_and_bodypartstructure(store: MessageStore) -> None:
    deliver(store, NESTED)
    client = selected(store)
    url = genurlauth(client, "imap://fred@x/INBOX/;uid=1/;section=1;urlauth=user+fred")
    sub = genurlauth(client, "imap://fred@x/INBOX/;uid=1/;section=1.1;urlauth=user+fred")
    expect(client.say(f'f URLFETCH ("{sub}" BINARY BODYPARTSTRUCTURE)'),
           f'* URLFETCH {q(sub)} (BODYPARTSTRUCTURE ("TEXT" "PLAIN" NIL NIL NIL "BASE64" 11 0'
           ' NIL NIL NIL NIL) BINARY {11}', "hello world)", "f OK URLFETCH completed")
    got = client.say(f'f URLFETCH ("{url}" BINARY)')
    assert "Content-Transfer-Encoding: binary" in got and "hello world" in got, got
    got = client.say(f'f URLFETCH ("{url}" BODYPARTSTRUCTURE)')
    assert '"BASE64" 22 3' in got[0] and got[0].startswith(f'* URLFETCH {q(url)} (BODYPART')


def test_disk_store_keys_survive_reopening_and_reset(tmp_path: Path) -> None:
    from tests.support.stores import open_store, store_config

    config = store_config(tmp_path)
    store = open_store("disk", config)
    store.create_mailbox("user.fred")
    key = store.access_key("user.fred")
    assert len(key) == 32 and store.access_key("user.fred") == key
    store.close()
    store = open_store("disk", config)
    assert store.access_key("user.fred") == key
    store.reset_access_key("user.fred")
    assert store.access_key("user.fred") != key
    assert (tmp_path / "c" / "urlauth.db").stat().st_mode & 0o077 == 0
    store.close()



"""smtpd_sender_login_maps and reject_*_sender_login_mismatch: the pure lookup and verdicts
(Postfix's smtpd_check.c semantics and replies), then smtpd over a socket with smtplib."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.mta.test_mta_smtpd import MESSAGE, Server, make_authenticator

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config.tables import MemoryTable
from sealmail.mta.sender_login import (
    REJECT_AUTHENTICATED,
    REJECT_KNOWN,
    REJECT_SENDER_LOGIN_MISMATCH,
    REJECT_UNAUTHENTICATED,
    LookupFailure,
    SenderLoginMaps,
    lookup_keys,
    split_owners,
    verdict,
)

NOT_OWNED = "553 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice"
NOT_LOGGED_IN = "553 5.7.1 <bob@example.com>: Sender address rejected: not logged in"


def text(reply: object) -> str | None:
    if reply is None:
        return None
    return reply.render().decode().strip()  # type: ignore[attr-defined]


def test_lookup_keys_are_postfixs() -> None:
    local = {"example.com"}.__contains__
    assert lookup_keys("a+x@example.com", "+", local) == [
        "a+x@example.com", "a@example.com", "a+x", "a", "@example.com"]
    assert lookup_keys("a+x@far.test", "+", local) == ["a+x@far.test", "a@far.test", "@far.test"]
    assert lookup_keys("a@far.test", "", local) == ["a@far.test", "@far.test"]
    assert lookup_keys("+x@far.test", "+", local) == ["+x@far.test", "@far.test"]


def test_owners_split_on_commas_and_spaces() -> None:
    assert split_owners("alice, bob  carol,,") == ("alice", "bob", "carol")


def test_owners_most_specific_key_first() -> None:
    table = MemoryTable("t", {"bob@example.com": "bob", "@example.com": "admin",
                              "carol": "carol"}, fold=True)
    found = SenderLoginMaps((table,), "+", {"example.com"}.__contains__)
    assert found.owners("bob+list@example.com") == ("bob",)
    assert found.owners("Bob@Example.com") == ("bob",)  # the table folds case
    assert found.owners("carol@example.com") == ("carol",)  # local part: a local domain
    assert found.owners("dave@example.com") == ("admin",)
    assert found.owners("carol@far.test") is None


def test_a_failing_table_is_a_lookup_failure() -> None:
    class Broken:
        spec = "broken:x"

        def lookup(self, key: str) -> str | None:
            raise ConfigError("x", 0, None, "gone")

    with pytest.raises(LookupFailure):
        SenderLoginMaps((Broken(),)).owners("a@b.test")


@pytest.mark.parametrize(
    ("restriction", "login", "owners", "expected"),
    [
        # reject_sender_login_mismatch: both tests, an unlisted sender is not owned
        (REJECT_SENDER_LOGIN_MISMATCH, "alice", ("bob",), NOT_OWNED),
        (REJECT_SENDER_LOGIN_MISMATCH, "alice", None, NOT_OWNED),
        (REJECT_SENDER_LOGIN_MISMATCH, "ALICE", ("bob", "alice"), None),
        (REJECT_SENDER_LOGIN_MISMATCH, "", ("bob",), NOT_LOGGED_IN),
        (REJECT_SENDER_LOGIN_MISMATCH, "", None, None),
        # authenticated only
        (REJECT_AUTHENTICATED, "alice", None, NOT_OWNED),
        (REJECT_AUTHENTICATED, "alice", ("bob",), NOT_OWNED),
        (REJECT_AUTHENTICATED, "", ("bob",), None),
        # known senders only
        (REJECT_KNOWN, "alice", None, None),
        (REJECT_KNOWN, "alice", ("bob",), NOT_OWNED),
        (REJECT_KNOWN, "", ("bob",), NOT_LOGGED_IN),
        # unauthenticated only
        (REJECT_UNAUTHENTICATED, "alice", ("bob",), None),
        (REJECT_UNAUTHENTICATED, "", ("bob",), NOT_LOGGED_IN),
        (REJECT_UNAUTHENTICATED, "", None, None),
    ],
)
def test_verdicts(restriction: str, login: str, owners: tuple[str, ...] | None,
                  expected: str | None) -> None:
    assert text(verdict(restriction, "bob@example.com", login, owners)) == expected


def test_the_null_sender_is_never_checked() -> None:
    for restriction in (REJECT_SENDER_LOGIN_MISMATCH, REJECT_UNAUTHENTICATED):
        assert verdict(restriction, "", "", ("bob",)) is None
        assert verdict(restriction, "", "alice", None) is None


# -- in smtpd, over a socket -------------------------------------------------------------------


def test_smtpd_rejects_a_sender_the_login_does_not_own(tmp_path: Path) -> None:
    logins = tmp_path / "sender_logins"
    logins.write_text("alice@example.com alice\nbob@example.com bob\n")
    text_ = ("smtpd_sasl_auth_enable = yes\n"
             f"smtpd_sender_login_maps = texthash:{logins}\n"
             "smtpd_relay_restrictions = reject_sender_login_mismatch, "
             "permit_sasl_authenticated, reject_unauth_destination\n")
    server = Server(tmp_path / "s", text_, authenticator=make_authenticator(tmp_path))
    with server, server.client() as client:
        client.ehlo("c.test")
        client.mail("bob@example.com")
        assert client.rcpt("x@example.com") == (553, NOT_LOGGED_IN[4:].encode())
        client.rset()
        client.mail("carol@example.com")  # no owner: unauthenticated may use it
        assert client.rcpt("x@example.com")[0] == 250
        client.rset()
        client.login("alice", "alice-pw")
        client.mail("bob@example.com")
        assert client.rcpt("far@elsewhere.test") == (553, NOT_OWNED[4:].encode())
        client.rset()
        client.mail("carol@example.com")  # unlisted: not owned by a logged-in user
        assert client.rcpt("far@elsewhere.test")[0] == 553
        client.rset()
        assert client.sendmail("alice@example.com", ["far@elsewhere.test"], MESSAGE) == {}
        assert client.sendmail("", ["x@example.com"], MESSAGE) == {}

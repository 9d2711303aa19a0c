"""The authentication cache (imapd.conf auth_cache_size, auth_cache_ttl, auth_cache_negative_ttl):
a second login with the same password runs no scrypt, a changed password is never accepted from
it, failures are remembered for their own TTL, and nothing kept holds the password."""

from __future__ import annotations

import gc

import pytest

from sealmail.auth import Authenticator, SaslDB
from sealmail.auth.cache import VerificationCache
from sealmail.config.imapd_conf import ConfigError, parse_imapd_conf
from sealmail.proto.sasl import Failure, Identity, Success, Verdict

SERVER = "cyrus.example.com"
ON = "auth_cache_size: 100\nauth_cache_ttl: 60\nauth_cache_negative_ttl: 30\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingSaslDB(SaslDB):
    """The real sasldb, counting the scrypt checks it runs."""

    checks = 0

    def check_password(self, identity: Identity, password: str) -> Verdict:
        self.checks += 1
        return super().check_password(identity, password)


@pytest.fixture
def users(tmp_path: object) -> CountingSaslDB:
    from tests.auth.conftest import CHEAP_SCRYPT_N

    db = CountingSaslDB(tmp_path / "sasldb2", scrypt_n=CHEAP_SCRYPT_N)  # type: ignore[operator]
    db.set_password(Identity("alice", SERVER), "alicepw")
    return db


def login(auth: Authenticator, user: str, password: str, service: str = "imap") -> object:
    return auth.start("PLAIN", True, service=service).step(f"\0{user}\0{password}".encode())


def authenticator(db: SaslDB, extra: str = ON) -> tuple[Authenticator, Clock]:
    auth = Authenticator(parse_imapd_conf(f"servername: {SERVER}\n{extra}"), sasldb=db)
    clock = Clock()
    auth.cache.clock = clock
    return auth, clock


def test_second_login_runs_no_scrypt(users: CountingSaslDB) -> None:
    auth, _ = authenticator(users)
    assert login(auth, "alice", "alicepw") == Success("alice", "alice")
    assert login(auth, "alice", "alicepw") == Success("alice", "alice")
    assert users.checks == 1
    assert auth.cache.hits == 1


def test_off_by_default(users: CountingSaslDB) -> None:
    auth, _ = authenticator(users, "")
    login(auth, "alice", "alicepw")
    login(auth, "alice", "alicepw")
    assert users.checks == 2 and len(auth.cache) == 0


def test_a_changed_password_is_not_accepted_from_the_cache(users: CountingSaslDB) -> None:
    auth, _ = authenticator(users)
    assert isinstance(login(auth, "alice", "alicepw"), Success)
    users.set_password(Identity("alice", SERVER), "newpw")
    assert isinstance(login(auth, "alice", "alicepw"), Failure)
    assert isinstance(login(auth, "alice", "newpw"), Success)
    assert users.checks == 3


def test_ttls_positive_and_negative(users: CountingSaslDB) -> None:
    auth, clock = authenticator(users)
    assert isinstance(login(auth, "alice", "wrong"), Failure)
    assert isinstance(login(auth, "alice", "wrong"), Failure)
    assert users.checks == 1  # the failure was remembered
    clock.now += 31  # past auth_cache_negative_ttl
    login(auth, "alice", "wrong")
    assert users.checks == 2
    login(auth, "alice", "alicepw")
    clock.now += 59
    login(auth, "alice", "alicepw")
    assert users.checks == 3
    clock.now += 2  # past auth_cache_ttl
    login(auth, "alice", "alicepw")
    assert users.checks == 4


def test_negative_ttl_zero_keeps_no_failures(users: CountingSaslDB) -> None:
    auth, _ = authenticator(users, "auth_cache_size: 10\nauth_cache_negative_ttl: 0\n")
    login(auth, "alice", "wrong")
    login(auth, "alice", "wrong")
    assert users.checks == 2


def test_services_and_users_do_not_share_entries(users: CountingSaslDB) -> None:
    users.set_password(Identity("bob", SERVER), "alicepw")
    auth, _ = authenticator(users)
    login(auth, "alice", "alicepw")
    login(auth, "bob", "alicepw")
    login(auth, "alice", "alicepw", service="pop")
    assert users.checks == 3


def test_bounded_lru() -> None:
    cache = VerificationCache(2, 60, 60)
    ident = Identity("u", SERVER)
    keys = [cache.key_for("imap", ident, "e", f"pw{n}") for n in range(3)]
    for key in keys[:2]:
        cache.put(key, Verdict.OK)
    assert cache.get(keys[0]) is Verdict.OK  # now the most recent
    cache.put(keys[2], Verdict.NO)
    assert len(cache) == 2
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) is Verdict.OK


def test_no_password_in_the_cache(users: CountingSaslDB) -> None:
    password = "Unm1stakable-Passw0rd"
    users.set_password(Identity("carol", SERVER), password)
    auth, _ = authenticator(users)
    login(auth, "carol", password)
    login(auth, "carol", password + "x")
    assert len(auth.cache) == 2
    needle = password.encode()
    for key, value in auth.cache._entries.items():
        assert needle not in key and len(key) == 32
        assert needle not in repr(value).encode()
    assert needle not in repr(vars(auth.cache)).encode()
    # Keyed under a per-process random key: another process's cache has other keys.
    other = VerificationCache(10, 60, 60)
    ident = Identity("carol", SERVER)
    assert other.key_for("imap", ident, "e", password) != auth.cache.key_for(
        "imap", ident, "e", password)
    gc.collect()


@pytest.mark.parametrize("option", ["auth_cache_size", "auth_cache_ttl",
                                    "auth_cache_negative_ttl"])
def test_negative_values_name_their_line(users: CountingSaslDB, option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        authenticator(users, f"{option}: -1\n")

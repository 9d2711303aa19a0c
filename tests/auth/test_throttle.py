"""sealmail.auth.throttle: password hashing bounded per process, unknown users at no memory cost."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sealmail.auth.sasldb import SaslDB
from sealmail.auth.throttle import HashingBusy, HashingPool
from sealmail.proto.sasl import CredentialsUnavailable, Identity, Verdict

ALICE = Identity("alice", "example.com")


class Occupancy:
    """A hash function that waits to be released and records how many ran at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self) -> bytes:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.started.release()
        self.release.wait(10)
        with self.lock:
            self.running -= 1
        return b"digest"


def test_no_more_checks_run_at_once_than_the_pool_has_workers() -> None:
    pool, work = HashingPool(workers=2, queue=10), Occupancy()
    results: list[bytes] = []
    callers = [threading.Thread(target=lambda: results.append(pool.run(work))) for _ in range(8)]
    for caller in callers:
        caller.start()
    assert work.started.acquire(timeout=10) and work.started.acquire(timeout=10)
    assert not work.started.acquire(timeout=0.2)  # the third waits for a worker
    work.release.set()
    for caller in callers:
        caller.join(10)
    assert results == [b"digest"] * 8 and work.most == 2


def test_a_full_queue_is_a_temporary_failure_not_a_wait() -> None:
    pool, work = HashingPool(workers=1, queue=0), Occupancy()
    first = threading.Thread(target=pool.run, args=(work,))
    first.start()
    assert work.started.acquire(timeout=10)
    try:
        with pytest.raises(HashingBusy, match="try again later") as refused:
            pool.run(lambda: b"")
        assert isinstance(refused.value, CredentialsUnavailable)  # the mechanism's TEMPORARY
    finally:
        work.release.set()
        first.join(10)
    assert pool.run(lambda: b"again") == b"again"


def test_unknown_users_cost_one_hash_per_process_and_then_only_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = HashingPool()
    sasldb = SaslDB(tmp_path / "sasldb2", scrypt_n=2**10, hashing=pool)
    sasldb.set_password(ALICE, "secret")
    hashed: list[int] = []
    real = SaslDB._scrypt

    def counting(prepared: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
        hashed.append(n)
        return real(prepared, salt, n, r, p)

    monkeypatch.setattr(SaslDB, "_scrypt", staticmethod(counting))
    for _ in range(5):
        assert sasldb.check_password(Identity("mallory", "example.com"), "x") is Verdict.NO
    assert len(hashed) == 1  # the first unknown user timed one real hash; the rest slept as long
    assert sasldb.check_password(ALICE, "secret") is Verdict.OK
    assert sasldb.check_password(ALICE, "wrong") is Verdict.NO
    assert len(hashed) == 3

"""Every fuzz target (fuzz/targets.py) over a few thousand inputs: its seeds mutated (bytes
flipped, inserted, cut, pieces of two seeds spliced) and random bytes. Deterministic (a fixed
seed per target), so a failure here is reproducible; fuzz/run_all.sh runs the same targets
coverage-guided for 100,000 inputs each (docs/reliability.md).

SEALMAIL_LONG=1 multiplies the count by 20.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator

import pytest
from fuzz.targets import SEEDS, TARGETS

LONG = 20 if os.environ.get("SEALMAIL_LONG") else 1
# Inputs per target; the loaders that stat and re-read files get fewer (a fifth of the time).
COUNT = {"hosts_allow": 200, "cyrus_conf": 250}


def mutate(rnd: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rnd.choice(seeds))
    for _ in range(rnd.randrange(1, 6)):
        pos = rnd.randrange(len(data) + 1)
        kind = rnd.randrange(5)
        if kind == 0 and data:
            data[min(pos, len(data) - 1)] = rnd.randrange(256)
        elif kind == 1:
            data[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 8)))
        elif kind == 2:
            del data[pos : pos + rnd.randrange(1, 16)]
        elif kind == 3:
            other = rnd.choice(seeds)
            start = rnd.randrange(len(other) + 1)
            data[pos:pos] = other[start : start + rnd.randrange(1, 40)]
        else:
            data[pos:pos] = rnd.choice([b"\r\n", b"\n", b"\0", b"{5}\r\n", b'"', b"\\", b"$"])
    return bytes(data)


def inputs(name: str) -> Iterator[bytes]:
    rnd = random.Random(name)
    seeds = SEEDS.get(name) or [b""]
    yield from seeds
    yield b""
    for n in range(COUNT.get(name, 800) * LONG):
        if n % 4 == 3:
            yield bytes(rnd.randrange(256) for _ in range(rnd.randrange(200)))
        else:
            yield mutate(rnd, seeds)


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    """Bad config lines are logged: thousands of them."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_raises_only_its_declared_errors(name: str) -> None:
    target = TARGETS[name]
    for data in inputs(name):
        try:
            target(data)
        except Exception as exc:
            raise AssertionError(f"{name} crashed on {data!r}") from exc


def test_every_parser_has_a_target_and_a_script() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "fuzz"
    assert set(TARGETS) == {
        "smtp_server", "imap_command", "imap_connection", "pop3", "managesieve", "sasl", "sieve",
        "mime", "main_cf", "master_cf", "imapd_conf", "cyrus_conf", "aliases", "hosts_allow",
    }
    for name in TARGETS:
        assert (root / f"{name}.py").read_text().count(f"main({name})") == 1

"""The authentication cache (Dovecot's auth_cache_size / auth_cache_ttl /
auth_cache_negative_ttl): password checks remembered in memory, so a client that logs in again
with the same credentials does not pay scrypt's ~150 ms and 32 MiB again.

What is kept never holds a password. Each entry is keyed by an HMAC-SHA256, under a key drawn
at random when the process starts and never written anywhere, of the service, the user, the
user's stored password entry and the password; the entry holds only the verdict and when it
expires. So:

- a changed password is never accepted from the cache: the user's stored entry (the sasldb's
  scrypt verifier, new salt and all) is part of the key, so the old key is simply never asked
  for again (saslauthd's users, whose entries live elsewhere, wait for the TTL);
- a failed check is remembered for `negative_ttl` (0: not at all), a successful one for `ttl`;
- at most `size` entries, the least recently used dropped first.

Why off by default (auth_cache_size: 0, as in Dovecot): an entry is a fast (HMAC) verifier of a
valid password; whoever can read the process's memory, key included, can test guesses against
it at HMAC speed instead of scrypt's. A site that wants login throughput (many clients that
reconnect, webmail) turns it on knowing that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from sealmail.proto.sasl import Identity, Verdict

__all__ = ["VerificationCache"]


class VerificationCache:
    def __init__(self, size: int, ttl: float, negative_ttl: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 key: bytes | None = None) -> None:
        if size < 0 or ttl < 0 or negative_ttl < 0:
            raise ValueError("auth cache size and TTLs must not be negative")
        self.size = size
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.clock = clock
        self._key = key or secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[Verdict, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.size > 0 and (self.ttl > 0 or self.negative_ttl > 0)

    def key_for(self, service: str, identity: Identity, entry: str, password: str) -> bytes:
        """The entry's key: nothing in it can be turned back into the password without the
        process's random key (and then only by guessing)."""
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (service, identity.user, identity.realm, entry, password):
            data = part.encode("utf-8", "surrogatepass")
            mac.update(len(data).to_bytes(4, "big") + data)
        return mac.digest()

    def get(self, key: bytes) -> Verdict | None:
        now = self.clock()
        with self._lock:
            found = self._entries.get(key)
            if found is None or found[1] <= now:
                if found is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, key: bytes, verdict: Verdict) -> None:
        ttl = self.ttl if verdict is Verdict.OK else self.negative_ttl
        if not self.enabled or ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (verdict, self.clock() + ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, service: str, identity: Identity, entry: str, password: str,
              verify: Callable[[], Verdict]) -> Verdict:
        """`verify()`'s verdict, from the cache when it holds one for these credentials."""
        if not self.enabled:
            return verify()
        key = self.key_for(service, identity, entry, password)
        cached = self.get(key)
        if cached is not None:
            return cached
        verdict = verify()  # CredentialsUnavailable (busy, unreachable) passes, not kept
        self.put(key, verdict)
        return verdict

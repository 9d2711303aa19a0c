"""MD5 (RFC 1321) that can resume from saved chaining words, for CRAM-MD5 secrets.

hashlib cannot export or import an MD5 state, yet storing HMAC-MD5's state after the key block
(instead of the password) is what lets CRAM-MD5 work without a reversible password: the server
keeps MD5(key^ipad) and MD5(key^opad) mid-stream and finishes them per challenge (RFC 2104 4,
"implementation note": precomputed intermediate results). Only this module touches raw MD5.
"""

from __future__ import annotations

import math
import struct

__all__ = [
    "MD5_INITIAL_STATE",
    "MD5State",
    "ResumableMD5",
    "hmac_md5_from_states",
    "hmac_md5_key_states",
    "md5_compress",
    "md5_digest",
]

MD5State = tuple[int, int, int, int]

# RFC 1321 3.3: the initial chaining words A, B, C, D.
MD5_INITIAL_STATE: MD5State = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)

_MASK = 0xFFFFFFFF
# RFC 1321 3.4: T[i] = floor(2^32 * abs(sin(i + 1))), and the per-round shift amounts.
_T = tuple(int(abs(math.sin(i + 1)) * 2**32) & _MASK for i in range(64))
_SHIFTS = (7, 12, 17, 22) * 4 + (5, 9, 14, 20) * 4 + (4, 11, 16, 23) * 4 + (6, 10, 15, 21) * 4
# Which message word each of the 64 operations reads (rounds 1-4 of RFC 1321 3.4).
_INDEX = tuple(
    [i for i in range(16)]
    + [(5 * i + 1) % 16 for i in range(16)]
    + [(3 * i + 5) % 16 for i in range(16)]
    + [(7 * i) % 16 for i in range(16)]
)


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _MASK


def md5_compress(state: MD5State, block: bytes) -> MD5State:
    """Process one 64-byte block (RFC 1321 3.4) and return the new chaining words."""
    if len(block) != 64:
        raise ValueError("an MD5 block is 64 bytes")
    x = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f = (b & c) | (~b & d)
        elif i < 32:
            f = (d & b) | (~d & c)
        elif i < 48:
            f = b ^ c ^ d
        else:
            f = c ^ (b | (~d & _MASK))
        f = (f + a + _T[i] + x[_INDEX[i]]) & _MASK
        a, d, c = d, c, b
        b = (b + _rotl(f, _SHIFTS[i])) & _MASK
    return (
        (state[0] + a) & _MASK,
        (state[1] + b) & _MASK,
        (state[2] + c) & _MASK,
        (state[3] + d) & _MASK,
    )


class ResumableMD5:
    """An MD5 computation that starts from any saved state and byte count.

    `ResumableMD5()` is plain MD5; `ResumableMD5(state, 64)` continues after one processed block.
    """

    def __init__(self, state: MD5State = MD5_INITIAL_STATE, length: int = 0) -> None:
        if length % 64:
            raise ValueError("a saved MD5 state must end on a block boundary")
        self._state = state
        self._length = length
        self._pending = b""

    @property
    def state(self) -> MD5State:
        """The chaining words after the whole blocks fed so far."""
        return self._state

    def update(self, data: bytes) -> None:
        self._length += len(data)
        buffer = self._pending + data
        whole = len(buffer) - len(buffer) % 64
        state = self._state
        for offset in range(0, whole, 64):
            state = md5_compress(state, buffer[offset : offset + 64])
        self._state = state
        self._pending = buffer[whole:]

    def digest(self) -> bytes:
        # RFC 1321 3.1-3.2: pad with 0x80, zeros to 56 mod 64, then the bit length (LE, 64 bits).
        tail = self._pending + b"\x80"
        tail += b"\x00" * ((56 - len(tail)) % 64)
        tail += struct.pack("<Q", (self._length * 8) & 0xFFFFFFFFFFFFFFFF)
        state = self._state
        for offset in range(0, len(tail), 64):
            state = md5_compress(state, tail[offset : offset + 64])
        return struct.pack("<4I", *state)


def hmac_md5_key_states(key: bytes) -> tuple[MD5State, MD5State]:
    """MD5 states after key^ipad and key^opad (RFC 2104 2): CRAM-MD5's password-free secret."""
    if len(key) > 64:
        key = md5_digest(key)
    key = key.ljust(64, b"\x00")
    inner = md5_compress(MD5_INITIAL_STATE, bytes(k ^ 0x36 for k in key))
    outer = md5_compress(MD5_INITIAL_STATE, bytes(k ^ 0x5C for k in key))
    return inner, outer


def md5_digest(data: bytes) -> bytes:
    """Plain MD5 of `data` through this implementation (RFC 2104 hashes keys over 64 bytes)."""
    md5 = ResumableMD5()
    md5.update(data)
    return md5.digest()


def hmac_md5_from_states(inner: MD5State, outer: MD5State, message: bytes) -> bytes:
    """HMAC-MD5(key, message) from the saved key states (RFC 2104 4)."""
    first = ResumableMD5(inner, 64)
    first.update(message)
    second = ResumableMD5(outer, 64)
    second.update(first.digest())
    return second.digest()

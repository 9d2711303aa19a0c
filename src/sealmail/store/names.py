"""Mailbox names as Cyrus keeps them.

Internally a name always uses '.' between levels (`user.alice.Lists`, shared `Projects`), with
virtual domains as `example.com!user.alice`; a '.' inside a level (a user called john.doe under
unixhierarchysep) is kept as '^'. Non-ASCII is stored in IMAP's modified UTF-7 (RFC 3501 5.1.3),
so the internal name is plain ASCII. What users and operators type and see is the *external*
name, whose separator `unixhierarchysep` chooses.
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass

from sealmail.store.errors import InvalidMailboxName

MAX_NAME_LENGTH = 490  # Cyrus's MAX_MAILBOX_NAME
USER_PREFIX = "user"


def encode_mutf7(text: str) -> str:
    """Modified UTF-7 of RFC 3501 5.1.3: printable ASCII as is, '&' as '&-', the rest in &...-."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append(
                "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"
            )
            pending.clear()

    for char in text:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    """Inverse of encode_mutf7; raises InvalidMailboxName on malformed input."""
    if _PLAIN_MUTF7.fullmatch(text):
        return text  # printable ASCII without a shift: the common case, decoded as it is
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "&":
            if not 0x20 <= ord(char) <= 0x7E:
                raise InvalidMailboxName(f"non-ASCII byte in modified UTF-7 name {text!r}")
            out.append(char)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise InvalidMailboxName(f"unterminated shift in {text!r}")
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
            try:
                raw = base64.b64decode(padded, validate=True)
                out.append(raw.decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError):
                raise InvalidMailboxName(f"bad modified UTF-7 in {text!r}") from None
        i = end + 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Owner:
    """The user a personal mailbox belongs to."""

    user: str  # as the user logs in, without domain: 'alice', 'john.doe'
    domain: str | None = None

    @property
    def userid(self) -> str:
        return f"{self.user}@{self.domain}" if self.domain else self.user


@dataclass(frozen=True, slots=True)
class Namespace:
    """Converts between what a person types and the internal name."""

    separator: str = "."  # '/' with unixhierarchysep

    def to_internal(self, external: str, domain: str | None = None) -> str:
        """Internal name for an external one (its levels may be Unicode)."""
        levels = external.split(self.separator)
        internal_levels = [encode_mutf7(level).replace(".", "^") for level in levels]
        name = ".".join(internal_levels)
        name = f"{domain}!{name}" if domain else name
        validate_internal(name)
        return name

    def to_external(self, internal: str) -> str:
        domain, _, local = internal.rpartition("!")
        levels = [decode_mutf7(level.replace("^", ".")) for level in local.split(".")]
        external = self.separator.join(levels)
        return f"{domain}!{external}" if domain else external


_PLAIN_MUTF7 = re.compile(r"[\x20-\x25\x27-\x7e]*")  # printable ASCII but "&"
_BAD_LEVEL_CHAR = re.compile(r'[%*"\\\x00-\x1f\x7f-\U0010ffff]')


def validate_internal(name: str) -> None:
    """Raise InvalidMailboxName unless `name` is a well-formed internal name."""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidMailboxName(f"mailbox name must be 1-{MAX_NAME_LENGTH} characters")
    domain, _, local = name.rpartition("!")
    if "!" in domain:
        raise InvalidMailboxName(f"more than one '!' in {name!r}")
    for level in local.split("."):
        if not level:
            raise InvalidMailboxName(f"empty level in {name!r}")
        if _BAD_LEVEL_CHAR.search(level):
            raise InvalidMailboxName(f"bad character in {name!r}")
    decode_mutf7(local)  # must be valid modified UTF-7


def user_inbox(user: str, domain: str | None = None) -> str:
    """Internal name of a user's INBOX: user.alice, user.john^doe, example.com!user.alice."""
    name = f"{USER_PREFIX}.{user.replace('.', '^')}"
    return f"{domain}!{name}" if domain else name


@functools.lru_cache(maxsize=1024)
def owner_of(internal: str) -> Owner | None:
    """The owner of a personal mailbox, or None for a shared one. Remembered (the answer is
    the name's alone, and frozen): each IMAP command asks it 3-5 times, for rights and for
    whose \\Seen the index keeps."""
    domain, _, local = internal.rpartition("!")
    levels = local.split(".")
    if len(levels) < 2 or levels[0] != USER_PREFIX:
        return None
    return Owner(levels[1].replace("^", "."), domain or None)


def parent_of(internal: str) -> str | None:
    domain, _, local = internal.rpartition("!")
    head, sep, _ = local.rpartition(".")
    if not sep:
        return None
    return f"{domain}!{head}" if domain else head


def wildcard_pattern(pattern: str, separator: str) -> re.Pattern[str]:
    """LIST wildcards (RFC 9051 6.3.9), as IMAP, `sealmail mailbox` and `sealmail admin` match
    mailbox names: "*" matches anything, "%" anything but the hierarchy separator."""
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append(f"[^{re.escape(separator)}]*")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)

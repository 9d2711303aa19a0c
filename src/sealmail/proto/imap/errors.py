"""Errors of the IMAP core; each one knows the reply it turns into (pymap's idea).

`BadCommand` and its subclasses become a tagged BAD (RFC 9051 7.1.3) with the tag when one could be
read, or an untagged BAD when not. `CommandRefused` becomes a tagged NO (a command that parsed but
that the core or host will not carry out, e.g. an unsupported SEARCH charset). The host never has
to build these replies by hand.
"""

from __future__ import annotations

__all__ = [
    "BadCommand",
    "CommandNotAllowed",
    "CommandRefused",
    "ImapError",
    "LiteralTooLarge",
    "NestingTooDeep",
    "TooManyItems",
    "UnknownCommand",
    "UsageError",
]


class ImapError(Exception):
    """Base of every error the IMAP core raises for bad client input."""

    status = "BAD"

    def __init__(self, text: str, tag: str | None = None, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.tag = tag
        # A response code without its brackets, e.g. "TOOBIG" or "BADCHARSET (UTF-8)".
        self.code = code

    def with_tag(self, tag: str | None) -> ImapError:
        """Attach the tag once the caller knows it (the lexer does not)."""
        if self.tag is None:
            self.tag = tag
        return self

    def reply_bytes(self) -> bytes:
        """The whole reply line, CRLF included: `tag BAD [code] text` or `* BAD text`."""
        tag = self.tag if self.tag else "*"
        code = f"[{self.code}] " if self.code else ""
        text = self.text.replace("\r", " ").replace("\n", " ")
        return f"{tag} {self.status} {code}{text}\r\n".encode("utf-8", "replace")


class BadCommand(ImapError):
    """Bad syntax (RFC 9051 7.1.3: "the command ... was not syntactically valid")."""


class UnknownCommand(BadCommand):
    """A command name the server does not know."""


class CommandNotAllowed(BadCommand):
    """A known command given in a state where it is not legal (RFC 9051 3)."""


class LiteralTooLarge(BadCommand):
    """A literal over the limit (RFC 7888 4 and RFC 9051 7.1: the TOOBIG response code)."""

    def __init__(self, size: int, limit: int, tag: str | None = None) -> None:
        super().__init__(f"Literal of {size} octets is over the limit of {limit}", tag, "TOOBIG")
        self.size = size
        self.limit = limit


class NestingTooDeep(BadCommand):
    """Parenthesized lists or SEARCH keys nested deeper than the limit."""


class TooManyItems(BadCommand):
    """More list items, search keys or literals in one command than the limit allows."""


class CommandRefused(ImapError):
    """A well-formed command the server will not carry out: a tagged NO."""

    status = "NO"


class UsageError(Exception):
    """The host misused the core (answered nothing pending, sent a tagged reply twice, ...)."""

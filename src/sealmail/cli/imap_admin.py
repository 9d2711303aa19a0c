"""An IMAP administration client over imaplib: what `sealmail cyradm` sends and what it reads.

It speaks to any IMAP server the way Cyrus::IMAP::Admin does: STARTTLS when the server offers
it (unless told not to), then AUTHENTICATE PLAIN or LOGIN (RFC 4616; the LOGIN mechanism's
two challenges), or the LOGIN command when no mechanism is offered. Each operation returns
parsed data or raises AdminError carrying the server's own text, which cyradm prints.
Mailbox names go out as IMAP strings (atoms when they can, quoted otherwise; modified UTF-7,
RFC 3501 5.1.3, for what is not ASCII) and come back decoded.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sealmail.store.errors import InvalidMailboxName
from sealmail.store.names import decode_mutf7, encode_mutf7

# RFC 3501 9: ATOM-CHAR is any CHAR except atom-specials; a LIST pattern may also hold * and %.
_ATOM = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~*%]+")
_TOKEN = re.compile(rb'\s*(?:"((?:[^"\\]|\\.)*)"|(\()|(\))|([^\s()"]+))')
_BAD = re.compile(r"command error: BAD \[b['\"](.*)['\"]\]$")


class AdminError(Exception):
    """A command the server refused (NO or BAD), or a connection that failed; str() is the text
    to show the operator."""


@dataclass(frozen=True, slots=True)
class ListedMailbox:
    name: str
    attributes: str  # as sent: "\\HasNoChildren \\Noinferiors"


@dataclass(frozen=True, slots=True)
class QuotaResource:
    name: str  # STORAGE, MESSAGE
    used: int
    limit: int


def astring(text: str) -> str:
    """`text` as an IMAP astring: an atom when it can be one, else a quoted string."""
    if text.isascii() and _ATOM.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox_argument(name: str) -> str:
    return astring(encode_mutf7(name) if not name.isascii() else name)


def tokens(line: bytes) -> list[str | list[str]]:
    """Atoms, quoted strings and one level of parenthesised lists of a response line."""
    out: list[str | list[str]] = []
    group: list[str] | None = None
    for quoted, opening, closing, atom in _TOKEN.findall(line.strip()):
        if opening:
            group = []
        elif closing:
            if group is not None:
                out.append(group)
            group = None
        else:
            text = (re.sub(rb"\\(.)", rb"\1", quoted) if quoted or not atom else atom).decode(
                "utf-8", "replace"
            )
            (out if group is None else group).append(text)
    return out


def decoded_name(raw: str) -> str:
    try:
        return decode_mutf7(raw)
    except InvalidMailboxName:
        return raw


def server_text(typ: str, data: list[object]) -> str:
    first = data[0] if data else b""
    text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
    return text or typ


class AdminClient:
    """One authenticated IMAP connection."""

    def __init__(self, host: str, port: int, *, timeout: float = 60.0) -> None:
        self.host = host
        try:
            self.imap = imaplib.IMAP4(host, port, timeout=timeout)
        except OSError as exc:
            raise AdminError(f"cannot connect to server {host}:{port}: {exc}") from exc

    # ------------------------------------------------------------------ session

    def starttls(self, cafile: str | None) -> None:
        context = ssl.create_default_context(cafile=cafile)
        self._run(lambda: self.imap.starttls(context))

    def offers(self, capability: str) -> bool:
        return capability.upper() in self.imap.capabilities

    def authenticate(self, user: str, password: str, mechanism: str | None, authz: str) -> None:
        mechanism = (mechanism or self._best_mechanism()).upper()
        if mechanism == "PLAIN":
            response = f"{authz}\0{user}\0{password}".encode()
            self._run(lambda: self.imap.authenticate("PLAIN", lambda _: response))
        elif mechanism == "LOGIN":
            answers = iter((user.encode(), password.encode()))
            self._run(lambda: self.imap.authenticate("LOGIN", lambda _: next(answers, b"")))
        elif mechanism == "IMAP-LOGIN":  # the LOGIN command, when no mechanism is offered
            self._run(lambda: self.imap.login(user, password))
        else:
            raise AdminError(f"mechanism {mechanism} is not supported (PLAIN, LOGIN)")

    def _best_mechanism(self) -> str:
        for mechanism in ("PLAIN", "LOGIN"):
            if self.offers(f"AUTH={mechanism}"):
                return mechanism
        return "IMAP-LOGIN"

    def logout(self) -> None:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            self.imap.logout()

    # ------------------------------------------------------------------ commands

    def create(self, name: str, partition: str | None = None) -> None:
        args = [mailbox_argument(name)] + ([astring(partition)] if partition else [])
        self._command("CREATE", *args)

    def delete(self, name: str) -> None:
        self._command("DELETE", mailbox_argument(name))

    def rename(self, old: str, new: str, partition: str | None = None) -> None:
        args = [mailbox_argument(old), mailbox_argument(new)]
        self._command("RENAME", *args, *([astring(partition)] if partition else []))

    def list_mailboxes(
        self, pattern: str, reference: str = "", subscribed: bool = False
    ) -> list[ListedMailbox]:
        command = "LSUB" if subscribed else "LIST"
        data = self._command(command, astring(reference), mailbox_argument(pattern))
        return [m for item in data if (m := _listed(item)) is not None]

    def set_acl(self, name: str, identifier: str, rights: str) -> None:
        self._command("SETACL", mailbox_argument(name), astring(identifier), astring(rights))

    def delete_acl(self, name: str, identifier: str) -> None:
        self._command("DELETEACL", mailbox_argument(name), astring(identifier))

    def acl(self, name: str) -> list[tuple[str, str]]:
        """(identifier, rights) in the server's order (RFC 4314 3.3)."""
        pairs: list[tuple[str, str]] = []
        for item in self._command("GETACL", mailbox_argument(name), response="ACL"):
            words = [w for w in tokens(_line(item))[1:] if isinstance(w, str)]
            pairs.extend(zip(words[0::2], words[1::2], strict=False))
        return pairs

    def set_quota(self, root: str, limits: list[tuple[str, int]]) -> None:
        inner = " ".join(f"{resource.upper()} {limit}" for resource, limit in limits)
        self._command("SETQUOTA", mailbox_argument(root), f"({inner})", response="QUOTA")

    def quota(self, root: str) -> list[QuotaResource]:
        data = self._command("GETQUOTA", mailbox_argument(root), response="QUOTA")
        return [r for item in data for r in _resources(item)]

    def quota_root(self, name: str) -> tuple[str | None, list[QuotaResource]]:
        """The quota root of mailbox `name` (RFC 9208 4.3.2) and its resources."""
        self._command("GETQUOTAROOT", mailbox_argument(name), response="QUOTAROOT")
        roots = self.imap.untagged_responses.pop("QUOTAROOT", [])
        quotas = self.imap.untagged_responses.pop("QUOTA", [])
        root = None
        for item in roots:
            words = [w for w in tokens(_line(item))[1:] if isinstance(w, str)]
            root = decoded_name(words[0]) if words else root
        return root, [r for item in quotas for r in _resources(item)]

    # ------------------------------------------------------------------ plumbing

    def _command(self, name: str, *args: str, response: str | None = None) -> list[object]:
        """Send a command; its untagged `response` (default: the command's name) data."""
        typ, data = self._run(lambda: self.imap._simple_command(name, *args))
        if typ != "OK":
            raise AdminError(server_text(typ, data))
        if response == "QUOTAROOT":
            return []
        typ, untagged = self.imap._untagged_response(typ, data, response or name)
        return [item for item in untagged if item is not None]

    def _run(self, call: Callable[[], tuple[str, Any]]) -> tuple[str, list[object]]:
        try:
            typ, data = call()
        except imaplib.IMAP4.abort as exc:
            raise AdminError(f"connection to server lost: {exc}") from exc
        except imaplib.IMAP4.error as exc:
            text = str(exc)
            found = _BAD.search(text)
            raise AdminError(found.group(1) if found else text) from exc
        except (OSError, ssl.SSLError) as exc:
            raise AdminError(f"connection failed: {exc}") from exc
        data = list(data) if isinstance(data, list) else [data]
        if typ != "OK":
            raise AdminError(server_text(typ, data))
        return typ, data


def _line(item: object) -> bytes:
    """A response item: bytes, or (bytes with a literal, literal) from imaplib."""
    if isinstance(item, tuple):
        head, literal = bytes(item[0]), bytes(item[1])
        return re.sub(rb"\{\d+\}$", b"", head) + b'"' + literal.replace(b'"', b'\\"') + b'"'
    return item if isinstance(item, bytes) else str(item).encode()


def _listed(item: object) -> ListedMailbox | None:
    words = tokens(_line(item))
    if len(words) < 3 or not isinstance(words[0], list) or not isinstance(words[2], str):
        return None
    return ListedMailbox(decoded_name(words[2]), " ".join(words[0]))


def _resources(item: object) -> list[QuotaResource]:
    words = tokens(_line(item))
    found: list[QuotaResource] = []
    for word in words[1:]:
        if isinstance(word, list):
            for name, used, limit in zip(word[0::3], word[1::3], word[2::3], strict=False):
                if used.isdigit() and limit.isdigit():
                    found.append(QuotaResource(name.upper(), int(used), int(limit)))
    return found

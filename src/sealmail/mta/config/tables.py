"""Lookup tables named `type:name`, as Postfix's DATABASE_README and postmap(1) describe them.

Types (`postconf -m` lists them):

- `hash:/path/file` -- built by `sealmail postmap` from the text file into `/path/file.sqlite`
  beside it. We use SQLite (stdlib, indexed, safe to read while a new one is renamed into place)
  and the suffix `.sqlite`, not Postfix's `.db`, so a sealmail postmap run on a host that also runs
  Postfix never overwrites a Berkeley DB file Postfix reads. The build is atomic: temporary file,
  fsync, rename, directory fsync; the result keeps the source's permission bits for group and
  others (a password map stays private, as postmap(1) does it).
- `texthash:/path/file` -- the same source format, read into memory when opened.
- `inline:{ key=value, key2=value2 }` -- entries in the name itself (Postfix 3.0). As in Postfix
  3.7, a `{ key = text with spaces }` group inside inline: is an error.
- `static:value`, `static:{ text with spaces }` -- every key finds `value`.
- `regexp:/path/file` and `pcre:/path/file` -- `/pattern/flags result` rules, `!/pattern/` for a
  negative match, `if /pattern/` ... `endif` blocks, `$1`/`${1}`/`$(1)` substitution. Both are
  evaluated with Python's `re`; POSIX ERE and PCRE syntax are close to it but not identical
  (docs/mta-config.md lists the differences). Matching is case-insensitive unless the `i` flag
  toggles it, as in Postfix.
- `unix:passwd.byname`, `unix:group.byname` -- the system's accounts, as a passwd(5)/group(5) line.
- `proxy:type:name` -- Postfix's proxymap(8) wrapper; read here as the inner table directly.
- `socketmap:inet:host:port:name`, `socketmap:unix:/path:name` -- Sendmail's socketmap protocol
  (netstrings `name key` -> `OK value`, `NOTFOUND `, `TEMP`/`TIMEOUT`/`PERM reason`), as Postfix
  speaks it to postfix-mta-sts-resolver (`smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:
  postfix`). One connection per lookup, bounded by SOCKETMAP_TIMEOUT; a TEMP, TIMEOUT or PERM
  answer, or no answer, is a lookup failure (TableError), never "not found".

Case folding (postmap(1) -f): keys of hash, texthash, inline and unix tables are folded to lower
case when the table is built, and query keys when looked up; `fold=False` turns both off.
regexp and pcre never fold the key: case is the patterns' business (their `i` flag).

The source format: `key whitespace value`; `#` comment lines and blank lines skipped; a line that
starts with whitespace continues the previous one (joined as is, the newline dropped). A key with
no value is skipped with a warning; a duplicate key keeps the first value, with a warning (both
as Postfix 3.7's postmap does).
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sealmail.config.imapd_conf import ConfigError
from sealmail.durable import replacing
from sealmail.mta.config.postfix_files import logical_lines, read_text

if TYPE_CHECKING:
    from sealmail.store.api import MailboxLookup

log = logging.getLogger("sealmail.mta.tables")

INDEX_SUFFIX = ".sqlite"
SUPPORTED_TYPES = (
    "hash",
    "inline",
    "pcre",
    "proxy",
    "regexp",
    "sealmail",
    "socketmap",
    "static",
    "texthash",
    "unix",
)
_INDEX_FORMAT = "sealmail-hash-1"


class TableError(ConfigError):
    """A table cannot be opened or its source is malformed; names file and line."""


class LookupTable(Protocol):
    """What every table type offers to the MTA."""

    spec: str

    def lookup(self, key: str) -> str | None:
        """The value for `key`, or None when the table has no entry."""
        ...


@dataclass(frozen=True, slots=True)
class TableEntry:
    key: str
    value: str
    line: int


class StoreTable:
    """`sealmail:/etc/sealmail/imapd.conf`: the store's own recipients, as lmtpd would accept
    them at RCPT (user INBOXes, +detail, postuser and shared folders), so local_recipient_maps
    can reject unknown users at SMTP time instead of bouncing them later."""

    def __init__(self, imapd_conf: str) -> None:
        self.spec = f"sealmail:{imapd_conf}"
        self.imapd_conf = imapd_conf
        self._resolver: object | None = None

    def lookup(self, key: str) -> str | None:
        from sealmail.config.imapd_conf import load_imapd_conf
        from sealmail.delivery.recipient import RecipientResolver
        from sealmail.store.backends import open_store
        from sealmail.store.errors import MailboxNotFound, PermissionDenied, StoreError

        if self._resolver is None:
            config = load_imapd_conf(self.imapd_conf)
            mailboxes: MailboxLookup = open_store(config)  # read only: the mailbox list
            self._resolver = RecipientResolver(config, mailboxes)
        assert isinstance(self._resolver, RecipientResolver)
        local, _, domain = key.rpartition("@") if "@" in key else (key, "", "")
        try:
            self._resolver.resolve(local, domain or None)
        except (MailboxNotFound, PermissionDenied):
            return None
        except StoreError as exc:
            raise TableError(self.spec, 0, None, f"lookup of {key!r} failed: {exc}") from exc
        return "OK"


# --------------------------------------------------------------------------------------------
# Source files (postmap input)


def _source_lines(text: str) -> Iterator[tuple[int, str]]:
    """Logical lines: (first line number, text), continuations joined as they are."""
    for logical in logical_lines(text):
        yield logical.number, "".join(logical.parts)


def parse_source(text: str, path: str = "<string>", *, fold: bool = True) -> list[TableEntry]:
    """Entries of a postmap source file, first occurrence of a key wins."""
    entries: list[TableEntry] = []
    seen: set[str] = set()
    for number, logical in _source_lines(text):
        parts = logical.strip().split(None, 1)
        if len(parts) < 2:
            log.warning(
                "%s, line %d: expected format: key whitespace value -- ignoring this line",
                path,
                number,
            )
            continue
        key, value = parts[0], parts[1].strip()
        if fold:
            key = key.lower()
        if key in seen:
            log.warning("%s, line %d: duplicate entry: %r", path, number, key)
            continue
        seen.add(key)
        entries.append(TableEntry(key, value, number))
    return entries


def _read_text(path: Path) -> str:
    text = read_text(path, TableError)
    assert text is not None
    return text


# --------------------------------------------------------------------------------------------
# hash: an indexed file built by postmap


def index_path(source: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(source) + INDEX_SUFFIX)


def build_hash(source: str | os.PathLike[str], *, fold: bool = True) -> Path:
    """Build SOURCE.sqlite from SOURCE atomically; returns the index path."""
    source_path = Path(source)
    entries = parse_source(_read_text(source_path), str(source_path), fold=fold)
    stat = source_path.stat()
    owner = (stat.st_uid, stat.st_gid) if os.geteuid() == 0 else None
    return write_index(entries, source_path, fold=fold, mode=stat.st_mode, owner=owner)


def write_index(
    entries: list[TableEntry],
    source: Path,
    *,
    fold: bool,
    mode: int,
    owner: tuple[int, int] | None = None,
) -> Path:
    """Write SOURCE.sqlite durably (see sealmail.durable); returns its path. Group and other
    bits of `mode` are kept: a private password map gives a private index."""
    target = index_path(source)
    with replacing(target, mode=(mode & 0o077) | 0o600, owner=owner) as tmp:
        with sqlite3.connect(tmp) as db:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
            )
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("format", _INDEX_FORMAT), ("fold", "yes" if fold else "no")],
            )
            db.executemany(
                "INSERT INTO entries VALUES (?, ?)", [(entry.key, entry.value) for entry in entries]
            )
        db.close()
    return target


def _account() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


class HashTable:
    """A `hash:` table: lookups in SOURCE.sqlite, opened read-only."""

    def __init__(self, source: str, *, fold: bool = True) -> None:
        self.spec = f"hash:{source}"
        self.source = Path(source)
        self.fold = fold
        self.index = index_path(source)
        if not self.index.exists():
            raise TableError(
                str(self.index),
                0,
                None,
                f"cannot open: no such file (run: sealmail postmap {self.spec})",
            )
        try:
            if self.source.stat().st_mtime > self.index.stat().st_mtime:
                log.warning("database %s is older than source file %s", self.index, self.source)
        except FileNotFoundError:
            pass
        if not os.access(self.index, os.R_OK, effective_ids=os.access in os.supports_effective_ids):
            # Postfix reads a root-only map (the seed's SASL password map) before dropping
            # privileges; a sealmail agent reads it as mail_owner: say so, not "corrupt".
            raise TableError(
                str(self.index), 0, None,
                f"cannot open: permission denied for {_account()} (make it readable by the "
                "mail_owner account, e.g. chgrp to its group and chmod 640)",
            )
        try:
            self._db = sqlite3.connect(
                f"file:{self.index}?mode=ro", uri=True, check_same_thread=False
            )
            found = self._db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
        except sqlite3.DatabaseError:
            raise TableError(
                str(self.index), 0, None, "not a sealmail hash table; rebuild it with postmap"
            ) from None
        if found is None or found[0] != _INDEX_FORMAT:
            raise TableError(str(self.index), 0, None, "unknown index format; rebuild it")

    def lookup(self, key: str) -> str | None:
        if self.fold:
            key = key.lower()
        row = self._db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def items(self) -> Iterator[tuple[str, str]]:
        for key, value in self._db.execute("SELECT key, value FROM entries ORDER BY key"):
            yield str(key), str(value)

    def close(self) -> None:
        self._db.close()


class MemoryTable:
    """texthash: and inline: tables, held in a dict."""

    def __init__(self, spec: str, entries: dict[str, str], *, fold: bool) -> None:
        self.spec = spec
        self.fold = fold
        self.entries = entries

    def lookup(self, key: str) -> str | None:
        return self.entries.get(key.lower() if self.fold else key)

    def items(self) -> Iterator[tuple[str, str]]:
        yield from self.entries.items()


def _texthash(source: str, fold: bool) -> MemoryTable:
    path = Path(source)
    entries = parse_source(_read_text(path), source, fold=fold)
    return MemoryTable(f"texthash:{source}", {e.key: e.value for e in entries}, fold=fold)


def _inline(name: str, fold: bool) -> MemoryTable:
    spec = f"inline:{name}"
    text = name.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise TableError(spec, 0, None, 'need "inline:{name=value...}"')
    entries: dict[str, str] = {}
    for item in text[1:-1].replace(",", " ").split():
        key, sep, value = item.partition("=")
        if not sep or not key or "{" in item or "}" in item:
            raise TableError(
                spec, 0, None, f"missing '=' after attribute name: {item!r}; need name=value"
            )
        entries[key.lower() if fold else key] = value  # a later duplicate wins, as in Postfix
    return MemoryTable(spec, entries, fold=fold)


class StaticTable:
    def __init__(self, value: str) -> None:
        stripped = value.strip()
        if stripped.startswith("{") and stripped.endswith("}"):
            stripped = stripped[1:-1].strip()
        self.spec = f"static:{value}"
        self.value = stripped

    def lookup(self, key: str) -> str | None:
        return self.value


class UnixTable:
    """`unix:passwd.byname` and `unix:group.byname`: the system's account databases."""

    def __init__(self, name: str, *, fold: bool = True) -> None:
        if name not in ("passwd.byname", "group.byname"):
            raise TableError(
                f"unix:{name}", 0, None, "unknown unix map (passwd.byname or group.byname)"
            )
        self.spec = f"unix:{name}"
        self.name = name
        self.fold = fold

    def lookup(self, key: str) -> str | None:
        if self.fold:
            key = key.lower()
        try:
            if self.name == "passwd.byname":
                pw = pwd.getpwnam(key)
                return ":".join(
                    (
                        pw.pw_name,
                        pw.pw_passwd,
                        str(pw.pw_uid),
                        str(pw.pw_gid),
                        pw.pw_gecos,
                        pw.pw_dir,
                        pw.pw_shell,
                    )
                )
            gr = grp.getgrnam(key)
            return ":".join((gr.gr_name, gr.gr_passwd or "", str(gr.gr_gid), ",".join(gr.gr_mem)))
        except (KeyError, ValueError):
            return None


# --------------------------------------------------------------------------------------------
# regexp: and pcre:

_REGEXP_FLAGS = {"i", "m", "x"}
_PCRE_FLAGS = {"i", "m", "s", "x", "A", "E", "U", "X"}
_SUBSTITUTION = re.compile(r"\$(?:\$|(\d+)|\{(\d+)\}|\((\d+)\))")


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    negated: bool
    result: str | None  # None for `if` and `endif`
    kind: str  # "match", "if", "endif"
    line: int


class RegexpTable:
    """Ordered pattern rules; the first that matches gives the result (with $N substituted)."""

    def __init__(self, spec: str, rules: list[_Rule]) -> None:
        self.spec = spec
        self.rules = rules

    def lookup(self, key: str) -> str | None:
        skip_depth = 0  # inside an `if` whose condition failed
        depth = 0
        for rule in self.rules:
            if rule.kind == "endif":
                if skip_depth and depth == skip_depth:
                    skip_depth = 0
                depth -= 1
                continue
            if rule.kind == "if":
                depth += 1
                if not skip_depth and (rule.pattern.search(key) is None) != rule.negated:
                    skip_depth = depth
                continue
            if skip_depth:
                continue
            match = rule.pattern.search(key)
            if rule.negated:
                if match is None:
                    return rule.result
                continue
            if match is not None:
                return _substitute(rule.result or "", match)
        return None


def _substitute(result: str, match: re.Match[str]) -> str:
    def group(found: re.Match[str]) -> str:
        number = found.group(1) or found.group(2) or found.group(3)
        if number is None:
            return "$"
        index = int(number)
        if index > (match.re.groups or 0):
            return ""
        return match.group(index) or ""

    return _SUBSTITUTION.sub(group, result)


def _parse_pattern(text: str, kind: str, path: str, line: int) -> tuple[re.Pattern[str], bool, str]:
    """`[!]/pattern/flags rest` -> (compiled pattern, negated, rest)."""
    negated = False
    text = text.lstrip()
    if text.startswith("!"):
        negated = True
        text = text[1:].lstrip()
    if not text:
        raise TableError(path, line, None, "missing pattern")
    delimiter = text[0]
    if delimiter.isalnum() or delimiter.isspace() or delimiter == "\\":
        raise TableError(path, line, None, f"bad pattern delimiter {delimiter!r} (use /.../)")
    index = 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == delimiter:
            break
        index += 1
    else:
        raise TableError(path, line, None, f"missing closing {delimiter!r} in pattern")
    source = text[1:index]
    rest = text[index + 1 :]
    flag_end = 0
    while flag_end < len(rest) and not rest[flag_end].isspace():
        flag_end += 1
    flags, rest = rest[:flag_end], rest[flag_end:].strip()
    allowed = _PCRE_FLAGS if kind == "pcre" else _REGEXP_FLAGS
    re_flags = re.IGNORECASE
    anchored = False
    for flag in flags:
        if flag not in allowed:
            raise TableError(path, line, None, f"unknown {kind} flag {flag!r}")
        if flag == "i":
            re_flags ^= re.IGNORECASE
        elif flag == "m":
            re_flags ^= re.MULTILINE
        elif flag == "s":
            re_flags ^= re.DOTALL
        elif flag == "x" and kind == "pcre":
            re_flags ^= re.VERBOSE
        elif flag == "x":
            raise TableError(path, line, None, "basic regular expressions (x) are not supported")
        elif flag == "A":
            anchored = True
        elif flag == "U":
            raise TableError(path, line, None, "ungreedy matching (flag U) is not supported")
        # E (dollar matches only at the end) and X (extra checks) need nothing: keys are one line.
    if anchored:
        source = f"(?:{source})"
    try:
        compiled = re.compile(("\\A" if anchored else "") + source, re_flags)
    except re.error as exc:
        raise TableError(path, line, None, f"bad pattern /{source}/: {exc}") from None
    return compiled, negated, rest


def parse_regexp(text: str, path: str = "<string>", kind: str = "regexp") -> RegexpTable:
    rules: list[_Rule] = []
    depth = 0
    never = re.compile(r"(?!)")
    for number, logical in _source_lines(text):
        stripped = logical.strip()
        lowered = stripped.lower()
        if lowered == "endif":
            if depth == 0:
                raise TableError(path, number, None, "endif without if")
            depth -= 1
            rules.append(_Rule(never, False, None, "endif", number))
            continue
        if (lowered.startswith("if") and stripped[2:3].isspace()) or lowered.startswith("if!"):
            pattern, negated, rest = _parse_pattern(stripped[2:], kind, path, number)
            if rest:
                raise TableError(path, number, None, "text after the if pattern")
            depth += 1
            rules.append(_Rule(pattern, negated, None, "if", number))
            continue
        pattern, negated, rest = _parse_pattern(stripped, kind, path, number)
        if not rest:
            raise TableError(path, number, None, "missing result after the pattern")
        if negated and _SUBSTITUTION.search(rest.replace("$$", "")):
            raise TableError(path, number, None, "$number in the result of a negated pattern")
        rules.append(_Rule(pattern, negated, rest, "match", number))
    if depth:
        raise TableError(path, 0, None, "if without endif")
    return RegexpTable(f"{kind}:{path}", rules)


# --------------------------------------------------------------------------------------------
# socketmap: a lookup server over TCP or a UNIX socket

SOCKETMAP_TIMEOUT = 10.0  # Postfix's socketmap timeout
SOCKETMAP_MAX_REPLY = 100_000  # Postfix's socketmap_max_reply_size


def netstring(data: bytes) -> bytes:
    return str(len(data)).encode("ascii") + b":" + data + b","


def read_netstring(sock: socket.socket, limit: int = SOCKETMAP_MAX_REPLY) -> bytes:
    """One netstring from `sock` (`len:data,`); ValueError when malformed or over `limit`."""
    header = b""
    while not header.endswith(b":"):
        char = sock.recv(1)
        if not char:
            raise ValueError("the server closed the connection")
        header += char
        if len(header) > 12 or not (char.isdigit() or char == b":"):
            raise ValueError(f"malformed netstring length {header[:12]!r}")
    if header == b":":
        raise ValueError("malformed netstring: no length")
    length = int(header[:-1])
    if length > limit:
        raise ValueError(f"reply of {length} bytes is over {limit}")
    data = b""
    while len(data) < length + 1:
        chunk = sock.recv(length + 1 - len(data))
        if not chunk:
            raise ValueError("the server closed the connection")
        data += chunk
    if not data.endswith(b","):
        raise ValueError("netstring without its final comma")
    return data[:-1]


class SocketmapTable:
    """`socketmap:inet:host:port:name` or `socketmap:unix:/path:name` (the module text)."""

    def __init__(self, name: str, *, fold: bool = True,
                 timeout: float = SOCKETMAP_TIMEOUT) -> None:
        self.spec = f"socketmap:{name}"
        endpoint, sep, self.map_name = name.rpartition(":")
        kind, _, where = endpoint.partition(":")
        if not sep or not self.map_name or kind not in ("inet", "unix") or not where:
            raise TableError(self.spec, 0, None, "need socketmap:inet:host:port:name or "
                             "socketmap:unix:/path:name")
        self.address: tuple[str, int] | str
        if kind == "inet":
            host, colon, port = where.rpartition(":")
            if not colon or not port.isdigit():
                raise TableError(self.spec, 0, None, f"bad host:port {where!r}")
            self.address = (host.strip("[]"), int(port))
        else:
            self.address = where
        self.fold = fold
        self.timeout = timeout

    def lookup(self, key: str) -> str | None:
        query = f"{self.map_name} {key.lower() if self.fold else key}".encode()
        family = socket.AF_UNIX if isinstance(self.address, str) else socket.AF_INET
        if family == socket.AF_INET and ":" in self.address[0]:
            family = socket.AF_INET6
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.address)
                sock.sendall(netstring(query))
                reply = read_netstring(sock).decode("utf-8", "replace")
        except (OSError, ValueError) as exc:
            raise TableError(self.spec, 0, None, f"lookup of {key!r} failed: {exc}") from None
        status, _, value = reply.partition(" ")
        if status == "OK":
            return value
        if status == "NOTFOUND":
            return None
        raise TableError(self.spec, 0, None, f"lookup of {key!r}: {reply[:200]}")


# --------------------------------------------------------------------------------------------
# Opening tables by name


def split_spec(spec: str, default_type: str = "hash") -> tuple[str, str]:
    """`type:name` -> (type, name); a bare path gets `default_type` (postmap's rule)."""
    type_, sep, name = spec.partition(":")
    if sep and type_ and re.fullmatch(r"[a-z][a-z0-9]*", type_):
        return type_, name
    return default_type, spec


def open_table(spec: str, *, fold: bool = True, default_type: str = "hash") -> LookupTable:
    """Open the table `spec` (see the module text for the types)."""
    type_, name = split_spec(spec, default_type)
    if type_ == "proxy":
        return open_table(name, fold=fold, default_type=default_type)
    if type_ not in SUPPORTED_TYPES:
        raise TableError(
            spec,
            0,
            None,
            f"unsupported dictionary type: {type_} (supported: {', '.join(SUPPORTED_TYPES)})",
        )
    if not name:
        raise TableError(spec, 0, None, f"missing table name after {type_}:")
    if type_ == "hash":
        return HashTable(name, fold=fold)
    if type_ == "texthash":
        return _texthash(name, fold)
    if type_ == "inline":
        return _inline(name, fold)
    if type_ == "static":
        return StaticTable(name)
    if type_ == "unix":
        return UnixTable(name, fold=fold)
    if type_ == "sealmail":
        return StoreTable(name)
    if type_ == "socketmap":
        return SocketmapTable(name, fold=fold)
    return parse_regexp(_read_text(Path(name)), name, type_)

"""Per-user Sieve scripts on disk, laid out as Cyrus keeps them.

    <sievedir>/<h>/<user>/NAME.script            one file per script, as uploaded
    <sievedir>/<h>/<user>/defaultbc -> NAME.script  the active script (a relative symlink)
    <sievedir>/domain/<d>/<domain>/<h>/<user>/...    a `user@domain` under virtdomains

`<h>` is Cyrus's directory hash without `fulldirhash`: the user's first letter lower-cased, or
`q` when it is not an ASCII letter. Cyrus's `defaultbc` link points at the compiled bytecode;
sealmail compiles in memory (the Sieve library caches by the text's hash), so the link points at
the script itself. No link: no active script, and delivery does an implicit keep.

Every write is atomic: the new text goes to a temporary file in the same directory, is fsynced,
renamed over the name, and the directory is fsynced, so a reader (lmtpd running a script while a
ManageSieve client replaces it) sees the old script or the new one, never a part. Changes of one
user's set run under an exclusive flock on `<userdir>/.lock`, so two ManageSieve sessions cannot
both pass the `sieve_maxscripts` check and go over it.

Script names reach this module already checked against RFC 5804 section 1.6 by the protocol
core; this module refuses in addition what cannot be a file name here ("/", a leading ".").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.durable import fsync_directory, replace_file, replace_symlink
from sealmail.store.errors import StoreError

__all__ = [
    "ACTIVE_LINK",
    "SCRIPT_SUFFIX",
    "InvalidScriptName",
    "ScriptActive",
    "ScriptEntry",
    "ScriptExists",
    "ScriptNotFound",
    "ScriptQuota",
    "SieveScriptError",
    "SieveScriptStore",
    "check_script_name",
    "user_sieve_directory",
]


SCRIPT_SUFFIX = ".script"
ACTIVE_LINK = "defaultbc"
_LOCK_FILE = ".lock"
_MAX_NAME_OCTETS = 255 - len(SCRIPT_SUFFIX)  # NAME.script must fit a file name (NAME_MAX)
_MAX_DIRECTORY_NAMES = 50_000  # users' directory names kept before starting over
_EFFECTIVE_IDS = os.access in os.supports_effective_ids  # as the reads after it: by the euid


class SieveScriptError(StoreError):
    """Base of the script store's refusals; ManageSieve maps each to one response code."""

    temporary = False


class ScriptNotFound(SieveScriptError):
    """No script of that name (RFC 5804 NONEXISTENT)."""


class ScriptExists(SieveScriptError):
    """RENAMESCRIPT onto a name in use (RFC 5804 ALREADYEXISTS)."""


class ScriptActive(SieveScriptError):
    """DELETESCRIPT of the active script (RFC 5804 2.10: it MUST be refused, ACTIVE)."""


class InvalidScriptName(SieveScriptError):
    """A name this store cannot keep as a file."""


class ScriptQuota(SieveScriptError):
    """Over `sieve_maxscripts` (`kind` "MAXSCRIPTS") or `sieve_maxscriptsize` ("MAXSIZE")."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in ("MAXSCRIPTS", "MAXSIZE"):
            raise ValueError(f"unknown quota kind {kind!r}")
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class ScriptEntry:
    name: str
    active: bool


def _hash_letter(name: str) -> str:
    """Cyrus's dir_hash_c without fulldirhash: a lower-case ASCII letter, else "q"."""
    first = name[:1].lower()
    return first if "a" <= first <= "z" else "q"


def _safe_component(text: str, what: str) -> str:
    if not text or text in (".", "..") or "/" in text or "\0" in text or text.startswith("."):
        raise InvalidScriptName(f"{what} {text!r} cannot name a directory")
    return text


def user_sieve_directory(sievedir: Path, user: str) -> Path:
    """Where `user` (`name` or `name@domain`) keeps its scripts, by Cyrus's layout."""
    return sievedir.joinpath(*_user_components(user))


def _user_components(user: str) -> list[str]:
    local, at, domain = user.partition("@")
    local = _safe_component(local, "user")
    parts = []
    if at:
        domain = _safe_component(domain.lower(), "domain")
        parts = ["domain", _hash_letter(domain), domain]
    return [*parts, _hash_letter(local), local]


def check_script_name(name: str) -> None:
    """Refuse names that cannot be a file here: "/", NUL, a leading ".", too long."""
    if not name:
        raise InvalidScriptName("a script name cannot be empty")
    if "/" in name or "\0" in name or name.startswith("."):
        raise InvalidScriptName(f"script name {name!r} may not hold '/' or start with '.'")
    if len(name.encode("utf-8")) > _MAX_NAME_OCTETS:
        raise InvalidScriptName(f"script name is longer than {_MAX_NAME_OCTETS} octets")


class SieveScriptStore:
    """The scripts of every user under one `sievedir`, with Cyrus's two quotas.

    Blocking file I/O: an asyncio host calls it from a worker thread.
    """

    def __init__(self, sievedir: Path, *, max_script_size: int, max_scripts: int) -> None:
        self.sievedir = sievedir
        self.max_script_size = max_script_size  # octets
        self.max_scripts = max_scripts
        self._sievedir_name = os.fspath(sievedir)
        self._directory_names: dict[str, str] = {}

    @classmethod
    def from_config(cls, config: ImapdConfig) -> SieveScriptStore:
        """sievedir (the per-user script directories), sieve_maxscriptsize (KiB) and
        sieve_maxscripts, Cyrus's names and defaults (sealmail.config.options)."""
        size_kib = config.get(IMAPD.sieve_maxscriptsize)
        return cls(
            Path(config.get(IMAPD.sievedir) or config.configdirectory / "sieve"),
            max_script_size=size_kib * 1024,
            max_scripts=config.get(IMAPD.sieve_maxscripts),
        )

    # -- reading --------------------------------------------------------------------------------

    def directory(self, user: str) -> Path:
        return user_sieve_directory(self.sievedir, user)

    def _directory_name(self, user: str) -> str:
        """`directory` as a string: every delivery asks, and Path objects cost; kept per user
        (it depends on the name alone)."""
        known = self._directory_names.get(user)
        if known is None:
            if len(self._directory_names) >= _MAX_DIRECTORY_NAMES:
                self._directory_names = {}
            known = self._directory_names[user] = "/".join(
                (self._sievedir_name, *_user_components(user))
            )
        return known

    def _path(self, user: str, name: str) -> Path:
        check_script_name(name)
        return self.directory(user) / (name + SCRIPT_SUFFIX)

    def names(self, user: str) -> list[str]:
        """The user's script names, sorted by code point."""
        try:
            files = os.listdir(self.directory(user))
        except FileNotFoundError:
            return []
        return sorted(
            f[: -len(SCRIPT_SUFFIX)]
            for f in files
            if f.endswith(SCRIPT_SUFFIX) and not f.startswith(".")
        )

    def active_name(self, user: str) -> str | None:
        """The active script's name, or None (no link, or a link to a missing script)."""
        return self._active_name(self._directory_name(user))

    @staticmethod
    def _active_name(directory: str) -> str | None:
        link = f"{directory}/{ACTIVE_LINK}"
        if not os.access(link, os.F_OK, effective_ids=_EFFECTIVE_IDS):
            # No link, or one to a missing script (most recipients at delivery): answered
            # without the FileNotFoundError a readlink raises, a third of the cost (issue 18).
            return None
        try:
            target = os.readlink(link)
        except OSError:
            return None
        if "/" in target or not target.endswith(SCRIPT_SUFFIX):
            return None
        if not os.path.isfile(f"{directory}/{target}"):
            return None
        return target[: -len(SCRIPT_SUFFIX)]

    def entries(self, user: str) -> list[ScriptEntry]:
        """LISTSCRIPTS: every script, the active one marked."""
        active = self.active_name(user)
        return [ScriptEntry(name, name == active) for name in self.names(user)]

    def read(self, user: str, name: str) -> bytes:
        try:
            return self._path(user, name).read_bytes()
        except FileNotFoundError:
            raise ScriptNotFound(f"no script named {name!r}") from None
        except OSError as exc:
            raise StoreError(f"cannot read script {name!r}: {exc.strerror}") from exc

    def active_script(self, user: str) -> tuple[str, bytes] | None:
        """What delivery runs: (name, text) of the active script, or None.

        Read through the link itself, so a SETACTIVE racing with this read gives the old script
        or the new one, whole.
        """
        directory = self._directory_name(user)
        name = self._active_name(directory)
        if name is None:
            return None
        try:
            with open(f"{directory}/{ACTIVE_LINK}", "rb") as script:
                return name, script.read()
        except OSError:
            return None

    # -- quotas ---------------------------------------------------------------------------------

    def check_space(self, user: str, name: str, size: int) -> None:
        """HAVESPACE and PUTSCRIPT: ScriptQuota when `name` of `size` octets would not fit.

        Replacing a script does not count as one more (Cyrus counts the same way).
        """
        check_script_name(name)
        if size > self.max_script_size:
            raise ScriptQuota(
                "MAXSIZE", f"script of {size} octets is over the limit of {self.max_script_size}"
            )
        existing = self.names(user)
        if name not in existing and len(existing) >= self.max_scripts:
            raise ScriptQuota(
                "MAXSCRIPTS", f"you already have the most scripts allowed ({self.max_scripts})"
            )

    # -- changes --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, user: str) -> Iterator[Path]:
        directory = self.directory(user)
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open {directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield directory
        finally:
            os.close(fd)

    def put(self, user: str, name: str, content: bytes) -> None:
        """PUTSCRIPT: store `content` (already validated) under `name`, atomically.

        A replaced active script stays active and delivery sees the new text at once.
        """
        with self._locked(user) as directory:
            self.check_space(user, name, len(content))
            target = directory / (name + SCRIPT_SUFFIX)
            try:
                replace_file(target, content)
            except OSError as exc:
                raise _disk_error(f"cannot write script {name!r}", exc) from exc

    def set_active(self, user: str, name: str | None) -> None:
        """SETACTIVE: make `name` the active script; None (the empty name) deactivates all."""
        with self._locked(user) as directory:
            link = directory / ACTIVE_LINK
            try:
                if name is None:
                    link.unlink(missing_ok=True)
                else:
                    if not self._path(user, name).is_file():
                        raise ScriptNotFound(f"no script named {name!r}")
                    replace_symlink(link, name + SCRIPT_SUFFIX, sync_directory=False)
                fsync_directory(directory)
            except OSError as exc:
                raise _disk_error("cannot change the active script", exc) from exc

    def delete(self, user: str, name: str) -> None:
        """DELETESCRIPT; RFC 5804 2.10: the active script may not be deleted."""
        with self._locked(user) as directory:
            path = self._path(user, name)
            if not path.is_file():
                raise ScriptNotFound(f"no script named {name!r}")
            if self.active_name(user) == name:
                raise ScriptActive(f"script {name!r} is active")
            try:
                path.unlink()
                fsync_directory(directory)
            except OSError as exc:
                raise _disk_error(f"cannot delete script {name!r}", exc) from exc

    def rename(self, user: str, old: str, new: str) -> None:
        """RENAMESCRIPT; RFC 5804 2.11.1: renaming the active script keeps it active."""
        with self._locked(user) as directory:
            source, target = self._path(user, old), self._path(user, new)
            if not source.is_file():
                raise ScriptNotFound(f"no script named {old!r}")
            if target.exists():
                raise ScriptExists(f"a script named {new!r} exists")
            was_active = self.active_name(user) == old
            try:
                os.link(source, target)  # never replaces an existing file, unlike rename
                if was_active:
                    replace_symlink(
                        directory / ACTIVE_LINK, new + SCRIPT_SUFFIX, sync_directory=False
                    )
                source.unlink()
                fsync_directory(directory)
            except FileExistsError:
                raise ScriptExists(f"a script named {new!r} exists") from None
            except OSError as exc:
                raise _disk_error(f"cannot rename script {old!r}", exc) from exc


def _disk_error(what: str, exc: OSError) -> StoreError:
    """A failed write: temporary, as the disk may get space again (TRYLATER for the client)."""
    error = StoreError(f"{what}: {exc.strerror or exc}")
    error.temporary = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN)
    return error

"""The SASL user database: per user and realm, secrets from which no password can be read back.

Cyrus SASL's sasldb keeps `userPassword` in clear. Ours keeps, under the same kind of key
(user, realm, property), only:

- `userPassword`: `{SCRYPT}N$r$p$salt$hash`, a slow salted hash checked in constant time, for
  PLAIN and LOGIN (the LDAP habit of a `{SCHEME}` prefix on a hashed userPassword);
- `cmusaslsecretCRAM-MD5`: `{HMAC-MD5}` and the hex MD5 states after key^ipad and key^opad,
  as Dovecot's CRAM-MD5 scheme keeps them;
- `cmusaslsecretSCRAM-SHA-1` / `-256`: `{SCRAM}iterations$salt$StoredKey$ServerKey`
  (RFC 5802 3).

The file is SQLite, so several processes (lmtpd, imapd, saslpasswd2) read and write it at once
with its locking and atomic commits; it is created 0600 (0640 when given a group).
"""

from __future__ import annotations

import base64
import binascii
import grp
import hashlib
import hmac
import os
import secrets
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import scramp
from scramp.utils import saslprep

from sealmail.auth.throttle import HASHING, HashingPool
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.proto.sasl import (
    CramMD5Secret,
    CredentialsUnavailable,
    Identity,
    ScramSecret,
    Verdict,
    cram_md5_secret,
)

__all__ = [
    "CRAM_MD5_PROPERTY",
    "PASSWORD_PROPERTY",
    "SCRAM_PROPERTIES",
    "SaslDB",
    "SaslDBEntry",
    "SaslDBError",
    "sasldb_path",
]

PASSWORD_PROPERTY = "userPassword"
CRAM_MD5_PROPERTY = "cmusaslsecretCRAM-MD5"
SCRAM_PROPERTIES = {
    "SCRAM-SHA-1": "cmusaslsecretSCRAM-SHA-1",
    "SCRAM-SHA-256": "cmusaslsecretSCRAM-SHA-256",
}

_APPLICATION_ID = 0x53534442  # "SSDB": tells our file from Cyrus's Berkeley DB sasldb2
_SCHEMA_VERSION = 1
_BUSY_TIMEOUT = 10.0  # seconds a writer waits for another process's transaction

# scrypt cost: N=2**15, r=8 takes ~32 MiB and tens of milliseconds per check (RFC 7914 2).
DEFAULT_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
DEFAULT_SCRAM_ITERATIONS = 4096  # RFC 7677 4: at least 4096


class SaslDBError(CredentialsUnavailable):
    """The sasldb cannot be read or written; the message names the file, never a password."""


@dataclass(frozen=True, slots=True)
class SaslDBEntry:
    identity: Identity
    properties: tuple[str, ...]


def sasldb_path(config: ImapdConfig) -> Path:
    """`sasl_sasldb_path`, default `{configdirectory}/sasldb2`."""
    return Path(config.get(IMAPD.sasl_sasldb_path) or config.configdirectory / "sasldb2")


def _prepared(password: str) -> bytes:
    """RFC 4616 5 / RFC 4013: compare SASLprep'd passwords, so NFKC variants match.

    A password that SASLprep refuses (prohibited characters) is compared as given, the same
    way on storage and on check.
    """
    try:
        return str(saslprep(password)).encode("utf-8")
    except Exception:  # scramp raises its own exception type
        return password.encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class SaslDB:
    """One sasldb file. Each call opens its own short connection, so it is safe across
    threads and processes; lookups never create the file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        scrypt_n: int = DEFAULT_SCRYPT_N,
        scram_iterations: int = DEFAULT_SCRAM_ITERATIONS,
        hashing: HashingPool = HASHING,
    ) -> None:
        if scram_iterations < DEFAULT_SCRAM_ITERATIONS:
            raise ValueError("SCRAM iteration count must be at least 4096 (RFC 7677 4)")
        self.path = Path(path)
        self._scrypt_n = scrypt_n
        self._scram_iterations = scram_iterations
        self._hashing = hashing

    @classmethod
    def from_config(cls, config: ImapdConfig) -> SaslDB:
        return cls(sasldb_path(config))

    # -- connections -------------------------------------------------------------------------

    def _fail(self, action: str, exc: BaseException) -> SaslDBError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return SaslDBError(f"sasldb {self.path}: cannot {action}: {reason}")

    @contextmanager
    def _connect(self, *, write: bool, group: str | None = None) -> Iterator[sqlite3.Connection]:
        if write:
            self._create_file(group)
        elif not self.path.exists():
            raise SaslDBError(f"sasldb {self.path}: no such file")
        uri = f"file:{self.path}?mode={'rw' if write else 'ro'}"
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._fail("open", exc) from None
        try:
            self._check_schema(connection, write)
            if write:
                connection.execute("BEGIN IMMEDIATE")
            yield connection
            if write:
                connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if "not a database" in str(exc):
                # Typically Cyrus SASL's Berkeley DB sasldb2: re-create users with our tool.
                raise SaslDBError(f"sasldb {self.path}: not a sealmail sasldb ({exc})") from None
            raise self._fail("use", exc) from None
        finally:
            connection.close()

    def _create_file(self, group: str | None) -> None:
        """Create an empty file 0600 (0640 and chgrp with a group) before SQLite opens it."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            raise self._fail("create", exc) from None
        try:
            if group is not None:
                try:
                    gid = grp.getgrnam(group).gr_gid
                except KeyError:
                    raise SaslDBError(f"sasldb {self.path}: no such group {group!r}") from None
                os.fchown(fd, -1, gid)
                os.fchmod(fd, 0o640)
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        os.close(fd)

    def _check_schema(self, connection: sqlite3.Connection, write: bool) -> None:
        app_id = connection.execute("PRAGMA application_id").fetchone()[0]
        if app_id == _APPLICATION_ID:
            return
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id != 0 or tables:
            raise SaslDBError(f"sasldb {self.path}: not a sealmail sasldb")
        if not write:
            return  # a new empty file: no users yet
        connection.executescript(
            f"""
            BEGIN IMMEDIATE;
            CREATE TABLE IF NOT EXISTS secrets (
                user TEXT NOT NULL, realm TEXT NOT NULL, property TEXT NOT NULL,
                value TEXT NOT NULL, PRIMARY KEY (user, realm, property)
            ) WITHOUT ROWID;
            PRAGMA application_id = {_APPLICATION_ID};
            PRAGMA user_version = {_SCHEMA_VERSION};
            COMMIT;
            """
        )

    def _values(self, identity: Identity) -> dict[str, str]:
        with self._connect(write=False) as connection:
            if not _has_table(connection):
                return {}
            rows = connection.execute(
                "SELECT property, value FROM secrets WHERE user = ? AND realm = ?",
                (identity.user, identity.realm),
            ).fetchall()
        return {str(prop): str(value) for prop, value in rows}

    # -- administration (saslpasswd2, sasldblistusers2) --------------------------------------

    def set_password(
        self,
        identity: Identity,
        password: str,
        *,
        plaintext_verifier: bool = True,
        group: str | None = None,
    ) -> None:
        """Replace the user's secrets with ones derived from `password`.

        `plaintext_verifier=False` is saslpasswd2 -n: no userPassword, so PLAIN and LOGIN fail
        while CRAM-MD5 and SCRAM work.
        """
        if not identity.user or not identity.realm:
            raise ValueError("user and realm must not be empty")
        if not password:
            raise ValueError("the password must not be empty")
        prepared = _prepared(password)
        values: dict[str, str] = {}
        if plaintext_verifier:
            values[PASSWORD_PROPERTY] = self._scrypt_verifier(prepared)
        # CRAM-MD5 clients key HMAC with the password's UTF-8 bytes as typed (RFC 2195 2).
        cram = cram_md5_secret(password.encode("utf-8"))
        packed = struct.pack("<8I", *cram.inner, *cram.outer)
        values[CRAM_MD5_PROPERTY] = "{HMAC-MD5}" + packed.hex()
        for mechanism, prop in SCRAM_PROPERTIES.items():
            salt, stored, server, iterations = scramp.ScramMechanism(mechanism).make_auth_info(
                password, iteration_count=self._scram_iterations, salt=secrets.token_bytes(16)
            )
            values[prop] = "{SCRAM}" + "$".join(
                (str(iterations), _b64(salt), _b64(stored), _b64(server))
            )
        with self._connect(write=True, group=group) as connection:
            connection.execute(
                "DELETE FROM secrets WHERE user = ? AND realm = ?", (identity.user, identity.realm)
            )
            connection.executemany(
                "INSERT INTO secrets (user, realm, property, value) VALUES (?, ?, ?, ?)",
                [(identity.user, identity.realm, prop, value) for prop, value in values.items()],
            )

    def delete(self, identity: Identity) -> bool:
        """Remove every secret of the user; False when there was none."""
        with self._connect(write=True) as connection:
            cursor = connection.execute(
                "DELETE FROM secrets WHERE user = ? AND realm = ?", (identity.user, identity.realm)
            )
            return cursor.rowcount > 0

    def entries(self) -> list[SaslDBEntry]:
        """Every user with the names of its stored properties, sorted by realm then user."""
        with self._connect(write=False) as connection:
            if not _has_table(connection):
                return []
            rows = connection.execute(
                "SELECT user, realm, property FROM secrets ORDER BY realm, user, property"
            ).fetchall()
        grouped: dict[Identity, list[str]] = {}
        for user, realm, prop in rows:
            grouped.setdefault(Identity(str(user), str(realm)), []).append(str(prop))
        return [SaslDBEntry(identity, tuple(props)) for identity, props in grouped.items()]

    def _scrypt_verifier(self, prepared: bytes) -> str:
        salt = secrets.token_bytes(16)
        digest = self._scrypt(prepared, salt, self._scrypt_n, _SCRYPT_R, _SCRYPT_P)
        return f"{{SCRYPT}}{self._scrypt_n}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"

    @staticmethod
    def _scrypt(prepared: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
        return hashlib.scrypt(prepared, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20)

    # -- sealmail.proto.sasl.Credentials -----------------------------------------------------

    def password_entry(self, identity: Identity) -> str | None:
        """The user's stored password verifier (salted scrypt), or None: what the
        authentication cache keys on, so a changed password misses it (sealmail.auth.cache)."""
        return self._values(identity).get(PASSWORD_PROPERTY)

    def check_password(self, identity: Identity, password: str) -> Verdict:
        stored = self._values(identity).get(PASSWORD_PROPERTY)
        if stored is None:
            # The same time for unknown users, so timing does not tell who exists.
            cost = self._scrypt_n
            self._hashing.spend_as_for(
                lambda: self._scrypt(b"", bytes(16), cost, _SCRYPT_R, _SCRYPT_P)
            )
            return Verdict.NO
        try:
            scheme, _, rest = stored.partition("}")
            n_text, r_text, p_text, salt_text, digest_text = rest.split("$")
            if scheme != "{SCRYPT":
                raise ValueError(scheme)
            n, r, p = int(n_text), int(r_text), int(p_text)
            salt, digest = _unb64(salt_text), _unb64(digest_text)
        except (ValueError, binascii.Error):
            raise SaslDBError(
                f"sasldb {self.path}: bad {PASSWORD_PROPERTY} entry for "
                f"{identity.user}@{identity.realm}"
            ) from None
        prepared = _prepared(password)
        candidate = self._hashing.run(lambda: self._scrypt(prepared, salt, n, r, p))
        return Verdict.OK if hmac.compare_digest(candidate, digest) else Verdict.NO

    def cram_md5_secret(self, identity: Identity) -> CramMD5Secret | None:
        stored = self._values(identity).get(CRAM_MD5_PROPERTY)
        if stored is None:
            return None
        try:
            if not stored.startswith("{HMAC-MD5}"):
                raise ValueError(stored[:12])
            words = struct.unpack("<8I", bytes.fromhex(stored.removeprefix("{HMAC-MD5}")))
        except (ValueError, struct.error):
            raise SaslDBError(
                f"sasldb {self.path}: bad {CRAM_MD5_PROPERTY} entry for "
                f"{identity.user}@{identity.realm}"
            ) from None
        return CramMD5Secret(
            (words[0], words[1], words[2], words[3]), (words[4], words[5], words[6], words[7])
        )

    def scram_secret(self, mechanism: str, identity: Identity) -> ScramSecret | None:
        prop = SCRAM_PROPERTIES.get(mechanism)
        if prop is None:
            return None
        stored = self._values(identity).get(prop)
        if stored is None:
            return None
        try:
            if not stored.startswith("{SCRAM}"):
                raise ValueError(stored[:8])
            iterations, salt, stored_key, server_key = stored.removeprefix("{SCRAM}").split("$")
            return ScramSecret(
                _unb64(salt), int(iterations), _unb64(stored_key), _unb64(server_key)
            )
        except (ValueError, binascii.Error):
            raise SaslDBError(
                f"sasldb {self.path}: bad {prop} entry for {identity.user}@{identity.realm}"
            ) from None


def _has_table(connection: sqlite3.Connection) -> bool:
    row = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'secrets'"
    ).fetchone()
    return row is not None

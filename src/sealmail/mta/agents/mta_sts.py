"""MTA-STS (RFC 8461): a mail domain's published promise that its MX hosts take mail over TLS
with certificates that verify, which the smtp client keeps when `sealmail_mta_sts = yes`.

Postfix has no MTA-STS of its own: sites plug postfix-mta-sts-resolver into
`smtp_tls_policy_maps = socketmap:...`, which turns a policy into `secure match=<mx patterns>`.
sealmail does it in the smtp agent instead (sealmail.mta.agents.smtp), closer to the RFC:

1. discovery (3.1): the TXT record `_mta-sts.<domain>`, `v=STSv1; id=<1-32 alphanumerics>;`.
   None, or more than one: the domain has no policy (a cached one still applies until its
   max_age ends, 5.1).
2. the policy (3.2, 3.3): `https://mta-sts.<domain>/.well-known/mta-sts.txt` over HTTPS whose
   certificate must verify for that host (PKIX); only a 200 with text/plain counts, redirects
   are not followed, at most 64 KiB. Lines `version: STSv1`, `mode: enforce|testing|none`,
   `mx: <pattern>` (one or more; `*.example.net` stands for one left-most label) and
   `max_age: <seconds, at most 31557600>`.
3. the cache (5.1): kept for max_age; refetched when the TXT record's id changes; a failed
   lookup or fetch leaves the cached policy in force, so an attacker who blocks them gains
   nothing before max_age runs out.
4. applying it (4, 5): in `enforce` mode only MX hosts that match a pattern are tried (the others
   are skipped, logged), and TLS at those is required with a certificate that verifies for the
   MX host name (the smtp client's `verify` level with SNI; trust from smtp_tls_CAfile, which a
   site using MTA-STS points at the public CAs). In `testing` mode mail goes as before and a
   mismatch is only logged; `none` is no policy.

For tests (documented as sealmail's own): `sealmail_mta_sts_CAfile` names the CAs that verify the
policy host (default: the system's), and `sealmail_mta_sts_hosts` maps a policy host to the
address:port to fetch it from.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_AGE_LIMIT",
    "FetchError",
    "PolicyCache",
    "PolicyError",
    "StsPolicy",
    "fetch_policy",
    "mx_matches",
    "parse_policy",
    "parse_txt",
]

MAX_AGE_LIMIT = 31_557_600  # RFC 8461 3.2: one year
MAX_BODY = 64 * 1024  # RFC 8461 3.3: "senders MAY impose a limit"; 64 KiB is the common one
WELL_KNOWN = "/.well-known/mta-sts.txt"
MODES = ("enforce", "testing", "none")
_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
_PATTERN = re.compile(r"(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?\Z")


class PolicyError(ValueError):
    """A policy file that is not RFC 8461's: the domain has no (new) policy."""


class FetchError(Exception):
    """The policy could not be fetched (connection, TLS, HTTP status, media type, size)."""


@dataclass(frozen=True, slots=True)
class StsPolicy:
    mode: str
    mx: tuple[str, ...]
    max_age: int
    id: str = ""  # the TXT record's id it was fetched under

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    def admits(self, host: str) -> bool:
        return any(mx_matches(pattern, host) for pattern in self.mx)


def parse_txt(records: Sequence[str]) -> str | None:
    """RFC 8461 3.1: the id of the one record that starts `v=STSv1`, or None (no record, more
    than one, or a malformed one)."""
    found = [r for r in records if r.strip().startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields: dict[str, str] = {}
    for part in found[0].split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(name.strip(), value.strip())
    if fields.get("v") != "STSv1":
        return None
    ident = fields.get("id", "")
    return ident if _ID.match(ident) else None


def parse_policy(body: bytes, ident: str = "") -> StsPolicy:
    """RFC 8461 3.2's policy file: `key: value` lines (CRLF or LF); unknown keys are ignored, a
    missing or bad required one is a PolicyError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("the policy is not UTF-8") from None
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"malformed policy line {line[:80]!r}")
        name, value = name.strip(), value.strip()
        if name == "mx":
            if not _PATTERN.match(value):
                raise PolicyError(f"malformed mx pattern {value[:80]!r}")
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(name, value)  # RFC 8461 3.2: the first one counts
    if fields.get("version") != "STSv1":
        raise PolicyError("version is not STSv1")
    mode = fields.get("mode", "")
    if mode not in MODES:
        raise PolicyError(f"mode {mode[:20]!r} is not enforce, testing or none")
    age = fields.get("max_age", "")
    if not age.isdigit() or len(age) > 10:
        raise PolicyError(f"max_age {age[:20]!r} is not a number of seconds")
    if mode != "none" and not mx:
        raise PolicyError("no mx pattern")
    return StsPolicy(mode, tuple(mx), min(int(age), MAX_AGE_LIMIT), ident)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: the MX host is the pattern, or `*.` stands for exactly its first label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


# --------------------------------------------------------------------------------------------
# Fetching over HTTPS


async def fetch_policy(
    domain: str,
    *,
    cafile: str = "",
    hosts: Mapping[str, tuple[str, int]] | None = None,
    timeout: float = 30.0,
) -> bytes:
    """The body of https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461 3.3). `hosts` maps a
    policy host to another (address, port) to connect to; the certificate is still checked for
    the policy host's name."""
    host = f"mta-sts.{domain.lower().rstrip('.')}"
    address, port = (hosts or {}).get(host, (host, 443))
    context = ssl.create_default_context(cafile=cafile or None)
    try:
        return await asyncio.wait_for(_get(host, address, port, context), timeout)
    except TimeoutError:
        raise FetchError(f"{host}: timed out after {timeout:g}s") from None
    except ssl.SSLCertVerificationError as exc:
        raise FetchError(f"{host}: certificate verification failed: "
                         f"{exc.verify_message}") from None
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise FetchError(f"{host}: {exc}") from None


async def _get(host: str, address: str, port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection(address, port, ssl=context,
                                                   server_hostname=host, limit=MAX_BODY)
    try:
        # HTTP/1.0: the body ends with the connection, never chunked.
        writer.write(f"GET {WELL_KNOWN} HTTP/1.0\r\nHost: {host}\r\n"
                     "User-Agent: sealmail\r\nAccept: text/plain\r\n\r\n".encode("ascii"))
        await writer.drain()
        status = (await reader.readline()).decode("latin-1").split()
        if len(status) < 2 or not status[0].startswith("HTTP/"):
            raise FetchError(f"{host}: not an HTTP response")
        if status[1] != "200":  # RFC 8461 3.3: redirects MUST NOT be followed
            raise FetchError(f"{host}: HTTP status {status[1]}")
        content_type = ""
        length: int | None = None
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                content_type = value.strip().lower()
            elif name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        if content_type.split(";")[0].strip() != "text/plain":
            raise FetchError(f"{host}: media type {content_type or 'none'}, not text/plain")
        if length is not None and length > MAX_BODY:
            raise FetchError(f"{host}: the policy is larger than {MAX_BODY} bytes")
        body = await reader.read(MAX_BODY + 1)
        while len(body) <= MAX_BODY:
            more = await reader.read(MAX_BODY + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > MAX_BODY:
            raise FetchError(f"{host}: the policy is larger than {MAX_BODY} bytes")
        return body if length is None else body[:length]
    finally:
        writer.close()


# --------------------------------------------------------------------------------------------
# The cache


@dataclass(frozen=True, slots=True)
class _Cached:
    policy: StsPolicy
    expires: float


TxtLookup = Callable[[str], Awaitable["list[str] | None"]]  # None: a temporary failure
Fetch = Callable[[str], Awaitable[bytes]]


class PolicyCache:
    """Policies by domain, RFC 8461 5.1's way. `txt` returns the TXT records of a name ([] when
    there are none, None when the lookup failed for now); `fetch` returns a policy body or
    raises FetchError. `notes` receives what an operator should hear (fetches, failures)."""

    def __init__(self, txt: TxtLookup, fetch: Fetch, *,
                 clock: Callable[[], float] = time.monotonic,
                 notes: Callable[[str, str], None] = lambda level, text: None) -> None:
        self.txt = txt
        self.fetch = fetch
        self.clock = clock
        self.notes = notes
        self.entries: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # one discovery per domain at a time

    def cached(self, domain: str) -> StsPolicy | None:
        entry = self.entries.get(domain)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            del self.entries[domain]
            return None
        return entry.policy

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy in force for `domain` (None: none, or mode none). Deliveries to one
        domain at the same time share one discovery (and fetch)."""
        domain = domain.lower().rstrip(".")
        lock = self._locks.setdefault(domain, asyncio.Lock())
        try:
            async with lock:
                return await self._discover(domain)
        finally:
            if not lock.locked() and self._locks.get(domain) is lock:
                del self._locks[domain]

    async def _discover(self, domain: str) -> StsPolicy | None:
        cached = self.cached(domain)
        records = await self.txt(f"_mta-sts.{domain}")
        ident = parse_txt(records) if records else None
        if ident is None or (cached is not None and cached.id == ident):
            return _in_force(cached)
        try:
            body = await self.fetch(domain)
            policy = parse_policy(body, ident)
        except (FetchError, PolicyError) as exc:
            self.notes("warning", f"MTA-STS policy for {domain} (id {ident}): {exc}"
                       + ("; the cached policy stays in force" if cached else ""))
            return _in_force(cached)
        self.entries[domain] = _Cached(policy, self.clock() + policy.max_age)
        self.notes("info", f"MTA-STS policy for {domain}: id={ident} mode={policy.mode} "
                           f"max_age={policy.max_age} mx={','.join(policy.mx)}")
        return _in_force(policy)


def _in_force(policy: StsPolicy | None) -> StsPolicy | None:
    return policy if policy is not None and policy.mode != "none" else None

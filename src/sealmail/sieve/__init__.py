"""Sieve (RFC 5228 and extensions): script text in, a list of typed actions out.

The library never touches the store, files, sockets or the clock; the host gives it everything
through `SieveContext`. The API, in the order a host uses it:

- `compile_script(text, *, extensions=None, limits=None) -> CompiledScript`: parse and check.
  Raises `SieveCompileError`, whose `.problems` lists every `CompileProblem(line, column,
  message)` (ManageSieve's PUTSCRIPT/CHECKSCRIPT reply with `str(error)`); `.line` is the first
  problem's line. `extensions` restricts what `require` may name (default
  `SUPPORTED_EXTENSIONS`, which is also the ManageSieve SIEVE capability list).
- `ScriptCache.compile(...)`: the same, cached by the SHA-256 of the text (plus extensions and
  limits), so a script compiles once and is reused until its text changes. `DEFAULT_CACHE` is one
  process-wide instance (include uses it too).
- `run(script, message: bytes, envelope: Envelope(sender, recipient, auth, original_recipient),
  context: SieveContext(now, mailbox_exists, include_loader, duplicates, vacation,
  user_addresses, subaddress_delimiter, environment, ...), limits=None) -> SieveResult`.
  `SieveResult.actions` are typed: `Keep`, `FileInto`, `Redirect`, `Discard`, `Reject`,
  `Ereject`, `Vacation`, `Notify`. The implicit keep is already applied (a `Keep` with
  `implicit=True`); `fileinto "INBOX"` is a `Keep`; duplicate keeps, fileintos to one folder and
  redirects to one address are merged. Flags (imap4flags) ride on `Keep`/`FileInto`, lower-cased
  and sorted. When editheader changed the message, `Keep`/`FileInto`/`Redirect` carry the edited
  bytes in `.message`. A `fileinto` without `:create` into a folder `mailbox_exists` denies
  becomes a `Keep` with `fallback_from` set.
  A runtime error never raises: `.error` is a `SieveRuntimeError` to log and `.actions` is the
  implicit keep alone (RFC 5228 section 2.10.6).
- After a successful delivery the host records `SieveResult.duplicate_marks` (RFC 7352) and, for a
  `Vacation` with `sent=True` that it sent, (`tracking_key`, `to`) for `seconds` (RFC 5230).
- `compose_vacation_reply(vacation, from_address=, date=, message_id=) -> bytes` builds the
  RFC 5230 section 5 reply (Auto-Submitted, In-Reply-To, "Auto:" subject) for the host to send.
- `SieveLimits` bounds script size, nesting, actions, redirects, include depth, variable sizes
  and regex complexity; regexes run on a linear-time engine with a step budget.
"""

from sealmail.sieve._compiler import (
    DEFAULT_CACHE,
    SUPPORTED_EXTENSIONS,
    CompiledScript,
    ScriptCache,
    compile_script,
)
from sealmail.sieve._extensions.vacation import compose_vacation_reply
from sealmail.sieve._run import SieveResult, run
from sealmail.sieve.actions import (
    Action,
    Discard,
    DuplicateMark,
    Ereject,
    FileInto,
    Keep,
    Notify,
    Redirect,
    Reject,
    Vacation,
)
from sealmail.sieve.context import (
    DuplicateTracker,
    Envelope,
    IncludeLoader,
    IncludeLocation,
    SieveContext,
    SieveLimits,
    VacationTracker,
)
from sealmail.sieve.errors import CompileProblem, SieveCompileError, SieveRuntimeError

__all__ = [
    "DEFAULT_CACHE",
    "SUPPORTED_EXTENSIONS",
    "Action",
    "CompileProblem",
    "CompiledScript",
    "Discard",
    "DuplicateMark",
    "DuplicateTracker",
    "Envelope",
    "Ereject",
    "FileInto",
    "IncludeLoader",
    "IncludeLocation",
    "Keep",
    "Notify",
    "Redirect",
    "Reject",
    "ScriptCache",
    "SieveCompileError",
    "SieveContext",
    "SieveLimits",
    "SieveResult",
    "SieveRuntimeError",
    "Vacation",
    "VacationTracker",
    "compile_script",
    "compose_vacation_reply",
    "run",
]

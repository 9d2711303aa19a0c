"""RFC 7352: the duplicate test. The host's tracker says whether an ID was seen; what to record is
returned with the result and stored by the host only once delivery succeeded (section 3)."""

from __future__ import annotations

import hashlib

from sealmail.sieve._interpreter import Interpreter
from sealmail.sieve._spec import ArgKind, Call, Signature, Tag
from sealmail.sieve.actions import DuplicateMark

DEFAULT_SECONDS = 7 * 86400
MAX_SECONDS = 90 * 86400


def _duplicate(interp: Interpreter, call: Call) -> bool:
    run = interp.run
    unique = interp.option_string(call, ":uniqueid")
    if unique is None:
        header = interp.option_string(call, ":header") or "message-id"
        values = run.message.values(header)
        if not values:
            return False  # section 3.1: without the field, the test is false and tracks nothing
        unique = values[0]
        if header.lower() == "message-id":
            unique = unique.strip()
    handle = interp.option_string(call, ":handle") or ""
    key = hashlib.sha256(f"duplicate\0{handle}\0{unique}".encode(
        "utf-8", "surrogateescape")).hexdigest()
    seconds = min(call.option_number(":seconds") or DEFAULT_SECONDS, MAX_SECONDS)
    tracker = run.context.duplicates
    seen = tracker is not None and tracker.seen(key)
    seen = seen or any(mark.key == key for mark in run.duplicate_marks)
    # Section 3.3: with :last the expiry moves on even for a duplicate
    if not seen or call.has(":last"):
        run.duplicate_marks[:] = [m for m in run.duplicate_marks if m.key != key]
        run.duplicate_marks.append(DuplicateMark(key, seconds))
    return seen


SIGNATURES = (
    Signature("duplicate", "duplicate",
              tags=(Tag(":handle", ArgKind.STRING),
                    Tag(":header", ArgKind.STRING, group="id"),
                    Tag(":uniqueid", ArgKind.STRING, group="id"),
                    Tag(":seconds", ArgKind.NUMBER), Tag(":last")),
              run_test=_duplicate),
)

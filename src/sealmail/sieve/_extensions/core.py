"""RFC 5228: the base language, with fileinto (section 4.1) and envelope (section 5.4), and the
tags other extensions add to its actions: :copy (RFC 3894), :flags (RFC 5232 section 5),
:create (RFC 5490 section 3.2)."""

from __future__ import annotations

from sealmail.sieve._interpreter import Interpreter, StopScript, normalise_flags
from sealmail.sieve._message import parse_addresses, split_address
from sealmail.sieve._spec import (
    ADDRESS_PARTS,
    INDEX,
    MATCHING,
    ArgKind,
    Call,
    CheckScope,
    Signature,
    Tag,
)
from sealmail.sieve.actions import Discard, FileInto, Keep, Redirect

_FLAGS = Tag(":flags", ArgKind.STRINGLIST, extension="imap4flags")
_COPY = Tag(":copy", extension="copy")

# RFC 5228 section 5.1: only these header fields hold addresses the address test may parse.
ADDRESS_HEADERS = frozenset({
    "from", "sender", "to", "cc", "bcc", "reply-to", "resent-from", "resent-sender",
    "resent-to", "resent-cc", "resent-bcc", "return-path", "delivered-to", "x-original-to",
    "envelope-to", "disposition-notification-to", "original-recipient", "errors-to",
})


def _require(interp: Interpreter, call: Call) -> None:
    """Checked at compile time (RFC 5228 section 3.2); nothing to do at run time."""


def _stop(interp: Interpreter, call: Call) -> None:
    raise StopScript


def _flags(interp: Interpreter, call: Call) -> tuple[str, ...]:
    given = interp.option_strings(call, ":flags")
    if given is not None:
        return normalise_flags(given)
    return normalise_flags(interp.run.flags)


def _keep(interp: Interpreter, call: Call) -> None:
    interp.add_action(Keep(_flags(interp, call), message=interp.message_copy()), cancels_keep=True)


def _discard(interp: Interpreter, call: Call) -> None:
    interp.add_action(Discard(), cancels_keep=True)


def _fileinto(interp: Interpreter, call: Call) -> None:
    mailbox = interp.string(call, 0)
    copy = call.has(":copy")
    if mailbox.upper() == "INBOX":  # RFC 3501 section 5.1: INBOX is case-insensitive
        interp.add_action(Keep(_flags(interp, call), message=interp.message_copy()),
                          cancels_keep=not copy)
        return
    if not mailbox or "\x00" in mailbox:
        raise interp.fail(f"invalid mailbox name {mailbox!r}", call)
    interp.add_action(
        FileInto(mailbox, _flags(interp, call), copy=copy, create=call.has(":create"),
                 message=interp.message_copy()),
        cancels_keep=not copy,
    )


def _redirect(interp: Interpreter, call: Call) -> None:
    target = interp.string(call, 0).strip()
    # RFC 5228 section 4.2: the argument must be a valid RFC 5322 address; checked at run time
    # too because variables can build it.
    addresses = parse_addresses(target)
    if len(addresses) != 1 or not addresses[0].domain or not addresses[0].local:
        raise interp.fail(f"redirect: invalid address {target!r}", call)
    copy = call.has(":copy")
    interp.add_action(Redirect(addresses[0].full, copy, interp.message_copy()),
                      cancels_keep=not copy)


def _check_redirect(call: Call, scope: CheckScope) -> None:
    value = call.arg_string(0)
    if "${" in value and "variables" in scope.requires:
        return
    addresses = parse_addresses(value)
    if len(addresses) != 1 or not addresses[0].domain or not addresses[0].local:
        scope.error(call, f"redirect: invalid address {value!r}")


# --- tests ------------------------------------------------------------------------------------
def selected_values(interp: Interpreter, call: Call, values: list[str]) -> list[str]:
    """RFC 5260 section 6: :index N picks the Nth value (from the end with :last)."""
    index = call.option_number(":index")
    if index is None:
        return values
    if index < 1 or index > len(values):
        return []
    return [values[-index] if call.has(":last") else values[index - 1]]


def _header(interp: Interpreter, call: Call) -> bool:
    names = interp.strings(call, 0)
    values: list[str] = []
    for name in names:
        values.extend(selected_values(interp, call, interp.run.message.values(name)))
    return interp.match(call, values, interp.strings(call, 1))


def _address(interp: Interpreter, call: Call) -> bool:
    values: list[str] = []
    for name in interp.strings(call, 0):
        fields = selected_values(interp, call, interp.run.message.values(name))
        for field in fields:
            for address in parse_addresses(field):
                part = interp.address_part(call, address)
                if part is not None:
                    values.append(part)
    return interp.match(call, values, interp.strings(call, 1))


def _check_address(call: Call, scope: CheckScope) -> None:
    for name in call.arg_strings(0):
        if "${" in name and "variables" in scope.requires:
            continue
        if name.lower() not in ADDRESS_HEADERS:
            scope.error(call, f"address test: header '{name}' does not hold addresses")


def _envelope(interp: Interpreter, call: Call) -> bool:
    envelope = interp.run.envelope
    values: list[str] = []
    for part_name in interp.strings(call, 0):
        part_name = part_name.lower()
        if part_name == "from":
            raw = envelope.sender
        elif part_name == "to":
            raw = envelope.recipient
        elif part_name == "auth":
            if envelope.auth is None:
                continue
            raw = envelope.auth
        else:
            continue
        if raw == "":
            # RFC 5228 section 5.4: the null reverse-path matches "" whatever the address part
            values.append("")
            continue
        part = interp.address_part(call, split_address(raw))
        if part is not None:
            values.append(part)
    return interp.match(call, values, interp.strings(call, 1))


def _check_envelope(call: Call, scope: CheckScope) -> None:
    for part in call.arg_strings(0):
        if "${" in part and "variables" in scope.requires:
            continue
        if part.lower() not in ("from", "to", "auth"):
            scope.error(call, f"envelope test: unknown envelope part '{part}'")


def _exists(interp: Interpreter, call: Call) -> bool:
    return all(interp.run.message.has(name) for name in interp.strings(call, 0))


def _size(interp: Interpreter, call: Call) -> bool:
    limit = call.arg_number(0)
    size = interp.run.message.size
    return size > limit if call.option_string("size") == ":over" else size < limit


def _check_size(call: Call, scope: CheckScope) -> None:
    if not call.has("size"):
        scope.error(call, "size test needs :over or :under")


def _allof(interp: Interpreter, call: Call) -> bool:
    return all(interp.test(test) for test in call.tests)


def _anyof(interp: Interpreter, call: Call) -> bool:
    return any(interp.test(test) for test in call.tests)


def _not(interp: Interpreter, call: Call) -> bool:
    return not interp.test(call.tests[0])


def _true(interp: Interpreter, call: Call) -> bool:
    return True


def _false(interp: Interpreter, call: Call) -> bool:
    return False


SIGNATURES = (
    Signature("require", None, positional=(ArgKind.STRINGLIST,), run_command=_require),
    Signature("if", None, tests=1, block=True),
    Signature("elsif", None, tests=1, block=True),
    Signature("else", None, block=True),
    Signature("stop", None, run_command=_stop),
    Signature("keep", None, tags=(_FLAGS,), run_command=_keep),
    Signature("discard", None, run_command=_discard),
    Signature("redirect", None, tags=(_COPY,), positional=(ArgKind.STRING,),
              check=_check_redirect, run_command=_redirect),
    Signature("fileinto", "fileinto",
              tags=(_COPY, _FLAGS, Tag(":create", extension="mailbox")),
              positional=(ArgKind.STRING,), run_command=_fileinto),
    Signature("header", None, tags=(*MATCHING, *INDEX),
              positional=(ArgKind.STRINGLIST, ArgKind.STRINGLIST), run_test=_header),
    Signature("address", None, tags=(*MATCHING, *ADDRESS_PARTS, *INDEX),
              positional=(ArgKind.STRINGLIST, ArgKind.STRINGLIST), check=_check_address,
              run_test=_address),
    Signature("envelope", "envelope", tags=(*MATCHING, *ADDRESS_PARTS),
              positional=(ArgKind.STRINGLIST, ArgKind.STRINGLIST), check=_check_envelope,
              run_test=_envelope),
    Signature("exists", None, positional=(ArgKind.STRINGLIST,), run_test=_exists),
    Signature("size", None, tags=(Tag(":over", group="size"), Tag(":under", group="size")),
              positional=(ArgKind.NUMBER,), check=_check_size, run_test=_size),
    Signature("allof", None, tests=-1, run_test=_allof),
    Signature("anyof", None, tests=-1, run_test=_anyof),
    Signature("not", None, tests=1, run_test=_not),
    Signature("true", None, run_test=_true),
    Signature("false", None, run_test=_false),
)

"""RFC 5490 section 3.1: mailboxexists (fileinto :create is declared with fileinto)."""

from __future__ import annotations

from sealmail.sieve._interpreter import Interpreter
from sealmail.sieve._spec import ArgKind, Call, Signature


def _mailboxexists(interp: Interpreter, call: Call) -> bool:
    exists = interp.run.context.mailbox_exists
    names = interp.strings(call, 0)
    if exists is None:
        return True
    return all(name.upper() == "INBOX" or exists(name) for name in names)


SIGNATURES = (
    Signature("mailboxexists", "mailbox", positional=(ArgKind.STRINGLIST,),
              run_test=_mailboxexists),
)

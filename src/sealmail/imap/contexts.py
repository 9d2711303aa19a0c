"""RFC 5267 for a selected mailbox: ESORT (SORT RETURN), PARTIAL results, and UPDATE contexts
(CONTEXT=SEARCH, CONTEXT=SORT).

An UPDATE context remembers a search's criteria, its order (SORT keys, or none) and its result
as UIDs. After every command that keeps the mailbox selected, the session (`notice`) runs each
context's search again over its view and tells the client what changed, as ESEARCH with the
search's tag: REMOVEFROM before the EXPUNGE responses of the same sync (its numbers are those
the client holds until it reads them), ADDTO after the EXISTS that made new messages known
(RFC 5267 4.3). The contexts end with CANCELUPDATE or when the mailbox is deselected (4.2).
Evaluating again costs one search per context per command; only clients that ask pay it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sealmail.imap.errors import CommandFailed
from sealmail.imap.selected import ExpungeLines
from sealmail.proto.imap import (
    Atom,
    CancelUpdate,
    DataResponse,
    Response,
    SearchKey,
    SequenceSet,
    Value,
)
from sealmail.proto.imap import response as replies
from sealmail.proto.imap.returns import ordered_set, partial_range

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["MAX_CONTEXTS", "UpdateContext", "cancel_update", "notice", "partial_values",
           "sort_esearch"]

MAX_CONTEXTS = 32  # UPDATE contexts per session: each costs a search per command


@dataclass(slots=True)
class UpdateContext:
    tag: str
    uid: bool
    criteria: SearchKey
    sort_keys: tuple[tuple[str, bool], ...] | None  # None: a SEARCH (ascending order)
    uids: list[int] = field(default_factory=list)  # the result the client holds, in order


def partial_values(numbers: Sequence[int], options: Sequence[str]) -> list[Value]:
    """`PARTIAL (low:high set-or-NIL)` for results in their order (RFC 5267 4.4)."""
    wanted = partial_range(options)
    if wanted is None:
        return []
    low, high = wanted
    window = list(numbers[low - 1 : high])
    shown: Value = Atom(ordered_set(window)) if window else None
    return [Atom("PARTIAL"), [Atom(f"{low}:{high}"), shown]]


def sort_esearch(session: ImapSession, uid: bool, options: Sequence[str],
                 ordered: list[int]) -> DataResponse:
    """ESORT (RFC 5267 3.2): MIN and MAX are the first and last in sort order, ALL keeps the
    order; RETURN () means ALL."""
    wanted = {o.split()[0] for o in options} - {"UPDATE", "CONTEXT"}
    if not options:
        wanted = {"ALL"}
    response = replies.esearch(
        session.pending_tag, uid,
        minimum=ordered[0] if ordered and "MIN" in wanted else None,
        maximum=ordered[-1] if ordered and "MAX" in wanted else None,
        count=len(ordered) if "COUNT" in wanted else None,
    )
    extra: list[Value] = []
    if ordered and "ALL" in wanted:
        extra += [Atom("ALL"), Atom(ordered_set(ordered))]
    extra += partial_values(ordered, options)
    if not extra:
        return response
    # ALL goes before COUNT as in RFC 4731's ordering; PARTIAL last.
    values = list(response.values)
    at = next((i for i, v in enumerate(values) if v == Atom("COUNT")), len(values))
    return DataResponse((*values[:at], *extra, *values[at:]))


def register(session: ImapSession, context: UpdateContext) -> None:
    if len(session.update_contexts) >= MAX_CONTEXTS and context.tag not in \
            session.update_contexts:
        raise CommandFailed(f"More than {MAX_CONTEXTS} UPDATE contexts", "LIMIT")
    session.update_contexts[context.tag] = context


def cancel_update(session: ImapSession, command: CancelUpdate) -> list[Response]:
    """RFC 5267 4.2: unknown tags are an error (BAD)."""
    missing = [t for t in command.tags if t not in session.update_contexts]
    if missing:
        raise CommandFailed(f"No UPDATE context {missing[0][:32]}", status="BAD")
    for tag in command.tags:
        del session.update_contexts[tag]
    return []


def notice(session: ImapSession, before: list[int], synced: list[Response]) -> list[Response]:
    """`synced` (what the sync sent) with each context's REMOVEFROM and ADDTO put in place.
    `before` is the view's UIDs before the command's sync: the numbering REMOVEFROM uses."""
    from sealmail.imap.searching import context_result  # the evaluator lives there

    view = session.selected
    if view is None or not session.update_contexts:
        return synced
    seq_before = {uid: i + 1 for i, uid in enumerate(before)}
    seq_now = {uid: i + 1 for i, uid in enumerate(view.uids)}
    removals: list[Response] = []
    additions: list[Response] = []
    for context in session.update_contexts.values():
        now = context_result(session, context.criteria, context.sort_keys)
        old_set, new_set = set(context.uids), set(now)
        gone = [u for u in context.uids if u not in new_set]
        came = [u for u in now if u not in old_set]
        if gone:
            removals.append(_change(context, "REMOVEFROM", context.uids, gone, seq_before))
        if came:
            additions.append(_change(context, "ADDTO", now, came, seq_now))
        context.uids = now
    first_expunge = next((i for i, r in enumerate(synced) if _is_expunge(r)), len(synced))
    return [*synced[:first_expunge], *removals, *synced[first_expunge:], *additions]


def _is_expunge(response: Response) -> bool:
    if isinstance(response, ExpungeLines):  # the sync's EXPUNGE lines, written at once
        return True
    if not isinstance(response, DataResponse) or not response.values:
        return False
    values = response.values
    return (len(values) > 1 and values[1] == Atom("EXPUNGE")) or values[0] == Atom("VANISHED")


def _change(context: UpdateContext, name: str, ordered: list[int], changed: list[int],
            numbering: dict[int, int]) -> DataResponse:
    """`ESEARCH (TAG t) [UID] ADDTO|REMOVEFROM (position set ...)` (RFC 5267 4.3)."""
    def number(uid: int) -> int:
        return uid if context.uid else numbering.get(uid, 0)

    position = {uid: i + 1 for i, uid in enumerate(ordered)}
    pairs: list[Value] = []
    if context.sort_keys is None:
        # A SEARCH's results are in ascending order: one position, one set.
        pairs = [position[changed[0]], Atom(str(SequenceSet.of([number(u) for u in changed])))]
    else:
        for uid in changed:
            pairs += [position[uid], number(uid)]
    values: list[Value] = [Atom("ESEARCH"), [Atom("TAG"), context.tag]]
    if context.uid:
        values.append(Atom("UID"))
    return DataResponse((*values, Atom(name), pairs))

"""The FETCH command: what it asks, \\Seen set first, then the way that answers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealmail.imap.fetching import bodies, columns
from sealmail.imap.fetching.generic import fetch_generic
from sealmail.imap.fetching.job import INDEX_ITEMS, Job
from sealmail.imap.listing import listed_plan
from sealmail.imap.selected import SelectedMailbox
from sealmail.proto.imap import Fetch, FetchAttribute, Response, SequenceSet
from sealmail.proto.imap import response as replies
from sealmail.store.errors import StoreError

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["fetch", "fetch_index_responses"]


def fetch(session: ImapSession, command: Fetch) -> list[Response]:
    view: SelectedMailbox = session.require_selected()
    store = session.store
    attributes = list(command.attributes)
    if command.uid and not any(a.name == "UID" for a in attributes):
        attributes.insert(0, FetchAttribute("UID"))  # RFC 9051 6.4.9: UID FETCH always has UID
    if command.changed_since is not None:
        session.enable_condstore()
    if session.condstore and command.changed_since is not None and not any(
            a.name == "MODSEQ" for a in attributes):
        attributes.append(FetchAttribute("MODSEQ"))  # RFC 7162 3.1.4.1
    if any(a.name == "MODSEQ" for a in attributes):
        session.enable_condstore()
    spans = session.resolve_spans(command.sequence_set, command.uid)
    out: list[Response] = []
    if command.vanished and command.changed_since is not None:
        gone = store.expunged_since(view.name, command.changed_since)
        if gone:
            known = {view.uids[i] for start, stop in spans for i in range(start, stop)}
            wanted = set(command.sequence_set.iter_members(sorted(set(gone) | set(view.uids))))
            gone = [uid for uid in gone if uid in wanted and uid not in known]
        if gone:
            out.append(replies.vanished(SequenceSet.of(gone), earlier=True))
    positions = view.positions(spans)
    if command.changed_since is not None:
        since = command.changed_since
        modseqs = view.modseqs
        positions = [i for i in positions if modseqs[i] > since]
    seen_now: set[int] = set()
    if not view.readonly and any(a.sets_seen for a in attributes) and session.has_rights(
            view.name, "s"):
        # RFC 4314 4: without the "s" right a body fetch reads but does not set \Seen.
        seen_now = _set_seen(session, view, positions, out)
    job = Job(session, view, attributes, positions, seen_now)
    if not seen_now and (plan := listed_plan(attributes)) is not None:
        return bodies.fetch_listed(job, plan, out)
    if not seen_now and columns.answers(attributes):
        return columns.fetch_index_items(job, out)
    if all(a.name in INDEX_ITEMS or bodies.from_file(a) is not None for a in attributes):
        return bodies.fetch_whole_bodies(job, out)
    return fetch_generic(job, out)


def fetch_index_responses(session: ImapSession, positions: list[int], names: list[str]
                          ) -> list[Response]:
    """FETCH responses of index items only (`names`, in that order, from UID, FLAGS, MODSEQ,
    INTERNALDATE, RFC822.SIZE) for positions of the selected view: STORE's replies."""
    view = session.require_selected()
    job = Job(session, view, [FetchAttribute(name) for name in names], positions, set())
    return columns.fetch_index_items(job, [])


def _set_seen(session: ImapSession, view: SelectedMailbox, positions: list[int],
              out: list[Response]) -> set[int]:
    """Set \\Seen, in one store call, on the messages that lack it (the user's own \\Seen:
    sealmail.store.seen); the UIDs it was set on. A keyword another session set on them and
    this one had not announced yet goes to `out` first (`SelectedMailbox.remember`)."""
    unseen = view.ids_where("\\Seen", present=False)
    flag_ids = view.flag_ids
    uids = [view.uids[i] for i in positions if flag_ids[i] in unseen]
    if not uids:
        return set()
    try:
        update = session.store.update_flags(view.name, uids, ["\\Seen"], "add",
                                            reader=session.userid)
    except StoreError:
        return set()  # the data is still sent; \Seen is best effort here
    out.extend(view.remember(update.records))
    return {record.uid for record in update.records}

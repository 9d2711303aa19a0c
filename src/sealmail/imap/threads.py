"""THREAD answers of a whole mailbox (RFC 5256 3), kept and brought up to date as mail comes.

Why: a client THREADs its folder again after each new message, and working the threads out of
10,000 messages again took 75-85 ms (Dovecot keeps dovecot.index.thread and adds to it). New
mail has UIDs above every kept message's, so it comes last in the mailbox order that RFC 5256's
step 1 walks, and its sequence numbers come after theirs: what the kept state must know is
whether a new message changes the threads there were, or only adds one of its own.

When adding is exact (everything else is a rebuild from the store's thread fields):
- REFERENCES: the message names no other (no References, no In-Reply-To id), no message seen so
  far has or names its Message-ID (it fills no dummy, is no duplicate), and its base subject is
  not one step 5 merged by. Then steps 1-5 leave it a root of its own, nothing joins it, and
  step 6 puts it where its (sent date, sequence number) sorts among the roots.
- ORDEREDSUBJECT: a new base subject is a new root placed by its date; a subject that has a
  thread whose first message sorts before the new one gets the new one among its children, in
  date order; otherwise (it would become the thread's first message) a rebuild.

A state's answer never changes: adding makes a new state (copies of lists of 10,000 references
cost tens of microseconds), so sessions of one process in other threads may hold the old one;
only REFERENCES' sets of ids and subjects are shared, and grow (see ReferencesThreads.added).
States number messages by UID (a UID orders as its sequence number does); the answer in
sequence numbers is rendered from the view, whose sequence numbers of kept messages do not
change while mail only comes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from sealmail.imap.conversations import ThreadedMessage, message_ids, references
from sealmail.proto.imap import Atom, DataResponse
from sealmail.proto.imap.response import ThreadNode
from sealmail.store.sorting import ThreadFields, base_subject

__all__ = ["ReferencesThreads", "SubjectThreads", "ThreadState", "build", "response"]

S = TypeVar("S", bound="ThreadState")
Key = tuple[float, int]  # (sent date, UID): how roots and siblings are ordered


class ThreadState:
    """Threads of the messages `uids` (a view's UIDs, ascending), rendered on demand."""

    __slots__ = ("_texts", "keys", "roots", "uids")

    def __init__(self, uids: list[int], roots: list[ThreadNode], keys: list[Key]) -> None:
        self.uids = uids
        self.roots = roots
        self.keys = keys
        self._texts: dict[bool, list[str]] = {}

    def added(self, fields: Sequence[ThreadFields]) -> ThreadState | None:
        """The state with `fields` (messages with UIDs above all of ours, in UID order)
        added, or None when that could change threads we have: rebuild then."""
        raise NotImplementedError

    def body(self, uid: bool) -> str:
        """The THREAD response's text, in UIDs or in sequence numbers (the view's, whose
        first messages are ours)."""
        texts = self._texts.get(uid)
        if texts is None:
            if uid:
                texts = [_text(root, int) for root in self.roots]
            else:
                numbers = {u: n for n, u in enumerate(self.uids, 1)}
                texts = [_text(root, numbers.__getitem__) for root in self.roots]
            self._texts[uid] = texts
        return "".join(texts)

    def _with_texts(self, state: S, placed: Sequence[tuple[int, ThreadNode, bool]]) -> S:
        """`state` with our rendered texts kept: each `node` put at its index (inserted, or
        replacing the root there), in the order the roots were changed."""
        for uid, kept in list(self._texts.items()):  # (body() may add one meanwhile)
            number = int if uid else partial(_sequence_number, state.uids)
            texts = list(kept)
            for index, node, replace in placed:
                if replace:
                    texts[index] = _text(node, number)
                else:
                    texts.insert(index, _text(node, number))
            state._texts[uid] = texts
        return state


def _sequence_number(uids: list[int], uid: int) -> int:
    return bisect.bisect_left(uids, uid) + 1


class ReferencesThreads(ThreadState):
    """RFC 5256 REFERENCES (sealmail.imap.conversations), with what decides an exact add."""

    __slots__ = ("ids", "subjects")

    def __init__(self, uids: list[int], roots: list[ThreadNode], keys: list[Key],
                 ids: set[str] | None = None, subjects: set[str] | None = None) -> None:
        super().__init__(uids, roots, keys)
        self.ids = ids if ids is not None else set()
        self.subjects = subjects if subjects is not None else set()

    @classmethod
    def build(cls, fields: Sequence[ThreadFields]) -> ReferencesThreads:
        found = references(_messages(fields), _base_of(fields))
        return cls([f.uid for f in fields], found.roots, found.keys, found.ids, found.subjects)

    def added(self, fields: Sequence[ThreadFields]) -> ReferencesThreads | None:
        # The sets are shared with the state we come from (copying them was most of the cost
        # of an add): one that holds more ids or subjects than its own messages have only
        # makes a later add of its own give up (a rebuild), never a wrong answer.
        ids, subjects = self.ids, self.subjects
        new_ids: set[str] = set()
        new_subjects: set[str] = set()
        for f in fields:
            own = _first_id(f.message_id)
            if (_first_id(f.references) or _first_id(f.in_reply_to) or own in ids
                    or own in new_ids or f.base_subject in subjects
                    or f.base_subject in new_subjects):
                return None  # it names or is named (links may change), or step 5 merges it
            if own:
                new_ids.add(own)
            if f.base_subject:
                new_subjects.add(f.base_subject)
        ids |= new_ids
        subjects |= new_subjects
        roots, keys = list(self.roots), list(self.keys)
        placed: list[tuple[int, ThreadNode, bool]] = []
        for f in fields:
            key = (f.sent, f.uid)
            index = bisect.bisect_right(keys, key)
            keys.insert(index, key)
            node = ThreadNode(f.uid)
            roots.insert(index, node)
            placed.append((index, node, False))
        return self._with_texts(ReferencesThreads(
            self.uids + [f.uid for f in fields], roots, keys, ids, subjects), placed)


class SubjectThreads(ThreadState):
    """RFC 5256 ORDEREDSUBJECT: one thread per base subject, its first message the parent of
    the others, threads and members in (sent date, sequence number) order."""

    __slots__ = ("groups",)

    def __init__(self, uids: list[int], roots: list[ThreadNode], keys: list[Key],
                 groups: dict[str, list[Key]] | None = None) -> None:
        super().__init__(uids, roots, keys)
        self.groups = groups if groups is not None else {}

    @classmethod
    def build(cls, fields: Sequence[ThreadFields]) -> SubjectThreads:
        base_of = _base_of(fields)
        groups: dict[str, list[Key]] = {}
        for f in sorted(fields, key=lambda f: (f.sent, f.uid)):
            groups.setdefault(base_of(f.subject), []).append((f.sent, f.uid))
        firsts = sorted(groups.values())
        return cls([f.uid for f in fields], [_subject_root(m) for m in firsts],
                   [m[0] for m in firsts], groups)

    def added(self, fields: Sequence[ThreadFields]) -> SubjectThreads | None:
        groups = dict(self.groups)
        roots, keys = list(self.roots), list(self.keys)
        placed: list[tuple[int, ThreadNode, bool]] = []
        for f in fields:
            key = (f.sent, f.uid)
            members = groups.get(f.base_subject)
            if members is None:
                groups[f.base_subject] = [key]
                index = bisect.bisect_right(keys, key)
                keys.insert(index, key)
                node = ThreadNode(f.uid)
                roots.insert(index, node)
                placed.append((index, node, False))
            elif key > members[0]:
                members = groups[f.base_subject] = list(members)
                bisect.insort(members, key)
                index = bisect.bisect_left(keys, members[0])
                roots[index] = node = _subject_root(members)
                placed.append((index, node, True))
            else:
                return None  # it would start its subject's thread: the thread moves
        return self._with_texts(SubjectThreads(
            self.uids + [f.uid for f in fields], roots, keys, groups), placed)


def _subject_root(members: list[Key]) -> ThreadNode:
    return ThreadNode(members[0][1], tuple(ThreadNode(uid) for _, uid in members[1:]))


def build(algorithm: str, fields: Sequence[ThreadFields]) -> ThreadState:
    """The threads of `fields` (every message of a view, in UID order) by `algorithm`."""
    if algorithm == "REFERENCES":
        return ReferencesThreads.build(fields)
    return SubjectThreads.build(fields)


def response(state: ThreadState, uid: bool) -> DataResponse:
    """`* THREAD ...` of `state`, as sealmail.proto.imap.response.thread writes it."""
    body = state.body(uid)
    return DataResponse((Atom("THREAD"),) + ((Atom(body),) if body else ()))


def _messages(fields: Sequence[ThreadFields]) -> list[ThreadedMessage]:
    """Numbered by UID (ordering as sequence numbers do)."""
    return [ThreadedMessage(f.uid, f.uid, f.message_id, f.references, f.in_reply_to, f.subject,
                            f.sent) for f in fields]


def _base_of(fields: Sequence[ThreadFields]) -> Callable[[str], str]:
    """Subject -> base subject, as worked out at delivery where there is one."""
    kept = {f.subject: f.base_subject for f in fields}

    def base_of(subject: str) -> str:
        return kept[subject] if subject in kept else base_subject(subject)

    return base_of


def _first_id(text: str) -> str:
    """The first <message-id> in `text`, as sealmail.imap.conversations reads them ("" for
    none)."""
    if "<" not in text:
        return ""
    found = message_ids(text)
    return found[0] if found else ""


def _text(node: ThreadNode, number: Callable[[int], int]) -> str:
    """One root as RFC 5256 4 writes it: `(3 6 (4 23)(44 7 96))` (as
    sealmail.proto.imap.response.thread renders its roots)."""
    return "(" + _members(node, number) + ")"


def _members(node: ThreadNode, number: Callable[[int], int]) -> str:
    parts: list[str] = []
    while True:
        if node.number is not None:
            parts.append(str(number(node.number)))
        if len(node.children) == 1 and node.number is not None:
            node = node.children[0]
            continue
        if node.children:
            parts.append("".join("(" + _members(c, number) + ")" for c in node.children))
        return " ".join(parts)

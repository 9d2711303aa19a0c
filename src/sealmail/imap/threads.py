"""THREAD answers of a whole mailbox (RFC 5256 3), kept and brought up to date as mail comes.

Why: a client THREADs its folder again after each new message, and working the threads out of
10,000 messages again took 75-85 ms (Dovecot keeps dovecot.index.thread and adds to it). New
mail has UIDs above every kept message's, so it comes last in the mailbox order that RFC 5256's
step 1 walks, and its sequence numbers come after theirs: what a kept state must know is
whether a new message changes the threads there were beyond taking its own place in them.

When adding is exact (otherwise `add` says so and the caller rebuilds from the store's fields):
- REFERENCES, a message that names no other (no References, no In-Reply-To id), whose
  Message-ID no message seen so far has or names (it fills no dummy, is no duplicate), and
  whose base subject is not one step 5 merged roots by: steps 1-5 leave it a root of its own
  and step 6 puts it where its (sent date, sequence number) sorts among the roots.
- REFERENCES, a reply whose references are all known, every one but the first already has a
  parent (so step 1 links nothing anew), and whose last reference is a message (not a dummy),
  and again no message has or names its own Message-ID: step 1 makes it a child of that
  message and nothing else; a message is never pruned (step 3), the new one is never the first
  child of a dummy (so no root's sort key or subject changes, steps 4-5), so it only takes its
  place among that message's children (step 6).
- ORDEREDSUBJECT: a new base subject is a new root placed by its date; a subject whose thread's
  first message sorts before the new one gets the new one among its children, in date order;
  otherwise (it would become the thread's first message) a rebuild.

A state is changed in place, a message at a time (each add complete or not begun), under its
`lock`: the sessions of a process share it; one whose view has fewer messages than the state
(not told of new mail yet) gets a rebuilt answer of its own. States number messages by UID (a
UID orders as its sequence number does); the answer in sequence numbers is rendered from the
state's UIDs, which are the first of the view's.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

from sealmail.imap.conversations import (
    ThreadedMessage,
    message_ids,
    references,
    references_of,
    thread_by_references,
)
from sealmail.proto.imap import Atom, DataResponse
from sealmail.proto.imap.response import ThreadNode
from sealmail.proto.imap.response import thread as thread_response
from sealmail.store.sorting import ThreadFields, base_subject

__all__ = ["ReferencesThreads", "SubjectThreads", "ThreadState", "build", "response", "threaded"]

Key = tuple[float, int]  # (sent date, UID): how roots and siblings are ordered


class _Node:
    """A message (or, `number` None, a dummy: only ever a root) in a kept thread."""

    __slots__ = ("children", "key", "number", "parent")

    def __init__(self, number: int | None, key: Key | None, parent: _Node | None = None) -> None:
        self.number = number
        self.key = key
        self.parent = parent
        self.children: list[_Node] = []


class ThreadState:
    """Threads of the messages `uids` (the first of a view's UIDs, ascending)."""

    __slots__ = ("_texts", "keys", "lock", "roots", "uids")

    def __init__(self, uids: list[int], roots: list[_Node], keys: list[Key]) -> None:
        self.lock = threading.Lock()  # held by whoever adds to, or reads, the state
        self.uids = uids
        self.roots = roots
        self.keys = keys  # each root's sort key
        self._texts: dict[bool, list[str]] = {}  # each root rendered, in UIDs / seq numbers

    def add(self, fields: Sequence[ThreadFields]) -> bool:
        """Adds `fields` (messages with UIDs above all of ours, in UID order) while that is
        exact; False at the first that could change threads there are (those before it are
        added): rebuild then."""
        raise NotImplementedError

    def body(self, uid: bool) -> str:
        """The THREAD response's text, in UIDs or in sequence numbers."""
        texts = self._texts.get(uid)
        if texts is None:
            if uid:
                texts = [_text(root, int) for root in self.roots]
            else:
                numbers = {u: n for n, u in enumerate(self.uids, 1)}
                texts = [_text(root, numbers.__getitem__) for root in self.roots]
            self._texts[uid] = texts
        return "".join(texts)

    def _rendered(self, index: int, inserted: bool) -> None:
        """Root `index` is new (`inserted`) or changed: its texts follow."""
        for uid, texts in self._texts.items():
            number = int if uid else self._sequence_number
            text = _text(self.roots[index], number)
            if inserted:
                texts.insert(index, text)
            else:
                texts[index] = text

    def _sequence_number(self, uid: int) -> int:
        return bisect.bisect_left(self.uids, uid) + 1

    def _new_root(self, node: _Node) -> None:
        assert node.key is not None
        index = bisect.bisect_right(self.keys, node.key)
        self.keys.insert(index, node.key)
        self.roots.insert(index, node)
        self._rendered(index, inserted=True)


class ReferencesThreads(ThreadState):
    """RFC 5256 REFERENCES (sealmail.imap.conversations), with what decides an exact add."""

    __slots__ = ("links", "nodes", "subjects")

    def __init__(self, uids: list[int], roots: list[_Node], keys: list[Key],
                 links: dict[str, tuple[int, bool]], subjects: set[str],
                 nodes: dict[int, _Node]) -> None:
        super().__init__(uids, roots, keys)
        self.links = links  # message id -> (UID of its message or 0, has a parent): step 1
        self.subjects = subjects  # the base subjects step 5 merged by
        self.nodes = nodes  # UID -> its message's node

    @classmethod
    def build(cls, fields: Sequence[ThreadFields]) -> ReferencesThreads:
        found = references(_messages(fields), _base_of(fields))
        sent = {f.uid: f.sent for f in fields}
        nodes: dict[int, _Node] = {}
        roots = [_from_tree(root, sent, None, nodes) for root in found.roots]
        return cls([f.uid for f in fields], roots, found.keys, found.links, found.subjects,
                   nodes)

    def add(self, fields: Sequence[ThreadFields]) -> bool:
        for f in fields:
            own = _first_id(f.message_id)
            if own and own in self.links:
                return False  # it fills a dummy, or is a duplicate: links change
            named = references_of(f.references, f.in_reply_to)
            if named:
                if not self._reply(f, own, named):
                    return False
            elif f.base_subject and f.base_subject in self.subjects:
                return False  # step 5 merges it with a thread there is
            else:
                self.uids.append(f.uid)
                if own:
                    self.links[own] = (f.uid, False)
                if f.base_subject:
                    self.subjects.add(f.base_subject)
                self._new_root(self._node(f))
        return True

    def _reply(self, f: ThreadFields, own: str, named: list[str]) -> bool:
        """Adds a message that names others, if step 1 only makes it a child of the last."""
        links = self.links
        if any(name not in links for name in named):
            return False  # a new dummy
        if not all(links[name][1] for name in named[1:]):
            return False  # step 1 would link a parentless one under the one before it
        parent = self.nodes.get(links[named[-1]][0])
        if parent is None:
            return False  # a dummy
        top = parent
        while top.parent is not None:
            top = top.parent
        root_key = top.key if top.number is not None or not top.children else top.children[0].key
        siblings = [child.key for child in parent.children if child.key is not None]
        if root_key is None or len(siblings) != len(parent.children):
            return False  # (not as this state was made: start again)
        index = bisect.bisect_left(self.keys, root_key)
        if index == len(self.roots) or self.roots[index] is not top:
            return False
        self.uids.append(f.uid)
        if own:
            self.links[own] = (f.uid, True)
        key = (f.sent, f.uid)
        place = bisect.bisect_right(siblings, key)
        parent.children.insert(place, self._node(f, parent))
        self._rendered(index, inserted=False)
        return True

    def _node(self, f: ThreadFields, parent: _Node | None = None) -> _Node:
        node = self.nodes[f.uid] = _Node(f.uid, (f.sent, f.uid), parent)
        return node


class SubjectThreads(ThreadState):
    """RFC 5256 ORDEREDSUBJECT: one thread per base subject, its first message the parent of
    the others, threads and members in (sent date, sequence number) order."""

    __slots__ = ("groups",)

    def __init__(self, uids: list[int], roots: list[_Node], keys: list[Key],
                 groups: dict[str, list[Key]]) -> None:
        super().__init__(uids, roots, keys)
        self.groups = groups  # base subject -> its messages' keys, in order

    @classmethod
    def build(cls, fields: Sequence[ThreadFields]) -> SubjectThreads:
        base_of = _base_of(fields)
        groups: dict[str, list[Key]] = {}
        for f in sorted(fields, key=lambda f: (f.sent, f.uid)):
            groups.setdefault(base_of(f.subject), []).append((f.sent, f.uid))
        firsts = sorted(groups.values())
        return cls([f.uid for f in fields], [_subject_root(m) for m in firsts],
                   [m[0] for m in firsts], groups)

    def add(self, fields: Sequence[ThreadFields]) -> bool:
        for f in fields:
            key = (f.sent, f.uid)
            members = self.groups.get(f.base_subject)
            if members is not None and key < members[0]:
                return False  # it would start its subject's thread: the thread moves
            self.uids.append(f.uid)
            if members is None:
                self.groups[f.base_subject] = [key]
                self._new_root(_Node(f.uid, key))
                continue
            index = bisect.bisect_left(self.keys, members[0])
            root = self.roots[index]
            place = bisect.bisect_right(members, key)
            members.insert(place, key)
            root.children.insert(place - 1, _Node(f.uid, key, root))
            self._rendered(index, inserted=False)
        return True


def _subject_root(members: list[Key]) -> _Node:
    root = _Node(members[0][1], members[0])
    root.children = [_Node(uid, (sent, uid), root) for sent, uid in members[1:]]
    return root


def _from_tree(tree: ThreadNode, sent: dict[int, float], parent: _Node | None,
               nodes: dict[int, _Node]) -> _Node:
    number = tree.number
    node = _Node(number, None if number is None else (sent[number], number), parent)
    if number is not None:
        nodes[number] = node
    node.children = [_from_tree(child, sent, node, nodes) for child in tree.children]
    return node


def build(algorithm: str, fields: Sequence[ThreadFields]) -> ThreadState:
    """The threads of `fields` (every message of a view, in UID order) by `algorithm`."""
    if algorithm == "REFERENCES":
        return ReferencesThreads.build(fields)
    return SubjectThreads.build(fields)


def response(body: str) -> DataResponse:
    """`* THREAD ...` of a body (`ThreadState.body`), as sealmail.proto.imap.response.thread
    writes it."""
    return DataResponse((Atom("THREAD"),) + ((Atom(body),) if body else ()))


def threaded(every: list[ThreadFields], algorithm: str, uid: bool,
             wanted: dict[int, int]) -> DataResponse:
    """THREAD's answer for the messages `wanted` (UID -> sequence number) of `every`, worked
    out afresh by the plain algorithms: what the states here must equal."""
    fields = [f for f in every if f.uid in wanted]
    messages = [ThreadedMessage(f.uid if uid else wanted[f.uid], wanted[f.uid],
                                f.message_id, f.references, f.in_reply_to, f.subject, f.sent)
                for f in fields]
    kept = {f.subject: f.base_subject for f in fields}  # worked out at delivery

    def base_of(subject: str) -> str:
        return kept[subject] if subject in kept else base_subject(subject)

    if algorithm == "REFERENCES":
        return thread_response(thread_by_references(messages, base_of))
    groups: dict[str, list[ThreadedMessage]] = {}
    for m in sorted(messages, key=lambda m: (m.sent, m.seq)):
        groups.setdefault(base_of(m.subject), []).append(m)
    roots = [(members[0], ThreadNode(members[0].number,
                                     tuple(ThreadNode(r.number) for r in members[1:])))
             for members in groups.values()]
    roots.sort(key=lambda pair: (pair[0].sent, pair[0].seq))
    return thread_response([node for _, node in roots])


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
    found = message_ids(text) if "<" in text else []
    return found[0] if found else ""


def _text(node: _Node, number: Callable[[int], int]) -> str:
    """One root as RFC 5256 4 writes it: `(3 6 (4 23)(44 7 96))` (as
    sealmail.proto.imap.response.thread renders its roots)."""
    return "(" + _members(node, number) + ")"


def _members(node: _Node, number: Callable[[int], int]) -> str:
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

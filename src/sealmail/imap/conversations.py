"""THREAD=REFERENCES (RFC 5256 section 3): conversations from Message-ID, References and
In-Reply-To, then merged by base subject. Pure: the caller gives the facts of each message.

The steps are numbered as in the RFC. Containers are the RFC's "containers": one per message id
seen (a message, or a dummy standing in for a referenced message that is not in the result).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sealmail.proto.imap.response import ThreadNode

__all__ = ["References", "ThreadedMessage", "message_ids", "references",
           "references_of",
           "thread_by_references"]

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
# RFC 5256 5: a reply or forward has subj-refwd in its leader (perhaps after [blobs]), a
# "(fwd)" trailer, or is wrapped as "[fwd: ...]".
_REPLY_OR_FORWARD = re.compile(
    r"^(?:\s*\[[^\]]*\])*\s*(?:re|fwd?)\s*(?:\[[^\]]*\]\s*)?:|\(fwd\)\s*$|^\s*\[fwd:",
    re.IGNORECASE)


class ThreadedMessage(NamedTuple):
    """What threading needs of one message (a tuple: THREAD makes one per message of the
    mailbox, and a frozen dataclass costs several times as much to make)."""

    number: int  # sequence number or UID, as the command asked
    seq: int  # sequence number: breaks ties in date order
    message_id: str  # the Message-ID header ("" when missing)
    references: str  # the References header
    in_reply_to: str  # the In-Reply-To header
    subject: str  # the Subject header, raw
    sent: float  # the sent date (Date header, else the internal date)


@dataclass(eq=False, slots=True)
class _Container:
    message: ThreadedMessage | None = None
    parent: _Container | None = None
    children: list[_Container] = field(default_factory=list)

    def is_ancestor_of(self, other: _Container) -> bool:
        node: _Container | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def adopt(self, child: _Container) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def orphan(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None


def message_ids(text: str) -> list[str]:
    """The <message-id>s in a header's text, in order."""
    return _MESSAGE_ID.findall(text) if text else []


def _references_of(message: ThreadedMessage) -> list[str]:
    return references_of(message.references, message.in_reply_to)


def references_of(references: str, in_reply_to: str) -> list[str]:
    """Step 1 (A): the ids of References, else the first id of In-Reply-To."""
    found = message_ids(references) if "<" in references else []
    if not found and "<" in in_reply_to:
        found = message_ids(in_reply_to)[:1]
    return found


class References(NamedTuple):
    """REFERENCES threads with what decides whether a message that comes after all of them
    changes any of them (sealmail.imap.threads)."""

    roots: list[ThreadNode]  # the answer: threads in order
    keys: list[tuple[float, int]]  # (sent date, seq) that each root was sorted by (step 6)
    # Every message id seen (step 1), of a message or referenced by one: the number of its
    # message (0 for a dummy), and whether step 1 gave its container a parent.
    links: dict[str, tuple[int, bool]]
    subjects: set[str]  # the base subjects step 5 merged roots by (non-empty ones)


def thread_by_references(
    messages: Sequence[ThreadedMessage], base_subject: Callable[[str], str]
) -> list[ThreadNode]:
    return references(messages, base_subject).roots


def references(
    messages: Sequence[ThreadedMessage], base_subject: Callable[[str], str]
) -> References:
    """RFC 5256 3, REFERENCES, with the facts of `References`."""
    by_id: dict[str, _Container] = {}
    containers: list[_Container] = []

    def container_for(message_id: str) -> _Container:
        found = by_id.get(message_id)
        if found is None:
            found = by_id[message_id] = _Container()
            containers.append(found)
        return found

    # Step 1: link messages and their references.
    for message in messages:
        ids = message_ids(message.message_id)
        own = by_id.get(ids[0]) if ids else None
        if own is None or own.message is not None:
            # No id, or a duplicate: the message gets a container of its own (1 B).
            own = container_for(ids[0]) if ids and own is None else None
            if own is None:
                own = _Container()
                containers.append(own)
        own.message = message
        references = _references_of(message)
        previous: _Container | None = None
        for reference in references:
            current = container_for(reference)
            if (previous is not None and current.parent is None
                    and not current.is_ancestor_of(previous) and current is not previous):
                previous.adopt(current)
            previous = current
        # 1 C: the last reference is the parent; without references, or when that link would
        # make a loop (a message naming itself last), the message is a root (as Dovecot).
        if previous is not None and previous is not own and not own.is_ancestor_of(previous):
            previous.adopt(own)
        else:
            own.orphan()

    links = {message_id: (0 if c.message is None else c.message.number, c.parent is not None)
             for message_id, c in by_id.items()}

    # Step 2: the root set. Step 3: prune dummies.
    roots = [c for c in containers if c.parent is None]
    roots = _prune(roots, at_root=True)

    # Step 4: sort by sent date (a dummy takes its first child's date).
    _sort(roots)

    # Step 5: merge roots by base subject.
    roots, subjects = _group_by_subject(roots, base_subject)

    # Step 6: sort again, siblings and roots.
    _sort(roots)
    return References([_node(root) for root in roots], [_sort_key(root) for root in roots],
                      links, subjects)


def _prune(siblings: list[_Container], *, at_root: bool) -> list[_Container]:
    kept: list[_Container] = []
    for container in siblings:
        if container.children:  # (most messages of a mailbox have no replies)
            container.children = _prune(container.children, at_root=False)
            for child in container.children:
                child.parent = container
        if container.message is not None:
            kept.append(container)
        elif not container.children:
            continue  # a dummy without children goes away
        elif at_root and len(container.children) > 1:
            kept.append(container)  # a dummy holding several threads stays at the root
        else:
            for child in container.children:
                child.parent = container.parent
            kept.extend(container.children)
    return kept


def _sort_key(container: _Container) -> tuple[float, int]:
    while container.message is None:
        container = container.children[0]
    return container.message.sent, container.message.seq


def _sort(siblings: list[_Container]) -> None:
    for container in siblings:
        if container.children:
            _sort(container.children)
    siblings.sort(key=_sort_key)


def _subject_container(container: _Container) -> ThreadedMessage:
    while container.message is None:
        container = container.children[0]
    return container.message


def _group_by_subject(
    roots: list[_Container], base_subject: Callable[[str], str]
) -> tuple[list[_Container], set[str]]:
    """Step 5: roots with the same base subject become one thread; and the (non-empty) base
    subjects there were."""

    def is_reply(container: _Container) -> bool:
        return container.message is not None and bool(
            _REPLY_OR_FORWARD.search(container.message.subject))

    subjects = [base_subject(_subject_container(root).subject) for root in roots]
    table: dict[str, _Container] = {}  # 5 B: the root that represents each subject
    for root, subject in zip(roots, subjects, strict=True):
        if not subject:
            continue
        there = table.get(subject)
        if (there is None or (there.message is not None and root.message is None)
                or (is_reply(there) and root.message is not None and not is_reply(root))):
            table[subject] = root
    top = dict(table)  # what stands for the subject's thread now (5 C may replace it)
    merged: set[int] = set()
    for root, subject in zip(roots, subjects, strict=True):
        if not subject or table[subject] is root:
            continue
        merged.add(id(root))
        there = top[subject]
        if there.message is None and root.message is None:
            for child in list(root.children):
                there.adopt(child)
        elif there.message is None or (is_reply(root) and not is_reply(there)):
            there.adopt(root)
        elif is_reply(there) and not is_reply(root):
            root.adopt(there)
            top[subject] = root
        else:
            dummy = _Container()
            dummy.adopt(there)
            dummy.adopt(root)
            top[subject] = dummy
    return [
        top[subject] if subject and table[subject] is root else root
        for root, subject in zip(roots, subjects, strict=True)
        if id(root) not in merged
    ], set(table)


def _node(container: _Container) -> ThreadNode:
    number = container.message.number if container.message is not None else None
    return ThreadNode(number, tuple(_node(c) for c in container.children))

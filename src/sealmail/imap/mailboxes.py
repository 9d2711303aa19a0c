"""Mailbox commands: SELECT / EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST
(RFC 9051 6.3.9, RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE,
RFC 3348 CHILDREN), LSUB, STATUS and NAMESPACE.

Every name the client sends is turned into an internal name by the session's UserNamespace, and
every name sent back comes from it; rights (RFC 4314) are checked on internal names. Once
IMAP4rev2 is enabled, SELECT / EXAMINE answer as RFC 9051 6.3.2 has it (no RECENT, no UNSEEN
code, a LIST of the mailbox); with UTF-8 enabled a de-normalized name the client sent is
answered with a LIST ... ("OLDNAME" (...)) (RFC 9051 6.3.9.7).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from typing import TYPE_CHECKING

from sealmail.imap.errors import CommandFailed
from sealmail.imap.namespace import net_unicode
from sealmail.imap.selected import SelectedMailbox, flag_atoms
from sealmail.proto.imap import (
    Create,
    Delete,
    List,
    Lsub,
    Namespace,
    Rename,
    Response,
    ResponseCode,
    Select,
    SequenceSet,
    StatusResponse,
    Subscribe,
    Unsubscribe,
)
from sealmail.proto.imap import Status as StatusCommand
from sealmail.proto.imap import response as replies
from sealmail.store import auditlog
from sealmail.store.api import MailboxInfo
from sealmail.store.errors import InvalidMailboxName, MailboxNotFound
from sealmail.store.names import owner_of, parent_of, user_inbox, wildcard_pattern

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = [
    "SPECIAL_USES",
    "create",
    "delete",
    "examine_or_select",
    "list_command",
    "lsub",
    "mailbox_attributes",
    "namespace",
    "rename",
    "status",
    "status_values",
    "subscribe",
    "unsubscribe",
]

SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
                "HIGHESTMODSEQ")


# -- SELECT / EXAMINE ---------------------------------------------------------------------------


def examine_or_select(session: ImapSession, command: Select) -> list[Response]:
    """RFC 9051 6.3.2: a failed SELECT leaves no mailbox selected (the core moves the state)."""
    previous, session.selected = session.selected, None
    name = session.internal(command.mailbox)
    session.require_rights(name, "r")
    if command.condstore or command.qresync is not None:
        if command.qresync is not None and not session.qresync:
            raise CommandFailed("QRESYNC was not enabled", status="BAD")
        session.enable_condstore()
    readonly = command.readonly or (not session.has_rights(name, "s") and not session.has_rights(
        name, "w") and not session.has_rights(name, "t"))
    # RFC 3501 2.3.2: a read-write SELECT claims the \Recent messages (the store's mark moves);
    # EXAMINE, and a SELECT the user's rights make read-only, only show the unclaimed ones.
    if previous is not None and previous.name == name and previous.reader == session.userid:
        previous.offer_snapshot(session.store)  # selected again: the snapshot starts from it
    view = SelectedMailbox.open(session.store, name, readonly, session.userid,
                                shows_recent=not session.rev2)
    info = session.store.mailbox(name)
    assert info is not None
    out: list[Response] = [view.flags_response(), replies.exists(view.exists)]
    if session.rev2:
        # RFC 9051 6.3.2: "The server MUST return a LIST response with the mailbox name. The
        # list of mailbox attributes MUST be accurate", with OLDNAME for a de-normalized name.
        # No RECENT and no UNSEEN code (Appendix E items 11 and 12).
        attributes = tuple(mailbox_attributes(session, info))
        shown = session.external(name)
        if session.denormalized(command.mailbox):
            out.append(session.oldname(command.mailbox, shown, attributes))
        else:
            out.append(replies.list_response(attributes, session.namespace.separator, shown))
    else:
        out.append(replies.recent(len(view.recent)))
        view.told_recent = len(view.recent)
        unseen = view.first_unseen()
        if unseen is not None:
            out.append(StatusResponse("OK", f"Message {unseen} is first unseen",
                                      code=ResponseCode("UNSEEN", (unseen,))))
    out += [
        StatusResponse("OK", "Ok", code=ResponseCode("PERMANENTFLAGS", (view.permanent_flags(),))),
        StatusResponse("OK", "Ok", code=ResponseCode("UIDVALIDITY", (view.uidvalidity,))),
        StatusResponse("OK", "Ok", code=ResponseCode("UIDNEXT", (info.uidnext,))),
        StatusResponse("OK", "Ok", code=ResponseCode("HIGHESTMODSEQ", (view.highestmodseq,))),
    ]
    qresync = command.qresync
    if qresync is not None and qresync.uidvalidity == view.uidvalidity:
        # RFC 7162 3.2.5.1: what vanished and what changed since the client's modseq.
        gone = session.store.expunged_since(name, qresync.modseq)
        if qresync.known_uids is not None and gone:
            gone = list(qresync.known_uids.iter_members(sorted(gone)))
        if gone:
            out.append(replies.vanished(SequenceSet.of(gone), earlier=True))
        for record in session.store.messages_since(name, qresync.modseq, session.userid):
            seq = view.seq_of(record.uid)
            if seq is not None and (qresync.known_uids is None or qresync.known_uids.contains(
                    record.uid, view.uids[-1] if view.uids else 0)):
                out.append(replies.fetch(seq, [("UID", record.uid),
                                               ("FLAGS", flag_atoms(view.session_flags(record))),
                                               ("MODSEQ", [record.modseq])]))
    session.selected = view
    session.saved_search = []
    code = "READ-ONLY" if readonly else "READ-WRITE"
    out.append(StatusResponse("OK", f"{command.name} completed", tag=command.tag,
                              code=ResponseCode(code)))
    return out


# -- CREATE / DELETE / RENAME ---------------------------------------------------------------------


def _require_create_right(session: ImapSession, name: str) -> None:
    """Creating needs "k" on the nearest existing ancestor; new top levels and new users'
    INBOXes are for admins, who need no right anywhere (as Cyrus)."""
    if session.is_admin:
        return
    owner = owner_of(name)
    if owner is not None and name == user_inbox(owner.user, owner.domain):
        raise CommandFailed("Only an administrator may create a user", "NOPERM")
    parent = parent_of(name)
    while parent is not None:
        if session.store.mailbox(parent) is not None:
            session.require_rights(parent, "k")
            return
        parent = parent_of(parent)
    raise CommandFailed("Only an administrator may create a top-level mailbox", "NOPERM")


def create(session: ImapSession, command: Create) -> list[Response]:
    name = session.internal(command.mailbox)
    known = {use.lower(): use for use in SPECIAL_USES}
    uses = []
    for use in command.special_use:
        if use.lower() not in known:
            # RFC 6154 5.2 / RFC 5530: USEATTR for an unknown special use.
            raise CommandFailed(f"Unknown special use {use}", "USEATTR")
        uses.append(known[use.lower()])
    if session.store.mailbox(name) is not None:
        raise CommandFailed("Mailbox already exists", "ALREADYEXISTS")
    _require_create_right(session, name)
    auditlog.create_mailbox(session.store, name, session.audit)
    if uses:
        session.store.set_special_use(name, " ".join(uses))
    if session.denormalized(command.mailbox):  # RFC 9051 6.3.4: SHOULD say which name
        return [session.oldname(command.mailbox, session.external(name))]
    return []


def delete(session: ImapSession, command: Delete) -> list[Response]:
    name = session.internal(command.mailbox)
    if name == session.namespace.inbox and not session.is_admin:
        raise CommandFailed("INBOX cannot be deleted", "CANNOT")  # RFC 9051 6.3.5
    session.require_rights(name, "" if session.is_admin else "x")  # Cyrus: admins delete users
    if session.selected is not None and session.selected.name == name:
        session.selected = None  # our own selection goes with it (Cyrus does the same)
    auditlog.delete_mailbox(session.store, name, session.audit)
    if session.denormalized(command.mailbox):  # RFC 9051 6.3.5: SHOULD say which name
        return [session.oldname(command.mailbox, session.external(name), ("\\NonExistent",))]
    return []


def rename(session: ImapSession, command: Rename) -> list[Response]:
    old = session.internal(command.mailbox)
    new = session.internal(command.new_name)
    # RFC 9051 6.3.6: for a de-normalized name, LIST new-name ("OLDNAME" (old-name as sent)).
    told: list[Response] = []
    if session.denormalized(command.mailbox, command.new_name):
        told.append(session.oldname(command.mailbox, session.external(new)))
    if session.store.mailbox(new) is not None:
        raise CommandFailed("Target mailbox already exists", "ALREADYEXISTS")
    if old == session.namespace.inbox:
        # RFC 9051 6.3.6: renaming INBOX moves its messages to a new mailbox; INBOX stays.
        session.require_rights(old, "rte")
        _require_create_right(session, new)
        store = session.store
        auditlog.create_mailbox(store, new, session.audit)
        uids = [r.uid for r in store.messages(old)]
        if uids:
            auditlog.move_messages(store, old, uids, new, None, session.audit)
        return told
    session.require_rights(old, "" if session.is_admin else "x")
    _require_create_right(session, new)
    auditlog.rename_mailbox(session.store, old, new, session.audit)
    return told


# -- subscriptions ---------------------------------------------------------------------------------


def subscribe(session: ImapSession, command: Subscribe) -> list[Response]:
    name = session.internal(command.mailbox)
    if session.store.mailbox(name) is None:
        raise MailboxNotFound(f"mailbox {command.mailbox} does not exist")
    session.store.subscribe(session.userid, name)
    return []


def unsubscribe(session: ImapSession, command: Unsubscribe) -> list[Response]:
    # RFC 9051 6.3.8: unsubscribing a name that was deleted must work.
    session.store.unsubscribe(session.userid, session.internal(command.mailbox))
    return []


# -- LIST / LSUB ---------------------------------------------------------------------------------


def _pattern(text: str, separator: str) -> re.Pattern[str]:
    """RFC 9051 6.3.9: "*" matches anything, "%" anything but the hierarchy separator."""
    if text[:5].upper() == "INBOX" and (len(text) == 5 or text[5] in (separator, "*", "%")):
        text = "INBOX" + text[5:]
    return wildcard_pattern(text, separator)


def _ancestors(name: str, separator: str) -> list[str]:
    parts = name.split(separator)
    return [separator.join(parts[:i]) for i in range(1, len(parts))]


def _visible(session: ImapSession) -> dict[str, MailboxInfo]:
    """External name -> mailbox, for every mailbox the user may see ("l" right)."""
    found: dict[str, MailboxInfo] = {}
    prefix = f"{session.namespace.domain}!" if session.namespace.domain else ""
    for info in session.store.list_mailboxes(prefix):
        if not session.namespace.is_visible(info.name):
            continue
        if not session.rights_in(info, "l"):
            continue
        found[session.external(info.name)] = info
    return found


def _ordered(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != "INBOX", n))


def _patterns(session: ImapSession, reference: str, patterns: tuple[str, ...]
              ) -> list[re.Pattern[str]]:
    """The canonical LIST patterns; with UTF-8 names in Net-Unicode form like the names they
    are matched with. RFC 9051 6.3.9: a pattern the server cannot accept "MUST be silently
    ignored"."""
    separator = session.namespace.separator
    out = []
    for pattern in patterns:
        text = reference + pattern
        if session.utf8:
            try:
                text = net_unicode(text)
            except InvalidMailboxName:
                continue
        out.append(_pattern(text, separator))
    return out


def mailbox_attributes(session: ImapSession, info: MailboxInfo) -> list[str]:
    """The attributes a plain LIST gives one existing mailbox: \\HasChildren or
    \\HasNoChildren (children the user may list, as they appear in the user's namespace), and
    its special use (RFC 6154)."""
    separator = session.namespace.separator
    shown = session.external(info.name)
    has_children = any(
        session.namespace.is_visible(child.name) and session.rights_in(child, "l")
        and session.external(child.name).startswith(shown + separator)
        for child in session.store.list_mailboxes(info.name + ".")
    )
    attributes = ["\\HasChildren" if has_children else "\\HasNoChildren"]
    use = session.store.special_uses().get(info.name)
    if use:
        attributes.extend(use.split())
    return attributes


def list_command(session: ImapSession, command: List) -> list[Response]:
    separator = session.namespace.separator
    selection = {s.upper() for s in command.selection or ()}
    returns = {r.upper() for r in command.return_options or ()}
    if command.status_items is not None:
        returns.add("STATUS")
    if not command.extended and command.patterns == ("",):
        # RFC 9051 6.3.9: an empty pattern asks for the delimiter and the root of the reference.
        root = ""
        if command.reference:
            head, found_separator, _ = command.reference.partition(separator)
            root = head + separator if found_separator else ""
        return [replies.list_response(["\\Noselect"], separator, root)]
    mailboxes = _visible(session)
    subscribed_names: set[str] = set()
    if "SUBSCRIBED" in selection or "SUBSCRIBED" in returns:
        for internal in session.store.subscriptions(session.userid):
            if session.namespace.is_visible(internal):
                subscribed_names.add(session.external(internal))
    special: dict[str, str] = {}
    uses = session.store.special_uses()
    for external, known in mailboxes.items():
        if known.name in uses:
            special[external] = uses[known.name]
    patterns = _patterns(session, command.reference, command.patterns)

    def matches(name: str) -> bool:
        return any(p.fullmatch(name) for p in patterns)

    has_children: set[str] = set()
    for external in mailboxes:
        has_children.update(_ancestors(external, separator))
    candidates = set(mailboxes)
    if "SUBSCRIBED" in selection:
        candidates = set(subscribed_names)
    if "SPECIAL-USE" in selection:
        candidates = {n for n in candidates if n in special}
    found = [n for n in candidates if matches(n)]
    found_set = set(found)
    if "SUBSCRIBED" not in selection and "SPECIAL-USE" not in selection:
        # Levels that are not mailboxes themselves, listed when "%" stops at them.
        for ancestor in has_children - set(mailboxes):
            if matches(ancestor) and not any(
                    n.startswith(ancestor + separator) for n in found_set):
                found.append(ancestor)
    recursive_children: dict[str, bool] = {}
    if "RECURSIVEMATCH" in selection:
        # RFC 5258 3 (RECURSIVEMATCH, CHILDINFO): a parent is returned for the descendants
        # that meet the selection but that the patterns do not list themselves; one that is
        # listed says so on its own (imaptest's listext).
        for name in candidates:
            if matches(name):
                continue
            for ancestor in _ancestors(name, separator):
                if matches(ancestor):
                    recursive_children[ancestor] = True
                    if ancestor not in found:
                        found.append(ancestor)
    out: list[Response] = []
    for name in _ordered(found):
        info = mailboxes.get(name)
        attributes: list[str] = []
        if info is None:
            attributes.append("\\NonExistent" if command.extended else "\\Noselect")
        elif "STATUS" in returns and command.status_items and not session.rights_in(info, "r"):
            # RFC 9051 6.3.9.2: when STATUS cannot be given (no "r"), no STATUS response and
            # the LIST response "MUST include the \\NoSelect attribute".
            attributes.append("\\Noselect")
        attributes.append("\\HasChildren" if name in has_children else "\\HasNoChildren")
        if name in subscribed_names and ("SUBSCRIBED" in selection or "SUBSCRIBED" in returns):
            attributes.append("\\Subscribed")
        if name in special and (not command.extended or "SPECIAL-USE" in returns
                                or "SPECIAL-USE" in selection):
            attributes.extend(special[name].split())
        extended: list[tuple[str, object]] = []
        if recursive_children.get(name):
            extended.append(("CHILDINFO", ["SUBSCRIBED"]))
        out.append(replies.list_response(attributes, separator, name,
                                         extended=extended))  # type: ignore[arg-type]
        # RFC 5819: STATUS for each selectable mailbox listed, right after its LIST.
        if ("STATUS" in returns and info is not None and command.status_items
                and session.rights_in(info, "r")):
            out.append(replies.status(name, status_values(session, info,
                                                          command.status_items)))
    return out


def lsub(session: ImapSession, command: Lsub) -> list[Response]:
    separator = session.namespace.separator
    patterns = _patterns(session, command.reference, (command.pattern,))
    existing = _visible(session)
    out: list[Response] = []
    names = []
    for internal in session.store.subscriptions(session.userid):
        if session.namespace.is_visible(internal):
            names.append(session.external(internal))
    subscribed = set(names)
    listed = {n for n in subscribed if any(p.fullmatch(n) for p in patterns)}
    # RFC 3501 6.3.9: "if "foo/bar" is subscribed but "foo" is not. A "%" wildcard to LSUB
    # must return foo, not foo/bar, in the LSUB response, and it MUST be flagged with the
    # \Noselect attribute" (whether or not foo exists: it is not subscribed).
    parents = {ancestor for name in subscribed - listed
               for ancestor in _ancestors(name, separator)
               if ancestor not in subscribed and any(p.fullmatch(ancestor) for p in patterns)}
    for name in _ordered([*listed, *parents]):
        attributes = [] if name in existing and name not in parents else ["\\Noselect"]
        out.append(replies.list_response(attributes, separator, name, command="LSUB"))
    return out


# -- STATUS / NAMESPACE ----------------------------------------------------------------------------


def status_values(session: ImapSession, info: MailboxInfo, items: tuple[str, ...]
                  ) -> dict[str, int]:
    """UNSEEN counts the user's own \\Seen (sealmail.store.seen); RECENT the messages no
    read-write session of the user has claimed yet (0 in IMAP4rev2, which has no \\Recent)."""
    recent = "RECENT" in items and not session.rev2
    uids: list[int] = []  # ascending
    view: SelectedMailbox | None = None
    per_flags: Counter[tuple[str, ...]] = Counter()  # messages per flag set
    size = 0
    if "SIZE" in items:
        records = session.store.messages(info.name, session.userid)
        uids = [r.uid for r in records]
        per_flags.update(r.flags for r in records)
        size = sum(r.size for r in records)
    elif recent or "UNSEEN" in items or "DELETED" in items:
        # The flag snapshot SELECT reads (no record per message, each flag set counted once),
        # or the selected view of this mailbox when it is the store's state.
        view = _current_view(session, info)
        source = view or session.store.flag_snapshot(info.name, session.userid)
        uids = source.uids
        for flag_id, count in Counter(source.flag_ids).items():
            per_flags[source.flag_sets[flag_id]] += count
    values: dict[str, int] = {}
    for item in items:
        if item == "MESSAGES":
            values[item] = info.exists
        elif item == "UIDNEXT":
            values[item] = info.uidnext
        elif item == "UIDVALIDITY":
            values[item] = info.uidvalidity
        elif item == "RECENT":
            values[item] = 0
            if recent and not _all_claimed(view):
                mark = session.store.claim_recent(info.name, 0, session.userid)  # reads only
                values[item] = len(uids) - bisect.bisect_right(uids, mark)
        elif item == "HIGHESTMODSEQ":
            session.enable_condstore()
            values[item] = info.highestmodseq
        elif item == "UNSEEN":
            values[item] = sum(n for flags, n in per_flags.items() if "\\Seen" not in flags)
        elif item == "DELETED":
            values[item] = sum(n for flags, n in per_flags.items() if "\\Deleted" in flags)
        elif item == "SIZE":
            values[item] = size
        else:
            raise CommandFailed(f"Unknown STATUS item {item}", status="BAD")
    return values


def _current_view(session: ImapSession, info: MailboxInfo) -> SelectedMailbox | None:
    """The selected view of `info`'s mailbox when it holds the store's state as the session's
    user sees it (nothing changed since its last sync, nothing held back to announce): STATUS
    of the selected mailbox (imaptest asks for MESSAGES UNSEEN RECENT of the one it has
    selected) then counts from it instead of reading every message's flags again. Its
    \\Recent flags are this session's and are not counted; the RECENT item is the store's."""
    view = session.selected
    if (view is None or view.name != info.name or view.vanished
            or view.reader != session.userid or view.uidvalidity != info.uidvalidity
            or view.highestmodseq != info.highestmodseq or view.exists != info.exists):
        return None
    return view


def _all_claimed(view: SelectedMailbox | None) -> bool:
    """Whether every message of `view` (a `_current_view`) is claimed: a read-write IMAP4rev1
    view claims its messages when it is selected and the new ones at each sync, before it
    shows them (sealmail.imap.selected), so the user's \\Recent mark is at least its last UID
    and STATUS RECENT is 0 without reading the mark (two statements: imaptest asks STATUS
    RECENT of the mailbox it has selected)."""
    return view is not None and view.shows_recent and not view.readonly


def status(session: ImapSession, command: StatusCommand) -> list[Response]:
    name = session.internal(command.mailbox)
    found = session.store.mailbox(name)  # looked up once, for the rights and the values
    session.require_rights_in(found, name, "r")
    assert found is not None  # require_rights_in refuses a mailbox that is not there
    out: list[Response] = []
    view = session.selected
    if (view is not None and view.name == name and not session.update_contexts
            and "SIZE" not in command.items and _current_view(session, found) is None
            and any(item in command.items for item in ("UNSEEN", "RECENT", "DELETED"))):
        # STATUS of the selected mailbox with news to sync: the sync execute() would make after
        # the command made before it (its news go out first, as they may: RFC 9051 7), and the
        # counts taken from the view it leaves, rather than every message's flags read again.
        # Not with RFC 5267 contexts, whose updates are placed around execute()'s own sync.
        out = view.sync(session.store, session.sync_options(), True)
        found = session.store.mailbox(name) or found  # as the view now is, if nothing moved
    return [*out, replies.status(session.external(name),
                                 status_values(session, found, command.items))]


def namespace(session: ImapSession, command: Namespace) -> list[Response]:
    return [replies.namespace(*session.namespace.namespaces())]



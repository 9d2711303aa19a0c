"""Mailbox access control lists (RFC 4314): rights strings, SETACL modifiers, effective rights.

An ACL is a mapping identifier -> rights. An identifier starting with '-' holds *negative* rights
(RFC 4314 2: "rights ... that are not granted"). Stored rights are canonical: letters of
ALL_RIGHTS in that order, then any digit rights, with the obsolete "c" and "d" kept consistent with
the rights that replaced them (RFC 4314 2.1.1), so clients of either generation read them right.

Defaults follow Cyrus (docs "Access Control Defaults" and mboxlist's create path):
- a user's INBOX (`user.X`) starts with the owner holding every right;
- any other new mailbox copies the ACL of its closest existing ancestor;
- a new top-level shared mailbox without ancestor gets `defaultacl`, Cyrus's default "anyone lrs";
- `admins` implicitly hold "l" and "a" on every mailbox, whatever the ACL says;
- the owner of a mailbox (`user.X` and below) implicitly holds `implicit_owner_rights` (Cyrus:
  "lkxan"; here "lkxa") on it, so no SETACL - not a negative entry either - can lock them out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from sealmail.store.api import ALL_RIGHTS
from sealmail.store.errors import InvalidRights
from sealmail.store.names import owner_of, parent_of, user_inbox

ANYONE = "anyone"
ANONYMOUS = "anonymous"
DEFAULT_SHARED_ACL: dict[str, str] = {ANYONE: "lrs"}  # Cyrus's `defaultacl` default
ADMIN_IMPLICIT_RIGHTS = "la"  # Cyrus: admins always have lookup and administer

# RFC 4314 2.1.1: "c" stands for the create right (k), "d" for delete-message and expunge (t, e)
# as Cyrus groups them; "x" (delete mailbox) has no obsolete letter of its own in Cyrus.
_OBSOLETE: dict[str, str] = {"c": "k", "d": "te"}
_DIGITS = "0123456789"


def canonical_rights(rights: str) -> str:
    """Rights in canonical order; 'c'/'d' expanded to and derived from their RFC 4314 rights."""
    chosen: set[str] = set()
    for right in rights:
        if right not in ALL_RIGHTS and right not in _DIGITS:
            # RFC 4314 3.1: an unrecognised right MUST cause the command to fail.
            raise InvalidRights(f"unknown right {right!r} in {rights!r}")
        chosen.add(right)
        chosen.update(_OBSOLETE.get(right, ""))
    for obsolete, modern in _OBSOLETE.items():
        if all(r in chosen for r in modern):
            chosen.add(obsolete)
        else:
            chosen.discard(obsolete)
    return "".join(r for r in ALL_RIGHTS + _DIGITS if r in chosen)


def validate_identifier(identifier: str) -> None:
    bare = identifier.removeprefix("-")
    if not bare or any(c.isspace() or ord(c) < 0x20 for c in bare):
        raise InvalidRights(f"bad ACL identifier {identifier!r}")


def apply_rights_change(current: str, change: str) -> str:
    """SETACL semantics (RFC 4314 3.1): '+r' adds, '-r' removes, plain 'r' replaces."""
    if change.startswith("+"):
        return canonical_rights(current + canonical_rights(change[1:]))
    if change.startswith("-"):
        removed = set(_expand(change[1:]))
        kept = (r for r in _expand(current) if r not in removed and r not in _OBSOLETE)
        return canonical_rights("".join(kept))
    return canonical_rights(change)


def _expand(rights: str) -> str:
    canonical_rights(rights)  # validates
    return "".join(r + _OBSOLETE.get(r, "") for r in rights)


def set_entry(acl: Mapping[str, str], identifier: str, change: str) -> dict[str, str]:
    """A new ACL with `identifier` changed; an empty result removes the entry."""
    validate_identifier(identifier)
    updated = dict(acl)
    rights = apply_rights_change(updated.get(identifier, ""), change)
    if rights:
        updated[identifier] = rights
    else:
        updated.pop(identifier, None)
    return updated


def _applies(entry_identifier: str, identity: str) -> bool:
    # RFC 4314 2: "anyone" is the universal identity (all authentications, anonymous included);
    # "anonymous" names only the unauthenticated user.
    return entry_identifier in (identity, ANYONE)


def owner_rights(name: str, identity: str, implicit_owner_rights: str) -> str:
    """The rights `identity` holds on mailbox `name` by owning it, whatever its ACL says."""
    owner = owner_of(name)
    return implicit_owner_rights if owner is not None and owner.userid == identity else ""


def rights_of(
    acl: Mapping[str, str], identity: str, is_admin: bool, implicit: str = ""
) -> str:
    """Effective rights of `identity`: the union of matching entries minus matching negatives,
    plus the `implicit` rights (an owner's) that no entry takes away.

    RFC 4314 2: "the set of rights granted ... is the union of the rights of all matching
    identifiers minus the union of the rights of all matching negative identifiers".
    Remembered per ACL and identity: IMAP asks it two or three times per command, and the
    answer depends on nothing else.
    """
    return _rights_of(tuple(acl.items()), identity, is_admin, implicit)


@functools.lru_cache(maxsize=4096)
def _rights_of(
    entries: tuple[tuple[str, str], ...], identity: str, is_admin: bool, implicit: str
) -> str:
    granted: set[str] = set()
    denied: set[str] = set()
    for identifier, rights in entries:
        negative = identifier.startswith("-")
        bare = identifier[1:] if negative else identifier
        if _applies(bare, identity):
            (denied if negative else granted).update(_expand(rights))
    result = {r for r in granted - denied if r not in _OBSOLETE}  # c/d re-derived below
    result.update(implicit)
    if is_admin:
        result.update(ADMIN_IMPLICIT_RIGHTS)
    return canonical_rights("".join(result))


def render_acl(acl: Mapping[str, str]) -> str:
    """Cyrus's on-disk form: `identifier TAB rights TAB` repeated."""
    return "".join(f"{identifier}\t{rights}\t" for identifier, rights in sorted(acl.items()))


def parse_acl(text: str) -> dict[str, str]:
    fields = text.split("\t")
    if fields and fields[-1] == "":
        fields.pop()
    if len(fields) % 2:
        raise InvalidRights(f"odd number of fields in stored ACL {text!r}")
    return {fields[i]: fields[i + 1] for i in range(0, len(fields), 2)}


def acl_of_entries(entries: Mapping[str, str]) -> dict[str, str]:
    """An ACL given whole (at CREATE): each entry applied as SETACL applies it."""
    acl: dict[str, str] = {}
    for identifier, rights in entries.items():
        acl = set_entry(acl, identifier, rights)
    return acl


def default_acl(name: str, acl_of: Callable[[str], Mapping[str, str] | None]) -> dict[str, str]:
    """Cyrus's ACL of a new mailbox `name` (see the module docstring); `acl_of` is the ACL of an
    existing mailbox, or None where there is no mailbox of that name."""
    owner = owner_of(name)
    if owner is not None and name == user_inbox(owner.user, owner.domain):
        return {owner.userid: ALL_RIGHTS}
    parent = parent_of(name)
    while parent is not None:
        inherited = acl_of(parent)
        if inherited is not None:
            return dict(inherited)
        parent = parent_of(parent)
    return dict(DEFAULT_SHARED_ACL)

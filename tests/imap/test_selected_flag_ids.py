"""SelectedMailbox.ids_where remembers its answers and looks only at flag sets added since: the
answers must stay what a full scan gives, and a caller's `&=` must not change them."""

from __future__ import annotations

from sealmail.imap.selected import SelectedMailbox, SyncOptions


def _scan(view: SelectedMailbox, flag: str, present: bool) -> frozenset[int]:
    return frozenset(i for i, flags in enumerate(view.flag_sets) if (flag in flags) == present)


def test_ids_where_follows_flag_sets_added_later() -> None:
    view = SelectedMailbox("user.a", False, 1, 1)
    view.flag_id(())
    view.flag_id(("\\Seen",))
    assert view.ids_where("\\Seen") == _scan(view, "\\Seen", True) == {1}
    assert view.ids_where("\\Seen", present=False) == {0}
    for n in range(50):
        view.flag_id(("\\Seen", f"$k{n}") if n % 2 else (f"$k{n}",))
        for flag in ("\\Seen", "$k3", "$k4"):
            for present in (True, False):
                assert view.ids_where(flag, present) == _scan(view, flag, present)
    ids = view.ids_where("\\Seen")
    ids &= frozenset({1})  # as SEARCH NEW narrows it
    assert view.ids_where("\\Seen") == _scan(view, "\\Seen", True) != ids


def test_rendered_flag_sets_renders_each_set_once() -> None:
    view = SelectedMailbox("user.a", False, 1, 1)
    calls: list[tuple[str, ...]] = []

    def render(flags: tuple[str, ...]) -> bytes:
        calls.append(flags)
        return ("(" + " ".join(flags) + ")").encode()

    view.flag_id(("\\Seen",))
    assert view.rendered_flag_sets(render) == [b"(\\Seen)"]
    view.flag_id(())
    view.flag_id(("\\Seen",))  # known: no new set
    assert view.rendered_flag_sets(render) == [b"(\\Seen)", b"()"]
    assert view.rendered_flag_sets(render) == [b"(\\Seen)", b"()"]
    assert calls == [("\\Seen",), ()]


def test_sequence_numbers_follow_new_mail_and_expunges() -> None:
    """`numbers` is extended as UIDs are appended and made again when the list is replaced
    (after expunges): always each UID's position + 1."""
    view = SelectedMailbox("user.a", False, 1, 1)
    view.uids = [2, 3, 7]
    view.flag_ids = [0, 0, 0]
    view.modseqs = [1, 1, 1]
    view.flag_id(())
    assert view.numbers() == {2: 1, 3: 2, 7: 3}
    for uid in (9, 12):  # as a sync appends new mail
        view.uids.append(uid)
        view.flag_ids.append(0)
        view.modseqs.append(1)
    assert view.numbers() == {2: 1, 3: 2, 7: 3, 9: 4, 12: 5}
    view.vanished = {3, 9}
    view._announce_expunges(SyncOptions())
    assert view.uids == [2, 7, 12]
    assert view.numbers() == {2: 1, 7: 2, 12: 3}

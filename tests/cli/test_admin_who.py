"""`sealmail admin who` names the selected mailbox as IMAP shows it to the session's user, not by
the store's internal name the registry holds (doveadm who shows the user's own names too)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sealmail.cli.admin_sessions import who
from sealmail.sessions import LiveSession


def _filed(directory: Path, *sessions: tuple[str, str]) -> Path:
    directory.mkdir()
    for n, (user, mailbox) in enumerate(sessions):
        live = LiveSession(f"s{n}", user, "imap", "imap", "127.0.0.1", 1.0e9 + n, os.getpid(),
                           mailbox)
        (directory / live.session_id).write_text(json.dumps(live.to_json()))
    return directory


def _mailboxes(directory: Path, separator: str = ".", alternate: bool = False) -> list[str]:
    lines: list[str] = []
    assert who(directory, None, lines.append, separator, alternate) == 0
    return [line.split("  ")[-1].strip() for line in lines[1:]]


SESSIONS = (("alice", "user.alice"), ("alice", "user.alice.Sent"), ("alice", "user.bob.Lists"),
            ("alice", "Projects"), ("alice", "user.alice.&AOk-t&AOk-"), ("carol", ""),
            ("dave@example.org", "example.org!user.dave.Work"))


@pytest.mark.parametrize(("separator", "alternate", "expected"), [
    (".", False, ["INBOX", "INBOX.Sent", "user.bob.Lists", "Projects", "INBOX.été", "-",
                  "INBOX.Work"]),
    ("/", True, ["INBOX", "Sent", "Other Users/bob/Lists", "Shared Folders/Projects", "été",
                 "-", "Work"]),
])
def test_who_shows_the_users_own_names(tmp_path: Path, separator: str, alternate: bool,
                                       expected: list[str]) -> None:
    directory = _filed(tmp_path / "proc", *SESSIONS)
    assert _mailboxes(directory, separator, alternate) == expected

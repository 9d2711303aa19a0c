"""The store the IMAP session tests run on: fred's INBOX and Archive, on a fresh disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.store.disk import DiskStore


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    config = parse_imapd_conf(
        f"configdirectory: {tmp_path / 'c'}\npartition-default: {tmp_path / 'p'}\n", "x")
    disk = DiskStore.from_config(config)
    disk.create_mailbox("user.fred")
    disk.create_mailbox("user.fred.Archive")
    return disk

"""Fixtures of the store tests: an imapd.conf with two partitions under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sealmail.config.imapd_conf import ImapdConfig, parse_imapd_conf
from sealmail.store.disk import DiskStore


def make_config(root: Path, **extra: str) -> ImapdConfig:
    lines = [
        f"configdirectory: {root / 'config'}",
        f"partition-default: {root / 'spool'}",
        f"partition-second: {root / 'spool2'}",
    ]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return parse_imapd_conf("\n".join(lines) + "\n", str(root / "imapd.conf"))


@pytest.fixture
def config(tmp_path: Path) -> ImapdConfig:
    return make_config(tmp_path)


@pytest.fixture
def store(config: ImapdConfig) -> Iterator[DiskStore]:
    disk = DiskStore.from_config(config)
    yield disk
    disk.close()

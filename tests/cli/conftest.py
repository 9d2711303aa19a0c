"""An MTA configuration directory with an empty queue, for the queue tools' tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealmail.mta.queue import Queue


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    config = tmp_path / "etc"
    config.mkdir()
    (config / "main.cf").write_text(
        f"myhostname = mx.example.com\nqueue_directory = {tmp_path / 'spool'}\n"
        f"data_directory = {tmp_path / 'data'}\n")
    (config / "master.cf").write_text("")
    return config


@pytest.fixture
def queue(config_dir: Path) -> Queue:
    q = Queue(config_dir.parent / "spool")
    q.create_directories()
    return q

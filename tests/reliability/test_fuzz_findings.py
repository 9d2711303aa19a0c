"""What the fuzz targets found, one regression test each (docs/reliability.md lists them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealmail.config.imapd_conf import ConfigError, load_imapd_conf


def test_imapd_conf_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    # Was a UnicodeDecodeError out of load_imapd_conf (main.cf, master.cf and cyrus.conf already
    # said "not UTF-8 text"): every daemon would die with a traceback instead of the file's name.
    path = tmp_path / "imapd.conf"
    path.write_bytes(b"configdirectory: /var/lib/\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_imapd_conf(path)

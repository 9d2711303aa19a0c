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


def test_a_pattern_file_name_with_a_nul_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    # Was ValueError("embedded null byte") out of HostsAccess.load, from open(): every
    # connection's access check re-reads the files, so a daemon's sessions would all fail.
    from sealmail.config.hosts_access import HostsAccess

    allow, deny = tmp_path / "hosts.allow", tmp_path / "hosts.deny"
    allow.write_bytes(b"lmtpd : /etc/x\0y : ALLOW\nimapd : ALL\n")
    deny.write_bytes(b"")
    access = HostsAccess.load(allow, deny)
    assert any("not a file name" in str(error) for error in access.errors)
    assert not access.check("lmtpd", "127.0.0.1").allowed  # fail closed for that daemon
    assert access.check("imapd", "127.0.0.1").allowed


def test_myhostname_naming_an_unset_mydomain_is_a_config_error(tmp_path: Path) -> None:
    # Was a RecursionError: mydomain's default comes from myhostname, which named $mydomain.
    from sealmail.mta.config import load_mta_config
    from sealmail.mta.config.parameters import MAIN

    (tmp_path / "main.cf").write_text("myhostname = mail.$mydomain\n")
    (tmp_path / "master.cf").write_text("")
    main = load_mta_config(tmp_path).main
    with pytest.raises(ConfigError, match="a loop"):
        main.get(MAIN.myhostname)
    (tmp_path / "main.cf").write_text("myhostname = mail.$mydomain\nmydomain = example.com\n")
    assert load_mta_config(tmp_path).main.get(MAIN.myhostname) == "mail.example.com"

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.config.imapd_conf import (
    ConfigError,
    load_imapd_conf,
    parse_imapd_conf,
    render_imapd_conf,
)
from sealmail.config.options import IMAPD, OPTIONS
from sealmail.config.schema import Kind


def test_cyrus_format_with_comments_and_switch_spellings() -> None:
    config = parse_imapd_conf(
        "# the seed's settings\n"
        "configdirectory: /var/imap\n"
        "partition-default: /var/spool/imap\n"
        "partition-fast:/srv/fast\n"
        "\n"
        "lmtp_admins: lmtpuser\n"
        "admins: cyrus root\n"
        "lmtp_downcase_rcpt: off\n"
        "singleinstancestore: 0\n"
        "unixhierarchysep: TRUE\n"
        "postuser: bb\n"
        "maxmessagesize: 10M\n"
        "virtdomains: userid\n"
        "unix_socket_mode: 0666\n",
        "imapd.conf",
    )
    assert config.get(IMAPD.configdirectory) == "/var/imap"
    assert config.partitions == {"default": Path("/var/spool/imap"), "fast": Path("/srv/fast")}
    assert config.lmtp_admins == ("lmtpuser",)
    assert config.get(IMAPD.admins) == ("cyrus", "root")
    assert config.get(IMAPD.lmtp_downcase_rcpt) is False
    assert config.get(IMAPD.singleinstancestore) is False
    assert config.hierarchy_separator == "/"
    assert config.get(IMAPD.postuser) == "bb"
    assert config.get(IMAPD.maxmessagesize) == 10 * 1024 * 1024
    assert config.get(IMAPD.virtdomains) == "userid"
    assert config.get(IMAPD.unix_socket_mode) == 0o666


def test_defaults_come_from_the_registry() -> None:
    config = parse_imapd_conf("configdirectory: /tmp/x\n")
    assert config.get(IMAPD.lmtp_downcase_rcpt) is True
    assert config.get(IMAPD.singleinstancestore) is True
    assert config.get(IMAPD.duplicatesuppression) is True
    assert config.get(IMAPD.lmtpsocket) == "/tmp/x/socket/lmtp"
    assert config.lmtp_admins == ()
    assert config.hierarchy_separator == "."


def test_lmtp_admins_falls_back_to_admins() -> None:
    assert parse_imapd_conf("admins: cyrus\n").lmtp_admins == ("cyrus",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "lmtp_downcase_rcpt: maybe\n",
            "imapd.conf:1: lmtp_downcase_rcpt: 'maybe' is not a switch",
        ),
        ("\nmaxmessagesize: lots\n", "imapd.conf:2: maxmessagesize: 'lots' is not a size"),
        ("virtdomains: sometimes\n", "imapd.conf:1: virtdomains: 'sometimes' is not one of"),
        ("lmtptimeout: 5m\n", "imapd.conf:1: lmtptimeout: '5m' is not a whole number"),
        ("unix_socket_mode: 0999\n", "imapd.conf:1: unix_socket_mode: '0999' is not an octal"),
        ("no colon here\n", "imapd.conf:1: expected 'key: value'"),
        (
            "admins: a\nimplicit_owner_rights: lkxz\n",
            "imapd.conf:2: implicit_owner_rights: 'z': not RFC 4314 rights",
        ),
    ],
)
def test_wrong_values_name_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_imapd_conf(text, "imapd.conf")
    assert str(info.value).startswith(message)


def test_unknown_keys_warn_once_and_do_not_crash(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        config = parse_imapd_conf("frobnicate: 1\nfrobnicate: 2\nadmins: a\n", "imapd.conf")
    warnings = [r for r in caplog.records if "frobnicate" in r.getMessage()]
    assert len(warnings) == 1
    assert "imapd.conf:1" in warnings[0].getMessage()
    assert config.get(IMAPD.admins) == ("a",)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_imapd_conf(tmp_path / "nope.conf")


def test_every_option_has_a_doc_and_a_well_typed_default() -> None:
    for option in OPTIONS.values():
        assert option.doc.strip()
        if option.default is None:
            continue
        expected = {
            Kind.STRING: str,
            Kind.INTEGER: int,
            Kind.BOOLEAN: bool,
            Kind.ENUM: str,
            Kind.WORDS: tuple,
            Kind.SIZE: int,
            Kind.OCTAL: int,
        }[option.kind]
        assert isinstance(option.default, expected), option.name


def test_render_round_trip() -> None:
    values = {
        "configdirectory": "/a",
        "partition-default": "/b",
        "singleinstancestore": False,
        "admins": ("x", "y"),
        "unix_socket_mode": 0o640,
    }
    config = parse_imapd_conf(render_imapd_conf(values))
    assert config.values == values


@given(st.text())
def test_parser_never_crashes_with_anything_but_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_imapd_conf(text)

"""master.cf parsing, normalized rendering and per-service parameters."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config.main_cf import MainCfEntry, MainConfig, parse_main_cf
from sealmail.mta.config.master_cf import MasterCfError, parse_master_cf
from sealmail.mta.config.parameters import MAIN

SEED = """\
# for LMTP delivery over UNIX-domain socket
cyrus     unix  -       n       n       -       -       lmtp
  -o lmtp_cache_connection=yes
# for LMTP delivery over TCP socket
cyrus-inet  unix  -       -       n       -       -       lmtp
  -o lmtp_cache_connection=yes
  -o lmtp_sasl_auth_enable=yes
  -o lmtp_sasl_password_maps=hash:/etc/postfix/cyrus_lmtp_sasl_pass
  -o lmtp_sasl_security_options=noanonymous
cyrus-old unix  -       n       n       -       -       pipe
  flags=R user=cyrus argv=/usr/cyrus/bin/deliver -e -m ${extension} ${user}
cyrus-deliver unix  -       n       n       -       -       pipe
  user=cyrus argv=/usr/cyrus/bin/deliver -e -r ${sender} -m ${extension} ${user}
pickup    unix  n       -       y       60?     1       pickup
spc unix - n n - - lmtp -o { smtpd_banner = hello world } -o{lmtp_bind_address=1.2.3.4} -v
"""


def test_seed_entries_parse() -> None:
    master = parse_master_cf(SEED, "master.cf")
    inet = master.get("cyrus-inet")
    assert inet is not None
    assert inet.line == 5 and inet.command == "lmtp" and not inet.chroot
    assert [(o.name, o.value) for o in inet.overrides][-1] == (
        "lmtp_sasl_security_options", "noanonymous")
    deliver = master.get("cyrus-deliver")
    assert deliver is not None and deliver.overrides == ()
    assert deliver.args == ("user=cyrus", "argv=/usr/cyrus/bin/deliver", "-e", "-r", "${sender}",
                            "-m", "${extension}", "${user}")
    pickup = master.get("pickup")
    assert pickup is not None
    assert (pickup.private, pickup.wakeup, pickup.wakeup_only_when_used) == (False, 60, True)
    assert master.transports == {"cyrus", "cyrus-inet", "cyrus-old", "cyrus-deliver", "spc"}


def test_braced_overrides_and_render() -> None:
    spc = parse_master_cf(SEED).get("spc")
    assert spc is not None
    assert [(o.name, o.value) for o in spc.overrides] == [
        ("smtpd_banner", "hello world"), ("lmtp_bind_address", "1.2.3.4")]
    assert spc.options == ("-v",)
    # Column layout and -o normalization as Postfix 3.7's `postconf -M` prints them.
    assert spc.render() == (
        "spc        unix  -       n       n       -       -       lmtp -v "
        "-o {smtpd_banner=hello world} -o lmtp_bind_address=1.2.3.4")
    deliver = parse_master_cf(SEED).get("cyrus-deliver")
    assert deliver is not None
    assert deliver.render().startswith("cyrus-deliver unix -     n       n       -")


def test_overrides_apply_to_their_service_only() -> None:
    master = parse_master_cf(SEED)
    main = MainConfig.from_document(parse_main_cf("lmtp_sasl_security_options = noplaintext\n"),
                                    transports=master.transports)
    inet = master.get("cyrus-inet")
    assert inet is not None
    effective = inet.effective(main)
    assert effective.words("lmtp_sasl_security_options") == ("noanonymous",)
    assert effective.boolean("lmtp_sasl_auth_enable") is True
    assert effective.maps("lmtp_sasl_password_maps") == ("hash:/etc/postfix/cyrus_lmtp_sasl_pass",)
    assert effective.value("service_name") == "cyrus-inet"
    assert main.words("lmtp_sasl_security_options") == ("noplaintext",)
    assert main.boolean("lmtp_sasl_auth_enable") is False
    cyrus = master.get("cyrus")
    assert cyrus is not None
    assert cyrus.effective(main).boolean("lmtp_connection_cache_on_demand") is True
    assert cyrus.process_limit(main) == 100


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("smtp inet n - n - -\n", "master.cf:1: expected 8 fields"),
        ("# c\nsmtp tcp n - n - - smtpd\n", "master.cf:2: smtp: bad service type 'tcp'"),
        ("smtp inet x - n - - smtpd\n", "bad private field 'x'"),
        ("smtp inet n - n soon - smtpd\n", "bad wakeup field"),
        ("smtp inet n - n - many smtpd\n", "bad maxproc field"),
        ("smtp inet n - n - - smtpd -o\n", "-o at the end"),
        ("smtp inet n - n - - smtpd -o novalue\n", "-o needs name=value"),
        ("smtp inet n - n - - smtpd -o {a = b\n", "missing '}'"),
        ("a unix - - - - - x\n\n  \na unix - - - - - y\n", "master.cf:4: a: duplicate service"),
    ],
)
def test_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(MasterCfError, match=message):
        parse_master_cf(text, "master.cf")


@given(st.text(max_size=300))
def test_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_master_cf(text)


@given(st.text(st.sampled_from("ab -{}=o\n\t#yn0123?"), max_size=120))
def test_parser_never_crashes_on_master_like_text(text: str) -> None:
    try:
        master = parse_master_cf(text)
    except ConfigError:
        return
    for service in master:
        assert parse_master_cf(service.render()).services[0].overrides == service.overrides


def test_an_old_name_in_an_override_is_noted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The queue manager applies a transport's -o overrides for every delivery: the note that
    lmtp_cache_connection is Postfix's old name appears once, not once per message."""
    main = MainConfig({}, str(tmp_path / "main.cf"))
    override = MainCfEntry("lmtp_cache_connection", "yes", str(tmp_path / "master.cf"), 1234)
    with caplog.at_level(logging.INFO, logger="sealmail"):
        for _ in range(3):
            assert main.with_overrides([override]).get(MAIN.lmtp_connection_cache_on_demand)
    assert caplog.text.count("lmtp_cache_connection is the name Postfix used before") == 1

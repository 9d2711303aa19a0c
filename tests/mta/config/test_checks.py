"""Statuses at work: accepted parameters are warned about, refused values stop the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config import load_mta_config
from sealmail.mta.config.checks import audit, enforce
from sealmail.mta.config.parameters import MAIN

DEBIAN_MAIN_CF = """\
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no
append_dot_mydomain = no
readme_directory = no
compatibility_level = 3.6
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
myhostname = vm
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
mydestination = $myhostname, vm, localhost.localdomain, , localhost
relayhost =
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
mailbox_command = procmail -a "$EXTENSION"
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = all
inet_protocols = all
"""


def _instance(tmp_path: Path, main_cf: str, master_cf: str = "") -> Path:
    (tmp_path / "main.cf").write_text(main_cf)
    (tmp_path / "master.cf").write_text(master_cf)
    return tmp_path


def test_debian_main_cf_starts_with_warnings_only(tmp_path: Path) -> None:
    found = audit(load_mta_config(_instance(tmp_path, DEBIAN_MAIN_CF)))
    assert found.refusals == []
    main_cf = tmp_path / "main.cf"
    assert f"{main_cf}:2: biff: accepted, but has no effect in sealmail " \
           "(see docs/main-cf-parameters.md)" in found.warnings
    assert f"{main_cf}: unused parameter: readme_directory=no" in found.warnings
    assert len(found.warnings) == 5


@pytest.mark.parametrize(("line", "named"), [
    ("smtpd_client_restrictions = check_ccert_access hash:/etc/x", "check_ccert_access"),
    ("smtpd_milter_maps = cidr:/etc/postfix/milters", "smtpd_milter_maps"),
    ("milter_header_checks = pcre:/etc/postfix/milter_header_checks", "milter_header_checks"),
    ("smtpd_end_of_data_restrictions = reject_unverified_sender", "reject_unverified_sender"),
    ("smtpd_recipient_restrictions = permit_mynetworks, permit_mx_backup, "
     "reject_unauth_destination", "permit_mx_backup"),
    ("smtpd_relay_restrictions = check_policy_service { unix:private/p, timeout=10s }, reject",
     "per-restriction options"),
    ("smtp_tls_security_level = dane", "dane is not implemented"),
    ("smtp_tls_security_level = dane-only", "dane-only is not implemented"),
    ("smtp_host_lookup = dns, nis", "the lookups are dns and native"),
    ("smtpd_tls_security_level = verify", "smtpd offers none, may or encrypt"),
    ("smtpd_forbidden_commands = CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}",
     "not tables or patterns"),
])
def test_refused_values_name_file_line_and_parameter(tmp_path: Path, line: str,
                                                     named: str) -> None:
    config = load_mta_config(_instance(tmp_path, f"# a comment\nbiff = no\n{line}\n"))
    with pytest.raises(ConfigError) as raised:
        enforce(config)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'main.cf'}:3: {line.split(' =')[0]}: ")
    assert named in message


def test_refused_in_a_master_cf_override(tmp_path: Path) -> None:
    master_cf = "smtp inet n - n - - smtpd\n  -o smtpd_proxy_filter=127.0.0.1:10025\n"
    found = audit(load_mta_config(_instance(tmp_path, "", master_cf)))
    assert [r.key for r in found.refusals] == ["smtpd_proxy_filter"]
    assert found.refusals[0].path == str(tmp_path / "master.cf")


def test_supported_values_are_not_refused(tmp_path: Path) -> None:
    main_cf = ("smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n"
               "smtp_tls_security_level = verify\nsmtpd_milters = inet:127.0.0.1:8891\n"
               "smtp_tls_policy_maps = hash:/etc/postfix/tls_policy\n"
               "smtp_host_lookup = dns, native\nsmtp_address_preference = ipv6\n"
               "authorized_submit_users = static:anyone\n"
               "smtpd_forbidden_commands = CONNECT, GET, POST, PUT\n")
    assert audit(load_mta_config(_instance(tmp_path, main_cf))).refusals == []


def test_typed_get(tmp_path: Path) -> None:
    config = load_mta_config(_instance(tmp_path, "maximal_queue_lifetime = 2\nbiff = no\n"))
    main = config.main
    assert main.get(MAIN.maximal_queue_lifetime) == 2 * 86400  # the parameter's own unit: days
    assert main.get(MAIN.biff) is False
    assert main.get(MAIN.mynetworks) == ("127.0.0.0/8", "[::1]/128")


def test_master_cf_chroot_is_warned_about_never_silently_accepted(tmp_path: Path) -> None:
    """Debian's master.cf chroots smtpd (`y`); sealmail does not chroot, and says so."""
    master_cf = ("smtp      inet  n       -       y       -       -       smtpd\n"
                 "cyrus     unix  -       n       n       -       -       lmtp\n"
                 "pickup    unix  n       -       -       60      1       pickup\n")
    found = audit(load_mta_config(_instance(tmp_path, "", master_cf)))
    assert found.refusals == []
    assert found.warnings == [
        f"{tmp_path / 'master.cf'}:1: service smtp/inet: chroot=y is not honoured: sealmail does "
        "not chroot its services (they run as mail_owner); write - or n in that column to "
        "silence this"]

"""Service names to ports: the services file first, IANA's mail ports when it lacks the name."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sealmail.config.services import WELL_KNOWN_MAIL_PORTS, UnknownService, service_port

# Debian 12's netbase file has these mail lines and no lmtp.
DEBIAN = "smtp\t\t25/tcp\t\tmail\nsubmissions\t465/tcp\t\tssmtp smtps\npop3\t\t110/tcp\n"


@pytest.fixture
def debian(tmp_path: Path) -> Path:
    path = tmp_path / "services"
    path.write_text(DEBIAN)
    return path


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sealmail.config.services"]


def test_a_name_the_file_lacks_gets_iana_port_logged_once(
    debian: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sealmail.config.services")
    assert service_port("lmtp", debian) == 24
    assert service_port("lmtp", debian) == 24
    [line] = fallbacks(caplog)
    assert "'lmtp'" in line and "24" in line and str(debian) in line


def test_the_file_wins_over_the_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    readme = tmp_path / "services"
    readme.write_text("lmtp\t\t2003/tcp\t\t# as in CYRUS_README\n")
    caplog.set_level(logging.INFO, "sealmail.config.services")
    assert service_port("lmtp", readme) == 2003
    assert fallbacks(caplog) == []


@pytest.mark.parametrize(
    ("name", "port"),
    [("smtp", 25), ("mail", 25), ("smtps", 465), ("ssmtp", 465), ("pop3", 110)],
)
def test_names_and_aliases_in_the_file(debian: Path, name: str, port: int) -> None:
    assert service_port(name, debian) == port


@pytest.mark.parametrize(
    ("name", "port"),
    [("lmtp", 24), ("submission", 587), ("imap", 143), ("imaps", 993), ("pop3s", 995),
     ("sieve", 4190)],
)
def test_every_mail_name_has_its_iana_port(tmp_path: Path, name: str, port: int) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    assert WELL_KNOWN_MAIL_PORTS[name] == port
    assert service_port(name, empty) == port


def test_a_name_in_neither_is_an_error_naming_it(debian: Path) -> None:
    with pytest.raises(UnknownService, match=rf"unknown service 'gopher': not in {debian} for tcp"):
        service_port("gopher", debian)


def test_udp_only_line_does_not_count(tmp_path: Path) -> None:
    udp = tmp_path / "services"
    udp.write_text("biff\t\t512/udp\nlmtp\t\t2003/udp\n")
    with pytest.raises(UnknownService, match="'biff'"):
        service_port("biff", udp)
    assert service_port("lmtp", udp) == 24


def test_an_unreadable_file_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    absent = tmp_path / "absent"
    with pytest.raises(UnknownService, match=r"cannot read .*absent to look up 'gopher'"):
        service_port("gopher", absent)
    caplog.set_level(logging.INFO, "sealmail.config.services")
    assert service_port("lmtp", absent) == 24
    [line] = fallbacks(caplog)
    assert f"cannot read {absent}" in line and "24" in line

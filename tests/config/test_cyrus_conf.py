"""cyrus.conf parsing, commands and listen= resolution."""

from __future__ import annotations

import contextlib
import socket
import string
from datetime import time
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealmail.config.cyrus_conf import (
    CyrusConf,
    Entry,
    Event,
    InetAddress,
    Service,
    ServiceCommand,
    UnixAddress,
    load_cyrus_conf,
    parse_cyrus_conf,
    parse_services_file,
    render_cyrus_conf,
    resolve_listen,
    service_addresses,
)
from sealmail.config.imapd_conf import ConfigError, parse_imapd_conf

CONFIGDIR = Path("/var/lib/sealmail")
INET, INET6, UNSPEC = socket.AF_INET, socket.AF_INET6, socket.AF_UNSPEC


@pytest.fixture
def services(tmp_path: Path) -> Path:
    """A services file as CYRUS_README shows it: lmtp on 2003 (Debian's says 24, or nothing)."""
    path = tmp_path / "services"
    path.write_text(
        "# test services\n"
        "lmtp\t\t2003/tcp\t\t\t# as in CYRUS_README\n"
        "imap2\t\t143/tcp\t\timap\t# alias\n"
        "sieve\t\t4190/tcp\n"
        "only-udp\t9999/udp\n"
        "garbage line\n"
        "toolarge\t70000/tcp\n"
    )
    return path


def services_of(text: str) -> list[Service]:
    return parse_cyrus_conf(text, "cyrus.conf").services


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_cyrus_conf(text, "cyrus.conf")
    return caught.value


# ------------------------------------------------------------------------------------------
# The seed's snippets, exactly as CYRUS_README prints them


def test_seed_lmtpunix_snippet() -> None:
    text = 'SERVICES {\n  lmtpunix cmd="lmtpd" listen="/var/imap/socket/lmtp" prefork=1\n}\n'
    (service,) = services_of(text)
    assert service.name == "lmtpunix"
    assert service.cmd == ("lmtpd",)
    assert service.command == ServiceCommand("lmtpd", (), "lmtpd")
    assert service.listen == "/var/imap/socket/lmtp"
    assert (service.prefork, service.maxchild, service.proto) == (1, -1, "tcp")
    assert (service.path, service.line) == ("cyrus.conf", 2)
    assert service.addresses(CONFIGDIR) == [UnixAddress(Path("/var/imap/socket/lmtp"))]


def test_seed_chrooted_lmtpunix_snippet() -> None:
    text = (
        "SERVICES {\n"
        'lmtpunix cmd="lmtpd" listen="/var/spool/postfix/extern/cyrus/lmtp" prefork=1\n'
        "}"
    )
    (service,) = services_of(text)
    assert service.addresses(CONFIGDIR) == [
        UnixAddress(Path("/var/spool/postfix/extern/cyrus/lmtp"))
    ]


def test_seed_lmtp_over_tcp_snippets(services: Path) -> None:
    text = (
        "SERVICES {\n"
        '  lmtp cmd="lmtpd" listen="lmtp" prefork=1\n'
        '  lmtpa cmd="lmtpd -a" listen="lmtp" prefork=1\n'
        '  lmtphost cmd="lmtpd" listen="cyrus.example.com:lmtp" prefork=1\n'
        "}\n"
    )
    plain, auth_off, on_host = services_of(text)
    assert plain.command.args == ()
    assert auth_off.command == ServiceCommand("lmtpd", ("-a",), "lmtpd")
    assert plain.addresses(CONFIGDIR, services) == [
        InetAddress(None, 2003, INET),
        InetAddress(None, 2003, INET6),
    ]
    # The name is kept; master resolves it when it binds.
    assert on_host.addresses(CONFIGDIR, services) == [
        InetAddress("cyrus.example.com", 2003, UNSPEC)
    ]


def test_seed_deliver_command_maps_by_basename() -> None:
    text = 'SERVICES {\n  lmtp cmd="/usr/cyrus/bin/deliver -e -l" listen="2003"\n}\n'
    (service,) = services_of(text)
    assert service.command == ServiceCommand("deliver", ("-e", "-l"), "/usr/cyrus/bin/deliver")
    assert service.command.argv == ("deliver", "-e", "-l")


# ------------------------------------------------------------------------------------------
# A whole file in the shape of Cyrus's default, ported to sealmail's programs

FULL = """\
# The master's configuration, laid out as Cyrus's shipped default.

START {
    # Runs to completion before any service listens.
    cleanup         cmd="cyr_expire -E 3"
}

# Services master listens for.
SERVICES {
    imap            cmd="imapd" listen="imap" prefork=5
    imaps           cmd="imapd -s" listen="imaps" prefork=1
    pop3            cmd="pop3d" listen="pop3" prefork=3
    pop3s           cmd="pop3d -s" listen="pop3s" prefork=1
    sieve           cmd="timsieved" listen="sieve" prefork=0

    # LMTP for the MTA: a UNIX socket under configdirectory, and TCP on loopback.
    lmtpunix        cmd="/usr/lib/cyrus/bin/lmtpd" listen="socket/lmtp" prefork=1 maxchild=20
    lmtp            cmd="lmtpd -a" listen="localhost:lmtp" prefork=0 maxfds=1024 \\
                    maxforkrate=10 babysit=1
}

EVENTS {
    delprune        cmd="/usr/sbin/cyrus expire -E 3" at=0400
    rebuild         cmd="reconstruct" period=1440
    sweep           cmd="sweep" period=60
}

DAEMON {
}
"""


def test_full_default_file(tmp_path: Path) -> None:
    services = tmp_path / "services"
    services.write_text(
        "imap 143/tcp\nimaps 993/tcp\npop3 110/tcp\npop3s 995/tcp\nsieve 4190/tcp\nlmtp 24/tcp\n"
    )
    conf_path = tmp_path / "cyrus.conf"
    conf_path.write_text(FULL)
    conf = load_cyrus_conf(conf_path)
    assert conf.path == str(conf_path)
    assert [e.name for e in conf.start] == ["cleanup"]
    assert conf.start[0].command == ServiceCommand("expire", ("-E", "3"), "cyr_expire")
    assert [s.name for s in conf.services] == [
        "imap", "imaps", "pop3", "pop3s", "sieve", "lmtpunix", "lmtp",
    ]  # fmt: skip
    assert [s.command.subcommand for s in conf.services] == [
        "imapd", "imapd", "pop3d", "pop3d", "sieved", "lmtpd", "lmtpd",
    ]  # fmt: skip
    lmtp = conf.service("lmtp")
    assert lmtp is not None
    assert (lmtp.line, lmtp.maxfds, lmtp.maxforkrate, lmtp.babysit) == (18, 1024, 10, True)
    assert lmtp.addresses(CONFIGDIR, services) == [InetAddress("localhost", 24, UNSPEC)]
    lmtpunix = conf.service("lmtpunix")
    assert lmtpunix is not None and lmtpunix.maxchild == 20
    assert lmtpunix.addresses(CONFIGDIR, services, unix_mode=0o660, unix_group="postfix") == [
        UnixAddress(CONFIGDIR / "socket/lmtp", 0o660, "postfix")
    ]
    imaps = conf.service("imaps")
    assert imaps is not None
    assert imaps.addresses(CONFIGDIR, services)[0] == InetAddress(None, 993, INET)
    delprune, rebuild, sweep = conf.events
    assert sweep.command == ServiceCommand("sweep", (), "sweep") and sweep.period == 60
    assert delprune.command == ServiceCommand("expire", ("-E", "3"), "/usr/sbin/cyrus expire")
    assert (delprune.at, delprune.period, delprune.line) == (time(4, 0), None, 23)
    assert (rebuild.at, rebuild.period) == (None, 1440)
    assert conf.daemons == []
    assert conf.service("nntp") is None


def test_installed_cyrus_conf_is_refused_line_by_line_then_ported() -> None:
    """An operator's Debian file: every Cyrus-only line is named; without them the rest works."""
    installed = Path("/etc/cyrus.conf")
    if not installed.exists():
        pytest.skip("Cyrus's cyrus.conf is not installed here")
    lines = installed.read_text().splitlines()
    refused: list[str] = []
    for _ in range(len(lines)):
        try:
            conf = parse_cyrus_conf("\n".join(lines), str(installed))
            break
        except ConfigError as exc:
            assert exc.path == str(installed)
            assert "Cyrus program that sealmail does not have" in str(exc), str(exc)
            refused.append(lines[exc.line - 1].split()[0])
            lines[exc.line - 1] = "#" + lines[exc.line - 1]
    else:
        pytest.fail("the file never parsed")
    assert "recover" in refused
    names = {s.name for s in conf.services}
    assert {"imap", "pop3", "lmtpunix"} <= names
    for service in conf.services:
        assert service.command.subcommand in {"imapd", "pop3d", "lmtpd", "sieved"}


# ------------------------------------------------------------------------------------------
# The tokenizer's rules


def test_comments_blank_lines_and_case_insensitive_sections() -> None:
    text = (
        "# leading comment\n"
        "\n"
        "services {   # comment after the brace\n"
        '    # an entry commented out: lmtp cmd="nothing"\n'
        '    imap cmd="imapd" listen="143" # trailing comment\n'
        "}\n"
    )
    (service,) = services_of(text)
    assert (service.name, service.line) == ("imap", 5)


def test_hash_inside_quotes_is_kept() -> None:
    (service,) = services_of('SERVICES {\n imap cmd="imapd -C /etc/a#b.conf" listen="143"\n}')
    assert service.cmd == ("imapd", "-C", "/etc/a#b.conf")


def test_bare_values_and_quoted_values() -> None:
    (service,) = services_of("SERVICES {\n imap cmd=imapd listen=143 prefork=2\n}")
    assert (service.cmd, service.listen, service.prefork) == (("imapd",), "143", 2)


def test_backslash_continues_a_line_and_the_entry_keeps_its_first_line() -> None:
    text = (
        'SERVICES {\n  imap cmd="imapd" \\\n    listen="143" \\\r\n    prefork=4\n'
        '  pop3 cmd="pop3d" listen="110"\n}\n'
    )
    imap, pop3 = services_of(text)
    assert (imap.line, imap.prefork) == (2, 4)
    assert pop3.line == 5


def test_backslash_continuation_right_after_a_value() -> None:
    (service,) = services_of('SERVICES {\n imap cmd="imapd" listen=143\\\n prefork=2\n}')
    assert (service.listen, service.prefork) == ("143", 2)


def test_backslash_continuation_right_after_a_quoted_value() -> None:
    (service,) = services_of('SERVICES {\n imap cmd="imapd" listen="143"\\\n prefork=2\n}')
    assert (service.listen, service.prefork, service.line) == ("143", 2, 2)


def test_one_line_sections_and_closing_brace_after_an_entry() -> None:
    conf = parse_cyrus_conf(
        'START { }\nSERVICES { imap cmd="imapd" listen="143" }\n'
        'EVENTS {\n  sweep cmd="expire" period=30 }\nDAEMON {}\n'
    )
    assert [s.name for s in conf.services] == ["imap"]
    assert [e.name for e in conf.events] == ["sweep"]
    assert conf.start == [] and conf.daemons == []


def test_brace_on_the_next_line() -> None:
    (service,) = services_of('SERVICES\n{\n imap cmd="imapd" listen="143"\n}')
    assert service.line == 3


def test_a_section_may_repeat_and_its_entries_add_up() -> None:
    text = 'SERVICES {\n a cmd="imapd" listen="1"\n}\nSERVICES {\n b cmd="pop3d" listen="2"\n}\n'
    assert [s.name for s in services_of(text)] == ["a", "b"]


def test_the_same_name_in_different_sections_is_fine() -> None:
    conf = parse_cyrus_conf(
        'START {\n prune cmd="expire"\n}\nEVENTS {\n prune cmd="expire" period=60\n}\n'
    )
    assert conf.start[0].name == conf.events[0].name == "prune"


def test_empty_file_is_an_empty_configuration() -> None:
    assert parse_cyrus_conf("") == CyrusConf("<string>", [], [], [], [])
    assert parse_cyrus_conf("# nothing\n\n") == CyrusConf("<string>", [], [], [], [])


def test_crlf_line_ends() -> None:
    (service,) = services_of('SERVICES {\r\n imap cmd="imapd" listen="143"\r\n}\r\n')
    assert service.listen == "143"


def test_cmd_is_split_like_a_shell() -> None:
    (service,) = services_of("SERVICES {\n i cmd=\"imapd -C '/etc/my imapd.conf'\" listen=143\n}")
    assert service.command.args == ("-C", "/etc/my imapd.conf")


def test_proto_restricts_and_is_kept() -> None:
    a, b = services_of(
        'SERVICES {\n a cmd="imapd" listen=1 proto=tcp4\n b cmd="imapd" listen=2 proto=TCP6\n}'
    )
    assert (a.proto, b.proto) == ("tcp4", "tcp6")


def test_switch_values_for_babysit_and_wait() -> None:
    (service,) = services_of('SERVICES {\n a cmd="imapd" listen=1 babysit=yes\n}')
    assert service.babysit is True
    (service,) = services_of('SERVICES {\n a cmd="imapd" listen=1 babysit=0\n}')
    assert service.babysit is False


def test_event_at_accepts_three_digits_as_cyrus_does() -> None:
    (event,) = parse_cyrus_conf('EVENTS {\n e cmd="expire" at=930\n}').events
    assert event.at == time(9, 30)
    (event,) = parse_cyrus_conf('EVENTS {\n e cmd="expire" at=2359\n}').events
    assert event.at == time(23, 59)


# ------------------------------------------------------------------------------------------
# Every error, with its own message, file and line


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ('FOO {\n a cmd="imapd"\n}', 1, None, "unknown section 'FOO'"),
        ("SERVICES\n imap", 2, None, "expected '{' after SERVICES"),
        ("SERVICES", 1, None, "expected '{' after SERVICES"),
        ('SERVICES {\n a cmd="imapd" listen=1\n', 1, None, "is not closed"),
        ('imap cmd="imapd"\n', 1, None, "unknown section 'imap'"),
        ("}\n", 1, None, "'}' outside a section"),
        ('cmd="imapd"\n', 1, None, "cmd= outside a section"),
        ('SERVICES {\n a cmd="imapd" {\n}', 2, None, "'{' inside the SERVICES section"),
        ('SERVICES {\n lmtp-unix cmd="lmtpd" listen=1\n}', 2, None, "bad character '-'"),
        ('SERVICES {\n cmd="lmtpd" listen=1\n}', 2, "cmd", "must start with its name"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 oops\n}', 2, None, "expected key=value"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 my-key=2\n}', 2, "my-key", "bad key"),
        ('SERVICES {\n a cmd="lmtpd\n}', 2, "cmd", 'missing closing "'),
        ('SERVICES {\n a cmd="lmtpd"listen=1\n}', 2, "cmd", "must be followed by a space"),
        ('SERVICES {\n a cmd=lm"td" listen=1\n}', 2, "cmd", "a quote inside an unquoted"),
        ('SERVICES {\n a "lmtpd"\n}', 2, None, "a quoted value must follow"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 listen=2\n}', 2, "listen", "given twice"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 prefrok=1\n}', 2, "prefrok", "unknown key"),
        ("SERVICES {\n a listen=1\n}", 2, "cmd", "needs cmd="),
        ('SERVICES {\n a cmd="" listen=1\n}', 2, "cmd", "the command is empty"),
        ('SERVICES {\n a cmd="lmtpd \'x" listen=1\n}', 2, "cmd", "cannot split"),
        ('SERVICES {\n a cmd="lmtpd"\n}', 2, "listen", "needs listen="),
        ('SERVICES {\n a cmd="lmtpd" listen=""\n}', 2, "listen", "listen= is empty"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 proto=sctp\n}', 2, "proto", "not one of"),
        ('SERVICES {\n a cmd="notifyd" listen=1 proto=udp\n}', 2, "cmd", "Cyrus program"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 proto=udp\n}', 2, "proto", "no UDP services"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 prefork=x\n}', 2, "prefork", "not a whole"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 prefork=-1\n}', 2, "prefork", "least allowed"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 maxchild=-2\n}', 2, "maxchild", "least allowed"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 maxchild=0\n}', 2, "maxchild", "never run"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 maxfds=0\n}', 2, "maxfds", "least allowed"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 maxforkrate=1.5\n}', 2, "maxforkrate", "whole"),
        ('SERVICES {\n a cmd="lmtpd" listen=1 babysit=maybe\n}', 2, "babysit", "not a switch"),
        ('SERVICES {\n a cmd="sendmail" listen=1\n}', 2, "cmd", "unknown command 'sendmail'"),
        ('SERVICES {\n a cmd="expire" listen=1\n}', 2, "cmd", "cannot run from the SERVICES"),
        ('SERVICES {\n a cmd="deliver -e" listen=1\n}', 2, "cmd", "add -l"),
        (
            'SERVICES {\n a cmd="imapd" listen=1\n a cmd="pop3d" listen=2\n}',
            3,
            None,
            "name already used in SERVICES on line 2",
        ),
        (
            'SERVICES { a cmd="imapd" listen=1 } SERVICES { a cmd="imapd" listen=2 }',
            1,
            None,
            "name already used",
        ),
        ('START {\n s cmd="imapd"\n}', 2, "cmd", "cannot run from the START"),
        ('START {\n s cmd="ctl_cyrusdb -r"\n}', 2, "cmd", "'ctl_cyrusdb' is a Cyrus program"),
        ('START {\n s cmd="expire" listen=1\n}', 2, "listen", "unknown key listen in START"),
        ('EVENTS {\n e cmd="expire"\n}', 2, None, "needs period=MINUTES or at=HHMM"),
        ('EVENTS {\n e cmd="expire" period=5 at=0400\n}', 2, "at", "not both"),
        ('EVENTS {\n e cmd="expire" period=0\n}', 2, "period", "least allowed"),
        ('EVENTS {\n e cmd="expire" at=4am\n}', 2, "at", "HHMM form"),
        ('EVENTS {\n e cmd="expire" at=40000\n}', 2, "at", "HHMM form"),
        ('EVENTS {\n e cmd="expire" at=2400\n}', 2, "at", "hours 00-23"),
        ('EVENTS {\n e cmd="expire" at=0960\n}', 2, "at", "minutes 00-59"),
        ('EVENTS {\n e cmd="expire" cron="0 4 * * *"\n}', 2, "cron", "cron= is not supported"),
        ('DAEMON {\n d cmd="idled"\n}', 2, "cmd", "'idled' is a Cyrus program"),
        ('DAEMON {\n d cmd="expire" wait=1\n}', 2, "cmd", "cannot run from the DAEMON"),
        ('DAEMON {\n d cmd="frob"\n}', 2, "cmd", "can run: none yet"),
    ],
)
def test_errors(text: str, line: int, key: str | None, message: str) -> None:
    error = error_of(text)
    assert (error.path, error.line, error.key) == ("cyrus.conf", line, key)
    assert message in str(error)
    assert str(error).startswith(f"cyrus.conf:{line}: ")


def test_entry_errors_name_the_entry() -> None:
    error = error_of('SERVICES {\n  lmtpunix cmd="lmtpd" listen=1 prefork=lots\n}')
    assert str(error) == ("cyrus.conf:2: prefork: 'lots' is not a whole number (entry 'lmtpunix')")


def test_unknown_keys_are_all_named() -> None:
    error = error_of('SERVICES {\n a cmd="lmtpd" listen=1 zed=1 alpha=2\n}')
    assert "unknown keys alpha, zed" in str(error)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_cyrus_conf(tmp_path / "missing.conf")
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"SERVICES {\n\xff\xfe\n}\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_cyrus_conf(binary)


# ------------------------------------------------------------------------------------------
# listen= in every form


@pytest.mark.parametrize(
    ("listen", "proto", "expected"),
    [
        ("/run/sealmail/lmtp", "tcp", [UnixAddress(Path("/run/sealmail/lmtp"))]),
        ("socket/lmtp", "tcp", [UnixAddress(CONFIGDIR / "socket/lmtp")]),
        ("./lmtp", "tcp6", [UnixAddress(CONFIGDIR / "lmtp")]),
        ("lmtp", "tcp", [InetAddress(None, 2003, INET), InetAddress(None, 2003, INET6)]),
        ("imap", "tcp4", [InetAddress(None, 143, INET)]),  # an alias in the services file
        ("2003", "tcp6", [InetAddress(None, 2003, INET6)]),
        ("0", "tcp4", [InetAddress(None, 0, INET)]),
        ("*:24", "tcp", [InetAddress(None, 24, INET), InetAddress(None, 24, INET6)]),
        ("localhost:lmtp", "tcp", [InetAddress("localhost", 2003, UNSPEC)]),
        ("localhost:2003", "tcp4", [InetAddress("localhost", 2003, INET)]),
        ("cyrus.example.com:lmtp", "tcp6", [InetAddress("cyrus.example.com", 2003, INET6)]),
        ("127.0.0.1:2003", "tcp", [InetAddress("127.0.0.1", 2003, INET)]),
        ("127.0.0.1:sieve", "tcp4", [InetAddress("127.0.0.1", 4190, INET)]),
        ("[::1]:2003", "tcp", [InetAddress("::1", 2003, INET6)]),
        ("[::1]:lmtp", "tcp6", [InetAddress("::1", 2003, INET6)]),
        ("[127.0.0.1]:65535", "tcp", [InetAddress("127.0.0.1", 65535, INET)]),
    ],
)
def test_resolve_listen(listen: str, proto: str, expected: list[object], services: Path) -> None:
    assert resolve_listen(listen, proto, CONFIGDIR, services) == expected


def test_unix_sockets_carry_mode_and_group(services: Path) -> None:
    (address,) = resolve_listen(
        "socket/lmtp", "tcp", CONFIGDIR, services, unix_mode=0o770, unix_group="postfix"
    )
    assert address == UnixAddress(CONFIGDIR / "socket/lmtp", 0o770, "postfix")


def test_the_services_file_decides_the_port(tmp_path: Path) -> None:
    debian = tmp_path / "debian"
    debian.write_text("lmtp\t\t24/tcp\n")
    assert resolve_listen("lmtp", "tcp4", CONFIGDIR, debian) == [InetAddress(None, 24, INET)]


def test_a_bare_port_needs_no_services_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    assert resolve_listen("24", "tcp4", CONFIGDIR, missing) == [InetAddress(None, 24, INET)]


@pytest.mark.parametrize(
    ("listen", "proto", "key", "message"),
    [
        ("", "tcp", "listen", "listen= is empty"),
        ("lmtp", "udp", "proto", "not one of"),
        ("nosuch", "tcp", "listen", "unknown service 'nosuch'"),
        ("only-udp", "tcp", "listen", "unknown service 'only-udp'"),
        ("toolarge", "tcp", "listen", "unknown service 'toolarge'"),
        ("70000", "tcp", "listen", "port 70000 is out of range"),
        ("host:99999", "tcp", "listen", "out of range"),
        ("-5", "tcp", "listen", "neither a port number nor a service name"),
        ("host:", "tcp", "listen", "no port or service name"),
        (":2003", "tcp", "listen", "no host before ':'"),
        ("::1:2003", "tcp", "listen", "IPv6 address in brackets"),
        ("[::1", "tcp", "listen", "missing ']'"),
        ("[::1]2003", "tcp", "listen", "expected [address]:port"),
        ("[::1]", "tcp", "listen", "expected [address]:port"),
        ("[cyrus.example.com]:24", "tcp", "listen", "not an IP address"),
        ("bad host!:24", "tcp", "listen", "is not a host name"),
        ("-host:24", "tcp", "listen", "is not a host name"),
        ("[::1]:24", "tcp4", "proto", "excludes ::1, an IPv6 address"),
        ("127.0.0.1:24", "tcp6", "proto", "excludes 127.0.0.1, an IPv4 address"),
        ("/" + "x" * 200, "tcp", "listen", "longer than 107 bytes"),
        ("a\0b/c", "tcp", "listen", "NUL"),
    ],
)
def test_resolve_listen_errors(
    listen: str, proto: str, key: str, message: str, services: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_listen(listen, proto, CONFIGDIR, services, path="cyrus.conf", line=7)
    assert (caught.value.path, caught.value.line, caught.value.key) == ("cyrus.conf", 7, key)
    assert message in str(caught.value)


def test_unreadable_services_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*absent to look up 'gopher'"):
        resolve_listen("gopher", "tcp", CONFIGDIR, tmp_path / "absent")


def test_seed_lmtp_name_without_a_services_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Debian's services file has no lmtp: the seed's listen= still means IANA's port 24."""
    debian = tmp_path / "services"
    debian.write_text("smtp\t\t25/tcp\t\tmail\n")
    (service,) = services_of('SERVICES {\n  lmtp cmd="lmtpd -a" listen="127.0.0.1:lmtp"\n}')
    caplog.set_level("INFO", "sealmail.config.services")
    assert service.addresses(CONFIGDIR, debian) == [InetAddress("127.0.0.1", 24, INET)]
    [line] = [r.getMessage() for r in caplog.records if r.name == "sealmail.config.services"]
    assert "'lmtp'" in line and "port 24" in line and str(debian) in line
    (unknown,) = services_of('SERVICES {\n  lmtp cmd="lmtpd" listen="127.0.0.1:lmtpx"\n}')
    with pytest.raises(ConfigError, match=rf"unknown service 'lmtpx': not in {debian}"):
        unknown.addresses(CONFIGDIR, debian)


def test_service_addresses_report_the_entry_line(services: Path) -> None:
    (service,) = services_of('SERVICES {\n\n  lmtp cmd="lmtpd" listen="nosuch"\n}')
    with pytest.raises(ConfigError) as caught:
        service.addresses(CONFIGDIR, services)
    assert (caught.value.path, caught.value.line, caught.value.key) == ("cyrus.conf", 3, "listen")


def test_inet_address_resolves_loopback_names_at_bind_time() -> None:
    assert InetAddress("127.0.0.1", 2003, INET).sockaddrs() == [(INET, ("127.0.0.1", 2003))]
    wildcard = InetAddress(None, 2003, INET).sockaddrs()
    assert wildcard == [(INET, ("0.0.0.0", 2003))]
    pairs = InetAddress("localhost", 2003, UNSPEC).sockaddrs()
    assert pairs and all(family in (INET, INET6) for family, _ in pairs)
    assert all(sockaddr[1] == 2003 for _, sockaddr in pairs)


def test_parse_services_file() -> None:
    ports = parse_services_file(
        "lmtp 24/tcp\nlmtp 2003/tcp\nimap2 143/tcp imap # c\n#x 1/tcp\nbad\nn notaport/tcp\n"
        "nproto 5\nbig 99999/tcp\nudp 53/UDP\n"
    )
    assert ports == {
        ("lmtp", "tcp"): 24,  # the first line wins, as getservbyname
        ("imap2", "tcp"): 143,
        ("imap", "tcp"): 143,
        ("udp", "udp"): 53,
    }


def test_service_addresses_follow_imapd_conf(tmp_path: Path, services: Path) -> None:
    config = parse_imapd_conf(
        f"configdirectory: {tmp_path}\nunix_socket_mode: 0770\nunix_socket_group: postfix\n"
    )
    unix, tcp = services_of(
        'SERVICES {\n u cmd="lmtpd" listen="socket/lmtp"\n t cmd="lmtpd" listen="[::1]:lmtp"\n}'
    )
    assert service_addresses(unix, config, services) == [
        UnixAddress(tmp_path / "socket/lmtp", 0o770, "postfix")
    ]
    assert service_addresses(tcp, config, services) == [InetAddress("::1", 2003, INET6)]
    defaults = parse_imapd_conf(f"configdirectory: {tmp_path}\n")
    assert service_addresses(unix, defaults, services) == [
        UnixAddress(tmp_path / "socket/lmtp", 0o660, None)
    ]


# ------------------------------------------------------------------------------------------
# Rendering and properties


def test_render_writes_only_what_differs_from_defaults() -> None:
    conf = parse_cyrus_conf(FULL)
    text = render_cyrus_conf(conf)
    assert 'imap cmd="imapd" listen="imap" prefork=5\n' in text
    assert "maxfds=1024 maxforkrate=10 babysit=1" in text
    assert 'delprune cmd="/usr/sbin/cyrus expire -E 3" at=0400' in text
    assert parse_cyrus_conf(text) == conf
    assert render_cyrus_conf(parse_cyrus_conf("")) == ""


def test_render_refuses_what_the_format_cannot_hold() -> None:
    (service,) = services_of('SERVICES {\n a cmd="imapd" listen=1\n}')
    bad = CyrusConf("x", [], [Service("a", ("imapd", 'say "hi"'), service.command, "1")], [], [])
    with pytest.raises(ValueError, match="double quote"):
        render_cyrus_conf(bad)


_names = st.text(string.ascii_letters + string.digits, min_size=1, max_size=8)
_args = st.lists(
    st.text(st.characters(blacklist_characters='"\r\n\x00', codec="utf-8"), max_size=6),
    max_size=3,
).map(tuple)
_listens = st.one_of(
    st.integers(0, 65535).map(str),
    st.sampled_from(["lmtp", "localhost:lmtp", "[::1]:24", "/run/x/lmtp", "socket/lmtp"]),
)


_E = TypeVar("_E", Entry, Service, Event)


@st.composite
def _confs(draw: st.DrawFn) -> CyrusConf:
    def unique(strategy: st.SearchStrategy[_E]) -> list[_E]:
        return draw(st.lists(strategy, max_size=4, unique_by=lambda e: e.name))

    def command(program: str, subcommand: str) -> tuple[tuple[str, ...], ServiceCommand]:
        args = draw(_args)
        if subcommand == "deliver":
            args = ("-l", *args)
        return (program, *args), ServiceCommand(subcommand, args, program)

    def service(name: str) -> Service:
        program, subcommand = draw(
            st.sampled_from(
                [
                    ("lmtpd", "lmtpd"),
                    ("/usr/lib/cyrus/bin/imapd", "imapd"),
                    ("pop3d", "pop3d"),
                    ("timsieved", "sieved"),
                    ("deliver", "deliver"),
                ]
            )
        )
        cmd, parsed = command(program, subcommand)
        return Service(
            name, cmd, parsed, draw(_listens), draw(st.sampled_from(["tcp", "tcp4", "tcp6"])),
            draw(st.integers(0, 50)), draw(st.sampled_from([-1, 1, 100])),
            draw(st.integers(1, 4096)), draw(st.integers(0, 20)), draw(st.booleans()),
        )  # fmt: skip

    def event(name: str) -> Event:
        cmd, parsed = command("cyr_expire", "expire")
        if draw(st.booleans()):
            return Event(name, cmd, parsed, period=draw(st.integers(1, 10_000)))
        return Event(name, cmd, parsed, at=time(draw(st.integers(0, 23)), draw(st.integers(0, 59))))

    def start(name: str) -> Entry:
        cmd, parsed = command("reconstruct", "reconstruct")
        return Entry(name, cmd, parsed)

    return CyrusConf(
        "<string>",
        unique(_names.map(start)),
        unique(_names.map(service)),
        unique(_names.map(event)),
        [],
    )


@settings(max_examples=200)
@given(_confs())
def test_render_then_parse_round_trips(conf: CyrusConf) -> None:
    assert parse_cyrus_conf(render_cyrus_conf(conf)) == conf


_conf_alphabet = st.sampled_from([*'SERVICESTARTEVNDMO {}#"=\\\n\r\t -:/[]abc0123', "cmd="])


@settings(max_examples=500)
@given(st.one_of(st.text(), st.lists(_conf_alphabet, max_size=80).map("".join)))
def test_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_cyrus_conf(text)


@settings(max_examples=300)
@given(st.text(max_size=40), st.sampled_from(["tcp", "tcp4", "tcp6", "udp", ""]))
def test_resolve_listen_never_crashes(listen: str, proto: str) -> None:
    services = Path(__file__)  # any readable file: names are simply not found in it
    with contextlib.suppress(ConfigError):
        resolve_listen(listen, proto, CONFIGDIR, services)

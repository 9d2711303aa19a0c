"""`sealmail check`: each finding the seed warns about, from a config that has the problem (the
line, at its file and line), and none from the same config fixed."""

from __future__ import annotations

import json
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL, store_root_opt_in
from tests.support.peers import traversable_tmpdir

from sealmail.cli.main import main


@dataclass
class Halves:
    """The two halves' files, written on demand; tests change one line and look."""

    root: Path
    imapd: dict[str, str] = field(default_factory=dict)
    services: list[str] = field(default_factory=list)
    main_cf: dict[str, str] = field(default_factory=dict)
    master_cf: list[str] = field(default_factory=list)
    allow: str = ""

    def write(self) -> list[str]:
        mta = self.root / "mta"
        mta.mkdir(exist_ok=True)
        (mta / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in self.main_cf.items()))
        (mta / "master.cf").write_text("".join(f"{line}\n" for line in self.master_cf))
        (self.root / "imapd.conf").write_text(
            "".join(f"{k}: {v}\n" for k, v in self.imapd.items()) + store_root_opt_in()
        )
        (self.root / "cyrus.conf").write_text(
            "SERVICES {\n" + "".join(f"  {line}\n" for line in self.services) + "}\n"
        )
        (self.root / "hosts.allow").write_text(self.allow)
        return ["check", "-c", str(mta), "-C", str(self.root / "imapd.conf"),
                "-M", str(self.root / "cyrus.conf")]


def findings(halves: Halves, capsys: pytest.CaptureFixture[str]) -> list[str]:
    code = main(halves.write())
    lines = capsys.readouterr().out.splitlines()
    assert code == (1 if lines else 0)
    return lines


@pytest.fixture
def root() -> Iterator[Path]:
    with traversable_tmpdir("smcheck-") as path:
        yield path


@pytest.fixture
def halves(root: Path) -> Halves:
    """A sound pair: the seed's 2.1 over a socket everyone may reach; nothing to report."""
    socket = root / "socket" / "lmtp"
    socket.parent.mkdir()
    return Halves(
        root,
        imapd={
            "configdirectory": str(root / "config"),
            "partition-default": str(root / "spool"),
            "servername": "cyrus.example.com",
            "lmtp_admins": "lmtpuser",
            "unix_socket_mode": "0666",
            "hosts_allow": str(root / "hosts.allow"),
            "hosts_deny": str(root / "hosts.deny"),
            "sasl_sasldb_path": str(root / "sasldb2"),
        },
        services=[f'lmtpunix cmd="lmtpd" listen="{socket}" prefork=1'],
        main_cf={
            "queue_directory": str(root / "queue"),
            "mail_owner": "nobody",
            "recipient_delimiter": "+",
            "mailbox_transport": f"cyrus:unix:{socket}",
        },
        master_cf=["cyrus unix - n n - - lmtp", "local unix - n n - - local"],
    )


def test_a_sound_pair_has_no_finding(halves: Halves, capsys: pytest.CaptureFixture[str]) -> None:
    assert findings(halves, capsys) == []


def test_socket_not_the_one_in_cyrus_conf(
    halves: Halves, capsys: pytest.CaptureFixture[str]
) -> None:
    halves.main_cf["mailbox_transport"] = "cyrus:unix:/var/imap/socket/lmtp"
    [line] = findings(halves, capsys)
    assert line.startswith(f"{halves.root}/mta/main.cf:4: socket: mailbox_transport = ")
    assert "/var/imap/socket/lmtp is not the one in cyrus.conf (lmtpunix at" in line


def test_relative_socket_under_the_queue_directory(
    halves: Halves, capsys: pytest.CaptureFixture[str]
) -> None:
    halves.main_cf["local_transport"] = "cyrus:unix:extern/cyrus/lmtp"
    [line] = findings(halves, capsys)
    assert f"socket {halves.root}/queue/extern/cyrus/lmtp (relative: under queue_directory)" in line
    extern = halves.root / "queue" / "extern" / "cyrus" / "lmtp"
    extern.parent.mkdir(parents=True)
    halves.services.append(f'lmtpext cmd="lmtpd" listen="{extern}"')
    assert findings(halves, capsys) == []


def test_inet_next_hop_on_a_port_no_service_has(
    halves: Halves, capsys: pytest.CaptureFixture[str]
) -> None:
    halves.main_cf["mailbox_transport"] = "lmtp:inet:localhost:lmtp"
    halves.master_cf.append("lmtp unix - - n - - lmtp")
    [line] = findings(halves, capsys)
    # Debian's /etc/services has no lmtp line: IANA's 24, as the MTA itself would use.
    assert line.endswith("socket: mailbox_transport = lmtp:inet:localhost:lmtp: no cyrus.conf "
                         f"lmtpd service listens on port 24 ({halves.root}/cyrus.conf)")
    halves.main_cf["mailbox_transport"] = "lmtp:inet:localhost:2003"
    halves.services.append('lmtp cmd="lmtpd" listen="127.0.0.1:2003"')
    assert findings(halves, capsys) == []


def test_mail_owner_cannot_reach_the_socket(
    halves: Halves, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    hidden = tmp_path / "lmtp"  # under pytest's 0700 directory
    halves.services[0] = f'lmtpunix cmd="lmtpd" listen="{hidden}"'
    halves.main_cf["mailbox_transport"] = f"cyrus:unix:{hidden}"
    [line] = findings(halves, capsys)
    assert f"{halves.root}/cyrus.conf:2: socket-access: nobody (mail_owner" in line
    assert "cannot enter" in line
    # A socket mode only the store's account may use.
    halves.services[0] = f'lmtpunix cmd="lmtpd" listen="{halves.root}/socket/lmtp"'
    halves.main_cf["mailbox_transport"] = f"cyrus:unix:{halves.root}/socket/lmtp"
    halves.imapd["unix_socket_mode"] = "0600"
    [line] = findings(halves, capsys)
    assert "socket-access" in line and "unix_socket_mode 0600" in line


def test_mailbox_transport_without_a_local_service(
    halves: Halves, capsys: pytest.CaptureFixture[str]
) -> None:
    halves.master_cf.remove("local unix - n n - - local")
    [line] = findings(halves, capsys)
    assert line.startswith(f"{halves.root}/mta/main.cf:4: local: mailbox_transport is used by")


def test_tcp_lmtpd_a_without_a_hosts_allow_rule(
    halves: Halves, capsys: pytest.CaptureFixture[str]
) -> None:
    halves.services.append('lmtp cmd="lmtpd -a" listen="127.0.0.1:2004"')
    [line] = findings(halves, capsys)
    assert line.startswith(f"{halves.root}/cyrus.conf:3: open-lmtp: lmtp: lmtpd -a on TCP")
    halves.allow = "lmtp : 127.0.0.1 : ALLOW\nlmtp : ALL : DENY\n"
    assert findings(halves, capsys) == []


def _sasl_setup(halves: Halves, key: str, user: str = "lmtpuser") -> None:
    pass_file = halves.root / "cyrus_lmtp_sasl_pass"
    pass_file.write_text(f"{key} {user}:secret\n")
    halves.services.append('lmtp cmd="lmtpd" listen="127.0.0.1:2003"')
    halves.imapd["lmtp_allowplaintext"] = "no"
    halves.main_cf["mailbox_transport"] = "cyrus-inet:inet:localhost:2003"
    halves.master_cf += [
        "cyrus-inet unix - - n - - lmtp",
        "  -o lmtp_sasl_auth_enable=yes",
        f"  -o lmtp_sasl_password_maps=hash:{pass_file}",
        "  -o lmtp_sasl_security_options=noanonymous,noplaintext",
    ]
    subprocess.run(
        [*SEALMAIL, "saslpasswd2", "-p", "-c", "-f", halves.imapd["sasl_sasldb_path"],
         "-u", "cyrus.example.com", "lmtpuser"],
        input="secret\n", text=True, check=True, capture_output=True,
    )


def test_password_map_key_that_is_no_next_hop(
    halves: Halves, capsys: pytest.CaptureFixture[str]
) -> None:
    _sasl_setup(halves, "cyrus.example.com")
    [line] = findings(halves, capsys)
    assert line.startswith(
        f"{halves.root}/cyrus_lmtp_sasl_pass:1: password-map: key 'cyrus.example.com' matches "
        "no next hop of cyrus-inet (localhost, localhost:2003)"
    )
    (halves.root / "cyrus_lmtp_sasl_pass").write_text("localhost lmtpuser:secret\n")
    assert findings(halves, capsys) == []


def test_password_map_user_not_admin_nor_in_the_sasldb(
    halves: Halves, capsys: pytest.CaptureFixture[str]
) -> None:
    _sasl_setup(halves, "localhost", user="cyrus")
    lines = findings(halves, capsys)
    assert len(lines) == 2
    assert "user 'cyrus' is not in lmtp_admins (lmtpuser)" in lines[0]
    assert "user 'cyrus' is not in the sasldb" in lines[1]


def test_plaintext_over_tcp_without_tls(
    halves: Halves, capsys: pytest.CaptureFixture[str]
) -> None:
    _sasl_setup(halves, "localhost")
    halves.imapd["lmtp_allowplaintext"] = "yes"
    halves.master_cf[-1] = "  -o lmtp_sasl_security_options=noanonymous"
    lines = findings(halves, capsys)
    assert len(lines) == 2, lines
    assert "imapd.conf:" in lines[0]
    assert "plaintext: lmtp_allowplaintext: PLAIN and LOGIN" in lines[0]
    assert "master.cf:3: plaintext: cyrus-inet: lmtp_sasl_security_options noanonymous" in lines[1]


def test_recipient_delimiter_on_one_side(
    halves: Halves, capsys: pytest.CaptureFixture[str]
) -> None:
    halves.imapd["recipient_delimiter"] = "-"
    [line] = findings(halves, capsys)
    assert line.startswith(f"{halves.root}/mta/main.cf:3: delimiter: recipient_delimiter = +")
    del halves.main_cf["recipient_delimiter"]
    [line] = findings(halves, capsys)
    assert "delimiter: recipient_delimiter: - in the store, but not in" in line
    halves.main_cf["recipient_delimiter"] = "-"
    assert findings(halves, capsys) == []


def test_lmtp_downcase_rcpt_off(halves: Halves, capsys: pytest.CaptureFixture[str]) -> None:
    halves.imapd["lmtp_downcase_rcpt"] = "no"
    [line] = findings(halves, capsys)
    assert line.startswith(f"{halves.root}/imapd.conf:9: downcase: lmtp_downcase_rcpt is off")


def test_recipient_limit_past_the_timeout_or_lmtpd_own_limit(
    halves: Halves, capsys: pytest.CaptureFixture[str]
) -> None:
    # Seed 6: the seed's 300 is sound; 5,000 at the default 600 s is not.
    halves.main_cf["cyrus_destination_recipient_limit"] = "300"
    assert findings(halves, capsys) == []
    halves.main_cf["cyrus_destination_recipient_limit"] = "5000"
    lines = findings(halves, capsys)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{halves.root}/mta/main.cf:5: recipient-limit: "
                               "cyrus_destination_recipient_limit = 5000: lmtpd may take up to")
    assert "longer than lmtp_data_done_timeout (600s)" in lines[0]
    assert "above lmtpd's lmtp_max_recipients (1000)" in lines[1]
    # A master.cf -o override is where the finding points; a raised timeout makes it sound.
    del halves.main_cf["cyrus_destination_recipient_limit"]
    halves.imapd["lmtp_max_recipients"] = "10000"
    halves.master_cf[0] += " -o cyrus_destination_recipient_limit=5000"
    halves.master_cf.insert(1, "  -o lmtp_data_done_timeout=3600s")
    assert findings(halves, capsys) == []
    halves.master_cf.pop(1)
    [line] = findings(halves, capsys)
    assert line.startswith(f"{halves.root}/mta/master.cf:1: recipient-limit:")


def test_pipe_argv_missing_or_not_runnable(
    halves: Halves, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    halves.master_cf.append("cyrus-deliver unix - n n - - pipe")
    halves.master_cf.append(
        "  user=nobody argv=/usr/cyrus/bin/deliver -e -r ${sender} -m ${extension} ${user}"
    )
    [line] = findings(halves, capsys)
    assert line.startswith(f"{halves.root}/mta/master.cf:3: pipe: cyrus-deliver: argv=/usr/cyrus")
    assert "no such file" in line
    hidden = tmp_path / "deliver"  # under pytest's 0700 directory
    hidden.write_text("#!/bin/sh\nexit 0\n")
    hidden.chmod(0o755)
    halves.master_cf[-1] = f"  user=nobody argv={hidden} -e ${{user}}"
    [line] = findings(halves, capsys)
    assert "user=nobody cannot run" in line and "cannot enter" in line
    halves.master_cf[-1] = "  user=root argv=/bin/true"
    [line] = findings(halves, capsys)
    assert "refuses to run commands as root" in line
    halves.master_cf[-1] = "  user=nobody argv=/bin/true ${user}"
    assert findings(halves, capsys) == []


def test_folders_without_the_p_right(halves: Halves, capsys: pytest.CaptureFixture[str]) -> None:
    if pwd.getpwuid(0) is None:  # pragma: no cover
        pytest.skip("no root")
    halves.imapd["postuser"] = "bb"
    halves.write()
    from sealmail.config.imapd_conf import load_imapd_conf
    from sealmail.store.disk import DiskStore

    with DiskStore.from_config(load_imapd_conf(halves.root / "imapd.conf")) as store:
        for name in ("user.alice", "user.alice.Lists", "user.alice.Sent", "folder"):
            store.create_mailbox(name)
    lines = findings(halves, capsys)
    assert len(lines) == 2, lines
    assert "post-right: mailbox folder: no p right for anyone: mail to bb+folder" in lines[0]
    assert "mailbox user.alice.Lists: no p right for anyone: mail to alice+Lists" in lines[1]
    with DiskStore.from_config(load_imapd_conf(halves.root / "imapd.conf")) as store:
        store.set_acl("folder", "anyone", "+p")
        store.set_acl("user.alice.Lists", "anyone", "+p")
    assert findings(halves, capsys) == []


def test_json_and_missing_files(halves: Halves, capsys: pytest.CaptureFixture[str]) -> None:
    halves.imapd["lmtp_downcase_rcpt"] = "no"
    assert main([*halves.write(), "--json"]) == 1
    [finding] = json.loads(capsys.readouterr().out)
    assert finding["check"] == "downcase" and finding["line"] == 9
    assert main(["check", "-C", str(halves.root / "nope.conf")]) == 78
    assert "nope.conf: no such file" in capsys.readouterr().err

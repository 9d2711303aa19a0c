"""`sealmail postconf`: the seed's commands verbatim, output formats, and Postfix cross-checks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sealmail.cli.main import main

BASE_MASTER = """\
smtp      inet  n       -       n       -       -       smtpd
lmtp      unix  -       -       n       -       -       lmtp
"""
SEED_ENTRIES = """\
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
spc unix - n n - - lmtp -o { smtpd_banner = hello world } -o{lmtp_bind_address=1.2.3.4}
"""
SEED_MASTER = BASE_MASTER + SEED_ENTRIES

SEED_EDITS = [
    "mailbox_transport=cyrus:unix:/var/imap/socket/lmtp",
    "mailbox_transport=cyrus:unix:extern/cyrus/lmtp",
    "mailbox_transport=cyrus-inet:inet:cyrus.example.org:lmtp",
    "mailbox_transport=cyrus-deliver",
    "local_transport=cyrus:unix:/var/imap/socket/lmtp",
    "local_transport=cyrus-inet:inet:cyrus.example.com:lmtp",
    "cyrus_destination_recipient_limit=300",
    "cyrus-inet_destination_recipient_limit=300",
    "recipient_delimiter=+",
]


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text(
        "# operator's notes\nmyhostname = mail.example.com\n# keep\nmydestination = $myhostname,\n"
        "    localhost\n"
    )
    (tmp_path / "master.cf").write_text(SEED_MASTER)
    return tmp_path


def postconf(confdir: Path, *args: str) -> int:
    return main(["postconf", "-c", str(confdir), *args])


def test_seed_edits_work_verbatim_and_keep_comments(
    confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for edit in SEED_EDITS:
        assert postconf(confdir, "-e", edit) == 0
    assert (confdir / "main.cf").read_text() == (
        "# operator's notes\nmyhostname = mail.example.com\n# keep\nmydestination = $myhostname,\n"
        "    localhost\n"
        "mailbox_transport = cyrus-deliver\n"
        "local_transport = cyrus-inet:inet:cyrus.example.com:lmtp\n"
        "cyrus_destination_recipient_limit = 300\n"
        "cyrus-inet_destination_recipient_limit = 300\n"
        "recipient_delimiter = +\n"
    )
    capsys.readouterr()
    assert postconf(confdir, "-n") == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"config_directory = {confdir}",
        "cyrus-inet_destination_recipient_limit = 300",
        "cyrus_destination_recipient_limit = 300",
        "local_transport = cyrus-inet:inet:cyrus.example.com:lmtp",
        "mailbox_transport = cyrus-deliver",
        "mydestination = $myhostname, localhost",
        "myhostname = mail.example.com",
        "recipient_delimiter = +",
    ]
    assert "unused" not in err


def test_values_expansion_and_unknown(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert postconf(confdir, "-h", "-x", "mydestination", "smtpd_timeout") == 0
    assert capsys.readouterr().out == "mail.example.com, localhost\n300s\n"
    assert postconf(confdir, "relayhost", "nosuch") == 0
    out, err = capsys.readouterr()
    assert out == "relayhost =\n"
    assert "nosuch: unknown parameter" in err


def test_unused_parameter_warning(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert postconf(confdir, "-e", "bogus_thing=1", "lmtp_cache_connection = yes") == 0
    assert postconf(confdir, "-n") == 0
    out, err = capsys.readouterr()
    assert "unused parameter: bogus_thing=1" in err
    assert "lmtp_cache_connection = yes" in out  # the old name is accepted, not unused


def test_defaults_and_map_types(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert postconf(confdir, "-d", "default_destination_recipient_limit",
                    "cyrus_destination_recipient_limit", "default_database_type") == 0
    assert capsys.readouterr().out == (
        "default_destination_recipient_limit = 50\n"
        "cyrus_destination_recipient_limit = $default_destination_recipient_limit\n"
        "default_database_type = hash\n"
    )
    assert postconf(confdir, "-m") == 0
    assert capsys.readouterr().out.split() == [
        "hash", "inline", "pcre", "proxy", "regexp", "sealmail", "socketmap", "static", "texthash",
        "unix"]


def test_remove_and_comment_out(confdir: Path) -> None:
    assert postconf(confdir, "-#", "mydestination") == 0
    assert postconf(confdir, "-X", "myhostname") == 0
    assert (confdir / "main.cf").read_text() == (
        "# operator's notes\n# keep\n#mydestination = $myhostname,\n#    localhost\n")


def test_master_entries(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert postconf(confdir, "-M", "cyrus-inet/unix", "nonesuch") == 0
    out, err = capsys.readouterr()
    assert out == (
        "cyrus-inet unix  -       -       n       -       -       lmtp -o lmtp_cache_connection=yes"
        " -o lmtp_sasl_auth_enable=yes -o lmtp_sasl_password_maps=hash:/etc/postfix/"
        "cyrus_lmtp_sasl_pass -o lmtp_sasl_security_options=noanonymous\n")
    assert 'unmatched request: "nonesuch"' in err


def test_bad_edit_is_a_clear_error(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert postconf(confdir, "-e", "a b=c") == 78
    assert "missing '='" in capsys.readouterr().err


def test_bad_master_cf_names_line(confdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (confdir / "master.cf").write_text("# x\nsmtp inet n - n - -\n")
    assert postconf(confdir, "-M") == 78
    assert "master.cf:2: expected 8 fields" in capsys.readouterr().err


POSTFIX_POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"


@pytest.mark.peer
@pytest.mark.skipif(not Path(POSTFIX_POSTCONF).exists(), reason="Postfix's postconf not installed")
def test_same_output_as_postfix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The seed's commands run by both tools on twin directories give the same files and -M."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    # The package's master.cf as shipped, not the host's /etc/postfix/master.cf (absent on a
    # machine where Postfix was never configured, and an operator's to change).
    master = Path("/usr/share/postfix/master.cf.dist")
    master_text = (master.read_text() if master.exists() else BASE_MASTER) + SEED_ENTRIES
    for directory in (ours, theirs):
        directory.mkdir()
        (directory / "main.cf").write_text("# c\nrelayhost = a\n  b\nmyhostname = h.example\n")
        (directory / "master.cf").write_text(master_text)
    for edit in [*SEED_EDITS, "relayhost=[relay.example]:25"]:
        assert postconf(ours, "-e", edit) == 0
        subprocess.run([POSTFIX_POSTCONF, "-c", str(theirs), "-e", edit], check=True)
    assert (ours / "main.cf").read_text() == (theirs / "main.cf").read_text()
    for directory in (ours, theirs):
        (directory / "main.cf").write_text("")
    capsys.readouterr()
    assert postconf(ours, "-M") == 0
    real = subprocess.run([POSTFIX_POSTCONF, "-c", str(theirs), "-M"], check=True,
                          capture_output=True, text=True)
    assert capsys.readouterr().out == real.stdout

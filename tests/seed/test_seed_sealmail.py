"""The seed (Postfix's CYRUS_README) followed section by section: sealmail's MTA in front of
sealmail's store, one test per section, with the seed's own lines wherever they work as written
(docs/cyrus-readme-walkthrough.md says, per section, which lines differ and why).

Each test writes main.cf and master.cf for the section, runs `sealmail postfix -c DIR start-fg`
on them as an operator would, submits one message over SMTP and finds it in the store that
tests/support/seed_store.py runs under `sealmail master` on the seed's cyrus.conf services.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL
from tests.support.mta import mail_owner_opt_in, wait_for
from tests.support.peers import free_tcp_port, wait_until_accepting
from tests.support.pipe_user import ensure_pipe_user, sealmail_command_for
from tests.support.seed_store import LMTP_PASSWORD, SeedStore, wait_for_count, xinetd_deliver

pytestmark = pytest.mark.peer

DOMAIN = "example.com"
SENDER = f"sender@{DOMAIN}"


def mta(root: Path, name: str, main_extra: str, master_extra: str = "") -> tuple[Path, int]:
    """A config directory for one section: the section's lines after a loopback-only base."""
    config = root / name
    config.mkdir(exist_ok=True)
    port = free_tcp_port()
    (config / "main.cf").write_text(
        f"queue_directory = {config}/spool\ndata_directory = {config}/data\n"
        f"myhostname = mail.{DOMAIN}\nmydomain = {DOMAIN}\nmyorigin = $mydomain\n"
        f"mydestination = {DOMAIN}, localhost\ninet_interfaces = loopback-only\n"
        f"mynetworks = 127.0.0.0/8\nmail_spool_directory = {root}/mail\n"
        f"maillog_file = {config}/maillog\n"
        + mail_owner_opt_in()
        + ("" if "alias_maps" in main_extra else "alias_maps =\n")
        + main_extra
    )
    (config / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\n"
        "local unix - n n - - local\n"
        "error unix - - n - - error\n"
        "# for LMTP delivery over UNIX-domain socket (the seed's 9.1)\n"
        "cyrus unix - n n - - lmtp\n"
        "  -o lmtp_cache_connection=yes\n" + master_extra
    )
    return config, port


@contextlib.contextmanager
def running(config: Path, port: int) -> Iterator[None]:
    """`sealmail postfix -c CONFIG start-fg` until the block ends."""
    with (config / "postfix.out").open("wb") as out:
        process = subprocess.Popen(
            [*SEALMAIL, "postfix", "-c", str(config), "start-fg"],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until_accepting(("127.0.0.1", port), 30.0, process, config / "postfix.out")
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def submit(port: int, recipients: list[str], marker: str, extra_headers: str = "") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(
            SENDER,
            recipients,
            (
                f"From: {SENDER}\r\nTo: {', '.join(recipients)}\r\nSubject: {marker}\r\n"
                f"Message-ID: <{marker}@{DOMAIN}>\r\n{extra_headers}\r\nbody\r\n"
            ).encode(),
        )


def check(config: Path, store: SeedStore) -> tuple[int, list[str]]:
    """`sealmail check` on this section's MTA and the store: exit status and findings."""
    done = subprocess.run(
        [*SEALMAIL, "check", "-c", str(config), "-C", str(store.conf), "-M", str(store.cyrus_conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout.splitlines()


def marker() -> str:
    return f"seed-{uuid.uuid4().hex[:12]}"


def maillog(config: Path) -> str:
    path = config / "maillog"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_logged(config: Path, *texts: str) -> None:
    """Wait until the MTA's maillog has each of `texts` (it writes after the store's reply)."""
    for text in texts:
        try:
            wait_for(lambda t=text: t in maillog(config), what=f"{text!r} in the maillog")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{maillog(config)}") from None


CYRUS_INET = (
    "# for LMTP delivery over TCP socket (the seed's 9.1 and 2.2.1.2)\n"
    "cyrus-inet unix - - n - - lmtp\n"
    "  -o lmtp_cache_connection=yes\n"
    "  -o lmtp_sasl_auth_enable=yes\n"
    "  -o lmtp_sasl_password_maps=hash:{pass_file}\n"
    "  -o lmtp_sasl_security_options=noanonymous,noplaintext\n"
)


def password_map(root: Path, key: str) -> Path:
    """/etc/postfix/cyrus_lmtp_sasl_pass, root-owned 0600, built with `sealmail postmap`."""
    path = root / "cyrus_lmtp_sasl_pass"
    path.write_text(f"{key} lmtpuser:{LMTP_PASSWORD}\n")
    path.chmod(0o600)
    subprocess.run([*SEALMAIL, "postmap", str(path)], check=True)
    return path


# 2.1 LMTP over UNIX-domain sockets ------------------------------------------------------------


def test_2_1_mailbox_transport_unix_socket(seed_root: Path, seed_store: SeedStore) -> None:
    config, port = mta(
        seed_root, "mta-2.1", f"mailbox_transport = cyrus:unix:{seed_store.socket}\n"
    )
    m = marker()
    with running(config, port):
        submit(port, [f"alice@{DOMAIN}"], m)
        wait_for_count(seed_store, "user.alice", m)
        wait_logged(config, f"relay=mail.example.com[{seed_store.socket}]")
    # One message across both halves' logs, by its Message-ID: its mailbox and UID.
    done = subprocess.run(
        [
            *SEALMAIL,
            "trace",
            "-c",
            str(config),
            "-C",
            str(seed_store.conf),
            "-L",
            str(seed_store.log),
            f"<{m}@{DOMAIN}>",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"alice@{DOMAIN}: sent via" in done.stdout
    assert "-> user.alice uid " in done.stdout
    # Joined exactly: lmtpd named its session in the 250 and logged the MTA's queue ID.
    assert "status=sent (250 2.1.5 Ok SESSIONID=<" in done.stdout
    assert re.search(r"store .*: queue_id=[0-9A-Z]+, message-id=<", done.stdout), done.stdout


# 2.1.1 Chrooted setup: the socket path relative to the queue directory -------------------------


def test_2_1_1_relative_socket_under_the_queue_directory(
    seed_root: Path, seed_store: SeedStore
) -> None:
    # The conftest's cyrus.conf listens on mta-2.1.1/spool/extern/cyrus/lmtp.
    config, port = mta(
        seed_root,
        "mta-2.1.1",
        "mailbox_transport = cyrus:unix:extern/cyrus/lmtp\n",
        "cyrus-chroot unix - n y - - lmtp\n",
    )
    m = marker()
    with running(config, port):
        submit(port, [f"bob@{DOMAIN}"], m)
        wait_for_count(seed_store, "user.bob", m)
    # chroot=y is said aloud, never silently accepted.
    wait_logged(config, "chroot=y is not honoured")


# 2.2.1.1-2.2.1.3 LMTP over TCP with SASL -------------------------------------------------------


def test_2_2_1_tcp_with_sasl_noplaintext(seed_root: Path, seed_store: SeedStore) -> None:
    # 2.2.1.3: mailbox_transport=cyrus-inet:inet:cyrus.example.com:lmtp. The host name must
    # resolve (localhost here) and the password map's key must be that same name (2.2.1.2).
    pass_file = password_map(seed_root, "localhost")
    config, port = mta(
        seed_root,
        "mta-2.2.1",
        f"mailbox_transport = cyrus-inet:inet:localhost:{seed_store.sasl_port}\n",
        CYRUS_INET.format(pass_file=pass_file),
    )
    m = marker()
    with running(config, port):
        submit(port, [f"carol@{DOMAIN}"], m)
        wait_for_count(seed_store, "user.carol", m)
    # noplaintext: a hashed mechanism (SCRAM), never PLAIN.
    assert "authenticated as lmtpuser" in seed_store.log_text()
    assert "mechanism=PLAIN" not in seed_store.log_text()


# 2.3 LMTP over TCP without SASL (`lmtpd -a`, behind hosts.allow) ------------------------------


def test_2_3_tcp_without_sasl_behind_hosts_allow(seed_root: Path, seed_store: SeedStore) -> None:
    config, port = mta(
        seed_root,
        "mta-2.3",
        f"mailbox_transport = lmtp:inet:127.0.0.1:{seed_store.open_port}\n",
        "lmtp unix - - n - - lmtp\n",
    )
    m = marker()
    with running(config, port):
        submit(port, [f"dave@{DOMAIN}"], m)
        wait_for_count(seed_store, "user.dave", m)
    # hosts.allow lets loopback in and hosts.deny refuses the rest: from 127.0.0.2 the
    # connection is closed before a greeting.
    with socket.create_connection(
        ("127.0.0.1", seed_store.open_port), timeout=10, source_address=("127.0.0.2", 0)
    ) as sock:
        assert not sock.recv(100).startswith(b"220")


# 3 Local delivery via pipe to the deliver program ----------------------------------------------


def test_3_mailbox_transport_cyrus_deliver(seed_root: Path, seed_store: SeedStore) -> None:
    user = ensure_pipe_user()
    command = sealmail_command_for(user, seed_root)
    config, port = mta(
        seed_root,
        "mta-3",
        "mailbox_transport = cyrus-deliver\n",
        "cyrus-deliver unix - n n - - pipe\n"
        f"  user={user} argv={command} deliver -C {seed_store.conf} -e -r ${{sender}}"
        " -m ${extension} ${user}\n",
    )
    m = marker()
    with running(config, port):
        submit(port, [f"erin@{DOMAIN}"], m)
        wait_for_count(seed_store, "user.erin", m)
        wait_logged(config, "relay=cyrus-deliver")


# 4 deliver invoked by procmail -----------------------------------------------------------------


def test_4_procmail_invokes_deliver(seed_root: Path, seed_store: SeedStore) -> None:
    procmail = shutil.which("procmail")
    if procmail is None:
        pytest.skip("procmail is missing (install Debian's procmail package)")
    user = ensure_pipe_user()  # a UNIX account, so local(8) runs mailbox_command as it
    command = sealmail_command_for(user, seed_root)
    rc = seed_root / "procmailrc"
    rc.write_text(
        "SHELL=/bin/sh\n"
        ":0 w\n* ^List-Id:\n"
        f"| {command} deliver -C {seed_store.conf} -e -m Lists bob\n"
        ":0 w\n"
        f"| {command} deliver -C {seed_store.conf} -e $LOGNAME\n"
        "EXITCODE=$?\n"
    )
    rc.chmod(0o644)
    config, port = mta(seed_root, "mta-4", f"mailbox_command = {procmail} -m {rc}\n")
    m, listed = marker(), marker()
    with running(config, port):
        submit(port, [f"{user}@{DOMAIN}"], m)
        submit(port, [f"{user}@{DOMAIN}"], listed, "List-Id: <news.example.com>\r\n")
        # local(8) runs procmail as the recipient's account, with its LOGNAME.
        wait_for_count(seed_store, f"user.{user}", m)
        wait_for_count(seed_store, "user.bob.Lists", listed)


# 5.1 transport maps ----------------------------------------------------------------------------


def test_5_1_transport_map_routes_a_domain(seed_root: Path, seed_store: SeedStore) -> None:
    transport = seed_root / "transport"
    transport.write_text(f"cyrus.{DOMAIN} cyrus:unix:{seed_store.socket}\n")
    subprocess.run([*SEALMAIL, "postmap", str(transport)], check=True)
    config, port = mta(
        seed_root,
        "mta-5.1",
        f"mydestination = {DOMAIN}, cyrus.{DOMAIN}\ntransport_maps = hash:{transport}\n",
    )
    m = marker()
    with running(config, port):
        submit(port, [f"gina@cyrus.{DOMAIN}"], m)
        wait_for_count(seed_store, "user.gina", m)


# 5.2 fallback_transport ------------------------------------------------------------------------


def test_5_2_fallback_transport(seed_root: Path, seed_store: SeedStore) -> None:
    account = ensure_pipe_user()  # has a UNIX account: local(8) keeps its mail
    spool = seed_root / "mail"
    spool.mkdir(exist_ok=True)
    spool.chmod(0o1777)
    config, port = mta(
        seed_root, "mta-5.2", f"fallback_transport = cyrus:unix:{seed_store.socket}\n"
    )
    m = marker()
    with running(config, port):
        submit(port, [f"hank@{DOMAIN}", f"{account}@{DOMAIN}"], m)
        wait_for_count(seed_store, "user.hank", m)
        wait_for(lambda: m in ((spool / account).read_text() if (spool / account).exists() else ""))


# 5.3 local_transport: aliases are not processed -------------------------------------------------


def test_5_3_local_transport_bypasses_aliases(seed_root: Path, seed_store: SeedStore) -> None:
    aliases = seed_root / "aliases-5.3"
    aliases.write_text("team: alice, bob\n")
    subprocess.run([*SEALMAIL, "postalias", str(aliases)], check=True)
    config, port = mta(
        seed_root,
        "mta-5.3",
        f"local_transport = cyrus:unix:{seed_store.socket}\nalias_maps = hash:{aliases}\n",
    )
    m = marker()
    with running(config, port):
        submit(port, [f"ivan@{DOMAIN}", f"team@{DOMAIN}"], m)
        wait_for_count(seed_store, "user.ivan", m)
        # team is no alias here: lmtpd knows no such user, and the MTA bounces it.
        wait_for(lambda: "to=<team@" in maillog(config) and "status=bounced" in maillog(config))
    assert seed_store.count("user.alice", m) == 0


# 6 Single instance message store ---------------------------------------------------------------


def test_6_one_transaction_one_file(seed_root: Path, seed_store: SeedStore) -> None:
    config, port = mta(
        seed_root,
        "mta-6",
        f"local_transport = cyrus:unix:{seed_store.socket}\n"
        "cyrus_destination_recipient_limit = 300\n",
    )
    m = marker()
    users = ["alice", "bob", "carol"]
    with running(config, port):
        submit(port, [f"{u}@{DOMAIN}" for u in users], m)
        for u in users:
            wait_for_count(seed_store, f"user.{u}", m)
    from sealmail.config.imapd_conf import load_imapd_conf
    from sealmail.store.disk import DiskStore

    with DiskStore.from_config(load_imapd_conf(seed_store.conf)) as store:
        inodes = set()
        for u in users:
            [uid] = [
                r.uid
                for r in store.messages(f"user.{u}")
                if m.encode() in store.message_bytes(f"user.{u}", r.uid)
            ]
            inodes.add(os.stat(store.mailbox_path(f"user.{u}") / f"{uid}.").st_ino)
    assert len(inodes) == 1  # one file, hard-linked into three mailboxes


# 7 inetd: `deliver -e -l` behind tcp_wrappers --------------------------------------------------


def test_7_xinetd_runs_deliver_l_behind_hosts_allow(seed_root: Path, seed_store: SeedStore) -> None:
    with xinetd_deliver(seed_root, seed_store, "xinetd") as port:
        # Section 2.2.1.3 from the MTA: the LMTP client over TCP to inetd's port.
        config, smtp_port = mta(
            seed_root,
            "mta-7",
            f"mailbox_transport = lmtp:inet:127.0.0.1:{port}\n",
            "lmtp unix - - n - - lmtp\n",
        )
        m = marker()
        with running(config, smtp_port):
            submit(smtp_port, [f"frank@{DOMAIN}"], m)
            try:
                wait_for_count(seed_store, "user.frank", m, timeout=10)
            except AssertionError:
                print(maillog(config))
                raise
        # Not localhost: refused by the seed's hosts.allow/hosts.deny, and the refusal is logged.
        with socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0)
        ) as sock:
            assert not sock.recv(100).startswith(b"220")
        logged = Path(seed_store.root / "config" / "deliver.log")
        wait_for(lambda: logged.exists() and "127.0.0.2" in logged.read_text(), what="refusal")


# 8.1 recipient_delimiter, 8.2 postuser, 8.3 upper case -----------------------------------------


def test_8_1_plus_address_to_a_folder(seed_root: Path, seed_store: SeedStore) -> None:
    config, port = mta(
        seed_root,
        "mta-8.1",
        f"mailbox_transport = cyrus:unix:{seed_store.socket}\nrecipient_delimiter = +\n",
    )
    m = marker()
    with running(config, port):
        submit(port, [f"alice+Lists@{DOMAIN}"], m)
        wait_for_count(seed_store, "user.alice.Lists", m)
    assert seed_store.count("user.alice", m) == 0


def test_8_2_postuser_posts_to_a_shared_folder(seed_root: Path, seed_store: SeedStore) -> None:
    config, port = mta(
        seed_root,
        "mta-8.2",
        f"local_transport = cyrus:unix:{seed_store.socket}\nrecipient_delimiter = +\n",
    )
    m = marker()
    with running(config, port):
        submit(port, [f"bb+folder@{DOMAIN}"], m)
        wait_for_count(seed_store, "folder", m)
    # What the seed warns about, across both halves: nothing in this set-up.
    assert check(config, seed_store) == (0, [])


def test_8_3_upper_case_recipient_is_lowered(seed_root: Path, seed_store: SeedStore) -> None:
    config, port = mta(
        seed_root,
        "mta-8.3",
        f"local_transport = cyrus:unix:{seed_store.socket}\nrecipient_delimiter = +\n",
    )
    m = marker()
    with running(config, port):
        # Only the part before the delimiter is lowered: the folder keeps its case.
        submit(port, [f"Bob+Lists@{DOMAIN}"], m)
        wait_for_count(seed_store, "user.bob.Lists", m)


# 9.1 the master.cf entries ---------------------------------------------------------------------


def test_9_1_each_master_cf_entry(seed_root: Path, seed_store: SeedStore) -> None:
    user = ensure_pipe_user()
    command = sealmail_command_for(user, seed_root)
    pass_file = password_map(seed_root, "localhost")
    transport = seed_root / "transport-9.1"
    transport.write_text(
        f"alice@{DOMAIN} cyrus:unix:{seed_store.socket}\n"
        f"bob@{DOMAIN} cyrus-inet:inet:localhost:{seed_store.sasl_port}\n"
        f"carol@{DOMAIN} cyrus-old:\n"
        f"dave@{DOMAIN} cyrus-deliver:\n"
    )
    subprocess.run([*SEALMAIL, "postmap", str(transport)], check=True)
    conf = seed_store.conf
    config, port = mta(
        seed_root,
        "mta-9.1",
        f"transport_maps = hash:{transport}\n",
        CYRUS_INET.format(pass_file=pass_file) + "# cyrus 1.6 compatible\n"
        f"cyrus-old unix - n n - - pipe\n  flags=R user={user} argv={command} deliver -C {conf}"
        " -e -m ${extension} ${user}\n"
        "# cyrus 2.1 compatible\n"
        f"cyrus-deliver unix - n n - - pipe\n  user={user} argv={command} deliver -C {conf}"
        " -e -r ${sender} -m ${extension} ${user}\n",
    )
    m = marker()
    users = ("alice", "bob", "carol", "dave")
    with running(config, port):
        submit(port, [f"{u}@{DOMAIN}" for u in users], m)
        for u in users:
            wait_for_count(seed_store, f"user.{u}", m)
        wait_logged(
            config,
            f"relay=mail.example.com[{seed_store.socket}]",
            f"relay=localhost[127.0.0.1]:{seed_store.sasl_port}",
            "relay=cyrus-old,",
            "relay=cyrus-deliver,",
        )
    # The seed's 8.2 says postuser needs recipient_delimiter, which 9.1's main.cf lacks.
    code, lines = check(config, seed_store)
    assert code == 1 and len(lines) == 1, lines
    assert "delimiter: postuser: bb needs recipient_delimiter" in lines[0]
    [old] = seed_store.messages("user.carol", m)
    assert old.count(b"Return-Path:") == 1  # flags=R: the MTA's, and deliver adds none

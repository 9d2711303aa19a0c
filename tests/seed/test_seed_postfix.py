"""The seed's Postfix sections with Debian's real Postfix in front of sealmail's store.

One private Postfix for the module, with the seed's master.cf entries (section 9.1, with
Postfix 3's `lmtp_connection_cache_on_demand` for the 2.x name `lmtp_cache_connection`, which
Postfix 3.7 refuses, and `-C` and sealmail's path for Cyrus's deliver). Each test runs the seed's
`postconf -e` line with Postfix's own postconf, reloads, and follows one message into the store
(tests/support/seed_store.py). Postfix's lmtp client runs as `postfix`: the store's sockets are
mode 0666 and under directories it can walk (the seed's 2.1 NOTE).
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.peers import (
    POSTALIAS,
    POSTCONF,
    POSTFIX,
    POSTMAP,
    POSTQUEUE,
    PeerUnavailable,
    PostfixInstance,
    postfix_config_dir,
    require_binaries,
)
from tests.support.pipe_user import ensure_pipe_user, sealmail_command_for
from tests.support.seed_store import (
    LMTP_PASSWORD,
    SeedStore,
    wait_for_count,
    xinetd_deliver,
)

pytestmark = pytest.mark.peer

DOMAIN = "example.com"
SENDER = "sender@remote.example"
# The seed's variables, set by each test; the others go back to Postfix's defaults.
TRANSPORTS = ("mailbox_transport", "local_transport", "fallback_transport")


@pytest.fixture(scope="module")
def postfix(seed_root: Path, seed_store: SeedStore) -> Iterator[PostfixInstance]:
    try:
        require_binaries("postfix", POSTFIX, POSTQUEUE, POSTCONF, POSTMAP)
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    user = ensure_pipe_user()
    command = sealmail_command_for(user, seed_root)
    pass_file = seed_root / "postfix-sasl-pass"
    pass_file.write_text(f"localhost lmtpuser:{LMTP_PASSWORD}\n")
    pass_file.chmod(0o600)
    tools = postfix_config_dir(seed_root / "postfix-tools")
    subprocess.run(
        [POSTMAP, "-c", str(tools), f"hash:{pass_file}"], check=True, capture_output=True
    )
    conf = seed_store.conf
    master_cf = (
        "# for LMTP delivery over UNIX-domain socket\n"
        "cyrus unix - n n - - lmtp\n  -o lmtp_connection_cache_on_demand=yes\n"
        "# for LMTP delivery over TCP socket\n"
        "cyrus-inet unix - - n - - lmtp\n  -o lmtp_connection_cache_on_demand=yes\n"
        "  -o lmtp_sasl_auth_enable=yes\n"
        f"  -o lmtp_sasl_password_maps=hash:{pass_file}\n"
        "  -o lmtp_sasl_security_options=noanonymous,noplaintext\n"
        # Postfix looks host names up in DNS only by default: `localhost` needs native lookup.
        "  -o lmtp_host_lookup=native\n"
        "# cyrus 1.6 compatible\n"
        f"cyrus-old unix - n n - - pipe\n  flags=R user={user} argv={command} deliver -C {conf}"
        " -e -m ${extension} ${user}\n"
        "# cyrus 2.1 compatible\n"
        f"cyrus-deliver unix - n n - - pipe\n  user={user} argv={command} deliver -C {conf}"
        " -e -r ${sender} -m ${extension} ${user}\n"
    )
    # tests/support/seed_store.py listens on SEED_ROOT/postfix/spool/extern/cyrus/lmtp (2.1.1).
    instance = PostfixInstance(seed_root, {"recipient_delimiter": "+"}, master_cf, domain=DOMAIN)
    with instance:
        yield instance


def postconf_e(postfix: PostfixInstance, **settings: str) -> None:
    """The seed's `postconf -e "name=value"`, then `postfix reload`; the transports not named
    go back to their defaults."""
    for name in TRANSPORTS:
        if name not in settings:
            subprocess.run(
                [POSTCONF, "-c", str(postfix.config_dir), "-X", name],
                check=True,
                capture_output=True,
            )
    for name, value in settings.items():
        subprocess.run(
            [POSTCONF, "-c", str(postfix.config_dir), "-e", f"{name}={value}"],
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [POSTFIX, "-c", str(postfix.config_dir), "reload"], check=True, capture_output=True
    )


def send(postfix: PostfixInstance, recipients: list[str]) -> tuple[str, dict[str, str]]:
    """Submit one message; its marker and each recipient's final relay (status sent)."""
    marker = f"pfx-{uuid.uuid4().hex[:12]}"
    message = (
        f"From: {SENDER}\r\nTo: {', '.join(recipients)}\r\nSubject: {marker}\r\n"
        f"Message-ID: <{marker}@remote.example>\r\n\r\nbody\r\n"
    ).encode()
    queue_id = postfix.send(SENDER, recipients, message)
    outcomes = postfix.wait_for_outcomes(queue_id, recipients)
    for rcpt, outcome in outcomes.items():
        assert outcome.status == "sent", (rcpt, outcome, postfix.log_text()[-2000:])
    return marker, {rcpt: outcome.relay for rcpt, outcome in outcomes.items()}


def test_2_1_unix_socket(postfix: PostfixInstance, seed_store: SeedStore) -> None:
    postconf_e(postfix, mailbox_transport=f"cyrus:unix:{seed_store.socket}")
    marker, relays = send(postfix, [f"alice@{DOMAIN}"])
    wait_for_count(seed_store, "user.alice", marker)
    assert relays[f"alice@{DOMAIN}"] == f"{postfix.hostname}[{seed_store.socket}]"
    # Postfix logs lmtpd's session from the 250; lmtpd logged Postfix's queue ID: one join.
    sent = re.search(r"(\w+): to=<alice@[^>]+>.*status=sent \(250 2\.1\.5 Ok SESSIONID=<(\w+)>\)",
                     postfix.log_text())
    assert sent is not None, postfix.log_text()[-2000:]
    queue_id, session = sent.groups()
    assert f"{session}: queue_id={queue_id}, message-id=<{marker}@remote.example>" in (
        seed_store.log.read_text()
    )


def test_2_1_1_relative_socket_name(postfix: PostfixInstance, seed_store: SeedStore) -> None:
    # Relative to queue_directory whether or not the lmtp client is chrooted (the seed's words).
    postconf_e(postfix, mailbox_transport="cyrus:unix:extern/cyrus/lmtp")
    marker, _ = send(postfix, [f"bob@{DOMAIN}"])
    wait_for_count(seed_store, "user.bob", marker)


def test_2_2_1_sasl_noplaintext(postfix: PostfixInstance, seed_store: SeedStore) -> None:
    postconf_e(postfix, mailbox_transport=f"cyrus-inet:inet:localhost:{seed_store.sasl_port}")
    marker, _ = send(postfix, [f"carol@{DOMAIN}"])
    wait_for_count(seed_store, "user.carol", marker)
    mechanisms = re.findall(
        r"authenticated as lmtpuser from \S+ \(([A-Z0-9-]+)\)", seed_store.log_text()
    )
    assert mechanisms and mechanisms[-1].startswith("SCRAM-"), mechanisms


def test_2_3_tcp_lmtpd_a(postfix: PostfixInstance, seed_store: SeedStore) -> None:
    postconf_e(postfix, mailbox_transport=f"lmtp:inet:127.0.0.1:{seed_store.open_port}")
    marker, _ = send(postfix, [f"dave@{DOMAIN}"])
    wait_for_count(seed_store, "user.dave", marker)


def test_3_and_9_1_cyrus_deliver_and_cyrus_old(
    postfix: PostfixInstance, seed_store: SeedStore
) -> None:
    postconf_e(postfix, mailbox_transport="cyrus-deliver")
    marker, relays = send(postfix, [f"erin@{DOMAIN}", f"bob+Lists@{DOMAIN}"])
    assert set(relays.values()) == {"cyrus-deliver"}
    wait_for_count(seed_store, "user.erin", marker)
    wait_for_count(seed_store, "user.bob.Lists", marker)  # -m ${extension}
    postconf_e(postfix, mailbox_transport="cyrus-old")
    marker, _ = send(postfix, [f"frank@{DOMAIN}"])
    [stored] = seed_store.messages("user.frank", marker)
    assert stored.count(b"Return-Path:") == 1  # flags=R: Postfix's, and deliver adds none


def postconf_x(postfix: PostfixInstance, *names: str) -> None:
    for name in names:
        subprocess.run([POSTCONF, "-c", str(postfix.config_dir), "-X", name], check=True,
                       capture_output=True)


def test_5_1_transport_map(postfix: PostfixInstance, seed_store: SeedStore) -> None:
    table = postfix.root / "transport"
    table.write_text(f"cyrus.{DOMAIN} cyrus:unix:{seed_store.socket}\n")
    subprocess.run([POSTMAP, "-c", str(postfix.config_dir), f"hash:{table}"], check=True,
                   capture_output=True)
    postconf_e(postfix, transport_maps=f"hash:{table}")
    try:
        marker, relays = send(postfix, [f"gina@cyrus.{DOMAIN}"])
    finally:
        postconf_x(postfix, "transport_maps")
    wait_for_count(seed_store, "user.gina", marker)
    assert relays[f"gina@cyrus.{DOMAIN}"].endswith(f"[{seed_store.socket}]")


def test_5_2_fallback_transport(postfix: PostfixInstance, seed_store: SeedStore) -> None:
    account = ensure_pipe_user()  # has a UNIX account: Postfix's local(8) keeps its mail
    spool = postfix.root / "mail"
    spool.mkdir(exist_ok=True)
    spool.chmod(0o1777)
    postconf_e(postfix, fallback_transport=f"cyrus:unix:{seed_store.socket}",
               mail_spool_directory=str(spool))
    marker, relays = send(postfix, [f"hank@{DOMAIN}", f"{account}@{DOMAIN}"])
    wait_for_count(seed_store, "user.hank", marker)
    assert relays[f"{account}@{DOMAIN}"] == "local"
    assert marker in (spool / account).read_text()


def test_5_3_local_transport_bypasses_aliases(
    postfix: PostfixInstance, seed_store: SeedStore
) -> None:
    aliases = postfix.root / "aliases"
    aliases.write_text("team: alice, bob\n")
    subprocess.run([POSTALIAS, "-c", str(postfix.config_dir), f"hash:{aliases}"], check=True,
                   capture_output=True)
    postconf_e(postfix, local_transport=f"cyrus:unix:{seed_store.socket}",
               alias_maps=f"hash:{aliases}")
    try:
        marker = f"pfx-{uuid.uuid4().hex[:12]}"
        queue_id = postfix.send(SENDER, [f"ivan@{DOMAIN}", f"team@{DOMAIN}"], (
            f"From: {SENDER}\r\nSubject: {marker}\r\n\r\nbody\r\n"
        ))
        outcomes = postfix.wait_for_outcomes(queue_id, [f"ivan@{DOMAIN}", f"team@{DOMAIN}"])
    finally:
        postconf_e(postfix, alias_maps="")
    assert outcomes[f"ivan@{DOMAIN}"].status == "sent"
    # team is no alias here: lmtpd knows no such user, and Postfix bounces it.
    assert outcomes[f"team@{DOMAIN}"].status == "bounced"
    assert "550 5.1.1" in outcomes[f"team@{DOMAIN}"].text
    wait_for_count(seed_store, "user.ivan", marker)
    assert seed_store.count("user.alice", marker) == 0


def test_6_local_transport_single_instance(postfix: PostfixInstance, seed_store: SeedStore) -> None:
    postconf_e(postfix, local_transport=f"cyrus:unix:{seed_store.socket}")
    subprocess.run(
        [POSTCONF, "-c", str(postfix.config_dir), "-e", "cyrus_destination_recipient_limit=300"],
        check=True,
    )
    users = ["gina", "hank", "ivan"]
    marker, _ = send(postfix, [f"{u}@{DOMAIN}" for u in users])
    from sealmail.config.imapd_conf import load_imapd_conf
    from sealmail.store.disk import DiskStore

    with DiskStore.from_config(load_imapd_conf(seed_store.conf)) as store:
        inodes = set()
        for u in users:
            [uid] = [
                r.uid
                for r in store.messages(f"user.{u}")
                if marker.encode() in store.message_bytes(f"user.{u}", r.uid)
            ]
            inodes.add((store.mailbox_path(f"user.{u}") / f"{uid}.").stat().st_ino)
    assert len(inodes) == 1


def test_7_postfix_to_deliver_l_under_xinetd(
    postfix: PostfixInstance, seed_store: SeedStore, seed_root: Path
) -> None:
    # Section 7: "follow the instructions in 2.2.1.3": Postfix's LMTP client over TCP to the
    # port where inetd (Debian's xinetd) runs `deliver -e -l` behind hosts.allow.
    with xinetd_deliver(seed_root, seed_store, "xinetd-postfix") as port:
        postconf_e(postfix, mailbox_transport=f"lmtp:inet:127.0.0.1:{port}")
        marker, relays = send(postfix, [f"gina@{DOMAIN}"])
    wait_for_count(seed_store, "user.gina", marker)
    assert relays[f"gina@{DOMAIN}"] == f"127.0.0.1[127.0.0.1]:{port}"


def test_8_1_and_8_3_plus_address_and_case(postfix: PostfixInstance, seed_store: SeedStore) -> None:
    postconf_e(postfix, mailbox_transport=f"cyrus:unix:{seed_store.socket}")
    marker, _ = send(postfix, [f"Alice+Lists@{DOMAIN}", f"bb+folder@{DOMAIN}"])
    wait_for_count(seed_store, "user.alice.Lists", marker)  # 8.1 and 8.3
    wait_for_count(seed_store, "folder", marker)  # 8.2

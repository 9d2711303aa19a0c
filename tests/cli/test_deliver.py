"""`sealmail deliver`: message preparation, the LMTP client, exit statuses, and both modes against a
real `sealmail lmtpd` (pipe mode) or in-process service (-l, driven as inetd would: pipes, a socket
pair, a TCP connection behind hosts.allow).
"""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.instance import SEALMAIL, SealmailInstance, store_root_opt_in
from tests.support.peers import traversable_tmpdir

from sealmail.cli import deliver
from sealmail.cli import main as main_module
from sealmail.cli.main import main
from sealmail.delivery.handoff import LmtpClient, LmtpConnectionError, Rcpt
from sealmail.proto.smtp.address import decode_xtext, encode_xtext, render_address
from sealmail.proto.smtp.client import ServerReply

# --------------------------------------------------------------------------------------------
# The message as it comes from a pipe


def test_prepare_message_drops_mbox_from_line_and_makes_crlf() -> None:
    raw = b"From sender@example.org  Mon Nov 23 10:00:00 2026\nSubject: hi\n\nbody\nFrom me\n"
    assert deliver.prepare_message(raw) == b"Subject: hi\r\n\r\nbody\r\nFrom me\r\n"


def test_prepare_message_keeps_crlf_and_a_from_header_field() -> None:
    raw = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"
    assert deliver.prepare_message(raw) == raw


def test_prepare_message_mixed_line_ends() -> None:
    assert deliver.prepare_message(b"A: 1\r\nB: 2\n\nx\r\ny") == b"A: 1\r\nB: 2\r\n\r\nx\r\ny"


@given(st.binary())
def test_prepare_message_never_leaves_a_bare_lf(raw: bytes) -> None:
    out = deliver.prepare_message(raw)
    assert out.count(b"\n") == out.count(b"\r\n")
    assert deliver.prepare_message(out) == out or out.startswith(b"From ")


_LINE_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0")


@given(st.lists(st.text(_LINE_CHARS, max_size=20), max_size=8))
def test_prepare_message_of_lf_text_is_the_crlf_text(lines: list[str]) -> None:
    body = [line for line in lines if not line.startswith("From ")]
    lf = "".join(f"{line}\n" for line in body).encode()
    assert deliver.prepare_message(lf) == "".join(f"{line}\r\n" for line in body).encode()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"Return-Path: <a@example.org>\r\nSubject: x\r\n\r\n", "a@example.org"),
        (b"Subject: x\r\nreturn-path:   <>\r\n\r\n", ""),
        (
            b"Return-Path:\r\n <folded@example.org>\r\n\r\nReturn-Path: <body@x>\r\n",
            "folded@example.org",
        ),
        (b"Subject: x\r\n\r\nReturn-Path: <in-body@example.org>\r\n", None),
        (b"\r\nReturn-Path: <in-body@example.org>\r\n", None),
        (b"Return-Path: bare@example.org\r\n\r\n", "bare@example.org"),
    ],
)
def test_return_path_of(message: bytes, expected: str | None) -> None:
    assert deliver.return_path_of(message) == expected


def test_envelope_sender_prefers_the_option_then_the_message() -> None:
    message = b"Return-Path: <inside@example.org>\r\n\r\n"
    assert deliver.envelope_sender("option@example.org", message) == "option@example.org"
    assert deliver.envelope_sender("<option@example.org>", message) == "option@example.org"
    assert deliver.envelope_sender("", message) == ""  # pipe(8): ${sender} of a bounce
    assert deliver.envelope_sender(None, message) == "inside@example.org"
    assert deliver.envelope_sender(None, b"Subject: x\r\n\r\n") == ""
    assert deliver.envelope_sender("MAILER-DAEMON", b"") == "MAILER-DAEMON"
    assert deliver.envelope_sender("john doe@example.org", b"") == '"john doe"@example.org'
    assert deliver.envelope_sender('"john doe"@example.org', b"") == '"john doe"@example.org'


def test_recipient_address_follows_cyrus_deliver() -> None:
    assert deliver.recipient_address("alice", None, "+") == "alice"
    assert deliver.recipient_address("alice", "", "+") == "alice"
    assert deliver.recipient_address("alice", "Lists", "+") == "alice+Lists"
    assert deliver.recipient_address("alice@example.org", "Lists", "+") == "alice+Lists@example.org"
    assert deliver.recipient_address("alice", "My Folder", "+") == '"alice+My Folder"'
    assert deliver.recipient_address("", "shared", "+") == "+shared"


# --------------------------------------------------------------------------------------------
# Exit statuses


def _reply(line: str) -> ServerReply:
    code, _, text = line.partition(" ")
    enhanced = re.match(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}(?= |$)", text)
    return ServerReply(int(code), (text,), enhanced.group(0) if enhanced else None)


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("250 2.1.5 Ok", deliver.EX_OK),
        ("250 2.1.5 Ok (duplicate suppressed)", deliver.EX_OK),
        ("452 4.2.2 Over quota", deliver.EX_TEMPFAIL),
        ("451 4.3.0 Internal error", deliver.EX_TEMPFAIL),
        ("421 4.4.2 Timeout", deliver.EX_TEMPFAIL),
        ("550 5.1.1 Mailbox unknown", deliver.EX_NOUSER),
        ("501 5.1.7 Bad sender address syntax", deliver.EX_DATAERR),
        ("552 5.2.2 Over quota", deliver.EX_CANTCREAT),
        ("552 5.2.3 Message size exceeds fixed maximum message size", deliver.EX_DATAERR),
        ("555 5.5.4 Unsupported parameter AUTH", deliver.EX_PROTOCOL),
        ("554 5.6.0 Message contains bare newlines", deliver.EX_DATAERR),
        ("550 5.7.1 Permission denied", deliver.EX_NOPERM),
        ("554 Transaction failed", deliver.EX_UNAVAILABLE),
    ],
)
def test_exit_status_of_a_reply(line: str, status: int) -> None:
    assert deliver.exit_status(_reply(line)) == status


def test_combined_status_temporary_beats_permanent_then_first_permanent() -> None:
    ok, temp = deliver.EX_OK, deliver.EX_TEMPFAIL
    assert deliver.combined_status([]) == ok
    assert deliver.combined_status([ok, ok]) == ok
    assert deliver.combined_status([deliver.EX_NOUSER, temp, ok]) == temp
    assert deliver.combined_status([ok, deliver.EX_NOPERM, deliver.EX_NOUSER]) == deliver.EX_NOPERM


@given(st.lists(st.sampled_from([0, 65, 67, 69, 73, 75, 76, 77])))
def test_combined_status_properties(statuses: list[int]) -> None:
    result = deliver.combined_status(statuses)
    if 75 in statuses:
        assert result == 75
    elif any(statuses):
        assert result == next(s for s in statuses if s)
    else:
        assert result == 0


# --------------------------------------------------------------------------------------------
# The LMTP client, against a scripted server


@given(st.text())
def test_xtext_is_reversible_and_safe(value: str) -> None:
    encoded = encode_xtext(value)
    assert re.fullmatch(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*", encoded)
    assert decode_xtext(encoded) == value


def test_render_address_quotes_only_when_needed() -> None:
    assert render_address("a.b+c", "example.org") == "a.b+c@example.org"
    assert render_address("a b") == '"a b"'
    assert render_address('a"b\\c', "x") == '"a\\"b\\\\c"@x'
    assert render_address("a..b") == '"a..b"'


Script = Callable[[bytes], list[bytes]]
CLOSE = b""  # in a script's answer: close the connection instead of going on


class ScriptedServer:
    """An LMTP server on a socket pair that answers each command line by `answer(line)`."""

    def __init__(self, extensions: tuple[str, ...], answer: Script) -> None:
        self.client_sock, self._server_sock = socket.socketpair()
        self.extensions = extensions
        self.answer = answer
        self.received: list[bytes] = []
        self.data: bytes | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sock = self._server_sock
        reader = sock.makefile("rb")
        sock.sendall(b"220 fake LMTP\r\n")
        in_data = False
        data = bytearray()
        for line in reader:
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    self.data = bytes(data)
                    replies = self.answer(b"<end of data>")
                else:
                    data += line
                    continue
            else:
                self.received.append(line.rstrip(b"\r\n"))
                verb = line[:4].upper()
                if verb == b"LHLO":
                    caps = ["fake", *self.extensions]
                    replies = [
                        f"250{'-' if i < len(caps) - 1 else ' '}{cap}\r\n".encode()
                        for i, cap in enumerate(caps)
                    ]
                else:
                    replies = self.answer(line.rstrip(b"\r\n"))
                    in_data = verb == b"DATA" and replies[:1] == [b"354 go\r\n"]
            if CLOSE in replies:
                sock.sendall(b"".join(replies[: replies.index(CLOSE)]))
                break
            sock.sendall(b"".join(replies))
            if line.upper().startswith(b"QUIT"):
                break
        reader.close()
        sock.close()

    def join(self) -> None:
        self._thread.join(5)


def _lmtpd_like(line: bytes) -> list[bytes]:
    if line.startswith(b"RCPT") and b"nobody" in line:
        return [b"550 5.1.1 Mailbox unknown\r\n"]
    if line == b"DATA":
        return [b"354 go\r\n"]
    if line == b"<end of data>":
        return [b"250 2.1.5 Ok\r\n", b"452 4.2.2 Over quota\r\n"]
    if line == b"QUIT":
        return [b"221 2.0.0 Bye\r\n"]
    return [b"250 2.1.0 Ok\r\n"]


@pytest.mark.parametrize("pipelining", [True, False])
def test_client_one_reply_per_recipient_after_data(pipelining: bool) -> None:
    server = ScriptedServer(("PIPELINING",) if pipelining else (), _lmtpd_like)
    with LmtpClient(server.client_sock, timeout=5) as client:
        outcome = client.transaction(
            "s@example.org",
            [Rcpt("alice"), Rcpt("nobody"), Rcpt("bob", ("IGNOREQUOTA",))],
            b"Subject: x\r\n\r\n.dot\r\n",
            ["AUTH=alice+40example.org"],
        )
    server.join()
    assert [(r.address, str(r.reply)) for r in outcome.recipients] == [
        ("alice", "250 2.1.5 Ok"),
        ("nobody", "550 5.1.1 Mailbox unknown"),
        ("bob", "452 4.2.2 Over quota"),
    ]
    assert server.received[1:] == [
        b"MAIL FROM:<s@example.org> AUTH=alice+40example.org",
        b"RCPT TO:<alice>",
        b"RCPT TO:<nobody>",
        b"RCPT TO:<bob> IGNOREQUOTA",
        b"DATA",
        b"QUIT",
    ]
    assert server.data == b"Subject: x\r\n\r\n..dot\r\n"


def test_client_mail_refused_answers_for_every_recipient() -> None:
    def refuse(line: bytes) -> list[bytes]:
        if line.startswith(b"MAIL"):
            return [b"555 5.5.4 Unsupported parameter AUTH\r\n"]
        if line == b"QUIT":
            return [b"221 2.0.0 Bye\r\n"]
        return [b"503 5.5.1 Error: need MAIL command\r\n"]

    server = ScriptedServer(("PIPELINING",), refuse)
    with LmtpClient(server.client_sock, timeout=5) as client:
        outcome = client.transaction("", [Rcpt("a"), Rcpt("b")], b"x\r\n", ["AUTH=a"])
    server.join()
    assert {str(r.reply) for r in outcome.recipients} == {"555 5.5.4 Unsupported parameter AUTH"}
    assert server.data is None


def test_client_server_gone_mid_transaction_is_a_connection_error() -> None:
    def vanish(line: bytes) -> list[bytes]:
        if line == b"DATA":
            return [b"354 go\r\n"]
        if line == b"<end of data>":
            # One reply of the two owed (RFC 2033 4.2), then the server is gone.
            return [b"250 2.1.5 Ok\r\n", CLOSE]
        return [b"250 2.1.5 Ok\r\n"]

    server = ScriptedServer(("PIPELINING",), vanish)
    client = LmtpClient(server.client_sock, timeout=5)
    with pytest.raises(LmtpConnectionError, match="closed"):
        client.transaction("", [Rcpt("a"), Rcpt("b")], b"x\r\n")
    client.close()
    server.join()


def test_client_malformed_reply_is_a_connection_error() -> None:
    left, right = socket.socketpair()
    right.sendall(b"hello there\r\n")
    with pytest.raises(LmtpConnectionError, match="malformed"):
        LmtpClient(left, timeout=5)
    left.close()
    right.close()


def test_client_no_server_is_a_connection_error(tmp_path: Path) -> None:
    with pytest.raises(LmtpConnectionError, match="cannot connect"):
        LmtpClient.connect_unix(str(tmp_path / "nothing-here"), timeout=5)


# --------------------------------------------------------------------------------------------
# Command line


@pytest.mark.parametrize(
    "argv",
    [
        ["deliver", "-C", "/nonexistent", "-x", "alice"],
        ["deliver", "-C", "/nonexistent"],
        ["deliver", "-C", "/nonexistent", "-m", "a", "-m", "b", "alice"],
        ["deliver", "-C", "/nonexistent", "-a", "a", "-a", "b", "alice"],
        ["deliver", "-C", "/nonexistent", "-l", "alice"],
        ["deliver", "-C", "/nonexistent", "-r"],
    ],
)
def test_bad_arguments_exit_with_ex_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code  # type: ignore[assignment]
    assert status == deliver.EX_USAGE
    assert "sealmail deliver" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Pipe mode against a real lmtpd

USERS = ("alice", "bob", "carol", "dave")


@pytest.fixture(scope="module")
def instance() -> Iterator[SealmailInstance]:
    with (
        traversable_tmpdir("smdlv-") as root,
        SealmailInstance(root / "sealmail", USERS, imapd_conf_extra={"postuser": "bb"}) as inst,
    ):
        conf = str(inst.conf_path)
        inst.sealmail("mailbox", "-C", conf, "create", "user.alice.Lists")
        inst.sealmail("mailbox", "-C", conf, "setacl", "user.alice.Lists", "anyone", "p")
        inst.sealmail("mailbox", "-C", conf, "create", "user.alice.Private")
        inst.sealmail("mailbox", "-C", conf, "create", "shared")
        inst.sealmail("mailbox", "-C", conf, "setacl", "shared", "anyone", "p")
        inst.sealmail("mailbox", "-C", conf, "setquota", "user.carol", "1")
        # Quota is checked before the message is added (Cyrus's rule): fill carol up first.
        filled = _deliver(inst, "-q", "carol", message=_message(body=b"x" * 3000 + b"\n")[1])
        assert filled.returncode == 0, filled.stderr
        yield inst


def _message(
    body: bytes = b"Hello\n.dot line\n", headers: dict[str, str] | None = None
) -> tuple[str, bytes]:
    """An LF message (as a pipe gives it) with a unique Message-ID (duplicates are suppressed)."""
    message_id = f"<deliver-{uuid.uuid4().hex}@test.example>"
    head = {"From": "x@example.org", "Subject": "test", "Message-ID": message_id, **(headers or {})}
    return message_id, "".join(f"{k}: {v}\n" for k, v in head.items()).encode() + b"\n" + body


def _deliver(
    inst: SealmailInstance, *argv: str, message: bytes
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*SEALMAIL, "deliver", "-C", str(inst.conf_path), *argv],
        input=message,
        capture_output=True,
        timeout=60,
        check=False,
    )


def _stored(inst: SealmailInstance, mailbox: str, message_id: str) -> list[bytes]:
    with inst.store() as store:
        found = []
        for record in store.messages(mailbox):
            data = store.message_bytes(mailbox, record.uid)
            if message_id.encode() in data:
                found.append(data)
        return found


def test_pipe_delivers_to_inbox_with_sender_and_crlf(instance: SealmailInstance) -> None:
    message_id, message = _message()
    done = _deliver(instance, "-e", "-r", "s@example.org", "-m", "", "alice", message=message)
    assert (done.returncode, done.stderr) == (0, b"")
    [data] = _stored(instance, "user.alice", message_id)
    assert data.startswith(b"Return-Path: <s@example.org>\r\nReceived: ")
    assert data.endswith(b"\r\n\r\nHello\r\n.dot line\r\n")
    assert data.count(b"\n") == data.count(b"\r\n")


def test_pipe_mbox_from_line_removed_and_return_path_kept(instance: SealmailInstance) -> None:
    message_id, message = _message(headers={"Return-Path": "<orig@example.org>"})
    done = _deliver(instance, "bob", message=b"From orig@example.org Mon Nov 23 2026\n" + message)
    assert done.returncode == 0, done.stderr
    [data] = _stored(instance, "user.bob", message_id)
    assert data.count(b"Return-Path:") == 1
    assert data.startswith(b"Return-Path: <orig@example.org>\r\n")
    assert b"From orig@example.org Mon" not in data


def test_pipe_option_sender_replaces_the_message_return_path(instance: SealmailInstance) -> None:
    message_id, message = _message(headers={"Return-Path": "<old@example.org>"})
    done = _deliver(instance, "-f", "new@example.org", "bob", message=message)
    assert done.returncode == 0, done.stderr
    [data] = _stored(instance, "user.bob", message_id)
    assert data.count(b"Return-Path:") == 1 and b"Return-Path: <new@example.org>" in data


def test_pipe_null_sender(instance: SealmailInstance) -> None:
    message_id, message = _message()
    assert _deliver(instance, "-r", "", "bob", message=message).returncode == 0
    [data] = _stored(instance, "user.bob", message_id)
    assert data.startswith(b"Return-Path: <>\r\n")


def test_pipe_folder_postable_or_fallback_to_inbox(instance: SealmailInstance) -> None:
    to_lists, message = _message()
    assert _deliver(instance, "-m", "Lists", "alice", message=message).returncode == 0
    assert len(_stored(instance, "user.alice.Lists", to_lists)) == 1
    # No post right for anyone on Private, and no such folder Nope: both land in the INBOX.
    for folder in ("Private", "Nope"):
        message_id, message = _message()
        assert _deliver(instance, "-m", folder, "alice", message=message).returncode == 0
        assert len(_stored(instance, "user.alice", message_id)) == 1


def test_pipe_shared_folder_without_user(instance: SealmailInstance) -> None:
    message_id, message = _message()
    done = _deliver(instance, "-m", "shared", message=message)
    assert done.returncode == 0, done.stderr
    assert len(_stored(instance, "shared", message_id)) == 1


def test_pipe_unknown_user_is_ex_nouser(instance: SealmailInstance) -> None:
    _, message = _message()
    done = _deliver(instance, "-r", "s@example.org", "nobody", message=message)
    assert done.returncode == deliver.EX_NOUSER
    assert done.stderr == b"sealmail deliver: nobody: 550 5.1.1 Mailbox unknown\n"


def test_pipe_several_users_one_copy_each_and_the_worst_status(instance: SealmailInstance) -> None:
    message_id, message = _message()
    done = _deliver(instance, "alice", "nobody", "dave", message=message)
    assert done.returncode == deliver.EX_NOUSER
    assert len(_stored(instance, "user.alice", message_id)) == 1
    assert len(_stored(instance, "user.dave", message_id)) == 1
    # Over quota (452, temporary) beats unknown user (550, permanent): the MTA must retry.
    _, big = _message(body=b"x" * 3000 + b"\n")
    done = _deliver(instance, "nobody", "carol", message=big)
    assert done.returncode == deliver.EX_TEMPFAIL
    assert done.stderr.splitlines() == [
        b"sealmail deliver: nobody: 550 5.1.1 Mailbox unknown",
        b"sealmail deliver: carol: 452 4.2.2 Over quota",
    ]


def test_pipe_q_ignores_quota(instance: SealmailInstance) -> None:
    message_id, big = _message(body=b"x" * 3000 + b"\n")
    assert _deliver(instance, "carol", message=big).returncode == deliver.EX_TEMPFAIL
    done = _deliver(instance, "-q", "carol", message=big)
    assert done.returncode == 0, done.stderr
    assert len(_stored(instance, "user.carol", message_id)) == 1


def test_pipe_bad_message_is_ex_dataerr(instance: SealmailInstance) -> None:
    _, message = _message(body=b"a NUL \0 here\n")
    done = _deliver(instance, "alice", message=message)
    assert done.returncode == deliver.EX_DATAERR
    assert b"5.6.0" in done.stderr


def test_pipe_duplicate_is_delivered_once(instance: SealmailInstance) -> None:
    message_id, message = _message()
    assert _deliver(instance, "-e", "dave", message=message).returncode == 0
    assert _deliver(instance, "-e", "dave", message=message).returncode == 0
    assert len(_stored(instance, "user.dave", message_id)) == 1


def test_pipe_a_posts_with_the_rights_of_authuser(instance: SealmailInstance) -> None:
    conf = str(instance.conf_path)
    instance.sealmail("mailbox", "-C", conf, "setacl", "user.alice.Private", "bob", "p")
    message_id, message = _message()
    done = _deliver(instance, "-a", "bob", "-m", "Private", "alice", message=message)
    assert done.returncode == 0, done.stderr
    assert len(_stored(instance, "user.alice.Private", message_id)) == 1


def test_pipe_lmtpd_down_is_ex_tempfail(tmp_path: Path) -> None:
    conf = tmp_path / "imapd.conf"
    conf.write_text(
        f"configdirectory: {tmp_path}\npartition-default: {tmp_path}/p\n"
        f"lmtpsocket: {tmp_path}/no-lmtpd\n" + store_root_opt_in()
    )
    done = subprocess.run(
        [*SEALMAIL, "deliver", "-C", str(conf), "-r", "", "alice"],
        input=b"Subject: x\n\nbody\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == deliver.EX_TEMPFAIL
    assert b"cannot connect to lmtpd" in done.stderr
    # pipe(8): output that starts with an enhanced status code would override the exit status.
    assert not re.match(rb"[45]\.\d", done.stderr)


# --------------------------------------------------------------------------------------------
# -l: LMTP on stdin/stdout, as inetd runs it

SESSION = (
    b"LHLO inetd.test.example\r\n"
    b"MAIL FROM:<s@example.org>\r\n"
    b"RCPT TO:<alice>\r\n"
    b"RCPT TO:<nobody>\r\n"
    b"RCPT TO:<bob>\r\n"
    b"DATA\r\n"
    b"Subject: l\r\nMessage-ID: MSGID\r\n\r\n..dot\r\n.\r\n"
    b"QUIT\r\n"
)
EXPECTED = [
    "250 2.1.0",
    "250 2.1.5",
    "550 5.1.1",
    "250 2.1.5",
    "354",
    "250 2.1.5",  # alice, then bob: one reply per accepted recipient (RFC 2033 4.2)
    "250 2.1.5",
    "221 2.0.0",
]


def _replies(transcript: bytes) -> list[str]:
    """Reply lines after the LHLO reply, cut to code and enhanced code."""
    lines = transcript.decode().split("\r\n")
    assert lines[0].startswith("220 ")
    end_of_lhlo = next(i for i, line in enumerate(lines) if line.startswith("250 "))
    return [
        " ".join(line.split()[:2]) if line[:1] != "3" else "354"
        for line in lines[end_of_lhlo + 1 : -1]
    ]


def _session(message_id: str) -> bytes:
    return SESSION.replace(b"MSGID", message_id.encode())


def test_l_on_pipes_pipelined_recipients(instance: SealmailInstance) -> None:
    message_id = "<l-pipes@test.example>"
    done = subprocess.run(
        [*SEALMAIL, "deliver", "-C", str(instance.conf_path), "-l"],
        input=_session(message_id),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _replies(done.stdout) == EXPECTED
    assert _stored(instance, "user.alice", message_id)[0].endswith(b"\r\n\r\n.dot\r\n")
    assert len(_stored(instance, "user.bob", message_id)) == 1
    assert b"as postman" in done.stderr  # a pipe is a local, trusted caller


def _run_l_on_socket(
    instance: SealmailInstance, sock: socket.socket, *, inetd: bool = False
) -> subprocess.Popen[bytes]:
    """deliver -l on `sock`; as inetd starts it, stderr is the socket too."""
    process = subprocess.Popen(
        [*SEALMAIL, "deliver", "-C", str(instance.conf_path), "-l"],
        stdin=sock.fileno(),
        stdout=sock.fileno(),
        stderr=sock.fileno() if inetd else subprocess.PIPE,
    )
    sock.close()
    return process


def _talk(sock: socket.socket, data: bytes) -> bytes:
    """Send a whole session, then read to the end; a reset (a refused client) ends it too."""
    out = bytearray()
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    sock.close()
    return bytes(out)


def test_l_on_a_socket_pair(instance: SealmailInstance) -> None:
    message_id = "<l-socketpair@test.example>"
    ours, theirs = socket.socketpair()
    process = _run_l_on_socket(instance, theirs)
    transcript = _talk(ours, _session(message_id))
    assert process.wait(60) == 0
    assert _replies(transcript) == EXPECTED
    assert len(_stored(instance, "user.alice", message_id)) == 1


def _tcp_connection() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        served, _ = listener.accept()
    return client, served


@pytest.fixture
def hosts_files(instance: SealmailInstance) -> Iterator[tuple[Path, Path]]:
    allow, deny = instance.root / "hosts.allow", instance.root / "hosts.deny"
    original = instance.conf_path.read_text()
    instance.conf_path.write_text(original + f"hosts_allow: {allow}\nhosts_deny: {deny}\n")
    try:
        yield allow, deny
    finally:
        instance.conf_path.write_text(original)


def test_l_tcp_client_allowed_by_hosts_allow(
    instance: SealmailInstance, hosts_files: tuple[Path, Path]
) -> None:
    allow, deny = hosts_files
    # The seed's section 7, word for word.
    allow.write_text("deliver : localhost : ALLOW\ndeliver : ALL@ALL : DENY\n")
    deny.write_text("")
    message_id = "<l-tcp-allowed@test.example>"
    client, served = _tcp_connection()
    process = _run_l_on_socket(instance, served)
    transcript = _talk(client, _session(message_id))
    assert process.wait(60) == 0
    assert _replies(transcript) == EXPECTED
    assert len(_stored(instance, "user.bob", message_id)) == 1


def test_l_tcp_client_refused_gets_nothing(
    instance: SealmailInstance, hosts_files: tuple[Path, Path]
) -> None:
    allow, deny = hosts_files
    allow.write_text("deliver : 192.0.2.0/24 : ALLOW\n")
    deny.write_text("deliver : ALL\n")
    message_id = "<l-tcp-refused@test.example>"
    client, served = _tcp_connection()
    process = _run_l_on_socket(instance, served)
    transcript = _talk(client, _session(message_id))
    assert process.wait(60) == 0
    assert transcript == b""
    assert _stored(instance, "user.alice", message_id) == []
    assert process.stderr is not None
    assert b"refused connect from [127.0.0.1] (deliver: " in process.stderr.read()


@pytest.mark.skipif(
    Path(main_module.SYSLOG_SOCKET).exists(),
    reason="this host has a syslog socket; the fallback is for hosts without one",
)
def test_l_under_inetd_without_syslog_logs_its_refusal_to_a_file(
    instance: SealmailInstance, hosts_files: tuple[Path, Path]
) -> None:
    allow, deny = hosts_files
    allow.write_text("deliver : 192.0.2.0/24 : ALLOW\n")
    deny.write_text("deliver : ALL\n")
    client, served = _tcp_connection()
    process = _run_l_on_socket(instance, served, inetd=True)
    transcript = _talk(client, _session("<l-inetd-refused@test.example>"))
    assert process.wait(60) == 0
    assert transcript == b""  # not a log line either: stderr is the client's
    log = (instance.configdirectory / "deliver.log").read_text()
    assert "refused connect from [127.0.0.1] (deliver: " in log
    assert "sealmail deliver runs as " in log  # said before the choice, held until it
    assert f"deliver -l logs to {instance.configdirectory / 'deliver.log'} (no syslog socket" in log


def test_l_under_inetd_serves_and_logs_nothing_on_the_wire(instance: SealmailInstance) -> None:
    message_id = "<l-inetd@test.example>"
    ours, theirs = socket.socketpair()
    process = _run_l_on_socket(instance, theirs, inetd=True)
    transcript = _talk(ours, _session(message_id))
    assert process.wait(60) == 0
    assert _replies(transcript) == EXPECTED  # only LMTP on the wire
    assert len(_stored(instance, "user.alice", message_id)) == 1


@pytest.fixture
def held_logs() -> Iterator[logging.Logger]:
    """The root logger as `configure_logging` leaves it when stderr is a socket; restored."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = [main_module.HeldLogs()]
    root.setLevel(logging.INFO)
    try:
        yield root
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = saved[0], saved[1]


def test_held_lines_go_to_syslog_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_logs: logging.Logger
) -> None:
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(tmp_path / "log"))
    syslog.settimeout(10)
    monkeypatch.setattr(main_module, "SYSLOG_SOCKET", str(tmp_path / "log"))
    logging.getLogger("sealmail.test").info("before the choice")
    where = main_module.log_off_the_wire(tmp_path, "deliver")
    logging.getLogger("sealmail.test").info("after the choice")
    assert where == f"syslog ({tmp_path / 'log'}, facility mail)"
    first, second = syslog.recv(4096), syslog.recv(4096)
    syslog.close()
    assert first.startswith(b"<22>sealmail/deliver[") and b"before the choice" in first  # mail.info
    assert b"after the choice" in second
    assert not (tmp_path / "deliver.log").exists()


def test_held_lines_go_to_a_file_without_syslog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_logs: logging.Logger
) -> None:
    monkeypatch.setattr(main_module, "SYSLOG_SOCKET", str(tmp_path / "no-syslog"))
    logging.getLogger("sealmail.test").warning("held line")
    where = main_module.log_off_the_wire(tmp_path / "config", "deliver")
    assert where.startswith(f"{tmp_path / 'config' / 'deliver.log'} (no syslog socket")
    assert "held line" in (tmp_path / "config" / "deliver.log").read_text()


@pytest.mark.skipif(
    Path(main_module.SYSLOG_SOCKET).exists(),
    reason="this host has a syslog socket; the fallback is for hosts without one",
)
def test_l_under_inetd_with_an_unreadable_config_answers_421_and_logs_why(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "imapd.conf"
    conf.write_text("configdirectory: /x\nno colon here\n")
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [*SEALMAIL, "deliver", "-C", str(conf), "-l"],
        stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=theirs.fileno(),
    )
    theirs.close()
    transcript = _talk(ours, b"LHLO x\r\n")
    assert process.wait(60) == 78  # EX_CONFIG
    assert transcript == b"421 4.3.0 deliver: configuration error, try again later\r\n"
    log = (tmp_path / "deliver.log").read_text()
    assert f"deliver -l: {conf}:" in log and "no colon here" in log

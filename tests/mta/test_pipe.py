"""pipe(8): attributes, argv macros, the message copy, exit statuses, and real commands run as
an unprivileged account (the seed's section 9.1 entries)."""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.loops import LoopRunner
from tests.support.peers import traversable_tmpdir

from sealmail.mta.agents import DeliveryRequest, QueuedRecipient, Status
from sealmail.mta.agents.pipe import (
    PipeAgent,
    PipeConfigError,
    expand_argv,
    judge_exit,
    parse_pipe_attributes,
    printable_output,
    render_copy,
    unescape_eol,
)
from sealmail.mta.config import MainConfig
from sealmail.mta.config.main_cf import parse_main_cf
from sealmail.mta.config.master_cf import parse_master_cf
from sealmail.mta.queue import MessageContent

UNPRIVILEGED = "nobody"
MESSAGE = (b"Delivered-To: looped@example.com\r\nSubject: hi\r\n\r\n"
           b"From the start\r\n.dot line\r\nend\r\n")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running as another uid needs root")


def settings(text: str = "") -> MainConfig:
    return MainConfig.from_document(parse_main_cf(text), hostname="mx.example.com")


def request(path: Path, *addresses: str, sender: str = "s@remote.example",
            nexthop: str = "mx.example.com", cfg: MainConfig | None = None) -> DeliveryRequest:
    return DeliveryRequest(
        "QID1", sender,
        tuple(QueuedRecipient(a, a.upper(), i) for i, a in enumerate(addresses)),
        "pipe", nexthop, MessageContent(path), path.stat().st_size if path.exists() else 0, 0.0,
        cfg or settings())


def command(argv: str, **attributes: str) -> list[str]:
    words = [f"{k}={v}" for k, v in attributes.items()]
    return [*words, *f"argv={argv}".split()]


# -- attributes --------------------------------------------------------------------------------

def test_seed_entries_parse_from_master_cf() -> None:
    master = parse_master_cf(
        "cyrus-old unix - n n - - pipe flags=R user=nobody argv=/usr/cyrus/bin/deliver -e -m "
        "${extension} ${user}\n"
        "cyrus-deliver unix - n n - - pipe user=nobody argv=/usr/cyrus/bin/deliver -e -r "
        "${sender} -m ${extension} ${user}\n")
    old = master.get("cyrus-old")
    deliver = master.get("cyrus-deliver")
    assert old is not None and deliver is not None
    agent = PipeAgent(old, old.effective(settings()))
    assert agent.command.flags == {"R"}
    assert agent.command.argv == ("/usr/cyrus/bin/deliver", "-e", "-m", "${extension}", "${user}")
    assert agent.command.uid == pwd.getpwnam("nobody").pw_uid
    # ${user} in argv: one recipient per run, whatever the configured limit says.
    assert agent.recipient_limit() == 1
    assert PipeAgent(deliver, deliver.effective(settings())).recipient_limit() == 1


@pytest.mark.parametrize(("args", "message"), [
    (command("/bin/true", user="root"), "root privileges"),
    (command("/bin/true", user="nobody:root"), "group id 0"),
    (["user=nobody"], "missing argv="),
    (command("/bin/true"), "missing user="),
    (command("/bin/true", user="no-such-user-x"), "unknown username"),
    (command("/bin/true", user="nobody", flags="Rz"), "unknown flag: z"),
    (command("/bin/echo ${bogus}", user="nobody"), "unknown macro name"),
    (["user=nobody", "colour=blue", "argv=/bin/true"], "unknown attribute"),
    (command("/bin/true", user="nobody", size="ten"), "bad size="),
    (command("/bin/true", user="nobody", chroot="/x"), "chroot="),
])
def test_bad_attributes_are_clear_errors(args: list[str], message: str) -> None:
    with pytest.raises(PipeConfigError, match=message) as caught:
        parse_pipe_attributes(args, service="cyrus", where="master.cf:7")
    assert "master.cf:7" in str(caught.value) and "cyrus" in str(caught.value)


def test_mail_owner_is_refused() -> None:
    with pytest.raises(PipeConfigError, match="mail system owner"):
        parse_pipe_attributes(command("/bin/true", user="nobody"), mail_owner="nobody")


def test_recipient_macro_allows_the_configured_limit() -> None:
    cfg = settings("bsmtp_destination_recipient_limit = 7\n")
    plain = parse_pipe_attributes(command("/usr/sbin/sendmail -- ${recipient}", user="nobody"),
                                  service="bsmtp")
    assert PipeAgent.from_command(plain, cfg).recipient_limit() == 7
    stamped = parse_pipe_attributes(
        command("/usr/sbin/sendmail -- ${recipient}", user="nobody", flags="D"), service="bsmtp")
    assert PipeAgent.from_command(stamped, cfg).recipient_limit() == 1


def test_eol_escapes() -> None:
    assert unescape_eol(r"\r\n") == b"\r\n"
    assert unescape_eol(r"\015\012") == b"\r\n"
    assert unescape_eol("x\\\\") == b"x\\"


# -- argv macros -------------------------------------------------------------------------------

def test_seed_argv_with_extension_user_and_empty_extension(tmp_path: Path) -> None:
    seed = parse_pipe_attributes(
        command("/usr/sbin/deliver -e -r ${sender} -m ${extension} ${user}", user="nobody"))
    req = request(tmp_path / "m", "Alice+Lists@Example.COM")
    assert expand_argv(seed, req, req.recipients, "+") == [
        "/usr/sbin/deliver", "-e", "-r", "s@remote.example", "-m", "Lists", "Alice"]
    req = request(tmp_path / "m", "bob@example.com", sender="")
    # An empty extension is an empty argument; the null sender is MAILER-DAEMON.
    assert expand_argv(seed, req, req.recipients, "+") == [
        "/usr/sbin/deliver", "-e", "-r", "MAILER-DAEMON", "-m", "", "bob"]


def test_empty_user_drops_the_argument_for_bulletin_boards(tmp_path: Path) -> None:
    seed = parse_pipe_attributes(command("deliver -m ${extension} ${user}", user="nobody"))
    req = request(tmp_path / "m", "+shared@example.com")
    assert expand_argv(seed, req, req.recipients, "+") == ["deliver", "-m", "shared"]


def test_flags_u_h_q_and_per_recipient_arguments(tmp_path: Path) -> None:
    folded = parse_pipe_attributes(
        command("x ${user} ${domain} ${nexthop} ${recipient} ${original_recipient}",
                user="nobody", flags="uh"))
    req = request(tmp_path / "m", "Ann.Lee+X@Example.COM", nexthop="MX.Example.COM")
    assert expand_argv(folded, req, req.recipients, "+") == [
        "x", "ann.lee", "example.com", "mx.example.com", "ann.lee+x@example.com",
        "ann.lee+x@example.com"]
    quoted = parse_pipe_attributes(command("x -f ${sender} -- ${recipient}", user="nobody",
                                           flags="q"))
    req = request(tmp_path / "m", "john doe@example.com", "b@example.com",
                  sender="odd user@x.example")
    assert expand_argv(quoted, req, req.recipients, "") == [
        "x", "-f", '"odd user"@x.example', "--", '"john doe"@example.com', "b@example.com"]


def test_size_mailbox_queue_id_and_literal_dollar(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.write_bytes(MESSAGE)
    cmd = parse_pipe_attributes(command("x $size ${mailbox} $(queue_id) $$1 ${extension?has-ext}",
                                        user="nobody"))
    req = request(path, "u+e@d.example")
    assert expand_argv(cmd, req, req.recipients, "+") == [
        "x", str(len(MESSAGE)), "u+e", "QID1", "$1", "has-ext"]


# -- the message copy --------------------------------------------------------------------------

def test_render_copy_flags_in_postfix_order() -> None:
    out = render_copy(MESSAGE, flags="FRODB.>", sender="", null_sender="MAILER-DAEMON",
                      delivered_to="a@example.com", original_recipient="A@example.com",
                      eol=b"\r\n", now=0.0)
    lines = out.split(b"\r\n")
    assert lines[0].startswith(b"From MAILER-DAEMON  ")
    assert lines[1:4] == [b"Return-Path: <MAILER-DAEMON>", b"X-Original-To: A@example.com",
                          b"Delivered-To: a@example.com"]
    assert b">From the start" in lines and b"..dot line" in lines
    assert out.endswith(b"end\r\n\r\n")


def test_render_copy_without_flags_is_the_message_with_lf() -> None:
    assert render_copy(MESSAGE, flags="", sender="s@x", null_sender="", delivered_to=None,
                       original_recipient=None) == MESSAGE.replace(b"\r\n", b"\n")


@given(st.binary(max_size=300))
def test_render_copy_never_crashes_and_keeps_every_line(body: bytes) -> None:
    out = render_copy(body, flags="", sender="", null_sender="", delivered_to=None,
                      original_recipient=None)
    assert out.replace(b"\n", b"") == body.replace(b"\r\n", b"\n").replace(b"\n", b"")


# -- exit statuses -----------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "status", "dsn"), [
    (0, Status.SENT, "2.0.0"),
    (75, Status.DEFERRED, "4.3.0"),  # EX_TEMPFAIL
    (71, Status.DEFERRED, "4.3.0"),  # EX_OSERR
    (67, Status.BOUNCED, "5.1.1"),  # EX_NOUSER
    (68, Status.BOUNCED, "5.1.2"),
    (73, Status.BOUNCED, "5.2.0"),
    (77, Status.BOUNCED, "5.7.0"),
    (78, Status.BOUNCED, "5.3.5"),
    (1, Status.BOUNCED, "5.3.0"),  # not a sysexits code
])
def test_exit_status_table(code: int, status: Status, dsn: str) -> None:
    outcome = judge_exit(returncode=code, output=b"", command="/x", timed_out=False,
                         service="cyrus")
    assert (outcome.status, outcome.dsn) == (status, dsn)


def test_output_status_code_wins_and_output_is_reported() -> None:
    outcome = judge_exit(returncode=75, output=b"5.2.2 over quota\nmore\n", command="/x",
                         timed_out=False, service="s")
    assert (outcome.status, outcome.dsn, outcome.text) == (Status.BOUNCED, "5.2.2",
                                                           "over quota more")
    outcome = judge_exit(returncode=67, output=b"no\tsuch\x01user\n", command="/x",
                         timed_out=False, service="s")
    assert outcome.text == "user unknown. Command output: no such_user"


def test_signal_defers_and_time_limit_bounces() -> None:
    signalled = judge_exit(returncode=-9, output=b"", command="/x", timed_out=False, service="s")
    assert (signalled.status, signalled.dsn) == (Status.DEFERRED, "4.3.0")
    timed = judge_exit(returncode=-9, output=b"", command="/x", timed_out=True, service="s")
    assert (timed.status, timed.dsn) == (Status.BOUNCED, "5.3.0")
    assert "time limit" in timed.text


@given(st.binary(max_size=200))
def test_printable_output_is_one_printable_line(raw: bytes) -> None:
    text = printable_output(raw)
    assert "\n" not in text and all(c.isprintable() for c in text)


# -- real commands -----------------------------------------------------------------------------

@pytest.fixture
def spool() -> Iterator[Path]:
    with traversable_tmpdir("smpipe-") as path:
        out = path / "out"
        out.mkdir()
        out.chmod(0o777)
        yield path


def _script(spool: Path, body: str) -> str:
    script = spool / "cmd.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def _deliver(agent: PipeAgent, req: DeliveryRequest, run: LoopRunner = asyncio.run,
             ) -> list[tuple[int, Status, str, str]]:
    """One delivery; `run` is the run_on_loop fixture where a command really runs."""
    results = run(agent.deliver(req))
    return [(r.index, r.status, r.dsn, r.text) for r in results]


@needs_root
def test_seed_cyrus_deliver_runs_as_user_with_message_on_stdin(spool: Path,
                                                               run_on_loop: LoopRunner) -> None:
    out = spool / "out"
    script = _script(spool, f'id -u > {out}/uid.$5\nprintf "%s|" "$@" > {out}/args.$5\n'
                            f'cat > {out}/msg.$5\n')
    message = spool / "msg"
    message.write_bytes(MESSAGE)
    cfg = settings("recipient_delimiter = +\n")
    cmd = parse_pipe_attributes(
        command(f"{script} -r ${{sender}} -m ${{extension}} ${{user}}", user=UNPRIVILEGED,
                flags="R"), service="cyrus-deliver")
    agent = PipeAgent.from_command(cmd, cfg)
    req = request(message, "alice+Lists@example.com", "bob@example.com", cfg=cfg)
    results = _deliver(agent, req, run_on_loop)
    assert [r[1] for r in results] == [Status.SENT, Status.SENT]
    assert results[0][3] == "delivered via cyrus-deliver service"
    # Two runs, one per recipient, each with its own arguments.
    assert (out / "args.alice").read_text() == "-r|s@remote.example|-m|Lists|alice|"
    assert (out / "args.bob").read_text() == "-r|s@remote.example|-m||bob|"
    assert (out / "uid.bob").read_text().strip() == str(pwd.getpwnam(UNPRIVILEGED).pw_uid)
    assert (out / "msg.alice").read_bytes() == (
        b"Return-Path: <s@remote.example>\n" + MESSAGE.replace(b"\r\n", b"\n"))


@needs_root
def test_exit_status_and_stderr_reach_the_result(spool: Path, run_on_loop: LoopRunner) -> None:
    message = spool / "msg"
    message.write_bytes(MESSAGE)
    script = _script(spool, 'cat >/dev/null; echo "mailbox $1 unknown" >&2; exit 67\n')
    cmd = parse_pipe_attributes(command(f"{script} ${{user}}", user=UNPRIVILEGED))
    results = _deliver(PipeAgent.from_command(cmd, settings()),
                       request(message, "zed@example.com"), run_on_loop)
    assert results == [(0, Status.BOUNCED, "5.1.1",
                        "user unknown. Command output: mailbox zed unknown")]
    script = _script(spool, "exit 75\n")  # does not read its input: EPIPE is no error
    cmd = parse_pipe_attributes(command(script, user=UNPRIVILEGED))
    results = _deliver(PipeAgent.from_command(cmd, settings()), request(message, "a@x"),
                       run_on_loop)
    assert results == [(0, Status.DEFERRED, "4.3.0", "temporary failure")]


@needs_root
def test_time_limit_kills_the_command_and_its_children(spool: Path,
                                                      run_on_loop: LoopRunner) -> None:
    message = spool / "msg"
    message.write_bytes(MESSAGE)
    script = _script(spool, f"sleep 30 & echo $! > {spool}/out/child\nwait\n")
    cmd = parse_pipe_attributes(command(script, user=UNPRIVILEGED), service="slow")
    cfg = settings("slow_time_limit = 1s\n")
    results = _deliver(PipeAgent.from_command(cmd, cfg), request(message, "a@x", cfg=cfg),
                       run_on_loop)
    assert results[0][1:3] == (Status.BOUNCED, "5.3.0")
    child = int((spool / "out" / "child").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        stat = Path(f"/proc/{child}/stat").read_text() if Path(f"/proc/{child}").exists() else ""
        if " Z " in stat:
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or " Z " in Path(f"/proc/{child}/stat").read_text()


def test_size_limit_and_delivered_to_loop_bounce_without_running(tmp_path: Path) -> None:
    message = tmp_path / "msg"
    message.write_bytes(MESSAGE)
    never = "/nonexistent/command"
    small = parse_pipe_attributes(command(never, user=UNPRIVILEGED, size="10"))
    assert _deliver(PipeAgent.from_command(small, settings()), request(message, "a@x")) == [
        (0, Status.BOUNCED, "5.2.3", "message file too big")]
    looped = parse_pipe_attributes(command(never, user=UNPRIVILEGED, flags="D"))
    assert _deliver(PipeAgent.from_command(looped, settings()),
                    request(message, "Looped@Example.com")) == [
        (0, Status.BOUNCED, "5.4.6", "mail forwarding loop for Looped@Example.com")]


@needs_root
def test_missing_command_defers_or_bounces_like_exec_failure(spool: Path,
                                                             run_on_loop: LoopRunner) -> None:
    message = spool / "msg"
    message.write_bytes(MESSAGE)
    cmd = parse_pipe_attributes(command(str(spool / "absent"), user=UNPRIVILEGED))
    results = _deliver(PipeAgent.from_command(cmd, settings()), request(message, "a@x"),
                       run_on_loop)
    assert results[0][1:3] == (Status.DEFERRED, "4.3.0")


def test_bad_entry_defers_its_mail_with_the_reason(tmp_path: Path) -> None:
    master = parse_master_cf("bad unix - n n - - pipe user=root argv=/bin/true\n", "master.cf")
    service = master.get("bad")
    assert service is not None
    message = tmp_path / "msg"
    message.write_bytes(MESSAGE)
    [(_, status, dsn, text)] = _deliver(PipeAgent(service, settings()),
                                            request(message, "a@x"))
    assert (status, dsn) == (Status.DEFERRED, "4.3.5")
    assert "master.cf:1" in text and "root privileges" in text


# -- the seed's section 9.1 entries, with `sealmail deliver` into a running store ----------------

@pytest.fixture(scope="module")
def store_and_command() -> Iterator[tuple[object, str, str]]:
    if os.geteuid() != 0:
        pytest.skip("the pipe user needs root to run commands as another account")
    import grp

    from tests.support.instance import SealmailInstance
    from tests.support.pipe_user import ensure_pipe_user, sealmail_command_for

    user = ensure_pipe_user()
    group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    with traversable_tmpdir("smpipe9-") as path:
        command_path = sealmail_command_for(user, path)
        with SealmailInstance(path / "store", ("alice", "frank"), socket_group=group) as store:
            conf = str(store.conf_path)
            store.sealmail("mailbox", "-C", conf, "create", "user.alice.Lists")
            store.sealmail("mailbox", "-C", conf, "setacl", "user.alice.Lists", "anyone", "p")
            yield store, command_path, user


def _stored(store: object, mailbox: str, marker: bytes) -> list[bytes]:
    with store.store() as opened:  # type: ignore[attr-defined]
        return [data for record in opened.messages(mailbox)
                if marker in (data := opened.message_bytes(mailbox, record.uid))]


def test_seed_section_9_1_entries_deliver_through_sealmail_deliver(
        store_and_command: tuple[object, str, str], tmp_path: Path,
        run_on_loop: LoopRunner) -> None:
    store, sealmail_command, user = store_and_command
    conf = store.conf_path  # type: ignore[attr-defined]
    master = parse_master_cf(
        # The seed's lines as written; only the deliver path (and its -C) are adapted.
        f"cyrus-deliver unix - n n - - pipe user={user} argv={sealmail_command} deliver "
        f"-C {conf} -e -r ${{sender}} -m ${{extension}} ${{user}}\n"
        f"cyrus-old unix - n n - - pipe flags=R user={user} argv={sealmail_command} deliver "
        f"-C {conf} -e -m ${{extension}} ${{user}}\n", "master.cf")
    cfg = settings("recipient_delimiter = +\n")
    new, old = master.get("cyrus-deliver"), master.get("cyrus-old")
    assert new is not None and old is not None
    message = tmp_path / "msg"
    marker = f"<{tmp_path.name}@test>".encode()
    message.write_bytes(b"Message-ID: " + marker + b"\r\nSubject: seed 9.1\r\n\r\n.dot\r\nbody\r\n")
    results = run_on_loop(PipeAgent(new, new.effective(cfg)).deliver(
        request(message, "alice@example.com", "alice+Lists@example.com", "zed@example.com",
                cfg=cfg)))
    assert [(r.status, r.dsn) for r in results] == [
        (Status.SENT, "2.0.0"), (Status.SENT, "2.0.0"), (Status.BOUNCED, "5.1.1")]
    assert "5.1.1" in results[2].text
    [inbox] = _stored(store, "user.alice", marker)
    [folder] = _stored(store, "user.alice.Lists", marker)
    for data in (inbox, folder):
        assert data.count(b"Return-Path: <s@remote.example>") == 1
        assert data.endswith(b"\r\n.dot\r\nbody\r\n")
    # flags=R: pipe adds the Return-Path, deliver gets no -r; exactly one in the store.
    [result] = run_on_loop(PipeAgent(old, old.effective(cfg)).deliver(
        request(message, "frank@example.com", cfg=cfg)))
    assert result.status is Status.SENT
    [stored] = _stored(store, "user.frank", marker)
    assert stored.count(b"Return-Path:") == 1 and b"Return-Path: <s@remote.example>" in stored

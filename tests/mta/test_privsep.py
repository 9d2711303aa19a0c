"""The privileged helper of an MTA started as root (sealmail.mta.privsep), and the log's place."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.loops import LoopRunner
from tests.support.peers import traversable_tmpdir

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta import master as mta_master
from sealmail.mta import privsep
from sealmail.mta.agents.local import MailboxError
from sealmail.mta.agents.pipe import CommandRun
from sealmail.mta.agents.privileges import InProcessPrivileges, read_as
from sealmail.mta.config import MainConfig
from sealmail.mta.config.main_cf import parse_main_cf


def unprivileged() -> tuple[int, int]:
    """An account the helper may act as: nobody when we are root, else ourselves."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return nobody.pw_uid, nobody.pw_gid
    return os.getuid(), os.getgid()


@pytest.fixture
def helper() -> Iterator[privsep.HelperClient]:
    pid, control = privsep.start_helper()
    client = privsep.HelperClient(control, pid)
    yield client
    client.close()


@pytest.fixture
def shared() -> Iterator[Path]:
    with traversable_tmpdir("smpriv-") as path:
        yield path


@pytest.mark.parametrize("header", [
    {"op": "run", "argv": ["/bin/true"], "uid": 0, "gid": 1, "env": {}, "time_limit": 1,
     "output_limit": 10},
    {"op": "run", "argv": ["/bin/true"], "uid": 1, "gid": 0, "env": {}, "time_limit": 1,
     "output_limit": 10},
    {"op": "append", "path": "/etc/passwd", "uid": 0, "gid": 0},
    {"op": "read", "path": "/etc/shadow", "uid": 0, "gid": 0, "limit": 10},
    {"op": "run", "argv": "/bin/true", "uid": 1, "gid": 1, "env": {}, "time_limit": 1,
     "output_limit": 10},
    {"op": "run", "argv": ["/bin/true"], "uid": True, "gid": 1, "env": {}, "time_limit": 1,
     "output_limit": 10},
    {"op": "run", "argv": ["/bin/\0true"], "uid": 1, "gid": 1, "env": {}, "time_limit": 1,
     "output_limit": 10},
    {"op": "unlink", "path": "/etc/passwd", "uid": 1, "gid": 1},
    {"uid": "1", "gid": 1},
])
def test_the_helper_refuses_root_and_malformed_requests(header: dict[str, object]) -> None:
    reply, data = privsep.serve_request(header, b"x")
    assert reply["error"] == "refused" and data == b""


def test_the_spool_is_the_only_place_a_new_mbox_needs_no_write_right(tmp_path: Path) -> None:
    """Without this check, a requester could have root create a file of its choosing anywhere
    (owned by an account, but where that account could not have created it)."""
    uid, gid = unprivileged()
    name = pwd.getpwuid(uid).pw_name
    spool = tmp_path / "spool"
    spool.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    header = {"op": "append", "uid": uid, "gid": gid, "size_limit": 0, "lock_attempts": 1,
              "lock_delay": 0, "stale_lock_time": 500, "spool": True}
    for path in (elsewhere / name, spool / "someone-else", elsewhere / "x"):
        reply, _ = privsep.serve_request({**header, "path": str(path)}, b"From x\n\n",
                                         spool_directory=str(spool))
        assert reply["error"] == "refused", path
        assert not path.exists()
    reply, _ = privsep.serve_request({**header, "path": str(spool / name)}, b"From x\n\n",
                                     spool_directory=str(spool))
    assert "error" not in reply, reply
    assert (spool / name).read_bytes() == b"From x\n\n"
    assert (spool / name).stat().st_uid == uid


def test_commands_files_and_reads_through_the_helper(
        helper: privsep.HelperClient, shared: Path, run_on_loop: LoopRunner) -> None:
    uid, gid = unprivileged()
    out = shared / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)

    async def scenario() -> tuple[CommandRun, bytes, tuple[int, bytes]]:
        run = await helper.run_command(
            ["/bin/sh", "-c", "id -u; cat; exit 3"], b"the message\n", uid=uid, gid=gid,
            time_limit=30, cwd="/", env={"PATH": "/usr/bin:/bin"}, output_limit=4096)
        mbox = out / "mbox"
        await helper.append_mbox(mbox, b"From x\n\nbody\n", owner=(uid, gid), size_limit=0,
                                 lock_attempts=1, lock_delay=0, stale_lock_time=500,
                                 spool=False)
        read = await helper.read_file(str(mbox), uid=uid, gid=gid, limit=100)
        return run, mbox.read_bytes(), read

    run, mbox, read = run_on_loop(scenario())
    assert run == CommandRun(3, f"{uid}\nthe message\n".encode(), False)
    assert mbox == b"From x\n\nbody\n" and read == (uid, mbox)
    assert (out / "mbox").stat().st_uid == uid


def test_helper_errors_come_back_as_the_agents_exceptions(
        helper: privsep.HelperClient, shared: Path) -> None:
    uid, gid = unprivileged()
    with pytest.raises(FileNotFoundError):
        asyncio.run(helper.read_file(str(shared / "absent"), uid=uid, gid=gid, limit=10))
    (shared / "link").symlink_to("/etc/passwd")
    with pytest.raises(OSError, match=r"link|symbolic|loop"):
        asyncio.run(helper.read_file(str(shared / "link"), uid=uid, gid=gid, limit=10))
    with pytest.raises(MailboxError) as caught:
        asyncio.run(helper.append_mbox(shared / "link", b"x", owner=(uid, gid), size_limit=0,
                                       lock_attempts=1, lock_delay=0, stale_lock_time=500,
                                       spool=False))
    assert caught.value.dsn == "5.2.0"
    with pytest.raises(MailboxError, match="never writes as root"):
        asyncio.run(helper.append_mbox(shared / "root", b"x", owner=(0, 0), size_limit=0,
                                       lock_attempts=1, lock_delay=0, stale_lock_time=500,
                                       spool=False))
    assert not (shared / "root").exists()


def test_a_gone_helper_is_an_error_not_a_hang(shared: Path) -> None:
    pid, control = privsep.start_helper()
    client = privsep.HelperClient(control, pid)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    uid, gid = unprivileged()
    with pytest.raises(OSError, match="privileged helper unavailable"):
        asyncio.run(client.read_file(str(shared), uid=uid, gid=gid, limit=10))
    client.control.close()


def test_oversized_and_non_object_frames_are_refused() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(privsep._LENGTH.pack(privsep.MAX_HEADER + 1))
        with pytest.raises(ValueError, match="over the limit"):
            privsep._recv(theirs)
        privsep._send_frame(ours, b"[1, 2]")
        privsep._send_frame(ours, b"")
        with pytest.raises(ValueError, match="JSON object"):
            privsep._recv(theirs)


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as another account needs root")
def test_read_as_refuses_what_the_account_may_not_read(shared: Path) -> None:
    uid, gid = unprivileged()
    secret = shared / "secret"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    with pytest.raises(PermissionError):
        read_as(str(secret), uid, gid, 100)
    secret.chmod(0o644)
    assert read_as(str(secret), uid, gid, 100) == (0, b"root only\n")


def test_in_process_privileges_cap_output_and_tolerate_unread_input(
        run_on_loop: LoopRunner) -> None:
    run = run_on_loop(InProcessPrivileges().run_command(
        ["/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; exit 4"], b"y" * 1_000_000,
        uid=os.geteuid(), gid=os.getegid(), time_limit=30, cwd="/", env=None, output_limit=10))
    assert run == CommandRun(4, b"x" * 10, False)


def settings(text: str, tmp_path: Path) -> MainConfig:
    return MainConfig.from_document(parse_main_cf(
        f"queue_directory = {tmp_path}/q\ndata_directory = {tmp_path}/d\n" + text,
        str(tmp_path / "main.cf")))


def test_mail_owner_root_needs_allow_root_services(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mail_owner = root has uid 0"):
        privsep.mail_owner_account(settings("mail_owner = root\n", tmp_path))
    owner = privsep.mail_owner_account(
        settings("mail_owner = root\nallow_root_services = yes\n", tmp_path))
    assert owner.uid == 0
    with pytest.raises(ConfigError, match="no such account"):
        privsep.mail_owner_account(settings("mail_owner = no-such-account-here\n", tmp_path))


def test_without_syslog_or_maillog_file_the_log_is_a_file_under_the_instance(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mta_master, "SYSLOG_SOCKET", str(tmp_path / "no-syslog"))
    main = settings("", tmp_path)
    assert mta_master.maillog_destination(main) == f"{tmp_path}/d/maillog"
    handler = mta_master.open_maillog(main)
    try:
        assert Path(getattr(handler, "baseFilename", "")) == tmp_path / "d" / "maillog"
    finally:
        handler.close()
    (tmp_path / "syslog").touch()
    monkeypatch.setattr(mta_master, "SYSLOG_SOCKET", str(tmp_path / "syslog"))
    assert mta_master.maillog_destination(main) == mta_master.SYSLOG
    assert mta_master.describe_destination(mta_master.SYSLOG).startswith("syslog (")
    explicit = settings(f"maillog_file = {tmp_path}/log\n", tmp_path)
    assert mta_master.maillog_destination(explicit) == f"{tmp_path}/log"

"""Privilege separation of the MTA started as root: Postfix's split, in one master.

Postfix's master binds its listeners as root, and then every daemon that reads the network or
the queue runs as `mail_owner`; only local(8) and pipe(8) keep root, to act as the recipient.
sealmail's master does the same (sealmail.mta.master.run_foreground):

1. `mail_owner_account()` resolves main.cf mail_owner (default `postfix`); uid or gid 0 is
   refused, naming the parameter, unless `allow_root_services = yes` (tests and single-user
   set-ups only; logged loudly).
2. `own_instance()` creates queue_directory and data_directory owned by that account (the
   maildrop's files keep their posters as owners, as Postfix's do).
3. `start_helper()` forks the privileged helper: a root process that holds no listener and
   serves only the three operations of `sealmail.mta.agents.privileges` (run a command as a
   non-root uid, append to an mbox or file for a non-root owner, read a .forward or :include:
   as its account), each request on its own socket passed over a socketpair (SCM_RIGHTS).
4. the listeners are bound, then `sealmail.privileges.switch_to()` makes the master
   mail_owner for good; the smtpd processes it starts inherit that. `HelperClient` becomes
   the agents' privileges.

The wire: each frame is a 4-byte big-endian length and its bytes; a request is a JSON header
frame (never pickle: the requester is the less privileged side) and a data frame; a reply the
same. The helper refuses uid 0 and gid 0 whatever the request says, and ends when the master's
end of the socketpair closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import pwd
import signal
import socket
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealmail.mta.agents.privileges import OUTPUT_LIMIT, read_as
from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.privileges import Account, AccountError, lookup_account

if TYPE_CHECKING:
    from sealmail.mta.agents.pipe import CommandRun

log = logging.getLogger("sealmail.mta.privsep")

MAX_HEADER = 1 << 16  # a request's JSON header (argv, environment, paths)
MAX_DATA = 1 << 30  # a message, a file, a command's output
_LENGTH = struct.Struct(">I")


# --------------------------------------------------------------------------------------------
# The account


def mail_owner_account(main: MainConfig) -> Account:
    """main.cf mail_owner as an account; root refused unless allow_root_services = yes."""
    name = main.get(MAIN.mail_owner).strip()
    try:
        account = lookup_account(name)
    except AccountError:
        raise main.error(MAIN.mail_owner, f"mail_owner = {name}: no such account "
                         "(create it, or name the account the MTA should run as)") from None
    if account.is_root:
        if not main.get(MAIN.allow_root_services):
            raise main.error(MAIN.mail_owner,
                             f"mail_owner = {name} has {'uid' if account.uid == 0 else 'gid'}"
                             " 0: the MTA refuses to serve as root; name an unprivileged "
                             "account, or set allow_root_services = yes (tests and "
                             "single-user set-ups only)")
        log.warning("allow_root_services = yes: the MTA runs every service as %s, parsing "
                    "network input with root privileges", name)
    return account


def _chown_tree(root: Path, owner: Account, *, keep: Sequence[Path] = ()) -> None:
    """root and everything under it owned by `owner` (symlinks themselves, never followed);
    the contents of `keep` directories stay as they are."""
    kept = {str(p) for p in keep}
    os.lchown(root, owner.uid, owner.gid)
    for directory, subdirectories, files in os.walk(root):
        if directory in kept:
            subdirectories[:] = []
            continue
        for name in [*subdirectories, *files]:
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(path).st_uid != owner.uid:
                    os.lchown(path, owner.uid, owner.gid)


def own_instance(main: MainConfig, owner: Account) -> None:
    """queue_directory and data_directory created and owned by mail_owner (as root)."""
    from sealmail.mta.queue import Queue

    queue = Queue.from_config(main)
    queue.create_directories()
    _chown_tree(queue.directory, owner, keep=[queue.maildrop])
    data = Path(main.instance_path(MAIN.data_directory))
    data.mkdir(parents=True, exist_ok=True)
    _chown_tree(data, owner)


# --------------------------------------------------------------------------------------------
# Frames


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise ConnectionError("the other end closed the connection mid-frame")
        chunks.extend(chunk)
    return bytes(chunks)


def _recv_frame(sock: socket.socket, limit: int) -> bytes:
    (size,) = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size))
    if size > limit:
        raise ValueError(f"frame of {size} bytes is over the limit of {limit}")
    return _recv_exactly(sock, size)


def _send(sock: socket.socket, header: dict[str, Any], data: bytes = b"") -> None:
    _send_frame(sock, json.dumps(header).encode())
    _send_frame(sock, data)


def _recv(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    header = json.loads(_recv_frame(sock, MAX_HEADER))
    if not isinstance(header, dict):
        raise ValueError("a header must be a JSON object")
    return header, _recv_frame(sock, MAX_DATA)


# --------------------------------------------------------------------------------------------
# The helper (root)


class Refused(Exception):
    """A request the helper never serves (root, a malformed field)."""


def _int(header: dict[str, Any], name: str, *, unprivileged: bool = False) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Refused(f"{name}: not a non-negative integer")
    if unprivileged and value == 0:
        raise Refused(f"{name} 0: the privileged helper never acts as root")
    return value


def _str(header: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = header.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or "\0" in value:
        raise Refused(f"{name}: not a string")
    return value


def _number(header: dict[str, Any], name: str) -> float:
    value = header.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise Refused(f"{name}: not a non-negative number")
    return float(value)


def _spool_mbox(path: Path, uid: int, spool_directory: str | None) -> None:
    """An mbox the helper creates without the owner's write permission (the mail spool's, as
    local(8) does) must be that account's own file in the spool named at start: otherwise a
    requester could have root create a file of its choosing anywhere."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        raise Refused(f"uid {uid}: no such account") from None
    if spool_directory is None or path.parent != Path(spool_directory) or path.name != name:
        raise Refused(f"{path} is not the mail spool file of {name} in {spool_directory}")


def serve_request(header: dict[str, Any], data: bytes, *, spool_directory: str | None = None,
                  ) -> tuple[dict[str, Any], bytes]:
    """One request, as the helper runs it: a reply header and data. Never raises."""
    from sealmail.mta.agents.local import MailboxError, append_mbox
    from sealmail.mta.agents.pipe import run_command_blocking

    op = header.get("op")
    try:
        uid = _int(header, "uid", unprivileged=True)
        gid = _int(header, "gid", unprivileged=True)
        if op == "run":
            argv = header.get("argv")
            env = header.get("env")
            if not isinstance(argv, list) or not argv or not all(
                    isinstance(a, str) and "\0" not in a for a in argv):
                raise Refused("argv: not a list of strings")
            if not isinstance(env, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
                raise Refused("env: not a mapping of strings")
            run = run_command_blocking(
                argv, data, uid=uid, gid=gid, time_limit=_number(header, "time_limit"),
                cwd=_str(header, "cwd", optional=True), env=env,
                output_limit=min(_int(header, "output_limit"), OUTPUT_LIMIT))
            return {"returncode": run.returncode, "timed_out": run.timed_out}, run.output
        if op == "append":
            path = Path(_str(header, "path") or "")
            if header.get("spool"):
                _spool_mbox(path, uid, spool_directory)
            append_mbox(path, data, owner=(uid, gid),
                        size_limit=_int(header, "size_limit"),
                        lock_attempts=_int(header, "lock_attempts"),
                        lock_delay=_number(header, "lock_delay"),
                        stale_lock_time=_number(header, "stale_lock_time"),
                        spool=bool(header.get("spool")))
            return {"ok": True}, b""
        if op == "read":
            owner, content = read_as(_str(header, "path") or "", uid, gid,
                                     min(_int(header, "limit"), MAX_DATA))
            return {"owner": owner}, content
        raise Refused(f"unknown operation {op!r}")
    except Refused as exc:
        log.error("privileged helper: refused %s request: %s", op, exc)
        return {"error": "refused", "text": str(exc)}, b""
    except MailboxError as exc:
        return {"error": "mailbox", "dsn": exc.dsn, "text": exc.text}, b""
    except OSError as exc:
        return {"error": "os", "errno": exc.errno or errno.EIO,
                "text": exc.strerror or str(exc)}, b""


def _serve_connection(connection: socket.socket, spool_directory: str | None) -> None:
    with connection:
        try:
            header, data = _recv(connection)
        except (OSError, ValueError) as exc:
            log.error("privileged helper: bad request: %s", exc)
            return
        reply, output = serve_request(header, data, spool_directory=spool_directory)
        with contextlib.suppress(OSError):
            _send(connection, reply, output)


def serve(control: socket.socket, spool_directory: str | None = None) -> None:
    """The helper's loop: each message on `control` carries one request's socket; EOF ends."""
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 16, 4)
        except InterruptedError:
            continue
        except OSError:
            return
        if not message and not fds:
            return  # the master is gone
        for fd in fds:
            connection = socket.socket(fileno=fd)
            threading.Thread(target=_serve_connection, args=(connection, spool_directory),
                             name="privileged-request", daemon=True).start()


def start_helper(keep_open: Sequence[int] = (), spool_directory: str | None = None,
                 ) -> tuple[int, socket.socket]:
    """Fork the privileged helper; returns its pid and the master's end of the socketpair.
    `spool_directory` (main.cf mail_spool_directory, read as root at start) is the one place
    where it creates a user's mbox that the user could not create.

    Called before anything else is open (no listener, no thread): the child closes the fds
    in `keep_open` that it must not hold (the pid file lock) and serves until the master
    closes its end. It ignores SIGINT and SIGHUP, which go to the master's process group.
    """
    master_end, helper_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the helper
        status = 0
        try:
            master_end.close()
            for fd in keep_open:
                with contextlib.suppress(OSError):
                    os.close(fd)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            log.info("privileged helper started (pid %d)", os.getpid())
            serve(helper_end, spool_directory)
        except BaseException:  # a forked child must never return into the master's code
            log.exception("privileged helper failed")
            status = 1
        finally:
            os._exit(status)
    helper_end.close()
    return pid, master_end


# --------------------------------------------------------------------------------------------
# The client (the unprivileged master)


class HelperClient:
    """DeliveryPrivileges over the helper: each request on a fresh socketpair, in a thread."""

    def __init__(self, control: socket.socket, pid: int) -> None:
        self.control = control
        self.pid = pid
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close our end (the helper sees EOF and exits) and reap it."""
        self.control.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def request(self, header: dict[str, Any], data: bytes = b"") -> tuple[dict[str, Any], bytes]:
        """Blocking: one request and its reply; OSError when the helper is gone."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours:
            try:
                with self._lock:
                    socket.send_fds(self.control, [b"r"], [theirs.fileno()])
            except OSError as exc:
                raise OSError(errno.EPIPE, f"privileged helper unavailable: {exc}") from None
            finally:
                theirs.close()
            try:
                _send(ours, header, data)
                reply, output = _recv(ours)
            except (OSError, ValueError) as exc:
                raise OSError(errno.EPIPE, f"privileged helper unavailable: {exc}") from None
        return reply, output

    @staticmethod
    def _raise(reply: dict[str, Any]) -> None:
        from sealmail.mta.agents.local import MailboxError

        error = reply.get("error")
        if error is None:
            return
        text = str(reply.get("text", ""))
        if error == "mailbox":
            raise MailboxError(str(reply.get("dsn", "4.3.0")), text)
        if error == "refused":
            raise PermissionError(errno.EPERM, f"refused by the privileged helper: {text}")
        raise OSError(int(reply.get("errno", errno.EIO)), text)

    async def run_command(self, argv: Sequence[str], data: bytes, *, uid: int, gid: int,
                          time_limit: float, cwd: str | None, env: dict[str, str] | None,
                          output_limit: int = OUTPUT_LIMIT) -> CommandRun:
        from sealmail.mta.agents.pipe import CommandRun

        header = {"op": "run", "argv": list(argv), "uid": uid, "gid": gid,
                  "time_limit": time_limit, "cwd": cwd, "env": env or {},
                  "output_limit": output_limit}
        reply, output = await asyncio.to_thread(self.request, header, data)
        self._raise(reply)
        returncode = reply.get("returncode")
        return CommandRun(returncode if isinstance(returncode, int) else None, output,
                          bool(reply.get("timed_out")))

    async def append_mbox(self, path: Path, data: bytes, *, owner: tuple[int, int],
                          size_limit: int, lock_attempts: int, lock_delay: float,
                          stale_lock_time: float, spool: bool) -> None:
        from sealmail.mta.agents.local import MailboxError

        if owner[0] == 0:
            raise MailboxError("4.3.5", f"cannot deliver to {path} as root: the MTA's "
                                        "privileged helper never writes as root (alias root to "
                                        "a user)")
        header = {"op": "append", "path": str(path), "uid": owner[0], "gid": owner[1],
                  "size_limit": size_limit, "lock_attempts": lock_attempts,
                  "lock_delay": lock_delay, "stale_lock_time": stale_lock_time, "spool": spool}
        reply, _ = await asyncio.to_thread(self.request, header, data)
        self._raise(reply)

    async def read_file(self, path: str, *, uid: int, gid: int, limit: int,
                        ) -> tuple[int, bytes]:
        header = {"op": "read", "path": path, "uid": uid, "gid": gid, "limit": limit}
        reply, content = await asyncio.to_thread(self.request, header)
        self._raise(reply)
        return int(reply.get("owner", -1)), content

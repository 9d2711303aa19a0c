"""The `pipe` delivery agent: hand a message to an external command, as Postfix's pipe(8).

A master.cf entry names the command and how to feed it:

    cyrus-deliver unix - n n - - pipe user=cyrus argv=/usr/sbin/deliver -e -r ${sender}
        -m ${extension} ${user}

Attributes (pipe(8) "COMMAND ATTRIBUTE SYNTAX"): `flags=BDFORXhqu.>`, `user=name[:group]`
(required; never root, never the mail system owner), `size=`, `eol=` (C escapes), `null_sender=`,
`directory=`, and `argv=` last (required). `chroot=` is refused: sealmail never chroots.

Macros in argv: `$name`, `${name}`, `$(name)`, `$$`, `${name?text}`, `${name:text}`. An argument
that mentions a per-recipient macro (recipient, original_recipient, user, extension, mailbox,
domain) becomes one argument per recipient; an empty ${user} drops that argument, which is how
Cyrus bulletin-board delivery (`+folder@domain`) works. Without the `u` flag ${user}, ${extension}
and ${mailbox} keep their case (Postfix >= 2.x); `h` folds domain parts, `q` quotes local parts.

The command runs as `user=`'s uid and gid (no supplementary groups), in its own session so a
timeout (`<transport>_time_limit`, default $command_time_limit) kills it and its children. Its
exit status is read as pipe(8) does: 0 delivers; output that starts with an enhanced status code
wins; else the <sysexits.h> table (EX_TEMPFAIL and EX_OSERR defer, EX_NOUSER bounces 5.1.1...);
an unknown status bounces 5.3.0; a signal defers; the time limit bounces 5.3.0. Up to
OUTPUT_LIMIT bytes of the command's output (stdout and stderr together) go into the result text,
newlines and tabs as spaces, other non-printables as `_`.

A command whose argv depends on the recipient (`${user}` ...) or flags D/O needs one recipient per
delivery (pipe(8) "SINGLE-RECIPIENT DELIVERY"): `recipient_limit()` says so to the queue manager,
and the agent splits a larger request into single-recipient runs itself, so it is never wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import re
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.agents import DeliveryRequest, QueuedRecipient, RecipientResult, Status
from sealmail.mta.agents.privileges import OUTPUT_LIMIT, DeliveryPrivileges, current
from sealmail.mta.config import MainConfig, MasterService
from sealmail.mta.config.parameters import MAIN, transport_recipient_limit, transport_time_limit

log = logging.getLogger("sealmail.mta.pipe")

SUCCESS_OUTPUT_LIMIT = 100  # pipe(8) adds at most this much output to a "delivered" text
DEFAULT_PATH = "/usr/bin:/bin"

FLAG_LETTERS = frozenset("BDFORXhqu.>")
PER_RECIPIENT_MACROS = frozenset(
    {"recipient", "original_recipient", "user", "extension", "mailbox", "domain"})
MACROS = PER_RECIPIENT_MACROS | {
    "sender", "nexthop", "size", "queue_id", "client_address", "client_hostname", "client_port",
    "client_protocol", "client_helo", "sasl_method", "sasl_username", "sasl_sender"}
# Macros that make one command serve one recipient only (their value is not an address list).
SINGLE_RECIPIENT_MACROS = frozenset({"user", "extension", "mailbox", "domain"})


class PipeConfigError(ConfigError):
    """A pipe(8) attribute in master.cf is wrong; the message names file, line and service."""


# --------------------------------------------------------------------------------------------
# <sysexits.h>, as Postfix's sys_exits table reads it (RFC 3463 codes)

@dataclass(frozen=True, slots=True)
class ExitMeaning:
    dsn: str
    text: str


SYSEXITS: dict[int, ExitMeaning] = {
    64: ExitMeaning("5.3.0", "command line usage error"),  # EX_USAGE
    65: ExitMeaning("5.6.0", "data format error"),  # EX_DATAERR
    66: ExitMeaning("5.3.0", "cannot open input"),  # EX_NOINPUT
    67: ExitMeaning("5.1.1", "user unknown"),  # EX_NOUSER
    68: ExitMeaning("5.1.2", "host name unknown"),  # EX_NOHOST
    69: ExitMeaning("5.3.0", "service unavailable"),  # EX_UNAVAILABLE
    70: ExitMeaning("5.3.0", "internal software error"),  # EX_SOFTWARE
    71: ExitMeaning("4.3.0", "system resource problem"),  # EX_OSERR
    72: ExitMeaning("5.3.0", "critical OS file missing"),  # EX_OSFILE
    73: ExitMeaning("5.2.0", "can't create user output file"),  # EX_CANTCREAT
    74: ExitMeaning("5.3.0", "input/output error"),  # EX_IOERR
    75: ExitMeaning("4.3.0", "temporary failure"),  # EX_TEMPFAIL
    76: ExitMeaning("5.5.0", "remote error in protocol"),  # EX_PROTOCOL
    77: ExitMeaning("5.7.0", "permission denied"),  # EX_NOPERM
    78: ExitMeaning("5.3.5", "local configuration error"),  # EX_CONFIG
}

_DSN_PREFIX = re.compile(r"([45])\.(\d{1,3})\.(\d{1,3})(?:\s+|\Z)")


def exit_meaning(status: int) -> ExitMeaning:
    """The sysexits meaning of an exit status; an unknown one is permanent (5.3.0)."""
    return SYSEXITS.get(status, ExitMeaning("5.3.0", f"unknown mail system error {status}"))


# --------------------------------------------------------------------------------------------
# Outcome of one command run: pure, so the exit-status rules are tested without processes

@dataclass(frozen=True, slots=True)
class CommandOutcome:
    status: Status
    dsn: str
    text: str


def printable_output(raw: bytes, limit: int = OUTPUT_LIMIT) -> str:
    """Command output as pipe(8) reports it: tabs and newlines as spaces, other controls `_`."""
    text = raw[:limit].decode("utf-8", "replace").replace("\t", " ").replace("\n", " ")
    text = "".join(c if c.isprintable() else "_" for c in text)
    return text.strip()


def judge_exit(*, returncode: int | None, output: bytes, command: str, timed_out: bool,
               service: str) -> CommandOutcome:
    """Map a finished command to a delivery outcome, in pipe(8)'s order of precedence."""
    log_text = printable_output(output)
    tail = f". Command output: {log_text}" if log_text else ""
    if timed_out:
        return CommandOutcome(Status.BOUNCED, "5.3.0",
                              f'Command time limit exceeded: "{command}"{tail}')
    if returncode is None:  # still running after wait: treated as killed
        return CommandOutcome(Status.DEFERRED, "4.3.0", f'Command did not finish: "{command}"')
    if returncode < 0:
        return CommandOutcome(Status.DEFERRED, "4.3.0",
                              f'Command died with signal {-returncode}: "{command}"{tail}')
    if returncode == 0:
        # Flag X only changes the DSN action (relayed -> delivered), which we do not report.
        kept = log_text[:SUCCESS_OUTPUT_LIMIT]
        return CommandOutcome(Status.SENT, "2.0.0",
                              f"delivered via {service} service" + (f" ({kept})" if kept else ""))
    found = _DSN_PREFIX.match(log_text)
    if found:  # "When the output begins with a 4.X.X or 5.X.X enhanced status code ..."
        dsn = f"{found.group(1)}.{found.group(2)}.{found.group(3)}"
        text = log_text[found.end():].strip() or log_text
        return CommandOutcome(Status.DEFERRED if dsn[0] == "4" else Status.BOUNCED, dsn, text)
    if returncode in SYSEXITS:
        meaning = SYSEXITS[returncode]
        status = Status.DEFERRED if meaning.dsn[0] == "4" else Status.BOUNCED
        return CommandOutcome(status, meaning.dsn, meaning.text + tail)
    return CommandOutcome(Status.BOUNCED, "5.3.0",
                          f'Command died with status {returncode}: "{command}"{tail}')


# --------------------------------------------------------------------------------------------
# Attributes of a master.cf pipe entry

@dataclass(frozen=True, slots=True)
class PipeCommand:
    """The parsed `flags= user= ... argv=...` of one pipe service."""

    service: str
    argv: tuple[str, ...]
    user: str
    uid: int
    gid: int
    flags: frozenset[str] = frozenset()
    size_limit: int = 0  # 0: none
    eol: bytes = b"\n"
    null_sender: str = "MAILER-DAEMON"
    directory: str | None = None

    @property
    def macros(self) -> frozenset[str]:
        found: set[str] = set()
        for arg in self.argv:
            found |= macro_names(arg)
        return frozenset(found)

    def single_recipient(self) -> bool:
        """True when one run can serve only one recipient (pipe(8) SINGLE-RECIPIENT DELIVERY)."""
        return bool(self.flags & {"D", "O"}) or bool(self.macros & SINGLE_RECIPIENT_MACROS)


def unescape_eol(text: str) -> bytes:
    r"""pipe(8)'s `eol=`: \a \b \f \n \r \t \v \ddd (octal, up to three digits) and \\."""
    simple = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
    out = bytearray()
    index = 0
    raw = text.encode()
    while index < len(raw):
        char = raw[index]
        if char != 0x5C or index + 1 == len(raw):
            out.append(char)
            index += 1
            continue
        following = chr(raw[index + 1])
        if following in simple:
            out.append(simple[following])
            index += 2
            continue
        digits = re.match(rb"[0-7]{1,3}", raw[index + 1:index + 4])
        if digits:
            out.append(int(digits.group(0), 8) & 0xFF)
            index += 1 + len(digits.group(0))
            continue
        out.append(raw[index + 1])  # an unknown escape gives the character itself
        index += 2
    return bytes(out)


def _account(user: str, where: str) -> tuple[str, int, int]:
    name, _, group = user.partition(":")
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise PipeConfigError(where, 0, "user", f"unknown username: {name}") from None
    gid = account.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PipeConfigError(where, 0, "user", f"unknown group: {group}") from None
    return name, account.pw_uid, gid


def parse_pipe_attributes(args: Sequence[str], *, service: str = "pipe",
                          where: str = "<master.cf>", mail_owner: str | None = None,
                          ) -> PipeCommand:
    """Parse pipe(8) attributes; every mistake is a PipeConfigError naming the service."""
    context = f"{where}: service {service}"
    flags: set[str] = set()
    user: str | None = None
    size_limit = 0
    eol = b"\n"
    null_sender = "MAILER-DAEMON"
    directory: str | None = None
    argv: tuple[str, ...] | None = None
    for position, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        key = name.lower()
        if not eq:
            raise PipeConfigError(context, 0, None, f"unknown attribute: {arg!r}")
        if key == "flags":
            unknown = set(value) - FLAG_LETTERS
            if unknown:
                raise PipeConfigError(context, 0, "flags",
                                      f"unknown flag: {''.join(sorted(unknown))}")
            flags |= set(value)
        elif key == "user":
            user = value
        elif key == "size":
            if not value.isdigit():
                raise PipeConfigError(context, 0, "size", f"bad size= value: {value!r}")
            size_limit = int(value)
        elif key == "eol":
            eol = unescape_eol(value)
        elif key == "null_sender":
            null_sender = value
        elif key == "directory":
            directory = value
        elif key == "chroot":
            raise PipeConfigError(context, 0, "chroot", "chroot= is not supported by sealmail")
        elif key == "argv":
            argv = (value, *args[position + 1:]) if value else tuple(args[position + 1:])
            break
        else:
            raise PipeConfigError(context, 0, None, f"unknown attribute name: {arg!r}")
    if user is None:
        raise PipeConfigError(context, 0, "user", "missing user= command-line attribute")
    if not argv or not argv[0]:
        raise PipeConfigError(context, 0, "argv", "missing argv= command-line attribute")
    for arg in argv:
        unknown_macros = macro_names(arg) - MACROS
        if unknown_macros:
            raise PipeConfigError(context, 0, "argv",
                                  f"unknown macro name: {sorted(unknown_macros)[0]!r}")
    name, uid, gid = _account(user, context)
    # pipe(8): "The software refuses to execute commands with root privileges, or with the
    # privileges of the mail system owner."
    if uid == 0:
        raise PipeConfigError(context, 0, "user",
                              f"user={user} specifies root privileges; pipe(8) never runs "
                              "commands as root: name an unprivileged account")
    if gid == 0:
        raise PipeConfigError(context, 0, "user", f"user={user} specifies privileged group id 0")
    if mail_owner:
        with contextlib.suppress(KeyError):
            owner = pwd.getpwnam(mail_owner)
            if uid == owner.pw_uid:
                raise PipeConfigError(context, 0, "user",
                                      f"user={user} specifies the mail system owner {mail_owner}")
    return PipeCommand(service, argv, name, uid, gid, frozenset(flags), size_limit, eol,
                       null_sender, directory)


def command_for(service: MasterService, settings: MainConfig) -> PipeCommand:
    return parse_pipe_attributes(service.args, service=service.service,
                                 where=f"{service.path}:{service.line}",
                                 mail_owner=settings.get(MAIN.mail_owner))


def recipient_limit(command: PipeCommand, settings: MainConfig) -> int:
    """Recipients per run: `<transport>_destination_recipient_limit`, 1 where argv needs it."""
    configured = settings.get(transport_recipient_limit(command.service))
    if command.single_recipient():
        return 1
    return configured if configured > 0 else 1


# --------------------------------------------------------------------------------------------
# Macro expansion in argv

_MACRO = re.compile(r"\$(?:\$|([A-Za-z0-9_]+)|\{([A-Za-z0-9_]+)(?:([?:])([^}]*))?\}|"
                    r"\(([A-Za-z0-9_]+)\))")


def macro_names(arg: str) -> set[str]:
    return {m.group(1) or m.group(2) or m.group(5) for m in _MACRO.finditer(arg)
            if m.group(0) != "$$"}


def expand_macros(arg: str, values: dict[str, str]) -> str:
    """`$name ${name} $(name) $$ ${name?text} ${name:text}`; no recursion (addresses may hold $)."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2) or match.group(5)
        value = values.get(name, "")
        if match.group(3) == "?":
            return match.group(4) if value else ""
        if match.group(3) == ":":
            return "" if value else match.group(4)
        return value
    return _MACRO.sub(one, arg)


_RFC822_SPECIALS = set('()<>@,;:\\".[] ')


def quote_local_part(local: str) -> str:
    """RFC 822 quoting of a local part, 8-bit transparent (the `q` flag)."""
    needs = not local or any(c in _RFC822_SPECIALS or ord(c) < 32 for c in local) \
        or local.startswith(".") or local.endswith(".") or ".." in local
    if not needs:
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_address(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


def split_extension(local: str, delimiters: str) -> tuple[str, str | None]:
    """`user+ext` -> ("user", "ext") at the first of any delimiter character (Postfix 2.11)."""
    if not delimiters:
        return local, None
    for index, char in enumerate(local):
        if char in delimiters and index > 0:
            return local[:index], local[index + 1:]
        if char in delimiters and index == 0:
            return "", local[1:]
    return local, None


def morph_address(address: str, flags: frozenset[str]) -> str:
    local, domain = split_address(address)
    if "q" in flags:
        local = quote_local_part(local)
    if "u" in flags:
        local = local.lower()
    if "h" in flags:
        domain = domain.lower()
    return f"{local}@{domain}" if domain or "@" in address else local


def expand_argv(command: PipeCommand, request: DeliveryRequest,
                recipients: Sequence[QueuedRecipient], delimiter: str) -> list[str]:
    """The argument vector for one run over `recipients` (pipe(8)'s expand_argv rules)."""
    flags = command.flags
    fold = flags & {"u", "h"}
    sender = request.sender if request.sender else command.null_sender
    if sender and "q" in flags:
        local, domain = split_address(sender)
        sender = f"{quote_local_part(local)}@{domain}" if domain else quote_local_part(local)
    nexthop = request.nexthop.lower() if "h" in flags else request.nexthop
    common = {"sender": sender, "nexthop": nexthop, "size": str(request.size),
              "queue_id": request.queue_id}
    result: list[str] = []
    for arg in command.argv:
        wanted = macro_names(arg) & PER_RECIPIENT_MACROS
        if not wanted:
            result.append(expand_macros(arg, common))
            continue
        for recipient in recipients:
            values = dict(common)
            folded_local, folded_domain = split_address(morph_address(recipient.address, fold))
            if "recipient" in wanted:
                values["recipient"] = morph_address(recipient.address, flags)
            if "original_recipient" in wanted:
                values["original_recipient"] = morph_address(recipient.original, flags)
            user, extension = split_extension(folded_local, delimiter)
            if "user" in wanted:
                if not user:  # "+folder@domain": the argument is suppressed (bulletin boards)
                    continue
                values["user"] = user
            values["extension"] = extension or ""
            values["mailbox"] = folded_local
            values["domain"] = folded_domain.lower() if "h" in flags else folded_domain
            result.append(expand_macros(arg, values))
    return result


# --------------------------------------------------------------------------------------------
# The message as the command sees it (Postfix's mail_copy)

def header_values(content: bytes, name: bytes) -> list[bytes]:
    """Unfolded values of every `name:` header of the message's header section."""
    head = content.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    found: list[bytes] = []
    current: list[bytes] | None = None
    lowered = name.lower() + b":"
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and current is not None:
            current.append(line.strip())
            continue
        if current is not None:
            found.append(b" ".join(current))
            current = None
        if line.lower().startswith(lowered):
            current = [line[len(lowered):].strip()]
    if current is not None:
        found.append(b" ".join(current))
    return found


def delivered_to_loop(content: bytes, recipient: str) -> bool:
    """Whether a Delivered-To: header already names `recipient` (case-insensitive)."""
    wanted = recipient.strip().lower().encode("utf-8", "surrogateescape")
    return any(value.lower() == wanted for value in header_values(content, b"Delivered-To"))


def from_line_time(when: float) -> str:
    """ctime(3)'s form, as mbox `From ` lines carry it: `Sun Dec  6 05:20:20 2026`."""
    return time.asctime(time.localtime(when))


def render_copy(content: bytes, *, flags: Iterable[str], sender: str, null_sender: str,
                delivered_to: str | None, original_recipient: str | None,
                eol: bytes = b"\n", now: float | None = None) -> bytes:
    """The message with the envelope lines `flags` ask for, line ends as `eol`.

    F: `From sender time` line; R: Return-Path; O: X-Original-To; D: Delivered-To; `>`: quote
    body/header lines starting with "From "; `.`: double a leading dot; B: blank line at the end.
    """
    wanted = set(flags)
    envelope_sender = sender or null_sender
    out: list[bytes] = []
    if "F" in wanted:
        stamp = from_line_time(time.time() if now is None else now)
        out.append(f"From {envelope_sender or 'MAILER-DAEMON'}  {stamp}".encode())
    if "R" in wanted:
        out.append(f"Return-Path: <{envelope_sender}>".encode())
    if "O" in wanted and original_recipient is not None:
        out.append(f"X-Original-To: {original_recipient}".encode())
    if "D" in wanted and delivered_to is not None:
        out.append(f"Delivered-To: {delivered_to}".encode())
    text = content.replace(b"\r\n", b"\n")
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        if "." in wanted and line.startswith(b"."):
            line = b"." + line
        if ">" in wanted and line.startswith(b"From "):
            line = b">" + line
        out.append(line)
    if "B" in wanted:
        out.append(b"")
    return b"".join(line + eol for line in out)


# --------------------------------------------------------------------------------------------
# Running a command

@dataclass(frozen=True, slots=True)
class CommandRun:
    returncode: int | None
    output: bytes
    timed_out: bool


def command_environment(settings: MainConfig | None, extra: dict[str, str] | None = None,
                        ) -> dict[str, str]:
    """A small environment: export_environment's names that are set, and PATH."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    names = settings.get(MAIN.export_environment) if settings is not None else ("TZ", "LANG")
    for name in names:
        key, eq, value = name.partition("=")
        if eq:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    env.update(extra or {})
    return env


def _credentials(uid: int, gid: int) -> dict[str, Any]:
    """Popen arguments that drop to uid/gid; refused when we cannot switch to them."""
    if os.geteuid() == 0:
        return {"user": uid, "group": gid, "extra_groups": []}
    if uid == os.geteuid():
        return {}
    raise PermissionError(f"cannot run a command as uid {uid}: sealmail is not running as root")


def run_command_blocking(argv: Sequence[str], data: bytes, *, uid: int, gid: int,
                         time_limit: float, cwd: str | None = None,
                         env: dict[str, str] | None = None,
                         output_limit: int = OUTPUT_LIMIT) -> CommandRun:
    """Run argv as uid/gid with `data` on stdin; keep the first output_limit bytes of output.

    Plain subprocess.Popen, not the event loop's subprocess support: uvloop refuses Popen's
    user=/group=/extra_groups= ("unexpected kwargs"), and the privileged helper
    (sealmail.mta.privsep) has no loop at all. The command gets its own session, so a timeout
    kills its whole process group (pipe(8) kills "not just the child process but also its
    offspring"). EPIPE on stdin is not an error: the command may stop reading early and still
    exit 0. Blocking: agents reach it through DeliveryPrivileges.run_command.
    """
    deadline = time.monotonic() + time_limit
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        cwd=cwd, env=env, start_new_session=True, close_fds=True, **_credentials(uid, gid))
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ValueError):
            stdin.write(data)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ValueError):
            stdin.close()

    feeder = threading.Thread(target=feed, name="pipe-stdin", daemon=True)
    feeder.start()
    kept = bytearray()
    timed_out = False
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    timed_out = True
                    break
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    break
                if len(kept) < output_limit:
                    kept.extend(chunk[:output_limit - len(kept)])
        if not timed_out:
            try:
                proc.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    finally:
        stdout.close()
        feeder.join(5)  # the command is gone, so a blocked write ends with EPIPE
    return CommandRun(proc.returncode, bytes(kept), timed_out)


# --------------------------------------------------------------------------------------------
# The agent

Clock = Callable[[], float]


class PipeAgent:
    """One pipe(8) transport of master.cf; stateless between deliveries."""

    def __init__(self, service: MasterService, settings: MainConfig, *,
                 clock: Clock = time.time, privileges: DeliveryPrivileges | None = None) -> None:
        """A bad entry does not stop the MTA: its mail is deferred with the error (4.3.5), as
        Postfix's qmgr defers mail for a pipe service that exits fatally. `command_for()`
        raises the same error for a configuration check. Commands run through `privileges`
        (default: the master's, see sealmail.mta.agents.privileges)."""
        self.settings = settings
        self.clock = clock
        self.privileges = privileges or current()
        self.config_error: PipeConfigError | None = None
        try:
            self.command = command_for(service, settings)
        except PipeConfigError as exc:
            log.error("%s", exc)
            self.config_error = exc
            self.command = PipeCommand(service.service, ("/nonexistent",), "", -1, -1)

    @classmethod
    def from_command(cls, command: PipeCommand, settings: MainConfig, *,
                     clock: Clock = time.time,
                     privileges: DeliveryPrivileges | None = None) -> PipeAgent:
        agent = cls.__new__(cls)
        agent.privileges = privileges or current()
        agent.config_error = None
        agent.command = command
        agent.settings = settings
        agent.clock = clock
        return agent

    def recipient_limit(self) -> int:
        return recipient_limit(self.command, self.settings)

    async def close(self) -> None:
        return None

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        if self.config_error is not None:
            return self._all(request.recipients, Status.DEFERRED, "4.3.5",
                             f"mail system configuration error: {self.config_error}")
        limit = self.recipient_limit()
        recipients = list(request.recipients)
        results: list[RecipientResult] = []
        for start in range(0, len(recipients), limit):
            results.extend(await self._deliver_batch(request, recipients[start:start + limit]))
        return results

    def _all(self, batch: Sequence[QueuedRecipient], status: Status, dsn: str,
             text: str) -> list[RecipientResult]:
        return [RecipientResult(r.index, status, dsn, text, self.command.service) for r in batch]

    async def _deliver_batch(self, request: DeliveryRequest,
                             batch: Sequence[QueuedRecipient]) -> list[RecipientResult]:
        command = self.command
        if command.size_limit and request.size > command.size_limit:
            return self._all(batch, Status.BOUNCED, "5.2.3", "message file too big")
        try:
            content = await asyncio.to_thread(request.message.read)
        except OSError as exc:
            return self._all(batch, Status.DEFERRED, "4.3.0",
                             f"cannot read message content: {exc.strerror}")
        if "D" in command.flags:
            # pipe(8) flag D: "if a message already contains a Delivered-To: header with the
            # same recipient address, then the message is returned as undeliverable."
            looped = [r for r in batch if delivered_to_loop(content, r.address)]
            if looped:
                return self._all(batch, Status.BOUNCED, "5.4.6",
                                 f"mail forwarding loop for {batch[0].address}")
        first = batch[0]
        data = render_copy(content, flags=command.flags, sender=request.sender,
                           null_sender=command.null_sender, delivered_to=first.address,
                           original_recipient=first.original, eol=command.eol,
                           now=self.clock())
        delimiter = self.settings.get(MAIN.recipient_delimiter)
        argv = expand_argv(command, request, batch, delimiter)
        time_limit = self.settings.get(transport_time_limit(command.service))
        cwd = command.directory or _existing(self.settings.get(MAIN.queue_directory)) or "/"
        try:
            run = await self.privileges.run_command(
                argv, data, uid=command.uid, gid=command.gid, time_limit=time_limit, cwd=cwd,
                env=command_environment(self.settings))
        except (OSError, PermissionError) as exc:
            log.warning("%s: %s: cannot run %s: %s", request.queue_id, command.service,
                        argv[0], exc)
            return self._all(batch, Status.DEFERRED, "4.3.0",
                             f'cannot run command "{argv[0]}": {exc}')
        outcome = judge_exit(returncode=run.returncode, output=run.output, command=argv[0],
                             timed_out=run.timed_out, service=command.service)
        return self._all(batch, outcome.status, outcome.dsn, outcome.text)


def _existing(path: str) -> str | None:
    return path if path and os.path.isdir(path) else None

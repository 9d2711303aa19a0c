"""`sealmail postfix -c DIR start|start-fg|stop|reload|status|flush|check`, as Postfix's postfix(1).

`start` checks the configuration, starts the master (sealmail.mta.master) in the background and
returns once it holds its pid file; `start-fg` runs it in the foreground (Postfix 3.3's name);
`stop` asks it to finish (SIGTERM) and waits; `reload` re-reads main.cf and master.cf (SIGHUP);
`status` exits 0 when it runs; `flush` tries deferred mail now; `check` validates the
configuration and creates the queue directories.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sealmail.mta.config import DEFAULT_CONFIG_DIRECTORY, MtaConfig, load_mta_config
from sealmail.mta.config.parameters import MAIN

PROGRAM = "sealmail/postfix-script"
COMMANDS = ("start", "start-fg", "stop", "reload", "status", "flush", "check")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", dest="config_dir", metavar="CONFIG_DIR", default=None,
                        help=f"configuration directory (default $MAIL_CONFIG or "
                             f"{DEFAULT_CONFIG_DIRECTORY})")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("action", choices=COMMANDS)


def config_directory(args: argparse.Namespace) -> Path:
    return Path(args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY)


def say(message: str) -> None:
    print(f"{PROGRAM}: {message}", file=sys.stderr)


def check(config: MtaConfig) -> list[str]:
    """Everything `start` needs, checked now; returns warnings. Raises ConfigError."""
    from sealmail.mta.cleanup import cleanup_from_config
    from sealmail.mta.config import open_table
    from sealmail.mta.config.checks import audit
    from sealmail.mta.master import inet_addresses
    from sealmail.mta.milter import MilterSettings
    from sealmail.mta.queue import Queue
    from sealmail.mta.restrictions import Engine
    from sealmail.mta.retry import RetrySchedule
    from sealmail.mta.smtpd import SmtpdSettings
    from sealmail.mta.smtpd_tls import smtpd_context

    main = config.main
    findings = audit(config)
    findings.raise_first()  # a restriction, milter or TLS policy sealmail cannot enforce
    warnings = findings.warnings
    if os.geteuid() == 0:
        from sealmail.mta.privsep import mail_owner_account

        mail_owner_account(main)  # the account the master will switch to (root refused)
    Queue.from_config(main).create_directories()
    cleanup_from_config(main)
    MilterSettings.from_config(main, MAIN.non_smtpd_milters)
    RetrySchedule.from_config(main)
    for spec in main.get(MAIN.transport_maps):
        open_table(spec)
    for entry in config.master_cf:
        if entry.type == "inet" and entry.command == "smtpd":
            settings = entry.effective(main)
            SmtpdSettings.from_config(settings)
            Engine.from_config(settings)
            smtpd_context(settings)
            MilterSettings.from_config(settings, MAIN.smtpd_milters)
            inet_addresses(entry.service, main, path=entry.path, line=entry.line)
    return warnings


def run(args: argparse.Namespace) -> int:
    from sealmail.mta.master import run_foreground, running_pid
    from sealmail.mta.pickup import send_control
    from sealmail.mta.queue import Queue

    directory = config_directory(args)
    action = args.action
    if action == "start-fg":
        return run_foreground(directory)
    config = load_mta_config(directory)
    main = config.main
    pid = running_pid(main)
    if action == "status":
        if pid is None:
            say("the Postfix mail system is not running")
            return 1
        say(f"the Postfix mail system is running: PID: {pid}")
        return 0
    if action == "check":
        for warning in check(config):
            say(f"warning: {warning}")
        return 0
    if action == "start":
        if pid is not None:
            say("fatal: the Postfix mail system is already running")
            return 1
        for warning in check(config):
            say(f"warning: {warning}")
        say("starting the Postfix mail system")
        return _start(directory, main)
    if pid is None:
        say("fatal: the Postfix mail system is not running")
        return 1
    if action == "stop":
        say("stopping the Postfix mail system")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while running_pid(main) is not None:
            if time.monotonic() > deadline:
                say(f"warning: the master (pid {pid}) did not stop in {STOP_TIMEOUT:.0f}s")
                return 1
            time.sleep(0.05)
        return 0
    if action == "reload":
        say("refreshing the Postfix mail system")
        os.kill(pid, signal.SIGHUP)
        return 0
    assert action == "flush"
    queue = Queue.from_config(main)
    if not send_control(queue.control_socket, "flush"):
        say("fatal: Cannot flush mail queue - mail system is down")
        return 1
    return 0


def _start(directory: Path, main: object) -> int:
    from sealmail.mta.config import MainConfig
    from sealmail.mta.master import (
        DETACHED,
        describe_destination,
        maillog_destination,
        running_pid,
    )

    assert isinstance(main, MainConfig)
    say(f"logging to {describe_destination(maillog_destination(main))}")
    # The daemon's standard error goes to an unlinked file: read here if it fails to start,
    # and never a pipe that would break once this command exits. Its log lines go to the
    # log only (DETACHED): the file gets nothing but a failure.
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(
            [sys.executable, "-m", "sealmail", "postfix", "-c", str(directory), "start-fg"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
            start_new_session=True, env={**os.environ, DETACHED: "1"},
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if running_pid(main) == child.pid:
                return 0
            if child.poll() is not None:
                errors.seek(0)
                lines = errors.read().decode("utf-8", "replace").strip().splitlines()
                say(f"fatal: the master did not start: {lines[-1] if lines else child.returncode}")
                return 1
            time.sleep(0.05)
    say("fatal: the master did not start in time")
    child.terminate()
    return 1

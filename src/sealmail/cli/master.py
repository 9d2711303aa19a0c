"""`sealmail master -C IMAPD_CONF -M CYRUS_CONF [-p PIDFILE] [-D]`: Cyrus's master(8)."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
from pathlib import Path

from sealmail.config.cyrus_conf import DEFAULT_CYRUS_CONF_PATH, DEFAULT_SERVICES_FILE
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, load_imapd_conf

log = logging.getLogger("sealmail.master")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-C", dest="config", default=DEFAULT_CONFIG_PATH, help="imapd.conf")
    parser.add_argument("-M", dest="cyrus_conf", default=DEFAULT_CYRUS_CONF_PATH, help="cyrus.conf")
    parser.add_argument("-p", dest="pidfile", help="pid file (default: configdirectory/master.pid)")
    parser.add_argument(
        "-D", dest="foreground", action="store_true", help="stay in the foreground (logs to stderr)"
    )
    parser.add_argument(
        "-L", dest="log_file", help="log file when detached (default: configdirectory/master.log)"
    )
    parser.add_argument(
        "--services-file",
        default=DEFAULT_SERVICES_FILE,
        help="where listen= service names are looked up (default: /etc/services)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds sessions get to finish after SIGTERM",
    )


def _detach(log_file: Path) -> None:
    """Double fork into the background, with stdio on /dev/null and stderr on the log file."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    null = os.open(os.devnull, os.O_RDWR)
    logfd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(logfd, 2)
    os.close(null)
    os.close(logfd)


def run(args: argparse.Namespace) -> int:
    from sealmail.server.listeners import ListenError
    from sealmail.server.master import Master

    config = load_imapd_conf(args.config)
    config.warn_without_effect()  # once per option, with file and line
    master = Master(
        args.config,
        args.cyrus_conf,
        services_file=args.services_file,
        shutdown_timeout=args.shutdown_timeout,
    )
    master.check()  # every error shows on the terminal, before detaching
    master.prepare_store()  # before the log file and pidfile land in configdirectory
    pidfile = Path(args.pidfile or config.configdirectory / "master.pid")
    if args.foreground:
        log.info("master logs to standard error (-D)")
    else:
        log_file = Path(args.log_file or config.configdirectory / "master.log")
        print(f"sealmail master: detached; it logs to {log_file}", file=sys.stderr)
        _detach(log_file)
        log.info("master logs to %s", log_file)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(pidfile, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"sealmail master: another master holds {pidfile}", file=sys.stderr)
        return 75
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    master.catch_signals()
    try:
        try:
            master.start()
        except (ListenError, OSError) as exc:
            master.shutdown()
            print(f"sealmail master: {exc}", file=sys.stderr)
            return 71  # EX_OSERR
        except BaseException:
            master.shutdown()
            raise
        ready = getattr(args, "on_ready", None)
        if ready is not None:
            ready()
        master.run()
    finally:
        pidfile.unlink(missing_ok=True)
        os.close(fd)
    return 0

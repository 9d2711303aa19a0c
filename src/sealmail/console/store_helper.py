"""The console's store helper: a child that runs as imapd.conf's cyrus_user and answers the
console's two questions about the store, so the console itself never opens the store.

Started by root, the console serves HTTP as main.cf's mail_owner (it changes the MTA's queue,
which that account owns); the store must only be opened as cyrus_user (as root it could leave
files, a database's WAL or a new sasldb, the store's daemons can no longer write), and only
cyrus_user may read the sasldb or, by its group, saslauthd's socket. So before it switches,
the console starts this helper with cyrus_user's ids (`Account.credentials()`: the child never
runs Python as root) and keeps a pipe to it. A console not started by root starts it as itself.

The wire is one JSON object per line each way (JSON escapes newlines, so a line is a message);
the helper reads at most MAX_REQUEST bytes a line and ends on anything malformed, after which
the console's pages say the store is unavailable:

    {"op": "report"}  ->  the users page's report (store_report.report) or {"error": TEXT}
    {"op": "password", "user": U, "realm": R, "password": P}
                      ->  {"verdict": "ok" | "no"} or {"unavailable": TEXT}

The console keeps the failure delays, the failure memory and the log lines of a login
(SaslExchange); the helper only says whether the password is right.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

from sealmail.proto.sasl import (
    CramMD5Secret,
    CredentialsUnavailable,
    Identity,
    ScramSecret,
    Verdict,
)

if TYPE_CHECKING:
    from sealmail.config.imapd_conf import ImapdConfig
    from sealmail.privileges import Account
    from sealmail.proto.sasl import Credentials

log = logging.getLogger("sealmail.console")

MAX_REQUEST = 1 << 16  # a password request: the console caps user and password far below
MAX_REPLY = 1 << 28  # a report of a very large store
SASL_SERVICE = "imap"  # what saslauthd is told, as for imapd's LOGIN (console.login)


class StoreHelper:
    """The console's end of the pipe: Credentials for its Authenticator, and the users page's
    report. Requests are answered one at a time (a lock), from the console's worker threads."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._lock = threading.Lock()

    @classmethod
    def start(cls, config_path: str, account: Account | None) -> StoreHelper:
        """The helper as `account` (None: as ourselves), on imapd.conf `config_path`."""
        process = subprocess.Popen(
            [sys.executable, "-m", "sealmail.console.store_helper", config_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/", close_fds=True,
            **(account.credentials() if account is not None else {}),
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request and its answer; OSError once the helper is gone."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        with self._lock:
            try:
                stdin.write(json.dumps(request).encode() + b"\n")
                stdin.flush()
                line = stdout.readline(MAX_REPLY)
            except (OSError, ValueError):  # a broken pipe, or closed by close()
                line = b""
        if not line.endswith(b"\n"):
            log.error("console: the store helper (pid %d) is gone (status %s): logins and the "
                      "users page are unavailable until the console is restarted",
                      self.pid, self.process.poll())
            raise OSError(f"the store helper (pid {self.pid}) is gone; restart the console")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise OSError("the store helper answered something else than a JSON object")
        return answer

    def report(self) -> dict[str, Any]:
        """The users page's data, or {"error": why}."""
        try:
            return self.ask({"op": "report"})
        except (OSError, ValueError) as exc:
            return {"error": str(exc)}

    # -- proto.sasl.Credentials --------------------------------------------------------------

    def check_password(self, identity: Identity, password: str) -> Verdict:
        try:
            answer = self.ask({"op": "password", "user": identity.user, "realm": identity.realm,
                               "password": password})
        except (OSError, ValueError) as exc:
            raise CredentialsUnavailable(str(exc)) from None
        if "unavailable" in answer:
            raise CredentialsUnavailable(str(answer["unavailable"]))
        return Verdict.OK if answer.get("verdict") == "ok" else Verdict.NO

    def cram_md5_secret(self, identity: Identity) -> CramMD5Secret | None:
        return None  # the console's login form is a password: PLAIN only

    def scram_secret(self, mechanism: str, identity: Identity) -> ScramSecret | None:
        return None

    def close(self) -> None:
        """End the helper: it leaves when its standard input closes."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):  # it ended already: nothing left to tell it
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


# ------------------------------------------------------------------------------------------------
# The helper's side


def answer(request: object, config: ImapdConfig, credentials: Credentials) -> dict[str, Any]:
    """The answer to one decoded request; ValueError for a malformed one."""
    from sealmail.console.store_report import report

    if not isinstance(request, dict):
        raise ValueError("a request is a JSON object")
    op = request.get("op")
    if op == "report":
        try:
            return report(config)
        except Exception as exc:  # the page shows why
            return {"error": f"{type(exc).__name__}: {exc}"}
    if op == "password":
        user, realm, password = (request.get(name) for name in ("user", "realm", "password"))
        if not (isinstance(user, str) and isinstance(realm, str) and isinstance(password, str)):
            raise ValueError("a password request needs user, realm and password strings")
        try:
            verdict = credentials.check_password(Identity(user, realm), password)
        except CredentialsUnavailable as exc:
            return {"unavailable": str(exc)}
        return {"verdict": verdict.value}
    raise ValueError(f"unknown request {op!r}")


def serve(config: ImapdConfig, credentials: Credentials, requests: IO[bytes],
          answers: IO[bytes]) -> int:
    """Answer requests until the console closes the pipe (0) or sends something malformed (1)."""
    while True:
        line = requests.readline(MAX_REQUEST + 1)
        if not line:
            return 0
        try:
            if len(line) > MAX_REQUEST or not line.endswith(b"\n"):
                raise ValueError(f"a request over {MAX_REQUEST} bytes")
            reply = answer(json.loads(line), config, credentials)
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.error("console store helper: malformed request, ending: %s", exc)
            return 1
        answers.write(json.dumps(reply).encode() + b"\n")
        answers.flush()


def main(argv: list[str]) -> int:
    """`python -m sealmail.console.store_helper IMAPD_CONF`, started by the console."""
    from sealmail.auth.authenticator import Authenticator
    from sealmail.config.imapd_conf import ConfigError, load_imapd_conf
    from sealmail.privileges import store_account, switch_to

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="sealmail console: %(message)s")
    # Ctrl-C at the console's terminal reaches us too: the console ends us by closing the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        config = load_imapd_conf(argv[0])
        # Started with cyrus_user's ids, we are not root and this changes nothing; started by
        # root some other way, we become that account before reading anything of the store.
        account = store_account(config, warn_level=logging.DEBUG)
        if account is not None:
            switch_to(account)
        credentials = Authenticator(config).credentials(SASL_SERVICE)
    except (ConfigError, OSError, IndexError) as exc:
        log.error("console store helper: %s", exc)
        return 78
    return serve(config, credentials, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

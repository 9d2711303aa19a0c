"""The console's store helper: its line protocol fed whole, malformed, oversized and cut short,
and the console's end when the helper is gone. (Logins and the users page through a real
helper are in test_console_http.py; as real accounts, in test_console_accounts.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys

import pytest
from tests.support.console import ADMIN, write_instance

from sealmail.auth.authenticator import Authenticator
from sealmail.config.imapd_conf import ImapdConfig, load_imapd_conf
from sealmail.console.login import ConsoleLogin
from sealmail.console.store_helper import MAX_REQUEST, StoreHelper, serve
from sealmail.proto.sasl import CredentialsUnavailable, FailureReason, Identity, Verdict


class FakeCredentials:
    def __init__(self) -> None:
        self.asked: list[tuple[Identity, str]] = []

    def check_password(self, identity: Identity, password: str) -> Verdict:
        self.asked.append((identity, password))
        if identity.user == "down":
            raise CredentialsUnavailable("saslauthd: connect: no such file")
        return Verdict.OK if password == "right" else Verdict.NO

    def cram_md5_secret(self, identity: Identity) -> None:
        return None

    def scram_secret(self, mechanism: str, identity: Identity) -> None:
        return None


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> ImapdConfig:
    conf, _ = write_instance(tmp_path_factory.mktemp("store-helper"))
    return load_imapd_conf(conf)


def run(config: ImapdConfig, data: bytes) -> tuple[int, list[dict[str, object]], FakeCredentials]:
    credentials = FakeCredentials()
    out = io.BytesIO()
    status = serve(config, credentials, io.BytesIO(data), out)
    return status, [json.loads(line) for line in out.getvalue().splitlines()], credentials


def password(user: str, secret: str) -> bytes:
    return json.dumps({"op": "password", "user": user, "realm": "r.example",
                       "password": secret}).encode() + b"\n"


def test_requests_are_answered_in_order_until_the_pipe_closes(config: ImapdConfig) -> None:
    status, answers, credentials = run(config, password("a", "right") + password("a", "wrong")
                                       + password("down", "x") + b'{"op": "report"}\n')
    assert status == 0
    assert answers[:3] == [{"verdict": "ok"}, {"verdict": "no"},
                           {"unavailable": "saslauthd: connect: no such file"}]
    assert answers[3]["sasl"] is not None and f"{ADMIN}@console.example" in str(answers[3])
    assert credentials.asked[0] == (Identity("a", "r.example"), "right")


@pytest.mark.parametrize("bad", [
    b"not json\n", b"[1, 2]\n", b'{"op": "format the disk"}\n', b'{"op": "password"}\n',
    b'{"op": "password", "user": 1, "realm": "r", "password": "p"}\n', b"\xff\xfe\n",
    password("a", "right")[:-1],  # cut short: no end of line
    password("a", "x" * MAX_REQUEST),  # oversized
])
def test_anything_malformed_ends_the_helper_unanswered(config: ImapdConfig, bad: bytes) -> None:
    status, answers, credentials = run(config, bad + password("a", "right"))
    assert (status, answers, credentials.asked) == (1, [], [])


def test_a_helper_that_is_gone_is_unavailable_not_a_wrong_password(
    config: ImapdConfig, caplog: pytest.LogCaptureFixture
) -> None:
    helper = StoreHelper(subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE))
    helper.process.wait(30)
    assert "is gone; restart the console" in helper.report()["error"]
    with pytest.raises(CredentialsUnavailable):
        helper.check_password(Identity("a", "r"), "p")
    login = ConsoleLogin(config, Authenticator(config, credentials=helper))
    assert asyncio.run(login.check(ADMIN, "whatever", "127.0.0.1", False)) == (
        None, FailureReason.TEMPORARY)
    assert "logins and the users page are unavailable" in caplog.text
    helper.close()
    assert "is gone" in helper.report()["error"]

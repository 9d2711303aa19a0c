"""`sealmail console`'s command line and its login rule, without serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.support.console import ADMIN, ADMIN_PASSWORD, write_instance

from sealmail.cli.main import main
from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.console.login import ConsoleLogin, is_loopback
from sealmail.proto.sasl import FailureReason


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_instance(tmp_path_factory.mktemp("console-cli"))


def test_bad_options_are_refused_before_serving(
    instance: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("h11")
    conf, mta = instance
    base = ["console", "-c", str(mta), "-C", str(conf)]
    assert main([*base, "--tls-key", "key.pem"]) == 78
    assert "--tls-key needs --tls-cert" in capsys.readouterr().err
    assert main([*base, "--listen", str(conf.parent / "console.sock")]) == 64
    assert "--listen takes ADDR:PORT" in capsys.readouterr().err
    assert main([*base, "--tls-cert", str(conf.parent / "missing.pem")]) == 78


def test_a_password_from_afar_needs_tls_unless_allowplaintext(
    instance: tuple[Path, Path]
) -> None:
    conf, _ = instance
    login = ConsoleLogin(load_imapd_conf(conf))
    assert asyncio.run(login.check(ADMIN, ADMIN_PASSWORD, "192.0.2.1", False)) == (
        None, FailureReason.ENCRYPTION_REQUIRED)
    assert asyncio.run(login.check(ADMIN, ADMIN_PASSWORD, "192.0.2.1", True)) == (ADMIN, None)
    assert asyncio.run(login.check(ADMIN, ADMIN_PASSWORD, "::1", False)) == (ADMIN, None)
    assert is_loopback("127.0.0.5") and not is_loopback("10.0.0.1") and is_loopback("unix")

"""A tool given `-c DIR` writes only where DIR's main.cf says (issue 16, item 5).

The declared defaults of queue_directory, data_directory and alias_database are the system
instance's (/var/spool/sealmail, ...). Here they are pointed into the test's directory, so a
tool that fell back to them would create them there, where the test can see it; every tool must
instead stop with an error naming the parameter that DIR's main.cf lacks.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from sealmail.cli.main import main
from sealmail.mta.config import MainConfig, parameters
from sealmail.mta.config.main_cf import parse_main_cf

SYSTEM_PATHS = {"queue_directory": "spool", "data_directory": "data",
                "alias_database": "aliases"}


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The 'system' defaults, redirected under tmp_path/system."""
    root = tmp_path / "system"
    for name, leaf in SYSTEM_PATHS.items():
        declared = parameters.PARAMETERS[name]
        value = f"hash:{root}/{leaf}" if name == "alias_database" else f"{root}/{leaf}"
        monkeypatch.setitem(parameters.PARAMETERS, name, dataclasses.replace(declared,
                                                                              default=value))
    return root


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    config = tmp_path / "etc"
    config.mkdir()
    (config / "main.cf").write_text("myhostname = mx.example.com\n")
    (config / "master.cf").write_text("smtp inet n - n - - smtpd\n")
    return config


@pytest.mark.parametrize(("argv", "missing"), [
    (["postfix", "check"], "data_directory"),
    (["postfix", "start"], "data_directory"),
    (["postfix", "status"], "data_directory"),
    (["postfix", "flush"], "data_directory"),
    (["postfix", "start-fg"], "data_directory"),
    (["postqueue", "-p"], "queue_directory"),
    (["postqueue", "-f"], "queue_directory"),
    (["postsuper", "-d", "ALL"], "queue_directory"),
    (["sendmail", "alice@example.com"], "queue_directory"),
    (["newaliases"], "alias_database"),
])
def test_a_missing_instance_path_is_an_error_naming_it(
        argv: list[str], missing: str, system: Path, instance: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Subject: x\n\nbody\n")))
    monkeypatch.delenv("MAIL_CONFIG", raising=False)
    code = main([argv[0], "-c", str(instance), *argv[1:]])
    err = capsys.readouterr().err
    assert code == 78, err
    assert f"{missing} is not set" in err and str(instance / "main.cf") in err
    assert not system.exists()
    assert not Path("/var/spool/sealmail").exists()


def test_set_paths_are_used_and_the_system_instance_keeps_its_defaults(
        system: Path, instance: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (instance / "main.cf").open("a") as main_cf:
        main_cf.write(f"queue_directory = {tmp_path}/q\ndata_directory = {tmp_path}/d\n")
    assert main(["postfix", "-c", str(instance), "check"]) == 0
    assert (tmp_path / "q" / "maildrop").is_dir() and not system.exists()
    # The system instance (main.cf in /etc/sealmail) keeps Postfix's defaulting.
    system_main = MainConfig.from_document(parse_main_cf("", "/etc/sealmail/main.cf"))
    assert system_main.instance_path("queue_directory") == f"{system}/spool"

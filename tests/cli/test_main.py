from __future__ import annotations

from pathlib import Path

import pytest

from sealmail.cli.main import SUBCOMMANDS, main


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_working_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: sealmail " in capsys.readouterr().out


def test_a_config_error_is_one_line_and_ex_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "imapd.conf"
    conf.write_text("lmtp_downcase_rcpt: perhaps\n")
    assert main(["mbpath", "-C", str(conf), "user.alice"]) == 78
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "imapd.conf:1: lmtp_downcase_rcpt:" in err

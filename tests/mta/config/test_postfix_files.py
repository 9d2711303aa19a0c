"""Postfix's logical lines, read once for main.cf, master.cf, table sources and aliases(5)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.aliases import parse_aliases
from sealmail.mta.config.main_cf import parse_main_cf
from sealmail.mta.config.master_cf import MasterCfError, parse_master_cf
from sealmail.mta.config.postfix_files import LogicalLine, logical_lines, read_text
from sealmail.mta.config.tables import TableError, parse_source

TEXT = (
    "# a comment\n"
    "\n"
    "first = one\n"
    "  two\n"
    "# a comment between a line and its continuation\n"
    "\n"
    "\tthree\n"
    "second = x\r\n"
    "   # an indented comment is a comment\n"
    "third\n"
)


def test_continuations_comments_blank_lines_and_line_numbers() -> None:
    assert list(logical_lines(TEXT)) == [
        LogicalLine(3, (2, 3, 6), ("first = one", "  two", "\tthree")),
        LogicalLine(8, (7,), ("second = x",)),
        LogicalLine(10, (9,), ("third",)),
    ]


def test_a_continuation_with_nothing_to_continue() -> None:
    [orphan, entry] = logical_lines("# c\n  orphan\n  more\nname = v\n")
    assert orphan.continues_nothing and orphan.number == 2 and orphan.parts == ("  orphan",
                                                                                "  more")
    assert not entry.continues_nothing and entry.number == 4


def test_empty_text() -> None:
    assert list(logical_lines("")) == []
    assert list(logical_lines("\n# only\n   \n")) == []


def test_each_file_joins_its_own_way() -> None:
    [entry] = parse_main_cf("name = a,\n  b\n").entries
    assert entry.value == "a,  b" and entry.line == 1  # as they are
    [rule] = parse_source("key value\n  more\n")
    assert rule.value == "value  more" and rule.line == 1
    [alias] = parse_aliases("# c\nname: a,\n    b\n")
    assert alias.value == "a, b" and alias.line == 2  # one space
    [service] = parse_master_cf("smtp inet n - n - - smtpd\n  -o a=b\n").services
    assert service.line == 1 and service.overrides[0].name == "a"


def test_errors_name_the_first_line_of_a_logical_line() -> None:
    with pytest.raises(ConfigError) as main_error:
        parse_main_cf("a = 1\n\nnot an assignment\n  continued\n", "main.cf")
    assert main_error.value.line == 3 and str(main_error.value).startswith("main.cf:3: ")
    with pytest.raises(MasterCfError) as master_error:
        parse_master_cf("# c\nsmtp inet n - n\n  - x smtpd\n", "master.cf")
    assert master_error.value.line == 2


def test_aliases_skip_an_orphan_continuation_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "sealmail.mta.aliases"):
        [alias] = parse_aliases("  orphan\nname: a\n")
    assert alias.name == "name" and "line 1: continuation line without an entry" in caplog.text


def test_read_text(tmp_path: Path) -> None:
    assert read_text(tmp_path / "absent", missing_ok=True) is None
    with pytest.raises(TableError, match="absent: cannot read: no such file"):
        read_text(tmp_path / "absent", TableError)
    (tmp_path / "latin1").write_bytes(b"caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        read_text(tmp_path / "latin1")
    (tmp_path / "main.cf").write_text("a = b\n")
    assert read_text(tmp_path / "main.cf") == "a = b\n"

"""Lookup tables: source format, hash build, folding, inline/static/regexp/pcre/unix."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config.tables import (
    TableError,
    build_hash,
    index_path,
    open_table,
    parse_regexp,
    parse_source,
    split_spec,
)

SOURCE = """Cyrus.Example.COM lmtpuser:PASSWORD
# comment

foo   bar baz
  continued
foo dup
novalue
k2\tv2  \n"""


def test_source_format_like_postmap(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        entries = parse_source(SOURCE, "pass")
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("cyrus.example.com", "lmtpuser:PASSWORD", 1),
        ("foo", "bar baz  continued", 4),
        ("k2", "v2", 8),
    ]
    assert "line 6: duplicate entry" in caplog.text
    assert "line 7: expected format" in caplog.text


def test_hash_build_is_private_like_its_source(tmp_path: Path) -> None:
    source = tmp_path / "cyrus_lmtp_sasl_pass"
    source.write_text(SOURCE)
    source.chmod(0o600)
    built = build_hash(source)
    assert built == index_path(source) == tmp_path / "cyrus_lmtp_sasl_pass.sqlite"
    assert stat.S_IMODE(built.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    table = open_table(f"hash:{source}")
    assert table.lookup("CYRUS.example.com") == "lmtpuser:PASSWORD"
    assert table.lookup("foo") == "bar baz  continued"
    assert table.lookup("nope") is None


def test_hash_rebuild_replaces_and_no_fold_keeps_case(tmp_path: Path) -> None:
    source = tmp_path / "t"
    source.write_text("ABC x\n")
    build_hash(source, fold=False)
    assert open_table(f"hash:{source}", fold=False).lookup("ABC") == "x"
    assert open_table(f"hash:{source}").lookup("abc") is None  # as postmap -f then -q abc
    source.write_text("ABC y\n")
    build_hash(source)
    assert open_table(f"hash:{source}").lookup("Abc") == "y"


def test_hash_without_index_says_what_to_run(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("a b\n")
    with pytest.raises(TableError, match="run: sealmail postmap"):
        open_table(f"hash:{tmp_path / 't'}")


def test_stale_index_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "t"
    source.write_text("a b\n")
    built = build_hash(source)
    os.utime(built, (1, 1))
    with caplog.at_level(logging.WARNING):
        open_table(f"hash:{source}")
    assert "older than source" in caplog.text


def test_texthash_inline_static(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("ABC x\n")
    assert open_table(f"texthash:{tmp_path / 't'}").lookup("abc") == "x"
    inline = open_table("inline:{ K2=V2, k3=v3 K2=v9 }")
    assert inline.lookup("k2") == "v9"  # a later duplicate wins, as Postfix 3.7
    assert inline.lookup("K3") == "v3"
    assert open_table("inline:{ K2=V2 }", fold=False).lookup("k2") is None
    assert open_table("static:hello").lookup("anything") == "hello"
    assert open_table("static:{ a b }").lookup("x") == "a b"


@pytest.mark.parametrize("spec", ["inline:{ {a b = c d} }", "inline:K=V", "inline:{ novalue }"])
def test_bad_inline(spec: str) -> None:
    with pytest.raises(TableError):
        open_table(spec)


def test_unix_passwd() -> None:
    value = open_table("unix:passwd.byname").lookup("Root")
    assert value is not None and value.startswith("root:") and ":0:0:" in value
    assert open_table("proxy:unix:passwd.byname").lookup("no-such-user-here") is None
    with pytest.raises(TableError):
        open_table("unix:shadow.byname")


REGEXP = r"""
# comment
/^(.*)-outgoing@(.*)$/      $1@$2 ${1}x $(2)y $$
!/@example\.com$/           OTHER
if /^admin/
/^admin\+(.*)@/             ADMIN $1
endif
/^Case@/i                   CASE-SENSITIVE
/^case@/                    folded
"""


def test_regexp_rules() -> None:
    table = parse_regexp(REGEXP, "re")
    assert table.lookup("joe-outgoing@example.com") == "joe@example.com joex example.comy $"
    assert table.lookup("joe@elsewhere.org") == "OTHER"
    assert table.lookup("ADMIN+x@example.com") == "ADMIN x"
    assert table.lookup("Case@example.com") == "CASE-SENSITIVE"
    assert table.lookup("CASE@example.com") == "folded"
    assert table.lookup("nobody@example.com") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/a/\n", "re:1: missing result"),
        ("/a/q x\n", "unknown regexp flag 'q'"),
        ("/a(/ x\n", "bad pattern"),
        ("/abc x\n", "missing closing"),
        ("if /a/\n/b/ c\n", "if without endif"),
        ("endif\n", "endif without if"),
        ("!/a(.)/ $1\n", "negated"),
    ],
)
def test_regexp_errors(text: str, message: str) -> None:
    with pytest.raises(TableError, match=message):
        parse_regexp(text, "re")


def test_pcre_flags(tmp_path: Path) -> None:
    path = tmp_path / "p"
    path.write_text("/ a b /x  spaced\n/^x/A anchored\n")
    table = open_table(f"pcre:{path}")
    assert table.lookup("ab") == "spaced"
    with pytest.raises(TableError, match="unknown regexp flag"):
        parse_regexp("/a/s x\n", "re")  # s is pcre only


def test_split_spec_and_unknown_type() -> None:
    assert split_spec("/etc/postfix/cyrus_lmtp_sasl_pass") == (
        "hash", "/etc/postfix/cyrus_lmtp_sasl_pass")
    assert split_spec("texthash:/x") == ("texthash", "/x")
    with pytest.raises(TableError, match="unsupported dictionary type: ldap"):
        open_table("ldap:/etc/x.cf")


@given(st.text(max_size=300))
def test_regexp_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_regexp(text, "re").lookup("user@example.com")


@given(st.dictionaries(st.from_regex(r"[a-z0-9.@_-]{1,12}", fullmatch=True),
                       st.from_regex(r"[!-~]([ -~]{0,10}[!-~])?", fullmatch=True), max_size=10))
def test_source_round_trip(entries: dict[str, str]) -> None:
    text = "".join(f"{key} {value}\n" for key, value in entries.items())
    parsed = parse_source(text)
    assert {e.key: e.value for e in parsed} == entries


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another account")
def test_a_map_only_root_can_read_says_permission_denied_not_corrupt() -> None:
    """The seed's SASL password map is root-only (Postfix opens it before dropping root); a
    sealmail agent reads it as mail_owner and must say why it cannot."""
    import pwd

    from tests.support.peers import traversable_tmpdir

    nobody = pwd.getpwnam("nobody")
    with traversable_tmpdir("smtable-") as root:
        source = root / "cyrus_lmtp_sasl_pass"
        source.write_text("cyrus.example.com lmtpuser:secret\n")
        source.chmod(0o600)
        build_hash(source)
        index_path(str(source)).chmod(0o600)
        os.seteuid(nobody.pw_uid)
        try:
            with pytest.raises(TableError, match="permission denied for nobody"):
                open_table(f"hash:{source}")
        finally:
            os.seteuid(0)
        assert open_table(f"hash:{source}").lookup("cyrus.example.com") == "lmtpuser:secret"

"""main.cf parsing, expansion and in-place editing (behaviour checked against Postfix 3.7)."""

from __future__ import annotations

import contextlib
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config import parameters
from sealmail.mta.config.main_cf import (
    ExpansionError,
    MainConfig,
    expand,
    parse_main_cf,
    render_main_cf,
)
from sealmail.mta.config.parameters import MAIN

TEXT = """# top comment
myhostname = host.example.com
mydestination = $myhostname,
# a comment between a line and its continuation
    localhost

relayhost = [relay.example]:2525
"""


def config(text: str) -> MainConfig:
    return MainConfig.from_document(parse_main_cf(text, "main.cf"), hostname="h.example.org")


def test_entries_keep_file_and_line() -> None:
    doc = parse_main_cf(TEXT, "main.cf")
    values = doc.values()
    assert values["mydestination"].value == "$myhostname,    localhost"
    assert values["mydestination"].line == 3
    assert values["relayhost"].line == 7
    assert values["relayhost"].path == "main.cf"


def test_unedited_document_renders_byte_for_byte() -> None:
    assert parse_main_cf(TEXT).render() == TEXT


def test_last_entry_wins() -> None:
    assert config("relayhost = a\nrelayhost = b\n").value("relayhost") == "b"


def test_missing_equals_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"main.cf:2: missing '='"):
        parse_main_cf("a = b\nnovalue\n", "main.cf")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$a|${a}|$(a)", "one|one|one"),
        ("${a?yes}|${a:no}|${zz?yes}|${zz:no}", "yes|||no"),
        ("$$|x$zz.y|$", "$|x.y|$"),
        ("${a?{x y}:{p q}}|${zz?{x y}:{p q}}", "x y|p q"),
        ("${a?$b}", "one-two"),
    ],
)
def test_expansion_forms_match_postfix(template: str, expected: str) -> None:
    values = {"a": "one", "b": "$a-two"}
    assert expand(template, values.get) == expected


def test_self_reference_is_an_error_not_a_hang() -> None:
    with pytest.raises(ExpansionError, match=r"main\.cf:1: d:"):
        config("d = $d\n").value("d")


def test_undefined_name_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert config("myorigin = $nosuch.x\n").value("myorigin") == ".x"
    assert "undefined parameter: nosuch" in caplog.text


def test_defaults_and_typed_values() -> None:
    cfg = config("message_size_limit = 20480000\nmaximal_queue_lifetime = 2\n")
    assert cfg.integer("default_destination_recipient_limit") == 50
    assert cfg.size("message_size_limit") == 20480000
    assert cfg.time("maximal_queue_lifetime") == 2 * 86400  # its unit is days
    assert cfg.time("smtpd_timeout") == 300  # ${stress?{10}:{300}}s
    assert cfg.boolean("lmtp_connection_cache_on_demand") is True
    assert cfg.value("mydomain") == "example.org"
    assert cfg.words("mydestination") == ("h.example.org", "localhost.example.org", "localhost")


def test_bad_typed_value_names_file_line_key() -> None:
    with pytest.raises(ConfigError, match=r"main.cf:2: smtpd_recipient_limit: 'lots'"):
        config("# x\nsmtpd_recipient_limit = lots\n").integer("smtpd_recipient_limit")


def test_renamed_parameter_sets_new_name_with_note(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        cfg = config("lmtp_cache_connection = no\n")
    assert cfg.boolean("lmtp_connection_cache_on_demand") is False
    assert "lmtp_cache_connection" in caplog.text
    assert "lmtp_connection_cache_on_demand" in caplog.text
    assert cfg.unused() == []


def test_unused_parameters_follow_postfix_rules() -> None:
    cfg = MainConfig.from_document(
        parse_main_cf("bogus = 1\nuser_list = a\nrelayhost = $user_list\n"
                      "cyrus_destination_recipient_limit = 300\n"),
        transports=("lmtp",),
    )
    assert [entry.name for entry in cfg.unused()] == ["bogus", "cyrus_destination_recipient_limit"]


def test_per_transport_default_follows_global() -> None:
    cfg = config("default_destination_recipient_limit = 7\n")
    assert cfg.integer("cyrus_destination_recipient_limit") == 7
    cfg = config("cyrus_destination_recipient_limit = 300\n")
    assert cfg.integer("cyrus_destination_recipient_limit") == 300


def test_typed_handles_and_errors_name_the_line() -> None:
    cfg = config("# x\ndefault_destination_recipient_limit = 7\nmail_owner = nobody\n")
    assert cfg.get(parameters.transport_recipient_limit("cyrus")) == 7
    assert cfg.get(parameters.LMTP_CLIENT.hello_timeout) == 300
    assert str(cfg.error(MAIN.mail_owner, "bad")) == "main.cf:3: mail_owner: bad"
    assert str(cfg.error(MAIN.relayhost, "unset")) == "main.cf: relayhost: unset"  # a default
    assert cfg.raw(MAIN.myorigin) == "$myhostname"


def test_set_rewrites_every_entry_in_place_like_postconf_e() -> None:
    doc = parse_main_cf("relayhost = a\n  b\n# c\nmyhostname = h\nrelayhost = second\n")
    doc.set("relayhost", "new")
    doc.set("recipient_delimiter", "+")
    assert doc.render() == (
        "relayhost = new\n# c\nmyhostname = h\nrelayhost = new\nrecipient_delimiter = +\n"
    )


def test_set_appends_after_a_file_without_final_newline() -> None:
    doc = parse_main_cf("a = b")
    doc.set("c", "d")
    assert doc.render() == "a = b\nc = d\n"


def test_remove_and_comment_out() -> None:
    doc = parse_main_cf("mydomain = d\n   e\nrelayhost = a\nrelayhost = b\n")
    assert doc.comment_out("mydomain")
    assert doc.remove("relayhost")
    assert not doc.remove("nosuch")
    assert doc.render() == "#mydomain = d\n#   e\n"


names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
values = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40).map(
    str.strip
)


@given(st.dictionaries(names, values, max_size=8))
def test_render_parse_round_trip(params: dict[str, str]) -> None:
    parsed = parse_main_cf(render_main_cf(params)).values()
    assert {name: entry.value for name, entry in parsed.items()} == params


@given(st.text(max_size=200))
def test_unedited_text_round_trips_or_fails_cleanly(text: str) -> None:
    try:
        doc = parse_main_cf(text)
    except ConfigError:
        return
    assert doc.render() == text


@given(st.dictionaries(st.sampled_from("abcde"), st.text("$abcde{}()?:x ", max_size=12)),
       st.text("$abcde{}()?:x ", max_size=20))
def test_expansion_always_ends(values: dict[str, str], template: str) -> None:
    with contextlib.suppress(ExpansionError):
        expand(template, values.get)

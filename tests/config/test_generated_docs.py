"""The option reference pages are generated from the registries and committed: they must be
current, and the schema's statuses must say what the code does."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealmail.cli.config_docs import PAGES
from sealmail.config.imapd_conf import ConfigError, parse_imapd_conf
from sealmail.config.options import IMAPD
from sealmail.config.schema import Status

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_committed_docs_are_current(name: str) -> None:
    committed = (DOCS / name).read_text(encoding="utf-8")
    assert committed == PAGES[name](), (
        f"docs/{name} is stale: run `python3 -m sealmail.cli.config_docs docs`")


def test_typed_access_and_lines_of_imapd_conf() -> None:
    config = parse_imapd_conf("# c\nservername: mail.example\n\nvirtdomains: userid\n", "x.conf")
    assert config.get(IMAPD.servername) == "mail.example"
    assert config.get(IMAPD.virtdomains) == "userid"
    assert config.get(IMAPD.maxmessagesize) == 0  # the default
    assert config.where(IMAPD.virtdomains) == "x.conf:4"
    assert str(config.error(IMAPD.servername, "bad")) == "x.conf:2: servername: bad"


def test_options_without_effect_are_listed_with_their_line() -> None:
    assert IMAPD.sasl_auxprop_plugin.status is Status.ACCEPTED
    config = parse_imapd_conf("servername: a\nsasl_auxprop_plugin: sasldb\n", "x.conf")
    assert config.without_effect() == [("sasl_auxprop_plugin", 2)]


def test_quotawarn_is_a_percentage() -> None:
    assert parse_imapd_conf("quotawarn: 80\n", "x.conf").get(IMAPD.quotawarn) == 80
    with pytest.raises(ConfigError, match=r"x\.conf:1.*percentage"):
        parse_imapd_conf("quotawarn: 900\n", "x.conf")

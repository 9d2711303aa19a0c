"""The option reference pages, generated from the registries: `-m sealmail.cli.config_docs`.

docs/imapd-conf-options.md and docs/main-cf-parameters.md are this module's output, committed;
tests/config/test_generated_docs.py fails when a declaration changed and the pages were not
regenerated.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from sealmail.config.options import OPTIONS, PREFIX_OPTIONS
from sealmail.config.schema import markdown_table
from sealmail.mta.config.parameters import PARAMETERS

_STATUSES = """\
Status: **supported** options are honoured; **accepted** ones are read without effect (setting one
is warned about at start, with file and line); **refused** ones name a control sealmail does not
implement: setting one to a value sealmail cannot honour stops the start with file, line and name.
A supported option may still refuse some values (the restriction lists, the TLS levels).

Generated from the registry by `python3 -m sealmail.cli.config_docs`; do not edit."""

def imapd_conf_page() -> str:
    return markdown_table(
        "imapd.conf options",
        "Every option of the store's imapd.conf (sealmail.config.options; `sealmail imapd-conf -d` "
        "lists the defaults). `partition-NAME` sets the directory of partition NAME.\n\n"
        + _STATUSES,
        {**OPTIONS, **PREFIX_OPTIONS},
    )


def main_cf_page() -> str:
    return markdown_table(
        "main.cf parameters",
        "Every main.cf parameter of the MTA (sealmail.mta.config.parameters; `sealmail postconf "
        "-d` lists the defaults).\n\n" + _STATUSES,
        PARAMETERS,
    )


PAGES: dict[str, Callable[[], str]] = {
    "imapd-conf-options.md": imapd_conf_page,
    "main-cf-parameters.md": main_cf_page,
}


def write(directory: Path) -> None:
    for name, render in PAGES.items():
        (directory / name).write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))

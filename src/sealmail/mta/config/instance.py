"""One MTA instance's configuration: main.cf and master.cf of a config directory, read together.

Reading them together is what makes per-transport parameters known (`cyrus_destination_recipient_
limit` is used only when master.cf defines `cyrus`) and gives each service its effective view.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sealmail.mta.config.main_cf import MainCfDocument, MainCfEntry, MainConfig, load_main_cf
from sealmail.mta.config.master_cf import MasterCf, MasterService, load_master_cf

DEFAULT_CONFIG_DIRECTORY = "/etc/sealmail"

log = logging.getLogger("sealmail.mta.config")


@dataclass
class MtaConfig:
    directory: Path
    main_cf: MainCfDocument
    master_cf: MasterCf
    main: MainConfig

    def service(self, name: str, type_: str = "unix") -> MainConfig:
        """Effective parameters of one master.cf service (main.cf + its -o overrides)."""
        entry = self.master_cf.get(name, type_)
        return self.main if entry is None else entry.effective(self.main)

    def services(self) -> list[MasterService]:
        return list(self.master_cf)


def load_mta_config(
    directory: str | os.PathLike[str] = DEFAULT_CONFIG_DIRECTORY,
    *,
    missing_ok: bool = False,
    hostname: str | None = None,
) -> MtaConfig:
    """Read DIR/main.cf and DIR/master.cf; `config_directory` is set to DIR as Postfix does.

    With `missing_ok`, absent files read as empty (postmap and postconf -d need no config).
    """
    root = Path(directory)
    document = load_main_cf(root / "main.cf", missing_ok=missing_ok)
    master_path = root / "master.cf"
    if not master_path.exists():
        log.warning("open %s: no such file; no services defined", master_path)
    master = load_master_cf(master_path, missing_ok=True)
    main = MainConfig.from_document(document, transports=master.transports, hostname=hostname)
    return MtaConfig(root, document, master, with_config_directory(main, root))


def with_config_directory(main: MainConfig, root: Path) -> MainConfig:
    """`config_directory` set to the directory main.cf was read from, as Postfix does: it tells
    a private instance from the system one (MainConfig.instance_path)."""
    if "config_directory" not in main.explicit:
        main.explicit["config_directory"] = MainCfEntry(
            "config_directory", str(root), str(root / "main.cf"), 0
        )
    return main

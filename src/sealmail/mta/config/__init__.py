"""The MTA's configuration: main.cf parameters, master.cf services, lookup tables.

Public API: `load_mta_config(dir)` -> `MtaConfig` (`.main`, `.master_cf`, `.service(name)`);
`MainConfig.get(MAIN.name)`, the typed value of a parameter declared in
sealmail.mta.config.parameters, and `MainConfig.error(MAIN.name, why)`;
`MasterService.effective(main)`; `open_table("type:name")` -> `LookupTable.lookup(key)`.
"""

from sealmail.mta.config.instance import DEFAULT_CONFIG_DIRECTORY, MtaConfig, load_mta_config
from sealmail.mta.config.main_cf import ExpansionError, MainCfEntry, MainConfig
from sealmail.mta.config.master_cf import MasterCf, MasterCfError, MasterService, Override
from sealmail.mta.config.tables import LookupTable, TableError, open_table

__all__ = [
    "DEFAULT_CONFIG_DIRECTORY",
    "ExpansionError",
    "LookupTable",
    "MainCfEntry",
    "MainConfig",
    "MasterCf",
    "MasterCfError",
    "MasterService",
    "MtaConfig",
    "Override",
    "TableError",
    "load_mta_config",
    "open_table",
]

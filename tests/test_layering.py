"""The shape STYLE.md asks for, guarded in one place: which of sealmail's packages may import
which, what the sans-I/O cores and Sieve may not import from the standard library, which modules
may run an event loop, and what importing each core loads.

Every module's imports are read with `ast`, function-local ones included (the code imports late
to keep start-up fast, and a late import is still an edge). `from sealmail import rfc5322` counts
as an import of `sealmail.rfc5322`; relative imports are resolved.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "sealmail"

# Layers, named by the module prefix they cover (the longest prefix wins).
LAYERS = (
    "proto.smtp", "proto.imap", "proto.pop3", "proto.managesieve", "proto.sasl", "proto.milter",
    "proto",  # the shared receive buffer and the core loop (proto/buffer.py, proto/core.py)
    "sieve", "store", "config", "auth", "delivery", "imap", "pop3", "managesieve", "mta", "server",
    "console", "cli",
    "rfc5322", "durable", "maillog", "metrics", "sessions", "privileges", "__main__",
)
PROTO = {"proto", "proto.smtp", "proto.imap", "proto.pop3", "proto.managesieve", "proto.sasl",
         "proto.milter"}
FOUNDATIONS = {"rfc5322", "durable", "maillog"}  # small mechanisms anything may use
# Prometheus counters, off unless a master serves metrics_listen: the daemons' hooks and masters.
METRICS = {"metrics"}
# The live-session registry (admin who/kick): the store's daemons file their sessions in it.

# layer -> the layers it may import ("sealmail" is the package itself: __version__).
ALLOWED: dict[str, set[str]] = {
    "sealmail": set(),  # the package's __init__: __version__
    "rfc5322": set(),
    "durable": set(),
    "maillog": set(),
    "metrics": set(),  # imports nothing of sealmail: its hooks are called, never call back
    "sessions": set(),  # files under configdirectory/proc; the caller names the directory
    "config": set(),
    "privileges": {"config"},
    "proto": set(),
    "proto.sasl": {"proto"},
    "proto.smtp": {"proto", "proto.sasl"},
    "proto.imap": {"proto", "rfc5322"},
    "proto.pop3": {"proto", "proto.sasl"},
    "proto.managesieve": {"proto", "proto.sasl"},
    "proto.milter": set(),  # the milter protocol needs nothing of ours
    "sieve": {"sealmail", "rfc5322"},  # never the store: the host feeds it through callbacks
    "store": {"config", "durable", "rfc5322"},  # no protocol, no server, no MTA
    "auth": {"config", "proto.sasl"},
    "delivery": {"config", "proto", "proto.smtp", "proto.imap", "sieve", "store"} | FOUNDATIONS,
    "imap": {"sealmail", "config", "proto", "proto.imap", "store"} | FOUNDATIONS,
    # The POP3 and ManageSieve glue, as imap/ is IMAP's: their core and the store, nothing else.
    "pop3": {"proto.pop3", "store"},
    "managesieve": {"proto.managesieve", "store"},
    # The MTA: its daemons run on server/'s runtime; it delivers into the store over LMTP only.
    "mta": {"config", "privileges", "auth", "server"} | PROTO | FOUNDATIONS | METRICS,
    # The daemons: anything below them, never the MTA or the CLI.
    "server": {
        "sealmail", "config", "privileges", "auth", "sieve", "store", "delivery", "imap", "pop3",
        "managesieve",
    }
    | (PROTO - {"proto.milter"})  # milters are the MTA's
    | FOUNDATIONS
    | METRICS
    | {"sessions"},
    # The web console: the queue as the MTA keeps it, the store's logins and quotas, its HTTP
    # server and SASL exchange from server/; the trace and quota views are the commands' own code.
    "console": {"config", "privileges", "auth", "mta", "store", "server", "proto.sasl"},
    "cli": set(LAYERS) | {"sealmail"},
    "__main__": {"cli"},
}

# (importing module, imported layer) -> why it is still there. Each must still happen: delete the
# line when its cause is gone.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    # The MTA's `sealmail:` table asks the store whether a recipient exists, as lmtpd would
    # resolve it (store.backends.open_store, delivery.recipient): a lookup, not a layer leak.
    ("mta.config.tables", "store"): "the sealmail: lookup table opens the store",
    ("mta.config.tables", "delivery"): "the sealmail: lookup table resolves as lmtpd does",
    # `sealmail trace`'s log parser and join and `sealmail quota`'s report live in their
    # commands' modules; the console shows exactly what the commands print.
    ("console.logs", "cli"): "the maillog parser of sealmail trace (cli/trace.py)",
    ("console.views", "cli"): "sealmail trace's join of the two halves' logs",
    ("console.store_report", "cli"): "sealmail quota's report",
}

# Standard library modules the sans-I/O layers may not import: no I/O, no clock, no threads.
NO_IO = {
    "asyncio", "socket", "os", "time", "select", "selectors", "ssl", "io", "pathlib",
    "subprocess", "sqlite3", "shutil", "random", "threading", "fcntl",
}
CLOCK_CALLS = {"now", "today", "utcnow"}

# The modules that may import asyncio: server/ and the MTA's own I/O (its master and its watch
# over smtpd processes, smtpd, anvil, queue manager, privileged helper and delivery agents), and
# the deliver command's LMTP service. Routing, retry, bounces, cleanup, the queue file format,
# aliases and the MTA's configuration may not.
ASYNCIO = (  # module names or package prefixes, each ending with "."
    "server.", "mta.master.", "mta.worker_watch.", "mta.smtpd.", "mta.anvil.", "mta.qmgr.",
    "mta.queue_commit.", "mta.privsep.", "mta.agents.", "cli.deliver.", "mta.milter.client.",
    "mta.milter.stages.",
    "mta.restrictions.policy_client.",  # check_policy_service's client (smtpd's I/O)
    "cli.console.", "console.app.",
)


@dataclass(frozen=True)
class Module:
    name: str  # without the "sealmail." prefix
    path: Path

    @property
    def layer(self) -> str:
        return layer_of(self.name)


def layer_of(name: str) -> str:
    """The layer of a module (a new top-level package is a layer of its own, without a row)."""
    matches = [layer for layer in LAYERS if name == layer or name.startswith(layer + ".")]
    return max(matches, key=len) if matches else name.split(".")[0] or "sealmail"


@cache
def modules() -> tuple[Module, ...]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append(Module(".".join(parts), path))
    return tuple(found)


@cache
def imports(module: Module) -> frozenset[str]:
    """Absolute names of everything the module imports, anywhere in it."""
    package = f"sealmail.{module.name}".rstrip(".").split(".")
    if module.path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            # `from sealmail import rfc5322` imports a module; `__version__` is an attribute.
            directory = PACKAGE.parent.joinpath(*origin.split("."))
            names = {alias.name for alias in node.names}
            submodules = {
                name
                for name in names
                if (directory / name).is_dir() or (directory / f"{name}.py").is_file()
            }
            found.update(f"{origin}.{name}" for name in submodules)
            if names - submodules:
                found.add(origin)
    return frozenset(found)


def sealmail_layers(module: Module) -> set[str]:
    return {
        layer_of(name.removeprefix("sealmail").removeprefix("."))
        for name in imports(module)
        if name == "sealmail" or name.startswith("sealmail.")
    } - {module.layer}


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.name or "sealmail")
def test_imports_follow_the_layers(module: Module) -> None:
    allowed = ALLOWED.get(module.layer, set())
    bad = {
        layer
        for layer in sealmail_layers(module) - allowed
        if (module.name, layer) not in KNOWN_EXCEPTIONS
    }
    assert not bad, f"{module.name} ({module.layer}) imports {sorted(bad)}"


def test_known_exceptions_still_happen() -> None:
    """A cause removed (the glue split, the store split) leaves its line here: delete it."""
    by_name = {module.name: module for module in modules()}
    gone = [
        edge
        for edge in KNOWN_EXCEPTIONS
        if edge[0] not in by_name or edge[1] not in sealmail_layers(by_name[edge[0]])
    ]
    assert not gone, f"no longer imported, remove from KNOWN_EXCEPTIONS: {gone}"


# -- one place picks the store backend ---------------------------------------------------------

# Modules that may name the disk backend (sealmail.store.disk): store.backends, where a backend
# is chosen for an imapd.conf, and what needs the disk store's own operations (reconstruct, a
# mailbox's path). Everything else opens its store with store.backends.open_store and types it by
# the role it uses (sealmail.store.api).
DISK_STORE_USERS = {"store.backends", "store.reconstruct", "cli.mailbox", "cli.migrate"}
# Still opening the disk store themselves (issue 19): delete each line with its import.
DISK_STORE_PENDING: set[str] = set()


def test_the_store_backend_is_chosen_in_one_place() -> None:
    naming = {
        module.name
        for module in modules()
        if not module.name.startswith("store.disk")
        and any(name == "sealmail.store.disk" or name.startswith("sealmail.store.disk.")
                for name in imports(module))
    }
    unexpected = naming - DISK_STORE_USERS - DISK_STORE_PENDING
    assert not unexpected, f"open the store with store.backends.open_store: {sorted(unexpected)}"
    done = DISK_STORE_PENDING - naming
    assert not done, f"converted, remove from DISK_STORE_PENDING: {sorted(done)}"


def test_every_layer_has_a_row() -> None:
    assert set(LAYERS) | {"sealmail"} == set(ALLOWED)
    missing = {module.layer for module in modules()} - set(ALLOWED)
    assert not missing, f"new packages: add them to LAYERS and ALLOWED: {sorted(missing)}"


SANS_IO = [m for m in modules() if m.layer in PROTO or m.layer == "sieve"]


@pytest.mark.parametrize("module", SANS_IO, ids=lambda m: m.name)
def test_protocol_cores_and_sieve_do_no_io(module: Module) -> None:
    bad = {name for name in imports(module) if name.split(".")[0] in NO_IO}
    assert not bad, f"{module.name} imports {sorted(bad)}"
    for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in CLOCK_CALLS:
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            assert name not in ("datetime", "date"), f"{module.name} reads a clock"


@pytest.mark.parametrize("module", modules(), ids=lambda m: m.name or "sealmail")
def test_only_the_io_side_runs_an_event_loop(module: Module) -> None:
    if any(name.split(".")[0] == "asyncio" for name in imports(module)):
        assert (module.name + ".").startswith(ASYNCIO), f"{module.name} imports asyncio"


# -- what importing a core loads ---------------------------------------------------------------

CORES = [
    "proto.smtp", "proto.smtp.client", "proto.imap", "proto.pop3", "proto.managesieve",
    "proto.sasl", "proto.policy", "proto.milter", "sieve",
]
# scramp too: SCRAM is the server's (sealmail.auth), or a client's at its first SCRAM exchange.
NOT_LOADED = ("asyncio", "socket", "ssl", "fcntl", "sqlite3", "scramp", "sealmail.config",
              "sealmail.store", "sealmail.server")
# The standard library's email.utils imports socket (for make_msgid): loading it does no I/O.
EMAIL_PACKAGE = {"socket"}
LOADS_ALLOWED: dict[str, set[str]] = {
    "sealmail": set(),  # the package's __init__: __version__
    "sieve": EMAIL_PACKAGE,
}


@pytest.mark.parametrize("core", CORES)
def test_importing_a_core_loads_no_io(core: str) -> None:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path])}
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", f"import json, sys, sealmail.{core}; "
             "print(json.dumps(sorted(sys.modules)))"],
            check=True, capture_output=True, env=environment, text=True,
        ).stdout
    )
    allowed = LOADS_ALLOWED.get(core, set())
    bad = {
        name
        for name in loaded
        for root in NOT_LOADED
        if (name == root or name.startswith(root + ".")) and root not in allowed
    }
    assert not bad, f"importing sealmail.{core} loads {sorted(bad)}"

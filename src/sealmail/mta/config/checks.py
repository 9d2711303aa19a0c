"""What sealmail does with each main.cf setting: honour it, warn that it has no effect, or refuse.

Postfix warns about a parameter nothing reads ("unused parameter"). sealmail declares more
parameters than it honours, so a declared name says nothing about its effect; the schema's status
does (sealmail.config.schema). `audit` goes through every explicit setting, main.cf's and each
master.cf service's `-o` overrides, once per name and place:

- not a known name: Postfix's "unused parameter" warning, as before;
- status `accepted`: a warning naming file, line and parameter (it has no effect);
- a value its declaration refuses (a restriction, milter or TLS policy sealmail does not
  implement): a ConfigError naming file, line and parameter. `sealmail postfix check/start`
  and the master stop on it: mail accepted under a policy the operator wrote but sealmail does not
  enforce is worse than mail not accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from sealmail.config.imapd_conf import ConfigError
from sealmail.config.schema import Status
from sealmail.mta.config import parameters
from sealmail.mta.config.instance import MtaConfig
from sealmail.mta.config.main_cf import ExpansionError, MainCfEntry, MainConfig

log = logging.getLogger("sealmail.mta.config")


@dataclass
class Audit:
    """The warnings (text for a `warning:` line) and refusals of one configuration."""

    warnings: list[str] = field(default_factory=list)
    refusals: list[ConfigError] = field(default_factory=list)

    def raise_first(self) -> None:
        """Stop on the first refusal (the others are in the log)."""
        for refusal in self.refusals[1:]:
            log.error("%s", refusal)
        if self.refusals:
            raise self.refusals[0]


def _settings(config: MtaConfig) -> Iterator[tuple[MainConfig, MainCfEntry]]:
    """Every explicit setting with the view it is read in: main.cf's, then each service's -o."""
    main = config.main
    for entry in main.explicit.values():
        if entry.line or entry.name != "config_directory":  # config_directory: set by the loader
            yield main, entry
    for service in config.master_cf:
        overrides = service.override_entries()
        if overrides:
            view = main.with_overrides(overrides)
            for entry in overrides:
                yield view, entry


def _where(entry: MainCfEntry) -> str:
    return f"{entry.path}:{entry.line}" if entry.line else entry.path


def audit(config: MtaConfig) -> Audit:
    """Warnings and refusals for every explicit setting of this instance, once per place."""
    result = Audit()
    known = config.main.known_names()
    seen: set[tuple[str, str, int]] = set()
    for view, entry in _settings(config):
        key = (entry.name, entry.path, entry.line)
        if key in seen:
            continue
        seen.add(key)
        if entry.name not in known:
            result.warnings.append(f"{entry.path}: unused parameter: {entry.name}={entry.value}")
            continue
        rename = parameters.renamed(entry.name)
        declared = parameters.lookup(rename.new if rename else entry.name, view.transports)
        if declared is None:
            continue  # a user-defined name some value refers to
        if declared.status is Status.ACCEPTED:
            result.warnings.append(
                f"{_where(entry)}: {entry.name}: accepted, but has no effect in sealmail "
                f"(see docs/main-cf-parameters.md)"
            )
        if declared.refuses is None and declared.status is not Status.REFUSED:
            continue
        try:
            text = view.expand_text(entry.value, where=entry.path)
        except ExpansionError:
            text = entry.value
        reason = declared.refusal(text)
        if reason is not None:
            result.refusals.append(ConfigError(
                entry.path, entry.line, entry.name,
                f"{entry.name} = {entry.value}: {reason}; sealmail refuses to start rather than "
                "accept mail without it",
            ))
    result.warnings.extend(_chroot_warnings(config))
    return result


def _chroot_warnings(config: MtaConfig) -> Iterator[str]:
    """master.cf's chroot column: sealmail never chroots (its services still run as
    mail_owner, and pipe(8)'s `chroot=` attribute is refused), so a `y` there is said aloud."""
    for service in config.master_cf:
        if service.chroot:
            yield (f"{service.path}:{service.line}: service {service.key}: chroot=y is not "
                   "honoured: sealmail does not chroot its services (they run as mail_owner); "
                   "write - or n in that column to silence this")


def enforce(config: MtaConfig, logger: logging.Logger = log) -> None:
    """At start: each warning once in the log, and a refusal stops the start."""
    result = audit(config)
    for warning in result.warnings:
        logger.warning("%s", warning)
    result.raise_first()

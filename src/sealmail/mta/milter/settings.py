"""What main.cf says about milters: where they listen, what protocol, timeouts and macros.

Postfix's syntax: a list of `inet:host:port` or `unix:/path` (`local:` as `unix:`), separated
by commas or spaces; milter_protocol is a version (2, 3, 4 or 6) and optionally
`no_header_reply`. Per-milter settings in braces ({ inet:..., default_action=accept }) are not
supported and refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sealmail.config.schema import Option
from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.proto.milter import PROTOCOL_MASKS, ProtocolFlag, Stage

DEFAULT_ACTIONS = ("tempfail", "accept", "reject", "quarantine", "shutdown")
_MACRO_PARAMETERS = {
    Stage.CONNECT: MAIN.milter_connect_macros, Stage.HELO: MAIN.milter_helo_macros,
    Stage.MAIL: MAIN.milter_mail_macros, Stage.RCPT: MAIN.milter_rcpt_macros,
    Stage.DATA: MAIN.milter_data_macros, Stage.EOH: MAIN.milter_end_of_header_macros,
    Stage.EOM: MAIN.milter_end_of_data_macros, Stage.UNKNOWN: MAIN.milter_unknown_command_macros,
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One milter: `inet:host:port` (host may be [v6]) or `unix:/path`."""

    name: str  # as written: log lines name the milter by it
    host: str = ""
    port: int = 0
    path: str = ""


def parse_endpoint(text: str) -> Endpoint:
    """ValueError for anything but inet:host:port, unix:/path and local:/path."""
    transport, _, where = text.partition(":")
    if not where:
        raise ValueError(f"milter service needs transport:endpoint instead of {text!r}")
    if transport in ("unix", "local"):
        return Endpoint(text, path=where)
    if transport != "inet":
        raise ValueError(f"invalid transport name: {transport} in milter service: {text}")
    host, _, port = where.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"milter service {text!r}: need inet:host:port")
    return Endpoint(text, host=host, port=int(port))


def parse_protocol(words: tuple[str, ...]) -> tuple[int, int]:
    """milter_protocol -> (version, the events we offer); ValueError as Postfix's warning."""
    version, events = 0, 0
    for word in words:
        if word == "no_header_reply":
            events |= ProtocolFlag.NR_HDR
        elif word.isdigit() and int(word) in PROTOCOL_MASKS and not version:
            version = int(word)
            events |= PROTOCOL_MASKS[version]
        else:
            raise ValueError(f"bad protocol information: {word}")
    if not version:
        raise ValueError("no protocol version information")
    # Recipients smtpd refused are not reported to milters: SMFIP_RCPT_REJ is not offered.
    return version, int(events & ~ProtocolFlag.RCPT_REJ)


@dataclass(frozen=True)
class MilterSettings:
    endpoints: tuple[Endpoint, ...]
    default_action: str = "tempfail"
    version: int = 6
    events: int = int(PROTOCOL_MASKS[6])
    connect_timeout: float = 30.0
    command_timeout: float = 30.0
    content_timeout: float = 300.0
    macros: dict[Stage, tuple[str, ...]] = field(default_factory=dict)
    daemon_name: str = ""
    v: str = "sealmail"
    macro_defaults: dict[str, str] = field(default_factory=dict)
    max_edit_octets: int = 64 * 1024 * 1024  # message_size_limit, when it sets one

    @classmethod
    def from_config(cls, config: MainConfig, parameter: Option[tuple[str, ...]]
                    ) -> MilterSettings | None:
        """The milters `parameter` (smtpd_milters or non_smtpd_milters) names; None when it
        names none. ConfigError for a value sealmail cannot use."""
        words = config.get(parameter)
        if not words:
            return None
        if any("{" in w or "}" in w for w in words):
            raise config.error(parameter, "per-milter settings in { } are not supported")
        try:
            endpoints = tuple(parse_endpoint(w) for w in words)
        except ValueError as exc:
            raise config.error(parameter, str(exc)) from None
        action = config.get(MAIN.milter_default_action).strip().lower()
        if action not in DEFAULT_ACTIONS:
            raise config.error(MAIN.milter_default_action,
                               f"bad value {action!r}: one of {', '.join(DEFAULT_ACTIONS)}")
        try:
            version, events = parse_protocol(
                tuple(config.get(MAIN.milter_protocol).replace(",", " ").split()))
        except ValueError as exc:
            raise config.error(MAIN.milter_protocol, str(exc)) from None
        defaults = {}
        for word in config.get(MAIN.milter_macro_defaults):
            name, equals, value = word.partition("=")
            if not equals:
                raise config.error(MAIN.milter_macro_defaults, f"{word!r}: need name=value")
            defaults[name] = value
        return cls(
            endpoints=endpoints,
            default_action=action,
            version=version,
            events=events,
            connect_timeout=float(config.get(MAIN.milter_connect_timeout)),
            command_timeout=float(config.get(MAIN.milter_command_timeout)),
            content_timeout=float(config.get(MAIN.milter_content_timeout)),
            macros={stage: config.get(p) for stage, p in _MACRO_PARAMETERS.items()},
            daemon_name=config.get(MAIN.milter_macro_daemon_name),
            v=config.get(MAIN.milter_macro_v),
            macro_defaults=defaults,
            max_edit_octets=config.get(MAIN.message_size_limit) or 64 * 1024 * 1024,
        )

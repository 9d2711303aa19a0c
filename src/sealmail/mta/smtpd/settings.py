"""What one smtpd service runs with: main.cf (with its master.cf -o overrides) read once."""

from __future__ import annotations

from dataclasses import dataclass

from sealmail.auth.authenticator import Authenticator
from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.proto.smtp import Limits


@dataclass
class SmtpdSettings:
    hostname: str
    banner: str
    myorigin: str
    limits: Limits
    timeout: float
    starttls_timeout: float
    tls_level: str  # "", none, may, encrypt
    sasl_enabled: bool
    tls_auth_only: bool
    sasl_noplaintext: bool
    sasl_tls_noplaintext: bool
    helo_required: bool
    smtputf8: bool = True
    wrappermode: bool = False  # smtpd_tls_wrappermode: TLS before the greeting (port 465)
    syslog_name: str = ""  # the service's own (-o syslog_name=postfix/submission)
    # Postfix's tarpit: once a client has made soft_error_limit errors, every reply waits
    # error_sleep seconds first (smtpd_chat.c).
    soft_error_limit: int = 10
    error_sleep: float = 1.0

    @classmethod
    def from_config(cls, config: MainConfig) -> SmtpdSettings:
        return cls(
            hostname=config.get(MAIN.myhostname),
            banner=config.get(MAIN.smtpd_banner),
            myorigin=config.get(MAIN.myorigin),
            limits=core_limits(config),
            soft_error_limit=config.get(MAIN.smtpd_soft_error_limit),
            error_sleep=float(config.get(MAIN.smtpd_error_sleep_time)),
            timeout=float(config.get(MAIN.smtpd_timeout)),
            starttls_timeout=float(config.get(MAIN.smtpd_starttls_timeout)),
            tls_level=config.get(MAIN.smtpd_tls_security_level).strip().lower(),
            sasl_enabled=config.get(MAIN.smtpd_sasl_auth_enable),
            tls_auth_only=config.get(MAIN.smtpd_tls_auth_only),
            sasl_noplaintext="noplaintext" in config.get(MAIN.smtpd_sasl_security_options),
            sasl_tls_noplaintext=(
                "noplaintext" in config.get(MAIN.smtpd_sasl_tls_security_options)
            ),
            helo_required=config.get(MAIN.smtpd_helo_required),
            smtputf8=config.get(MAIN.smtputf8_enable),
            wrappermode=config.get(MAIN.smtpd_tls_wrappermode),
            syslog_name=config.get(MAIN.syslog_name),
        )


def core_limits(config: MainConfig) -> Limits:
    """The SMTP core's limits from main.cf, for smtpd and for `sendmail -bs`."""
    return Limits(
        max_message_size=config.get(MAIN.message_size_limit),
        max_recipients=config.get(MAIN.smtpd_recipient_limit),
        max_bad_commands=config.get(MAIN.smtpd_hard_error_limit),
        max_junk_commands=config.get(MAIN.smtpd_junk_command_limit),
        forbidden_commands=frozenset(
            word.upper() for word in config.get(MAIN.smtpd_forbidden_commands)),
    )


def authenticator_from_config(config: MainConfig) -> Authenticator | None:
    if not config.get(MAIN.smtpd_sasl_auth_enable):
        return None
    from sealmail.config.imapd_conf import load_imapd_conf

    return Authenticator(load_imapd_conf(config.get(MAIN.smtpd_sasl_imapd_conf)))

"""smtpd's access restrictions: Postfix's smtpd_*_restrictions stages and checks.

- model: the stages, the session's facts, a check's answer;
- evaluator: one session's state and Postfix's order of evaluation (warn_if_reject,
  defer_if_permit, defer_if_reject, smtpd_delay_reject);
- checks: the table of checks (add one there);
- access: access(5) lookup keys and actions; dnsxl: DNS block/allow lists;
- engine: built from main.cf, holding the lists and the injected DNS, tables and policy servers;
- policy_client: check_policy_service over inet:/unix: (the codec is sealmail.proto.policy).

smtpd calls `Engine.session(facts)` per connection and the session's stage methods (connect,
helo, mail, rcpt, data, end_of_data), each giving a Reply to send or None.
"""

from sealmail.mta.restrictions.engine import Engine, parse_networks
from sealmail.mta.restrictions.evaluator import Session
from sealmail.mta.restrictions.model import ClientNames, Facts, MessageActions, NameStatus, Status

__all__ = [
    "ClientNames",
    "Engine",
    "Facts",
    "MessageActions",
    "NameStatus",
    "Session",
    "Status",
    "implemented_restrictions",
    "parse_networks",
]


def implemented_restrictions() -> frozenset[str]:
    """Every restriction name the engine evaluates (the parameters' refusals read this)."""
    from sealmail.mta.restrictions.checks import CHECKS

    return frozenset(CHECKS) | {"warn_if_reject"}

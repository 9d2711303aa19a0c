"""Checks of LMTP authentication: password maps, the sasldb and clear-text mechanisms
(seed 2.2.1.2)."""

from __future__ import annotations

import pwd
from collections.abc import Iterator
from pathlib import Path

from sealmail.cli.check.model import Finding, Halves, lmtp_listeners, next_hops, table_sources
from sealmail.cli.check.sockets import describe_mode, mta_account, permits
from sealmail.config.cyrus_conf import (
    InetAddress,
)
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.config.tables import parse_source


def check_password_maps(halves: Halves) -> Iterator[Finding]:
    mta = halves.mta
    if mta is None:
        return
    hops = next_hops(mta)
    account = mta_account(mta)
    users = sasldb_users(halves.imapd)
    for service in mta.master_cf:
        if service.command != "lmtp":
            continue
        view = mta.service(service.service, service.type)
        if not view.get(MAIN.lmtp_sasl_auth_enable):
            continue
        keys = set()
        for hop in hops:
            if hop.transport == service.service and hop.kind == "inet":
                keys.add(map_key(hop.target))
                if hop.port:
                    keys.add(map_key(f"{hop.target}:{hop.port}"))
        for source in table_sources(mta, "lmtp_sasl_password_maps", view):
            yield from check_password_map(halves, service.service, source, keys, account, users)


def map_key(text: str) -> str:
    """A next hop as a password map key is compared: case-folded, brackets dropped."""
    return text.lower().replace("[", "").replace("]", "")


def check_password_map(
    halves: Halves,
    transport: str,
    source: Path,
    hops: set[str],
    account: pwd.struct_passwd | None,
    users: set[str] | None,
) -> Iterator[Finding]:
    if not source.is_file():
        yield Finding(str(source), 0, "password-map", f"{transport}: no such file")
        return
    if account is not None:
        yield from unreadable_map(source, account)
    for row in parse_source(source.read_text(errors="replace"), str(source)):
        if map_key(row.key) not in hops:
            shown = ", ".join(sorted(hops)) or "none"
            yield Finding(str(source), row.line, "password-map",
                          f"key {row.key!r} matches no next hop of {transport} ({shown}): the "
                          "client does not authenticate and the store answers 530")
        user = row.value.partition(":")[0]
        yield from password_map_user(halves.imapd, users, user, source, row.line)


def unreadable_map(source: Path, account: pwd.struct_passwd) -> Iterator[Finding]:
    for path in (source, source.with_name(source.name + ".sqlite")):
        try:
            st = path.stat()
        except OSError:
            continue
        if path != source and not permits(account, st.st_uid, st.st_gid, st.st_mode, 0o4):
            yield Finding(str(path), 0, "password-map",
                          f"{account.pw_name} (mail_owner) cannot read it "
                          f"({describe_mode(st.st_uid, st.st_gid, st.st_mode)}): every delivery "
                          f"through it is deferred; chgrp {account.pw_name} and chmod 0640")


def password_map_user(
    imapd: ImapdConfig | None, users: set[str] | None, user: str, source: Path, line: int
) -> Iterator[Finding]:
    if imapd is None or not user:
        return
    admins = imapd.lmtp_admins
    if user not in admins:
        yield Finding(str(source), line, "password-map",
                      f"user {user!r} is not in lmtp_admins ({' '.join(admins) or 'none'}) of "
                      f"{imapd.path}")
    if users is not None and user not in users:
        yield Finding(str(source), line, "password-map",
                      f"user {user!r} is not in the sasldb ({imapd.get(IMAPD.sasl_sasldb_path)})")


def sasldb_users(imapd: ImapdConfig | None) -> set[str] | None:
    """Canonical names in the sasldb, or None when it cannot be read (then nothing is said)."""
    if imapd is None or "auxprop" not in (imapd.get(IMAPD.sasl_pwcheck_method) or ("auxprop",)):
        return None
    from sealmail.auth.sasldb import SaslDB, SaslDBError

    path = Path(imapd.get(IMAPD.sasl_sasldb_path) or "")
    if not path.is_file():
        return set()
    try:
        entries = SaslDB.from_config(imapd).entries()
    except (SaslDBError, OSError):
        return None
    return {entry.identity.canonical(imapd.servername) for entry in entries}


def _lmtp_allowplaintext(imapd: ImapdConfig) -> bool:
    """lmtp_allowplaintext, which follows allowplaintext while unset."""
    lmtp = imapd.get(IMAPD.lmtp_allowplaintext)
    return imapd.get(IMAPD.allowplaintext) if lmtp is None else lmtp


def check_plaintext(halves: Halves) -> Iterator[Finding]:
    imapd = halves.imapd
    if imapd is not None and not imapd.get(IMAPD.tls_server_cert):
        allowed = _lmtp_allowplaintext(imapd)
        tcp = [listener for listener in lmtp_listeners(halves)
               if isinstance(listener.address, InetAddress)
               and "-a" not in listener.service.command.args]
        if allowed and tcp:
            name = "lmtp_allowplaintext" if "lmtp_allowplaintext" in imapd.lines else (
                "allowplaintext")
            yield Finding(imapd.path, imapd.lines.get(name, 0), "plaintext",
                          f"{name}: PLAIN and LOGIN are offered over TCP ({tcp[0].where}) "
                          "without TLS (no tls_server_cert): set lmtp_allowplaintext: no")
    mta = halves.mta
    if mta is None:
        return
    for service in mta.master_cf:
        if service.command != "lmtp":
            continue
        view = mta.service(service.service, service.type)
        if not view.get(MAIN.lmtp_sasl_auth_enable):
            continue
        options = list(view.get(MAIN.lmtp_sasl_security_options))
        level = view.get(MAIN.lmtp_tls_security_level).strip()
        if "noplaintext" not in options and level not in ("encrypt", "verify", "secure"):
            yield Finding(service.path, service.line, "plaintext",
                          f"{service.service}: lmtp_sasl_security_options "
                          f"{','.join(options) or '(empty)'} allows PLAIN without TLS: add "
                          "noplaintext or -o lmtp_tls_security_level=encrypt")

"""`sealmail cyradm`: Cyrus's administration shell, speaking IMAP to a running server.

    sealmail cyradm [-u USER] [-w PASSWORD] [-z AUTHZ] [-a MECH] [-p PORT] [--notls]
                    [--cafile FILE] [-e 'cm user.x; sq user.x 1000'] [SERVER]

The commands and their short forms are Cyrus::IMAP::Shell's (createmailbox/cm,
listmailbox/lm, deletemailbox/dm, renamemailbox/renm, setaclmailbox/sam, listaclmailbox/lam,
deleteaclmailbox/dam, setquota/sq, listquota/lq, listquotaroot/lqr, help, exit), and so is what
they print: `lm` in Cyrus's columns, `lq` as ` STORAGE 10/100 (10%)`, errors as
`createmailbox: <the server's text>` on standard error. Without -e it reads commands at a
`SERVER> ` prompt, as Cyrus's cyradm does; with -e it runs the `;`-separated commands and exits
non-zero when one failed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
from collections.abc import Callable
from typing import TextIO

from sealmail.cli.imap_admin import AdminClient, AdminError, QuotaResource


class UsageError(Exception):
    """A command typed wrong: its usage line, as Cyrus's shell dies with it."""


Output = tuple[TextIO, TextIO]  # standard output, standard error
Command = Callable[[AdminClient, list[str], Output], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("server", nargs="?", default="localhost", help="IMAP server")
    parser.add_argument("-u", "--user", default=os.environ.get("USER", "cyrus"),
                        help="authentication identity (default: $USER)")
    parser.add_argument("-z", "--authz", default="", help="authorize as this user")
    parser.add_argument("-w", "--password", help="password (default: asked on the terminal)")
    parser.add_argument("-a", "--auth", dest="mechanism", help="SASL mechanism: PLAIN or LOGIN")
    parser.add_argument("-p", "--port", type=int, default=143, help="port (default 143)")
    parser.add_argument("--notls", action="store_true", help="do not use STARTTLS")
    parser.add_argument("--cafile", help="CA certificates to verify the server with")
    parser.add_argument("-e", dest="commands", metavar="COMMANDS",
                        help="run these ';'-separated commands and exit")


# ---------------------------------------------------------------------- commands


def _create(client: AdminClient, argv: list[str], out: Output) -> None:
    options, rest = _options(argv, {"--partition", "-partition", "--specialuse"},
                             "createmailbox [--partition partition] mailbox [partition]")
    if not 1 <= len(rest) <= 2:
        raise UsageError("usage: createmailbox [--partition partition] mailbox [partition]")
    partition = options.get("--partition") or options.get("-partition")
    client.create(rest[0], partition or (rest[1] if len(rest) > 1 else None))


def _list(client: AdminClient, argv: list[str], out: Output) -> None:
    subscribed = any(a in ("-subscribed", "--subscribed", "-s") for a in argv)
    rest = [a for a in argv if not a.startswith("-")]
    if len(rest) > 2 or len(rest) + int(subscribed) != len(argv):
        raise UsageError("usage: listmailbox [-subscribed] [pattern [base]]")
    pattern = rest[0] if rest else "*"
    reference = rest[1] if len(rest) > 1 else ""
    entries = [
        f"{m.name} ({m.attributes})" if m.attributes else m.name
        for m in client.list_mailboxes(pattern, reference, subscribed)
    ]
    for line in columns(entries, int(os.environ.get("COLUMNS") or 79)):
        out[0].write(line + "\n")


def _delete(client: AdminClient, argv: list[str], out: Output) -> None:
    if len(argv) != 1:
        raise UsageError("usage: deletemailbox mailbox")
    _each(client, argv[0], out, "Deleting mailbox", client.delete)


def _rename(client: AdminClient, argv: list[str], out: Output) -> None:
    options, rest = _options(argv, {"--partition", "-partition"},
                             "renamemailbox [--partition name] oldname newname [partition]")
    partition = options.get("--partition") or options.get("-partition")
    if len(rest) == 3 and partition is None:
        partition = rest.pop()
    if len(rest) != 2:
        raise UsageError("usage: renamemailbox [--partition name] oldname newname [partition]")
    client.rename(rest[0], rest[1], partition)


def _setacl(client: AdminClient, argv: list[str], out: Output) -> None:
    if len(argv) < 3 or (len(argv) - 1) % 2:
        raise UsageError("usage: setaclmailbox mailbox id rights [id rights ...]")
    pairs = list(zip(argv[1::2], argv[2::2], strict=True))

    def set_all(name: str) -> None:
        for identifier, rights in pairs:
            client.set_acl(name, identifier, rights)

    _each(client, argv[0], out, "Setting ACL on", set_all)


def _listacl(client: AdminClient, argv: list[str], out: Output) -> None:
    if len(argv) != 1:
        raise UsageError("usage: listaclmailbox mailbox")
    if not _is_pattern(argv[0]):
        for identifier, rights in client.acl(argv[0]):
            out[0].write(f"{identifier} {rights}\n")
        return
    for mailbox in client.list_mailboxes(argv[0]):
        if _selectable(mailbox.attributes):
            out[0].write(f"{mailbox.name}:\n")
            for identifier, rights in client.acl(mailbox.name):
                out[0].write(f"  {identifier} {rights}\n")


def _deleteacl(client: AdminClient, argv: list[str], out: Output) -> None:
    if len(argv) < 2:
        raise UsageError("usage: deleteaclmailbox mailbox id [id ...]")

    def delete_all(name: str) -> None:
        identifiers = argv[1:]
        if identifiers == ["*"]:  # Cyrus: '*' removes every entry
            identifiers = [identifier for identifier, _ in client.acl(name)]
        for identifier in identifiers:
            client.delete_acl(name, identifier)

    _each(client, argv[0], out, "Deleting acl on", delete_all)


def _setquota(client: AdminClient, argv: list[str], out: Output) -> None:
    usage = "usage: setquota mailbox limit num [limit num ...]\n       setquota mailbox num"
    if len(argv) == 2:
        if argv[1] == "none":
            out[0].write("remove quota\n")
            argv = argv[:1]
        else:
            out[0].write(f"quota:{argv[1]}\n")
            argv = [argv[0], "STORAGE", argv[1]]
    if not argv or (len(argv) - 1) % 2:
        raise UsageError(usage)
    limits = []
    for resource, value in zip(argv[1::2], argv[2::2], strict=True):
        if not value.isdigit():
            raise UsageError(usage)
        limits.append((resource, int(value)))
    client.set_quota(argv[0], limits)


def _listquota(client: AdminClient, argv: list[str], out: Output) -> None:
    if len(argv) != 1:
        raise UsageError("usage: listquota root")
    out[0].write(quota_text(client.quota(argv[0])) + "\n")


def _listquotaroot(client: AdminClient, argv: list[str], out: Output) -> None:
    if len(argv) != 1:
        raise UsageError("usage: listquotaroot mailbox")
    root, resources = client.quota_root(argv[0])
    out[0].write((root or "") + quota_text(resources) + "\n")


def _help(client: AdminClient, argv: list[str], out: Output) -> None:
    names: dict[str, list[str]] = {}
    for alias, target in ALIASES.items():
        names.setdefault(target, []).append(alias)
    rows = [(", ".join([name, *sorted(names.get(name, []))]), HELP[name]) for name in COMMANDS]
    width = max(len(row[0]) for row in rows)
    for title, text in sorted(rows):
        out[0].write(f"{title:<{width}}  {text}\n")


COMMANDS: dict[str, Command] = {
    "createmailbox": _create,
    "deleteaclmailbox": _deleteacl,
    "deletemailbox": _delete,
    "help": _help,
    "listaclmailbox": _listacl,
    "listmailbox": _list,
    "listquota": _listquota,
    "listquotaroot": _listquotaroot,
    "renamemailbox": _rename,
    "setaclmailbox": _setacl,
    "setquota": _setquota,
}
ALIASES = {
    "cm": "createmailbox", "create": "createmailbox",
    "dam": "deleteaclmailbox", "deleteacl": "deleteaclmailbox",
    "dm": "deletemailbox", "delete": "deletemailbox",
    "?": "help",
    "lam": "listaclmailbox", "listacl": "listaclmailbox",
    "lm": "listmailbox",
    "lq": "listquota",
    "lqr": "listquotaroot", "lqm": "listquotaroot",
    "renm": "renamemailbox", "rename": "renamemailbox",
    "sam": "setaclmailbox", "setacl": "setaclmailbox",
    "sq": "setquota",
}
HELP = {
    "createmailbox": "create mailbox",
    "deleteaclmailbox": "remove ACLs from mailbox",
    "deletemailbox": "delete mailbox",
    "help": "show commands",
    "listaclmailbox": "list ACLs on mailbox",
    "listmailbox": "list mailboxes",
    "listquota": "list quotas on specified root",
    "listquotaroot": "show quota roots and quotas for mailbox",
    "renamemailbox": "rename (and optionally relocate) mailbox",
    "setaclmailbox": "set ACLs on mailbox",
    "setquota": "set quota on mailbox or resource",
}


# ---------------------------------------------------------------------- formatting


def columns(entries: list[str], line_width: int) -> list[str]:
    """Cyrus's `lm` layout: sorted, column-major, each cell padded to the widest entry + 1."""
    if not entries:
        return []
    entries = sorted(entries)
    width = min(max(len(e) for e in entries) + 1, line_width)
    per_line = max(line_width // width, 1)
    rows = (len(entries) + per_line - 1) // per_line
    lines = []
    for row in range(rows):
        cells = entries[row::rows]
        lines.append("".join(cell + " " * (width + 1 - len(cell)) for cell in cells))
    return lines


def perl_number(value: float) -> str:
    """How Perl prints a number: integers without a point, others with 15 significant digits."""
    return str(int(value)) if value == int(value) else f"{value:.15g}"


def quota_text(resources: list[QuotaResource]) -> str:
    """Cyrus's ` STORAGE 10/100 (10%)` for each resource."""
    parts = []
    for resource in resources:
        part = f" {resource.name} {resource.used}/{resource.limit}"
        if resource.limit:
            part += f" ({perl_number(resource.used * 100 / resource.limit)}%)"
        parts.append(part)
    return "".join(parts)


# ---------------------------------------------------------------------- the shell


def _options(argv: list[str], known: set[str], usage: str) -> tuple[dict[str, str], list[str]]:
    """Leading `--option value` pairs, then the arguments."""
    options: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option == "--":
            break
        if option not in known or not rest:
            raise UsageError(f"usage: {usage}")
        options[option] = rest.pop(0)
    return options, rest


def _is_pattern(name: str) -> bool:
    return "*" in name or "%" in name


def _selectable(attributes: str) -> bool:
    lowered = attributes.lower()
    return not any(flag in lowered for flag in ("\\noselect", "\\nonexistent", "\\placeholder"))


def _each(
    client: AdminClient, name: str, out: Output, doing: str, action: Callable[[str], None]
) -> None:
    """`action(name)`, or with a wildcard on every selectable mailbox `name` matches, saying
    `doing NAME...OK.` for each as Cyrus does; the first failure prints its text and stops."""
    if not _is_pattern(name):
        action(name)
        return
    for mailbox in client.list_mailboxes(name):
        if not _selectable(mailbox.attributes):
            continue
        out[0].write(f"{doing} {mailbox.name}...")
        try:
            action(mailbox.name)
        except AdminError as exc:
            out[0].write(f"{exc}\n")
            raise
        out[0].write("OK.\n")


def split_commands(text: str) -> list[list[str]]:
    """Words of each `;`-separated command, quoted as a shell quotes them."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    lexer.commenters = ""
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word and set(word) == {";"}:
            commands.extend([] for _ in word)
        else:
            commands[-1].append(word)
    return [command for command in commands if command]


def execute(client: AdminClient, argv: list[str], out: Output) -> bool:
    """Run one command; False when it failed (its error already printed)."""
    name = ALIASES.get(argv[0], argv[0])
    command = COMMANDS.get(name)
    if command is None:
        out[1].write(f"unknown command: {argv[0]}\n")
        return False
    try:
        command(client, argv[1:], out)
    except UsageError as exc:
        out[1].write(f"{exc}\n")
        return False
    except AdminError as exc:
        out[0].flush()
        out[1].write(f"{name}: {exc}\n")
        return False
    return True


def run_line(client: AdminClient, line: str, out: Output) -> tuple[bool, int | None]:
    """All commands of one line: (every one succeeded, exit status when one was `exit`)."""
    try:
        commands = split_commands(line)
    except ValueError as exc:  # an unclosed quote
        out[1].write(f"syntax error: {exc}\n")
        return False, None
    ok = True
    for argv in commands:
        if argv[0] in ("exit", "quit"):
            return ok, int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else 0
        ok = execute(client, argv, out) and ok
    return ok, None


def interact(client: AdminClient, prompt: str, out: Output, lines: TextIO) -> int:
    """Cyrus's shell loop: prompt, read a line, run it, until end of input or `exit`."""
    if lines.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    while True:
        out[0].write(prompt)
        out[0].flush()
        line = lines.readline()
        if not line:
            if lines.isatty():
                out[0].write("\n")  # end the prompt's line after ^D
            return 0
        _, status = run_line(client, line, out)
        out[0].flush()
        if status is not None:
            return status


def connect(args: argparse.Namespace) -> AdminClient:
    client = AdminClient(args.server, args.port)
    try:
        if not args.notls and client.offers("STARTTLS"):
            client.starttls(args.cafile)
        password = args.password
        if password is None:
            password = getpass.getpass("Password: ")
        client.authenticate(args.user, password, args.mechanism, args.authz)
    except AdminError:
        client.logout()
        raise
    return client


def run(args: argparse.Namespace) -> int:
    out: Output = (sys.stdout, sys.stderr)
    try:
        client = connect(args)
    except (AdminError, EOFError) as exc:
        print(f"cyradm: cannot authenticate to server as {args.user}: {exc}", file=sys.stderr)
        return 1
    try:
        if args.commands is not None:
            ok, status = run_line(client, args.commands, out)
            return status if status is not None else (0 if ok else 1)
        return interact(client, f"{args.server}> ", out, sys.stdin)
    finally:
        client.logout()

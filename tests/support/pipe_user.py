"""A pipe(8) account and a `sealmail` command it can run, for tests of pipe transports.

pipe(8) never runs commands as root, and the account it uses cannot reach a Python installed
under /root (0700), nor a checkout there (as CI's clone may be): the tests then run a copy of the
package with Debian's python3.
"""

from __future__ import annotations

import importlib.metadata
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.peers import check_reachable

import sealmail

PIPE_USER = "sealmail-deliver"


def ensure_pipe_user(name: str = PIPE_USER) -> str:
    """A non-root system account for pipe(8)'s user= (created once, kept: it owns nothing)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        if shutil.which("useradd") is None:
            pytest.skip("no useradd to create the pipe(8) account")
        subprocess.run(
            ["useradd", "-r", "-U", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
    return name


def _runs_as(user: str, argv: list[str]) -> bool:
    """Whether `sealmail deliver` starts as `user` (only deliver's imports: the stdlib)."""
    try:
        done = subprocess.run(
            [*argv, "deliver", "--help"], user=user, capture_output=True, timeout=60, check=False
        )
    except OSError:
        return False
    return done.returncode == 0


def _copy_packages(directory: Path) -> Path:
    """sealmail and what its daemons import (scramp and its asn1crypto), copied under
    `directory/lib` where any account can read them; the lib directory."""
    import asn1crypto
    import scramp

    lib = directory / "lib"
    sources = [Path(p.__file__).resolve().parent for p in (sealmail, scramp, asn1crypto)]
    for name in ("scramp", "asn1crypto"):  # scramp reads its version from its metadata
        files = importlib.metadata.distribution(name).files or []
        sources += [Path(str(f.locate())).parent for f in files if f.name == "METADATA"]
    for source in sources:
        if not (lib / source.name).exists():
            shutil.copytree(
                source, lib / source.name, ignore=shutil.ignore_patterns("__pycache__")
            )
    return lib


def sealmail_command_for(user: str, directory: Path) -> str:
    """The absolute path of a `sealmail` command that `user` can run (see the module docstring)."""
    installed = shutil.which("sealmail")
    if installed and _runs_as(user, [installed]):
        return installed
    python = Path("/usr/bin/python3")
    # A copy of the package where `user` can read it: the checkout may sit under a directory
    # that only root may enter (/root is 0700), as CI's clone may.
    source = _copy_packages(directory)
    if not python.exists():
        pytest.skip(f"{installed} is not runnable by {user} and there is no {python}")
    (directory / "bin").mkdir(exist_ok=True)
    script = directory / "bin" / "sealmail"
    script.write_text(
        f"#!{python} -I\n"
        '"""`sealmail` on this checkout, for accounts that cannot reach the installed one."""\n'
        "import sys\n"
        f"sys.path.insert(0, {str(source)!r})\n"
        "from sealmail.cli.main import main\n"
        "sys.exit(main())\n"
    )
    script.chmod(0o755)
    check_reachable(source, user)
    if not _runs_as(user, [str(script)]):
        pytest.skip(f"neither {installed} nor {script} runs as {user}")
    return str(script)


def python_for(user: str, directory: Path) -> tuple[str, dict[str, str]]:
    """A Python and an environment with which `user` runs every sealmail program, daemons
    included: this interpreter on this checkout when the account can, else on a copy under
    `directory`, else Debian's python3 on that copy. A master started with them (by root) gives
    its workers the same, since they run `sys.executable` with the inherited environment."""
    checkout = Path(sealmail.__file__).resolve().parents[1]
    probe = "import sealmail.server.lmtpd, sealmail.server.imapd, sealmail.server.pop3d"
    tried = []
    for python, lib in (
        (sys.executable, checkout),
        (sys.executable, None),
        ("/usr/bin/python3", None),
    ):
        path = lib if lib is not None else _copy_packages(directory)
        env = {**os.environ, "PYTHONPATH": str(path)}
        try:
            done = subprocess.run(
                [python, "-c", probe], user=user, env=env, cwd="/", capture_output=True,
                timeout=60, check=False,
            )
        except OSError as exc:
            tried.append(f"{python}: {exc}")
            continue
        if done.returncode == 0:
            return python, env
        tried.append(f"{python} on {path}: {done.stderr.decode(errors='replace').strip()[-200:]}")
    pytest.skip(f"no Python that {user} can run sealmail's daemons with: {tried}")

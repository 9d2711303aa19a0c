"""A pipe(8) account and a `sealmail` command it can run, for tests of pipe transports; and a
Python with which daemons that switch to an unprivileged account keep working.

pipe(8) never runs commands as root, nor do the daemons started by root (the MTA as mail_owner,
the store as cyrus_user), and those accounts cannot reach a Python installed under /root (0700),
nor a checkout there (as CI's clone may be): the tests then run a copy of the package, with what
it imports, under Debian's python3.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Sequence
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
        done = subprocess.run(
            ["useradd", "-r", "-U", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", name],
            check=False,
            capture_output=True,
        )
        try:
            pwd.getpwnam(name)  # another test process may have created it meanwhile
        except KeyError:
            raise AssertionError(f"useradd {name}: {done.stderr!r}") from None
    return name


SYSTEM_PYTHON = "/usr/bin/python3"
# What sealmail imports beyond the standard library (uvloop: the [fast] extra, when installed).
RUNTIME_PACKAGES = ("sealmail", "scramp", "asn1crypto", "uvloop")
# Importing these loads every daemon's code: what the probe below must find.
PROBE = "import sealmail.cli.main, sealmail.mta.master, sealmail.server.master, scramp"


def copy_packages(lib: Path, names: Sequence[str]) -> Path:
    """Copies of the installed packages `names` (and their dist-info) in `lib`, where another
    account can read them: the checkout and the interpreter's site-packages may sit under a
    directory that only root may enter (/root is 0700), as CI's clone may. Missing optional
    packages are left out."""
    lib.mkdir(exist_ok=True)
    for name in names:
        if (lib / name).exists():
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        package = Path(next(iter(spec.submodule_search_locations))).resolve()
        shutil.copytree(package, lib / name, ignore=shutil.ignore_patterns("__pycache__"))
        for info in package.parent.glob(f"{name}-*.dist-info"):
            shutil.copytree(info, lib / info.name)
    return lib


def python_for(user: str, directory: Path) -> tuple[str, dict[str, str]]:
    """(python, environment) with which daemons that switch to `user` keep importing and
    starting their workers: this interpreter when `user` can run it and reach this checkout,
    else Debian's python3 over copies under `directory`/lib."""
    here = str(Path(sealmail.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": here}
    if _runs_as(user, [sys.executable, "-c", PROBE], env):
        return sys.executable, env
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{sys.executable} is not usable by {user} and there is no {SYSTEM_PYTHON}")
    lib = copy_packages(directory / "lib", RUNTIME_PACKAGES)
    check_reachable(lib, user)
    env = {**os.environ, "PYTHONPATH": str(lib)}
    probe = [SYSTEM_PYTHON, "-c", PROBE]
    done = subprocess.run(probe, user=user, env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"no Python that {user} can run sealmail with: {done.stderr.strip()}")
    return SYSTEM_PYTHON, env


def _runs_as(user: str, argv: list[str], env: dict[str, str] | None = None) -> bool:
    """Whether argv exits 0 when run as `user`."""
    try:
        done = subprocess.run(argv, user=user, env=env, capture_output=True, timeout=60,
                              check=False)
    except OSError:
        return False
    return done.returncode == 0


def sealmail_command_for(user: str, directory: Path) -> str:
    """The absolute path of a `sealmail` command that `user` can run (see the module docstring)."""
    installed = shutil.which("sealmail")
    if installed and _runs_as(user, [installed, "deliver", "--help"]):
        return installed
    python = Path(SYSTEM_PYTHON)
    if not python.exists():
        pytest.skip(f"{installed} is not runnable by {user} and there is no {python}")
    source = copy_packages(directory / "lib", ("sealmail",))
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
    if not _runs_as(user, [str(script), "deliver", "--help"]):
        pytest.skip(f"neither {installed} nor {script} runs as {user}")
    return str(script)

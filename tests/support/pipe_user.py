"""A pipe(8) account and a `sealmail` command it can run, for tests of pipe transports.

pipe(8) never runs commands as root, nor do the daemons started by root (they drop to an
unprivileged account), and that account cannot reach a Python installed under /root (0700), nor a
checkout there (as CI's clone may be): the tests then run a copy of the package, with what it
imports, under Debian's python3.
"""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.peers import check_reachable

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


def _runs_as(user: str, argv: list[str], env: dict[str, str] | None = None) -> bool:
    """Whether `sealmail deliver` starts as `user` (only deliver's imports: the stdlib)."""
    try:
        done = subprocess.run(
            [*argv, "deliver", "--help"], user=user, capture_output=True, timeout=60,
            check=False, env=env,
        )
    except OSError:
        return False
    return done.returncode == 0


def portable_package(directory: Path) -> Path:
    """A copy of sealmail and what it imports at run time (scramp, asn1crypto, uvloop when
    installed) under `directory/lib`, for a Python outside /root to run with PYTHONPATH."""
    source = directory / "lib"
    if not source.exists():
        for module in ("sealmail", "scramp", "asn1crypto", "uvloop"):
            try:
                package = Path(importlib.import_module(module).__file__ or "").resolve().parent
            except ImportError:
                continue
            shutil.copytree(package, source / module, ignore=shutil.ignore_patterns("__pycache__"))
            for metadata in package.parent.glob(f"{module}-*.dist-info"):  # scramp reads its own
                shutil.copytree(metadata, source / metadata.name)
    return source


def portable_python() -> Path:
    """Debian's python3, when it runs the copied compiled modules (the same 3.x as ours)."""
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip(f"no {python} for an account that cannot reach {sys.executable}")
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != str(tuple(sys.version_info[:2])):
        pytest.skip(f"{python} is Python {version}, the suite runs {sys.version_info[:2]}")
    return python


def runtime_for(user: str, directory: Path) -> tuple[list[str], dict[str, str]]:
    """`sealmail` as argv and the environment it needs, runnable by `user` and by the daemons
    that drop to it: this interpreter where `user` can run it, else a copy (module docstring)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    here = [sys.executable, "-m", "sealmail"]
    if _runs_as(user, here, {**os.environ}):
        return here, dict(os.environ)
    source = portable_package(directory)
    env["PYTHONPATH"] = str(source)
    argv = [str(portable_python()), "-m", "sealmail"]
    check_reachable(source, user)
    if not _runs_as(user, argv, env):
        pytest.skip(f"neither {sys.executable} nor a copy under {directory} runs as {user}")
    return argv, env


def sealmail_command_for(user: str, directory: Path) -> str:
    """The absolute path of a `sealmail` command that `user` can run (see the module docstring)."""
    installed = shutil.which("sealmail")
    if installed and _runs_as(user, [installed]):
        return installed
    python = portable_python()
    source = portable_package(directory)
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

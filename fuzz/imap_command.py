"""atheris target: IMAP's command parser.

    python fuzz/imap_command.py -atheris_runs=100000
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from fuzz.targets import imap_command, main  # noqa: E402

if __name__ == "__main__":
    main(imap_command)

"""atheris target: hosts.allow and hosts.deny.

    python fuzz/hosts_allow.py -atheris_runs=100000
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from fuzz.targets import hosts_allow, main  # noqa: E402

if __name__ == "__main__":
    main(hosts_allow)

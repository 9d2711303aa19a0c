"""atheris target: main.cf as the MTA reads it.

    python fuzz/main_cf.py -atheris_runs=100000
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from fuzz.targets import main, main_cf  # noqa: E402

if __name__ == "__main__":
    main(main_cf)

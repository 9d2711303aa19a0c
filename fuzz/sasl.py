"""atheris target: The SASL mechanisms' response parsing.

    python fuzz/sasl.py -atheris_runs=100000
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from fuzz.targets import main, sasl  # noqa: E402

if __name__ == "__main__":
    main(sasl)

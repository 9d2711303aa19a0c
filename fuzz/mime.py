"""atheris target: MIME and RFC 5322 parsing.

    python fuzz/mime.py -atheris_runs=100000
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from fuzz.targets import main, mime  # noqa: E402

if __name__ == "__main__":
    main(mime)

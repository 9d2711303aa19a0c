"""How long each lmtpd holds the disk store's commit turn, and what waits for it (issue 18).

Runs `bench/lmtp_throughput.py` with `bench/turn_probe` on PYTHONPATH: its `sitecustomize`
times every group commit's turn in the daemons the bench starts (the source tree is not
touched), then this prints, per lmtpd process and for all together: batches and copies per
batch, the wait for the turn and the time held (wall, and the committing thread's CPU) per
batch and per copy, and the turn's busy share (held / the run's wall). Under `sealmail master`
two lmtpds share one turn: a busy share near 100% means they queue on it. One server per run:

    TMPDIR=/mnt/benchfs python bench/lmtp_turn.py --only sealmail-master -n 150 -s 4 -r 50
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    args = sys.argv[1:]
    only = [a for i, a in enumerate(args) if i and args[i - 1] == "--only"]
    if len(only) != 1 or "," in only[0] or "--help" in args or "-h" in args:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as traces:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE / "turn_probe"), *filter(None, [env.get("PYTHONPATH")])])
        env["SEALMAIL_TURN_TRACE"] = f"{traces}/turn"
        done = subprocess.run([sys.executable, str(HERE / "lmtp_throughput.py"), *args], env=env)
        rows = []
        for path in sorted(Path(traces).iterdir()):
            fields = dict(part.split("=") for part in path.read_text().split())
            if int(fields["batches"]):  # the bench process itself, a master: none
                rows.append((path.name.rsplit(".", 1)[1], fields))
    if not rows:
        print("no group commit was timed (is this tree's sealmail the one the bench runs?)")
        return 1
    print(f"\n{'lmtpd pid':>10} {'batches':>8} {'copies/b':>9} {'wait ms/b':>10} "
          f"{'held ms/b':>10} {'CPU ms/b':>9} {'held us/copy':>13} {'CPU us/copy':>12} "
          f"{'busy':>6}")
    held_all = 0.0
    span_all = 0.0
    for pid, f in rows:
        batches, copies = int(f["batches"]), int(f["copies"])
        wait, held, cpu, span = (float(f[k]) for k in ("wait", "held", "held_cpu", "span"))
        held_all += held
        span_all = max(span_all, span)
        print(f"{pid:>10} {batches:>8} {copies / batches:>9.1f} {wait / batches * 1e3:>10.2f} "
              f"{held / batches * 1e3:>10.2f} {cpu / batches * 1e3:>9.2f} "
              f"{held / copies * 1e6:>13.1f} {cpu / copies * 1e6:>12.1f} "
              f"{held / span:>6.0%}")
    print(f"the turn held {held_all / span_all:.0%} of the run's wall time"
          " (all lmtpds together; 100% means they queue on it)")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

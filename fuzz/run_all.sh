#!/bin/sh
# Every fuzz target for RUNS inputs (default 100,000), one after another, each under atheris
# with sealmail's code instrumented. A crash stops that target and leaves crash-<sha1> (the
# input) in fuzz/findings/; the summary line per target gives the inputs run.
#   fuzz/run_all.sh            # 100,000 inputs per target
#   RUNS=1000000 fuzz/run_all.sh smtp_server imap_command
set -u
cd "$(dirname "$0")/.." || exit 2
RUNS=${RUNS:-100000}
PYTHON=${PYTHON:-python}
mkdir -p fuzz/findings
targets=${*:-$(sed -n 's/^    "\([a-z0-9_]*\)": [a-z0-9_]*,$/\1/p' fuzz/targets.py)}
failed=0
for target in $targets; do
    log=fuzz/findings/$target.log
    if nice "$PYTHON" "fuzz/$target.py" -atheris_runs="$RUNS" -max_len=2048 \
        -artifact_prefix="fuzz/findings/$target-" >"$log" 2>&1; then
        echo "$target: ok, $(grep -o 'Done [0-9]* in [0-9]* second' "$log" | tail -1)"
    else
        echo "$target: FAILED (see $log)"
        failed=1
    fi
done
exit $failed

#!/bin/bash
# rtserver beside the peers in ../shared/peerbench (the figures of bench/RESULTS.md).
# Usage: bench/peerbench/run.sh            (about 12 minutes on the 2-core box)
# Output: $PEERBENCH_RESULTS (default bench/results/<tag>-*.jsonl) and a markdown report.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
PEERBENCH=${PEERBENCH:-$PROJECT/../shared/peerbench}
export PEERBENCH_ADAPTERS=$HERE
export PEERBENCH_RESULTS=${PEERBENCH_RESULTS:-$PROJECT/bench/results}
TAG=${TAG:-$(date +%Y%m%d-%H%M)}
mkdir -p "$PEERBENCH_RESULTS"
"$PEERBENCH/setup.sh" >/dev/null
B="setsid -w python3 $PEERBENCH/bench.py"
COMMON="--retry-contaminated 1 --max-foreign 0.10"
$B fanout --mode max -n 1000 -m 5000 --reps 3 --peers rtserver,sio-node,ws-node,nchan --run-timeout 300 \
   $COMMON --out "$PEERBENCH_RESULTS/$TAG-max.jsonl"
$B fanout --mode rate -n 1000 --rate 200 --duration 10 --reps 3 --peers rtserver,sio-node,nchan \
   --run-timeout 25 --drain-max 15 $COMMON --out "$PEERBENCH_RESULTS/$TAG-rate.jsonl"
$B idle -k 5000 --reps 3 --peers rtserver,sio-node,nchan --retry-contaminated 0 \
   --out "$PEERBENCH_RESULTS/$TAG-idle.jsonl"
python3 "$PEERBENCH/bench.py" report "$PEERBENCH_RESULTS/$TAG"-*.jsonl | tee "$PEERBENCH_RESULTS/$TAG-report.md"

#!/bin/bash
# Cross-node fan-out (issue 3): publisher on node A, 1,000 subscribers on node B, every event
# through Redis; beside Socket.IO + Redis adapter in the same shape, and the single-node
# servers as references. About 10 minutes. Output as run.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
PEERBENCH=${PEERBENCH:-$PROJECT/../shared/peerbench}
export PEERBENCH_ADAPTERS=$HERE
export PEERBENCH_RESULTS=${PEERBENCH_RESULTS:-$PROJECT/bench/results}
TAG=${TAG:-redis-$(date +%Y%m%d-%H%M)}
mkdir -p "$PEERBENCH_RESULTS"
"$PEERBENCH/setup.sh" >/dev/null
B="setsid -w python3 $PEERBENCH/bench.py"
COMMON="--retry-contaminated 1 --max-foreign 0.10"
$B fanout --mode max -n 1000 -m 5000 --reps 3 --peers rtserver-redis-2n,sio-node-redis-2n,sio-node \
   --run-timeout 300 $COMMON --out "$PEERBENCH_RESULTS/$TAG-max.jsonl"
$B fanout --mode rate -n 1000 --rate 200 --duration 10 --reps 3 --peers rtserver,rtserver-redis-2n,sio-node-redis-2n \
   --run-timeout 25 --drain-max 15 $COMMON --out "$PEERBENCH_RESULTS/$TAG-rate.jsonl"
python3 "$PEERBENCH/bench.py" report "$PEERBENCH_RESULTS/$TAG"-*.jsonl | tee "$PEERBENCH_RESULTS/$TAG-report.md"

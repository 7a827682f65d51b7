#!/bin/bash
# rtserver beside the peers in ../shared/peerbench (the figures of bench/RESULTS.md).
#   bench/peerbench/run.sh          single node (rt.v1 and Socket.IO clients): max, rate and idle vs Socket.IO, ws, nchan (~16 min)
#   bench/peerbench/run.sh redis    across nodes through Redis vs Socket.IO + redis adapter (~10 min)
# Output: $PEERBENCH_RESULTS (default bench/results/<tag>-*.jsonl) and a markdown report.
set -euo pipefail
MODE=${1:-single}
HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
PEERBENCH=${PEERBENCH:-$PROJECT/../shared/peerbench}
export PEERBENCH_ADAPTERS=$HERE
export PEERBENCH_RESULTS=${PEERBENCH_RESULTS:-$PROJECT/bench/results}
TAG=${TAG:-$MODE-$(date +%Y%m%d-%H%M)}
mkdir -p "$PEERBENCH_RESULTS"
"$PEERBENCH/setup.sh" >/dev/null
B="setsid -w python3 $PEERBENCH/bench.py"
COMMON="--retry-contaminated 1 --max-foreign 0.10"
OUT="$PEERBENCH_RESULTS/$TAG"
case "$MODE" in
single)
  $B fanout --mode max -n 1000 -m 5000 --reps 3 --peers rtserver,rtserver-sio,sio-node,ws-node,nchan --run-timeout 300 \
     $COMMON --out "$OUT-max.jsonl"
  $B fanout --mode rate -n 1000 --rate 200 --duration 10 --reps 3 --peers rtserver,rtserver-sio,sio-node,nchan \
     --run-timeout 25 --drain-max 15 $COMMON --out "$OUT-rate.jsonl"
  $B idle -k 5000 --reps 3 --peers rtserver,rtserver-sio,sio-node,nchan --retry-contaminated 0 --out "$OUT-idle.jsonl" ;;
redis)
  $B fanout --mode max -n 1000 -m 5000 --reps 3 --peers rtserver-redis-2n,sio-node-redis-2n,sio-node \
     --run-timeout 300 $COMMON --out "$OUT-max.jsonl"
  for rate in 200 50; do
    $B fanout --mode rate -n 1000 --rate $rate --duration 10 --reps 3 --peers rtserver,rtserver-redis-2n,sio-node-redis-2n \
       --run-timeout 25 --drain-max 15 $COMMON --out "$OUT-rate$rate.jsonl"
  done ;;
*) echo "usage: $0 [single|redis]" >&2; exit 2 ;;
esac
python3 "$PEERBENCH/bench.py" report "$OUT"-*.jsonl | tee "$OUT-report.md"

#!/bin/bash
# peerbench with fastsub reading the subscribers' sockets instead of its Node process
# (bench/fastsub/fastsub.c says why). The arguments go to peerbench's bench.py, e.g.
#   bench/fastsub/run.sh fanout --mode rate --peers rtserver,nchan -n 5000 --rate 8 --duration 20 --reps 5 --out F
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
PEERBENCH=${PEERBENCH:-$PROJECT/../shared/peerbench}
mkdir -p "$PROJECT/build"
cc -O2 -Wall -Wextra -o "$PROJECT/build/fastsub" "$HERE/fastsub.c" -lm
export FASTSUB=$PROJECT/build/fastsub PEERBENCH_NODE=$HERE/node
export PEERBENCH_ADAPTERS=${PEERBENCH_ADAPTERS:-$PROJECT/bench/peerbench}
export PEERBENCH_RESULTS=${PEERBENCH_RESULTS:-$PROJECT/bench/results}
exec setsid -w python3 "$PEERBENCH/bench.py" "$@"

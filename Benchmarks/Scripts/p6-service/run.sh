#!/bin/bash
# The P6 service scenario on its own, with the service's CPU time: a fresh 1024-VF model,
# `virtio-admin serve`, one event to open the PF, then 1023 concurrent clients (one thread
# each, blocking, as in `ratios p6`). Prints the wall time of the 1023 events and the serve
# process's CPU time meanwhile (utime + stime from /proc/PID/stat, 10 ms ticks).
#   Benchmarks/Scripts/p6-service/run.sh [BINARY]     (QUIET= to log batches; KEEP=1 keeps the directory)
#   TIMES=/tmp/times.txt ... writes per-client start / connected / answered times (ms).
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
B=${1:-$HERE/../../../.build/release/virtio-admin}
CLIENT=${CLIENT:-/tmp/p6-service-client}
[ -x "$CLIENT" ] || gcc -O2 -pthread -o "$CLIENT" "$HERE/client.c"
D=$(mktemp -d /tmp/p6-service.XXXXXX)
printf '[[pf]]\nmatch = { type = "net" }\n  [[pf.vf]]\n  vfs = "all"\n  msix-vectors = 4\n  features = ["VERSION_1", "MAC", "MQ"]\n' > $D/policy.toml
chmod 644 $D/policy.toml
$B simulate create $D/s.state --vfs 1024 --pool 8192 --latency-us 50 --parallelism 8 >/dev/null
$B serve --policy $D/policy.toml --simulate $D/s.state --socket $D/s.sock ${QUIET---quiet} 2>$D/serve.log &
P=$!
for i in $(seq 500); do [ -S $D/s.sock ] && break; sleep 0.01; done
"$CLIENT" $D/s.sock 0 >/dev/null
sleep 0.2
C0=$(awk '{print $14+$15}' /proc/$P/stat)
"$CLIENT" $D/s.sock 1023
C1=$(awk '{print $14+$15}' /proc/$P/stat)
echo "serve CPU $(( (C1-C0)*10 )) ms"
grep -o 'resets=[0-9]*' $D/s.state
kill $P; wait $P || true
[ -n "$KEEP" ] && echo $D || rm -rf $D

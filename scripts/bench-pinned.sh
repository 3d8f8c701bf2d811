#!/usr/bin/env bash
# The gateway on core 0 alone, the load generator on core 1 (taskset), so the
# client's CPU is not the gateway's. Compares, on the same one core:
#   - the cnn: raw ORT (1 thread) vs the gateway (1 executor thread) at
#     concurrency 1 and 2;
#   - batching off vs on at concurrency 32 (breast-cancer, wide MLP).
# Needs 2+ cores; the batching part needs the repositories `make bench`
# builds (target/bench/batch-*) and is skipped, saying so, without them.
#
#   BENCH_SECONDS=5  seconds per point   ROUNDS=1  cnn rounds (raw, then the gateway at 1 and 2)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECONDS:-5}
out=target/bench/pinned
rm -rf "$out" && mkdir -p "$out"
results=$out/results.jsonl
: >"$results"
rounds=${ROUNDS:-1}
batching=1
[ -d target/bench/batch-32/repo ] || { batching=0; echo "no target/bench/batch-*: the batching part is skipped (make bench builds them)" >&2; }
bin=target/release/modelgate
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

serve() { # serve <name> <repo>: gateway on core 0, sets $addr
  local dir=$out/$1
  mkdir -p "$dir"
  taskset -c 0 $bin serve --models "$2" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --metrics-listen off \
    --no-watch --threads 1 --state-dir "$dir/state" >"$dir/server.out" 2>"$dir/server.log" &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q '^try:' "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^modelgate ready: Predict (modelgate.v1) on //p' "$dir/server.out")
  [ -n "$addr" ] || { echo "bench: $1 did not start; see $dir/server.log" >&2; exit 1; }
}
load() { # load <label> <addr> <model> <concurrency>: client on core 1
  taskset -c 1 target/release/loadgen --addr "$2" --model "$3" --concurrency "$4" --duration "$secs" --label "$1" >>"$results"
}

# The raw loop and the gateway alternate round by round, so drift of the
# machine lands on both.
serve cnn models/repository
for r in $(seq 1 "$rounds"); do
  taskset -c 0 target/release/raw_ort --model models/repository/cnn/1/model.onnx --concurrency 1 --duration "$secs" --label "raw:cnn:1:$r" >>"$results"
  load "gw:cnn:1:$r" "$addr" cnn 1
  load "gw:cnn:2:$r" "$addr" cnn 2
done
if [ "$batching" = 1 ]; then
  for mb in 1 32; do
    serve "batch-$mb" "target/bench/batch-$mb/repo"
    load "batch$mb:breast-cancer" "$addr" breast-cancer 32
    load "batch$mb:mlp" "$addr" mlp 32
  done
fi

python3 - "$results" <<'PY'
import json, sys
r = {x["bench"]: x for x in map(json.loads, open(sys.argv[1]))}
rounds = sorted({k.split(":")[3] for k in r if k.startswith("raw:cnn:1:")}, key=int)
print(f"gateway on core 0 (one inference thread), load generator on core 1; {len(rounds)} round(s)")
for rd in rounds:
    raw = r[f"raw:cnn:1:{rd}"]["rows_per_s"]
    for c in ("1", "2"):
        g = r[f"gw:cnn:{c}:{rd}"]
        print(f"  round {rd}: cnn {c} in flight: {g['rows_per_s']:.0f} rows/s = {g['rows_per_s']/raw:.2f}x raw ORT on the same core ({raw:.0f}); p99 {g['p99_us']} us")
for m in ("breast-cancer", "mlp"):
    if f"batch1:{m}" not in r:
        continue
    a, b = r[f"batch1:{m}"], r[f"batch32:{m}"]
    print(f"  {m} at 32 in flight: batching off {a['rows_per_s']:.0f} rows/s p99 {a['p99_us']} us, on {b['rows_per_s']:.0f} rows/s p99 {b['p99_us']} us = {b['rows_per_s']/a['rows_per_s']:.2f}x")
PY

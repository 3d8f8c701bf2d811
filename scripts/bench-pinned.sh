#!/usr/bin/env bash
# The gateway on core 0 alone, the load generator on core 1 (taskset), so the
# client's CPU is not the gateway's. Compares, on the same one core:
#   - the cnn: raw ORT (1 thread) vs the gateway (1 executor thread) at
#     concurrency 1 and 2;
#   - batching off vs on at concurrency 32 (breast-cancer, wide MLP).
# Needs 2+ cores and the repositories `make bench` builds (target/bench/batch-*).
#
#   BENCH_SECONDS=5  seconds per point
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECONDS:-5}
out=target/bench/pinned
rm -rf "$out" && mkdir -p "$out"
results=$out/results.jsonl
: >"$results"
[ -d target/bench/batch-32/repo ] || { echo "run make bench once first (it builds target/bench/batch-*)" >&2; exit 1; }
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

taskset -c 0 target/release/raw_ort --model models/repository/cnn/1/model.onnx --concurrency 1 --duration "$secs" --label raw:cnn:1 >>"$results"
serve cnn models/repository
load gw:cnn:1 "$addr" cnn 1
load gw:cnn:2 "$addr" cnn 2
for mb in 1 32; do
  serve "batch-$mb" "target/bench/batch-$mb/repo"
  load "batch$mb:breast-cancer" "$addr" breast-cancer 32
  load "batch$mb:mlp" "$addr" mlp 32
done

python3 - "$results" <<'PY'
import json, sys
r = {x["bench"]: x for x in map(json.loads, open(sys.argv[1]))}
raw = r["raw:cnn:1"]["rows_per_s"]
print("gateway on core 0, load generator on core 1 (one run)")
for k in ("gw:cnn:1", "gw:cnn:2"):
    print(f"  cnn {k[-1]} in flight: {r[k]['rows_per_s']:.0f} rows/s = {r[k]['rows_per_s']/raw:.2f}x raw ORT on the same core ({raw:.0f}); p99 {r[k]['p99_us']} us")
for m in ("breast-cancer", "mlp"):
    a, b = r[f"batch1:{m}"], r[f"batch32:{m}"]
    print(f"  {m} at 32 in flight: batching off {a['rows_per_s']:.0f} rows/s p99 {a['p99_us']} us, on {b['rows_per_s']:.0f} rows/s p99 {b['p99_us']} us = {b['rows_per_s']/a['rows_per_s']:.2f}x")
PY

#!/usr/bin/env bash
# `make bench`: the gateway against raw in-process ONNX Runtime on
# breast-cancer v1, batch 1, at concurrency 1, 8 and 32, measured back to back
# in one run. Prints one JSON line per measurement and the overhead table.
#
#   BENCH_SECONDS=10   seconds measured per point (after 1 s warm-up)
#   BENCH_CONCURRENCY="1 8 32"
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${BENCH_SECONDS:-10}
levels=${BENCH_CONCURRENCY:-1 8 32}
out=target/bench
mkdir -p "$out"
results=$out/results.jsonl
: >"$results"

log=$out/server.log
target/release/modelgate serve --models models/repository --listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --state-dir "$out/state" >"$out/server.out" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q '^modelgate ready' "$out/server.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^modelgate ready: Predict (modelgate.v1) on //p' "$out/server.out")
[ -n "$addr" ] || { echo "bench: server did not start; see $log" >&2; exit 1; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for c in $levels; do
  target/release/raw_ort --model models/repository/breast-cancer/1/model.onnx --concurrency "$c" \
    --duration "$secs" --label raw-ort | tee -a "$results"
  target/release/loadgen --addr "$addr" --model breast-cancer --version 1 --concurrency "$c" \
    --duration "$secs" --label gateway | tee -a "$results"
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["concurrency"], {})[r["bench"]] = r
print()
print("breast-cancer v1, batch 1 (latency in µs; overhead = gateway − raw ORT, same run)")
print(f"{'conc':>4} | {'raw p50':>8} {'raw p99':>8} {'raw rps':>9} | {'gw p50':>8} {'gw p99':>8} {'gw rps':>9} {'errors':>6} | {'+p50':>7} {'+p99':>7}")
for c in sorted(by):
    raw, gw = by[c].get("raw-ort"), by[c].get("gateway")
    if not raw or not gw:
        continue
    print(f"{c:>4} | {raw['p50_us']:>8} {raw['p99_us']:>8} {raw['rps']:>9.0f} | {gw['p50_us']:>8} {gw['p99_us']:>8} "
          f"{gw['rps']:>9.0f} {gw['errors']:>6} | {gw['p50_us']-raw['p50_us']:>+7} {gw['p99_us']-raw['p99_us']:>+7}")
PY

#!/usr/bin/env bash
# The gateway on core 0 alone, the load generator on core 1 (taskset), so the
# client's CPU is not the gateway's. Compares, on the same one core:
#   - the cnn: raw ORT (1 thread) vs the gateway (1 inference thread) at
#     concurrency 1 and 2 over Predict, and at 2 over KServe v2 beside the
#     floor+run (`floor_server --run-model`: tonic plus the model's run on
#     the handler's thread and nothing of the gateway's), so each round says
#     how much of the gap to raw ORT any tonic server that runs the cnn pays
#     on this machine and how much is the gateway's own;
#   - each server's CPU and thread switches per image (from /proc);
#   - batching off vs on at concurrency 32 (breast-cancer, wide MLP).
# Needs 2+ cores; the batching part needs the repositories `make bench`
# builds (target/bench/batch-*) and is skipped, saying so, without them.
#
#   BENCH_SECONDS=5  seconds per point   ROUNDS=1  cnn rounds (raw, then each server)
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
# shellcheck source=scripts/floor-pair.sh
. scripts/floor-pair.sh
cpu=$out/cpu.jsonl
: >"$cpu"
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
# A process's CPU time (ns, summed over its threads' schedstat) and thread
# switches (voluntary + involuntary), one line: "<ns> <switches>".
usage() {
  local ns=0 t v
  for t in /proc/"$1"/task/*; do
    v=$(awk '{print $1}' "$t/schedstat" 2>/dev/null) || continue
    ns=$((ns + v))
  done
  echo "$ns $(thread_switches "$1")"
}
# With a pid, the server's CPU and switches over the point go to $cpu, and
# the point has no warm-up of its own (the server was warmed before).
load() { # load <label> <addr> <model> <concurrency> [pid [protocol]]: client on core 1
  local before after warmup=1
  [ -z "${5:-}" ] || { before=$(usage "$5"); warmup=0; }
  taskset -c 1 target/release/loadgen --addr "$2" --model "$3" --concurrency "$4" --duration "$secs" \
    --warmup "$warmup" --protocol "${6:-predict}" --label "$1" >>"$results"
  [ -z "${5:-}" ] && return
  after=$(usage "$5")
  read -r b_ns b_sw <<<"$before"
  read -r a_ns a_sw <<<"$after"
  echo "{\"bench\": \"$1\", \"cpu_ns\": $((a_ns - b_ns)), \"switches\": $((a_sw - b_sw))}" >>"$cpu"
}

# The raw loop and the gateway alternate round by round, so drift of the
# machine lands on both.
serve cnn models/repository
gw_pid=${pids[-1]}
# The floor+run on the same core.
FLOOR_CPUS=0 start_floor bench-pinned "$out" floor-run --run-model
floor_pid=$started_floor_pid floor_addr=$started_floor_addr
# One unmeasured second on each first (the measured points have no warm-up,
# so that the CPU read from /proc covers exactly the requests counted).
for a in "$addr" "$floor_addr"; do
  taskset -c 1 target/release/loadgen --addr "$a" --model cnn --concurrency 2 --duration 1 --warmup 0 \
    --protocol kserve --label warm-up >/dev/null
done
for r in $(seq 1 "$rounds"); do
  taskset -c 0 target/release/raw_ort --model models/repository/cnn/1/model.onnx --concurrency 1 --duration "$secs" --label "raw:cnn:1:$r" >>"$results"
  load "gw:cnn:1:$r" "$addr" cnn 1 "$gw_pid"
  load "gw:cnn:2:$r" "$addr" cnn 2 "$gw_pid"
  load "gwk:cnn:2:$r" "$addr" cnn 2 "$gw_pid" kserve
  load "fr:cnn:2:$r" "$floor_addr" cnn 2 "$floor_pid" kserve
  # raw ORT again at the round's end: the machine drifts within a round, and
  # the reference is the mean of the two.
  taskset -c 0 target/release/raw_ort --model models/repository/cnn/1/model.onnx --concurrency 1 --duration "$secs" --label "raw-end:cnn:1:$r" >>"$results"
done
if [ "$batching" = 1 ]; then
  for mb in 1 32; do
    serve "batch-$mb" "target/bench/batch-$mb/repo"
    load "batch$mb:breast-cancer" "$addr" breast-cancer 32
    load "batch$mb:mlp" "$addr" mlp 32
  done
fi

python3 - "$results" "$cpu" <<'PY'
import json, statistics, sys
r = {x["bench"]: x for x in map(json.loads, open(sys.argv[1]))}
for c in map(json.loads, open(sys.argv[2])):
    n = max(r[c["bench"]]["requests"], 1)
    r[c["bench"]]["cpu_us"] = c["cpu_ns"] / 1e3 / n
    r[c["bench"]]["switches"] = c["switches"] / n
rounds = sorted({k.split(":")[3] for k in r if k.startswith("raw:cnn:1:")}, key=int)
print(f"cnn: servers on core 0 (the gateway with one inference thread), load generator on core 1; {len(rounds)} round(s)")
ratios = {}  # name -> one ratio per round
def show(name, ratio, rest=""):
    ratios.setdefault(name, []).append(ratio)
    print(f"    {name}: {ratio:.2f}x{rest}")
def server(name, g, raw):
    show(name, g["rows_per_s"] / raw, f" raw ORT ({g['rows_per_s']:.0f} images/s); p99 {g['p99_us']} us; "
         f"server CPU {g['cpu_us']:.0f} us and {g['switches']:.2f} thread switches per image")
for rd in rounds:
    first, last = r[f"raw:cnn:1:{rd}"]["rows_per_s"], r[f"raw-end:cnn:1:{rd}"]["rows_per_s"]
    raw = (first + last) / 2
    print(f"  round {rd}: raw ORT on the core {raw:.0f} images/s ({1e6/raw:.0f} us each; {first:.0f} at the round's start, {last:.0f} at its end)")
    for c in ("1", "2"):
        server(f"gateway, Predict, {c} in flight", r[f"gw:cnn:{c}:{rd}"], raw)
    gk, fr = r[f"gwk:cnn:2:{rd}"], r[f"fr:cnn:2:{rd}"]
    server("gateway, KServe, 2 in flight", gk, raw)
    server("floor+run, KServe, 2 in flight", fr, raw)
    show("gateway / floor+run (KServe, 2 in flight)", gk["rows_per_s"] / fr["rows_per_s"])
if len(rounds) > 1:
    print("  medians of the rounds:")
    for name, vs in ratios.items():
        print(f"    {name}: {statistics.median(vs):.2f}x (rounds {', '.join(f'{v:.2f}' for v in vs)})")
for m in ("breast-cancer", "mlp"):
    if f"batch1:{m}" not in r:
        continue
    a, b = r[f"batch1:{m}"], r[f"batch32:{m}"]
    print(f"  {m} at 32 in flight: batching off {a['rows_per_s']:.0f} rows/s p99 {a['p99_us']} us, on {b['rows_per_s']:.0f} rows/s p99 {b['p99_us']} us = {b['rows_per_s']/a['rows_per_s']:.2f}x")
PY

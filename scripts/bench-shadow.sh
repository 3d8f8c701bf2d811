#!/usr/bin/env bash
# Shadow isolation: the champion's latency with a shadow mirroring 100% of its
# traffic vs without, measured alternately (off, on, off, on, ...) in one run.
# breast-cancer v1 serves at concurrency 8; v2 is the shadow.
#
#   BENCH_SECONDS=10  seconds per measurement   BENCH_ROUNDS=3  on/off pairs
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECONDS:-10}
rounds=${BENCH_ROUNDS:-3}
out=target/bench/shadow
rm -rf "$out" && mkdir -p "$out/repo/breast-cancer/1"
cp models/repository/breast-cancer/1/model.onnx "$out/repo/breast-cancer/1/"
results=$out/results.jsonl
: >"$results"

bin=${MODELGATE_BIN:-target/release/modelgate}
$bin serve --models "$out/repo" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --state-dir "$out/state" --rescan-seconds 0.2 --settle-ms 200 ${SERVE_ARGS:-} >"$out/server.out" 2>"$out/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q '^try:' "$out/server.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^modelgate ready: Predict (modelgate.v1) on //p' "$out/server.out")
admin=$(sed -n 's/^  admin on //p' "$out/server.out")
[ -n "$addr" ] && [ -n "$admin" ] || { echo "bench: server did not start; see $out/server.log" >&2; exit 1; }

rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
sleep 0.5
rss_before=$(rss)
# v2 arrives while v1 serves: READY, not champion.
mkdir -p "$out/repo/.staging" && cp models/repository/breast-cancer/2/model.onnx "$out/repo/.staging/"
mv "$out/repo/.staging" "$out/repo/breast-cancer/2"
for _ in $(seq 1 100); do
  $bin admin --admin-addr "$admin" list-models | grep -q 'v2 .*READY' && break
  sleep 0.1
done
sleep 0.5
echo "resident memory: $rss_before KiB with v1 alone, $(rss) KiB once v2 is loaded and warmed beside it (3 sessions each)"

metrics=$(sed -n 's|^  metrics on \(.*\)$|\1|p' "$out/server.out")
# The shadow side's CPU seconds so far and the budget in effect (cores).
shadow_cpu() { curl -s "$metrics" | awk '/^modelgate_shadow_cpu_seconds_total / {u = $2}
  /^modelgate_shadow_cpu_budget_effective_cores / {e = $2} END {printf "{\"cpu\": %s, \"effective\": %s}\n", u + 0, e + 0}'; }
run() { target/release/loadgen --addr "$addr" --model breast-cancer --concurrency 8 --duration "$secs" --label "$1" | tee -a "$results"; }
for r in $(seq 1 "$rounds"); do
  run shadow-off
  $bin admin --admin-addr "$admin" start breast-cancer shadow --versions 2 >/dev/null
  shadow_cpu >>"$out/shadow-cpu.jsonl"
  run shadow-on
  shadow_cpu >>"$out/shadow-cpu.jsonl"
  $bin status breast-cancer --admin-addr "$admin" --json | tee -a "$out/shadow-status.jsonl" >/dev/null
  $bin admin --admin-addr "$admin" abort breast-cancer --reason "bench round $r" >/dev/null
done

python3 - "$results" "$out/shadow-status.jsonl" "$out/shadow-cpu.jsonl" "$secs" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
status = [json.loads(l)[0] for l in open(sys.argv[2])]
off = [r for r in rows if r["bench"] == "shadow-off"]
on = [r for r in rows if r["bench"] == "shadow-on"]
print()
print("shadow v2 at 100% beside champion v1, concurrency 8, batch 1 (µs; alternated in one run)")
cpu = [json.loads(l) for l in open(sys.argv[3])]
secs = float(sys.argv[4])
print(f"{'round':>5} | {'off p50':>8} {'off p99':>8} {'off rps':>8} | {'on p50':>8} {'on p99':>8} {'on rps':>8} | {'p99 on/off':>10} | {'compared':>8} {'dropped':>8} | {'shadow cores':>12} {'budget now':>10}")
# Shadow totals are cumulative per version: report each round's increase.
prev = {"compared": 0, "dropped": 0}
for i, (a, b) in enumerate(zip(off, on)):
    sh = (status[i].get("shadows") or [{}])[0]
    d = {k: sh.get(k, 0) - prev[k] for k in prev}
    prev = {k: sh.get(k, 0) for k in prev}
    print(f"{i+1:>5} | {a['p50_us']:>8} {a['p99_us']:>8} {a['rps']:>8.0f} | {b['p50_us']:>8} {b['p99_us']:>8} {b['rps']:>8.0f} | "
          f"{b['p99_us']/max(a['p99_us'],1):>10.2f} | {d['compared']:>8} {d['dropped']:>8} | "
          f"{(cpu[2*i+1]['cpu'] - cpu[2*i]['cpu']) / secs:>12.3f} {cpu[2*i+1]['effective']:>10.3f}")
med = lambda xs: statistics.median(xs)
# A/A: the off rounds against each other (odd against even), the ratio an
# on/off comparison shows when the shadow changes nothing: the noise floor.
if len(off) >= 2:
    odd, even = off[0::2], off[1::2]
    print(f"A/A (off rounds {', '.join(str(2*i+1) for i in range(len(odd)))} vs {', '.join(str(2*i+2) for i in range(len(even)))}): "
          f"p99 {med([r['p99_us'] for r in odd]) / max(med([r['p99_us'] for r in even]),1):.2f}, "
          f"p50 {med([r['p50_us'] for r in odd]) / max(med([r['p50_us'] for r in even]),1):.2f}")
print(f"median p99 on/off: {med([b['p99_us'] for b in on]) / max(med([a['p99_us'] for a in off]),1):.2f}; "
      f"median p50 on/off: {med([b['p50_us'] for b in on]) / max(med([a['p50_us'] for a in off]),1):.2f}")
PY

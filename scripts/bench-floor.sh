#!/usr/bin/env bash
# `make bench-floor`: the gateway against the floor, quickly — section 0 of
# `make bench` on its own. The floor is a zero-work tonic server
# (benches/src/bin/floor_server.rs: the gateway's tonic, services and HTTP/2
# settings, correctly shaped zeros as answers). breast-cancer batch 1 over
# KServe v2 ModelInfer (issue 19's protocol) at each concurrency, floor,
# floor+run (the floor that also runs the model: `floor_server --run-model`)
# and gateway alternated point by point, ROUNDS times; then the medians and
# the gateway's ratios to both, and each server's CPU time per request.
#
#   BENCH_SECONDS=5  seconds per point   ROUNDS=3   CONCS="1 8 32"
#   PROTO=kserve (or predict)            SERVE_ARGS=  extra gateway flags
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECONDS:-5}
rounds=${ROUNDS:-3}
concs=${CONCS:-1 8 32}
proto=${PROTO:-kserve}
out=target/bench/floor
rm -rf "$out" && mkdir -p "$out"
results=$out/results.jsonl
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

# shellcheck source=scripts/floor-pair.sh
. scripts/floor-pair.sh
start_floor_pair bench-floor "$out"
gw=$gateway_addr floor=$floor_addr

# The second reference: the floor that also runs the model in ONNX Runtime
# on each call's inputs, on the handler's thread (`--run-model`), and does
# nothing else of the gateway's. What the gateway costs above it is the
# gateway's own work; what the floor+run costs above the floor is the
# model's run and how this machine schedules a server that has work to do.
start_floor bench-floor "$out" floor-run --run-model
floor_run=$started_floor_addr floor_run_pid=$started_floor_pid

# A process's CPU time so far (user + system), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu=$out/cpu.jsonl

for r in $(seq 1 "$rounds"); do
  for c in $concs; do
    for who in floor floor+run gateway; do
      case $who in
        floor) addr=$floor pid=$floor_pid ;;
        floor+run) addr=$floor_run pid=$floor_run_pid ;;
        gateway) addr=$gw pid=$gateway_pid ;;
      esac
      load=(target/release/loadgen --addr "$addr" --model breast-cancer --concurrency "$c" --protocol "$proto")
      # Warm-up apart, so the server's CPU time below covers exactly the
      # measured requests.
      "${load[@]}" --duration 1 --label warm-up >/dev/null
      before=$(cpu_ticks "$pid") switches=$(thread_switches "$pid")
      "${load[@]}" --duration "$secs" --warmup 0 --label "$who:$c:$r" >>"$results"
      echo "{\"bench\": \"$who:$c:$r\", \"server_cpu_ticks\": $(($(cpu_ticks "$pid") - before)), \"server_switches\": $(($(thread_switches "$pid") - switches))}" >>"$cpu"
    done
  done
done

# How many of the gateway's runs went inline (the rest paid the hand-over to
# an inference thread): the share the hand-off lever is about.
metrics=$(sed -n 's|^  metrics on \(.*\)$|\1|p' "$out/gateway.out")
if [ -n "$metrics" ]; then
  curl -s "$metrics" | awk '/^modelgate_inline_runs(_total)?\{.*model="breast-cancer"/ {i += $NF}
    /^modelgate_batch_size_rows_count\{.*model="breast-cancer"/ {n += $NF}
    /^modelgate_inline_skipped_total\{.*model="breast-cancer"/ {match($0, /reason="[a-z]+"/); r[substr($0, RSTART + 8, RLENGTH - 9)] += $NF}
    END { if (n > 0) printf "breast-cancer runs: %d, inline %d (%.1f%%), through the queue %d (one-row requests that could have run inline: %d slow, %d queued behind others, %d with no free session)\n",
      n, i, 100 * i / n, n - i, r["slow"], r["queued"], r["busy"] }'
fi

python3 - "$results" "$proto" "$(nproc)" "$cpu" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
proto, cores = sys.argv[2], sys.argv[3]
usage = {c["bench"]: c for c in map(json.loads, open(sys.argv[4]))}
for r in rows:
    r["cpu_us"] = usage[r["bench"]]["server_cpu_ticks"] / int(sys.argv[5]) * 1e6 / max(r["requests"], 1)
    r["switches"] = usage[r["bench"]]["server_switches"] / max(r["requests"], 1)
med = statistics.median
concs = sorted({r["concurrency"] for r in rows})
print(f"breast-cancer batch 1 over {proto}, {cores} cores shared with the load generator; "
      f"medians of {len(rows) // 3 // len(concs)} alternated rounds")
print("floor = zero-work server; floor+run = the same that also runs the model (ONNX Runtime) per call")
print(f"{'conc':>4} | {'floor req/s':>11} {'p50':>5} {'p99':>6} | {'floor+run req/s':>15} {'p50':>5} {'p99':>6} | "
      f"{'gateway req/s':>13} {'p50':>5} {'p99':>6} | {'gw/floor req/s':>14} {'p50 +µs':>7} {'p99 ×':>6} | "
      f"{'gw/floor+run req/s':>18} {'p50 +µs':>7} {'p99 ×':>6}")
def of(who, c):
    return [r for r in rows if r["concurrency"] == c and r["bench"].split(":")[0] == who]
for c in concs:
    f, fr, g = (of(w, c) for w in ("floor", "floor+run", "gateway"))
    m = lambda runs, k: med([r[k] for r in runs])
    ratio = lambda a, b: [y["rps"] / x["rps"] for x, y in zip(a, b)]
    cells = []
    for who in (f, fr, g):
        cells.append(f"{m(who, 'rps'):>{15 if who is fr else 13 if who is g else 11},.0f} {m(who, 'p50_us'):>5.0f} {m(who, 'p99_us'):>6.0f}")
    vs = lambda ref: (f"{m(g, 'rps') / m(ref, 'rps'):>{14 if ref is f else 18}.2f} {m(g, 'p50_us') - m(ref, 'p50_us'):>+7.0f} "
                      f"{m(g, 'p99_us') / m(ref, 'p99_us'):>6.2f}")
    print(f"{c:>4} | " + " | ".join(cells) + f" | {vs(f)} | {vs(fr)}")
    print(f"       rounds, gateway/floor req/s: {' '.join(f'{x:.2f}' for x in ratio(f, g))}; "
          f"gateway/floor+run: {' '.join(f'{x:.2f}' for x in ratio(fr, g))}; "
          f"floor+run/floor: {' '.join(f'{x:.2f}' for x in ratio(f, fr))}")
print("server CPU µs per request (user + system, from /proc; medians of rounds): "
      + "; ".join(f"c{c}: floor {med([r['cpu_us'] for r in of('floor', c)]):.1f}, "
                  f"floor+run {med([r['cpu_us'] for r in of('floor+run', c)]):.1f}, "
                  f"gateway {med([r['cpu_us'] for r in of('gateway', c)]):.1f}" for c in concs))
print("server thread switches per request (voluntary + involuntary, from /proc; medians of rounds): "
      + "; ".join(f"c{c}: floor {med([r['switches'] for r in of('floor', c)]):.2f}, "
                  f"floor+run {med([r['switches'] for r in of('floor+run', c)]):.2f}, "
                  f"gateway {med([r['switches'] for r in of('gateway', c)]):.2f}" for c in concs))
errors = sum(r["errors"] for r in rows)
print(f"errors: {errors}")
PY

#!/usr/bin/env bash
# `make bench-floor`: the gateway against the floor, quickly — section 0 of
# `make bench` on its own. The floor is a zero-work tonic server
# (benches/src/bin/floor_server.rs: the gateway's tonic, services and HTTP/2
# settings, correctly shaped zeros as answers). breast-cancer batch 1 over
# KServe v2 ModelInfer (issue 19's protocol) at each concurrency, floor and
# gateway alternated point by point, ROUNDS times; then the medians and the
# gateway/floor ratios.
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

for r in $(seq 1 "$rounds"); do
  for c in $concs; do
    for who in floor gateway; do
      addr=$floor; [ "$who" = gateway ] && addr=$gw
      target/release/loadgen --addr "$addr" --model breast-cancer --concurrency "$c" --protocol "$proto" \
        --duration "$secs" --label "$who:$c:$r" >>"$results"
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

python3 - "$results" "$proto" "$(nproc)" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
proto, cores = sys.argv[2], sys.argv[3]
med = lambda xs: statistics.median(xs)
print(f"breast-cancer batch 1 over {proto}, {cores} cores shared with the load generator; "
      f"medians of {len(rows) // 2 // len({r['concurrency'] for r in rows})} alternated rounds")
print(f"{'conc':>4} | {'floor req/s':>11} {'p50':>5} {'p99':>6} | {'gateway req/s':>13} {'p50':>5} {'p99':>6} | "
      f"{'gw/floor req/s':>14} {'p50 +µs':>7} {'p99 ×':>6}")
for c in sorted({r["concurrency"] for r in rows}):
    pick = lambda who, k: med([r[k] for r in rows if r["concurrency"] == c and r["bench"].startswith(who + ":")])
    f, g = {k: pick("floor", k) for k in ("rps", "p50_us", "p99_us")}, {k: pick("gateway", k) for k in ("rps", "p50_us", "p99_us")}
    per_round = [g2["rps"] / f2["rps"] for f2, g2 in zip(
        [r for r in rows if r["concurrency"] == c and r["bench"].startswith("floor:")],
        [r for r in rows if r["concurrency"] == c and r["bench"].startswith("gateway:")])]
    print(f"{c:>4} | {f['rps']:>11,.0f} {f['p50_us']:>5.0f} {f['p99_us']:>6.0f} | {g['rps']:>13,.0f} {g['p50_us']:>5.0f} {g['p99_us']:>6.0f} | "
          f"{g['rps'] / f['rps']:>14.2f} {g['p50_us'] - f['p50_us']:>+7.0f} {g['p99_us'] / f['p99_us']:>6.2f}"
          f"   (rounds: {' '.join(f'{x:.2f}' for x in per_round)})")
errors = sum(r["errors"] for r in rows)
print(f"errors: {errors}")
PY

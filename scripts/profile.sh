#!/usr/bin/env bash
# `make profile`: where the gateway's CPU goes per request, stage by stage,
# beside the floor server's (benches/src/bin/floor_server.rs: the same tonic
# and settings doing no work), at concurrency 1 and 8, breast-cancer v1,
# batch 1. `perf record` samples each server (cpu-clock, DWARF call chains)
# only while the load generator's measured run lasts; benches/profile/stages.py
# attributes every sample to a stage (decode, route, check, handoff, run,
# window/metrics/spans, encode, other handler code, or the machinery every
# gRPC server has) and divides by the requests served.
#
#   PROFILE_SECONDS=8        seconds of recorded load per point
#   PROFILE_PROTOCOL=kserve  kserve (issue 19's table) or predict
#   PROFILE_HZ=499           samples per second per busy core
#   PROFILE_KEEP=1           keep the perf.data files (~100 MB each)
#
# Writes target/profile/: per point <server>-c<N>.functions.txt (perf's
# per-function report), .stages.json and .load.json; summary.txt at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${PROFILE_SECONDS:-8}
proto=${PROFILE_PROTOCOL:-kserve}
hz=${PROFILE_HZ:-499}
out=target/profile
rm -rf "$out" && mkdir -p "$out"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

command -v perf >/dev/null || { echo "profile: perf is not installed (Debian: apt-get install linux-perf)" >&2; exit 1; }
if ! perf record -e cpu-clock -o "$out/check.data" -- true >/dev/null 2>"$out/check.log"; then
  echo "profile: perf cannot record here (kernel.perf_event_paranoid = $(cat /proc/sys/kernel/perf_event_paranoid)); run as root or lower it to 1:" >&2
  cat "$out/check.log" >&2
  exit 1
fi
rm -f "$out/check.data" "$out/check.log"

# The gateway as `make bench` runs it, and the floor server.
# shellcheck source=scripts/floor-pair.sh
. scripts/floor-pair.sh
start_floor_pair profile "$out"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg) at start"

# record <server> <pid> <addr> <concurrency>
record() {
  local base=$out/$1-c$4
  local load=(target/release/loadgen --addr "$3" --protocol "$proto" --concurrency "$4" --warmup 0)
  "${load[@]}" --duration 1 --label warm-up >/dev/null
  # perf starts disabled and is switched on and off through its control
  # FIFO, so exactly the measured run is recorded.
  rm -f "$out/ctl" "$out/ack" && mkfifo "$out/ctl" "$out/ack"
  perf record -e cpu-clock -F "$hz" --call-graph dwarf,16384 -D -1 --control "fifo:$out/ctl,$out/ack" \
    -p "$2" -o "$base.data" >"$base.perf.log" 2>&1 &
  local perf_pid=$!
  # Read-write opens of a FIFO do not block, so a perf that failed to start
  # shows as the read timing out, not as a hang.
  exec 3<>"$out/ctl" 4<>"$out/ack"
  echo enable >&3
  read -r -t 60 _ <&4 || { echo "profile: perf did not start; see $base.perf.log" >&2; exit 1; }
  "${load[@]}" --duration "$secs" --label "$1:$proto:$4" | tee "$base.load.json"
  echo disable >&3 && read -r -t 60 _ <&4
  exec 3>&- 4<&-
  kill -INT "$perf_pid" && wait "$perf_pid" || true
  local requests
  requests=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["requests"])' "$base.load.json")
  perf script -i "$base.data" -F comm,tid,period,event,ip,sym,dso 2>/dev/null |
    python3 benches/profile/stages.py --requests "$requests" >"$base.stages.json"
  perf report -i "$base.data" --no-children --sort comm,dso,sym --stdio -g none --percent-limit 0.2 \
    >"$base.functions.txt" 2>/dev/null
  [ -n "${PROFILE_KEEP:-}" ] || rm -f "$base.data"
  rm -f "$out/ctl" "$out/ack"
}

for c in 1 8; do
  record floor "$floor_pid" "$floor_addr" "$c"
  record gateway "$gateway_pid" "$gateway_addr" "$c"
done

python3 - "$out" "$proto" <<'PY' | tee "$out/summary.txt"
import json, sys
out, proto = sys.argv[1], sys.argv[2]
load = lambda s, c: json.load(open(f"{out}/{s}-c{c}.load.json"))
stages = lambda s, c: json.load(open(f"{out}/{s}-c{c}.stages.json"))
levels = (1, 8)
print()
print(f"CPU µs per request by stage, breast-cancer v1 batch 1 over {proto}, perf cpu-clock samples")
print("(both servers sampled; the load generator is not; latencies below are under perf)")
print()
head = f"{'stage':<40}" + "".join(f" | {'floor c'+str(c):>9} {'gw c'+str(c):>7} {'+':>6}" for c in levels)
print(head)
print("-" * len(head))
data = {c: (stages("floor", c), stages("gateway", c)) for c in levels}
names = []
for c in levels:
    for d in data[c]:
        for s in d["stages"]:
            if s not in names:
                names.append(s)
for s in names:
    row = f"{s:<40}"
    for c in levels:
        f, g = (d["stages"].get(s, 0.0) for d in data[c])
        row += f" | {f:>9.1f} {g:>7.1f} {g - f:>+6.1f}"
    print(row)
print("-" * len(head))
row = f"{'total CPU per request':<40}"
for c in levels:
    f, g = (d["cpu_us_per_request"] for d in data[c])
    row += f" | {f:>9.1f} {g:>7.1f} {g - f:>+6.1f}"
print(row)
print()
for c in levels:
    f, g = load("floor", c), load("gateway", c)
    print(f"c{c}: floor {f['rps']:.0f} req/s p50 {f['p50_us']} p99 {f['p99_us']} µs; gateway {g['rps']:.0f} req/s p50 {g['p50_us']} p99 {g['p99_us']} µs "
          f"(gateway/floor req/s {g['rps'] / f['rps']:.2f}); samples {data[c][0]['samples']} / {data[c][1]['samples']}")
print()
for c in levels:
    g = data[c][1]
    print(f"gateway c{c}, CPU µs per request by thread: " + ", ".join(f"{t} {us:.1f}" for t, us in g["threads"].items()))
print()
print("hottest functions of the gateway's own stages (c8, µs per request; all stages in gateway-c8.stages.json):")
g = data[8][1]
for s, funcs in g["hot"].items():
    if s in ("run", "window/metrics/spans", "handoff", "check", "route", "decode", "encode", "handler (other)"):
        print(f"  {s}: " + "; ".join(f"{fn[:70]} {us:.2f}" for fn, us in funcs[:4]))
PY

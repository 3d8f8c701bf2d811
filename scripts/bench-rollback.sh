#!/usr/bin/env bash
# Time to automatic rollback: a canary of the NaN fault model at 50% while
# ~400 req/s arrive (so ~200 req/s reach the canary); measured from the
# canary's start to the rollback event in the audit log.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench/rollback
rm -rf "$out" && mkdir -p "$out/repo/breast-cancer/1" "$out/repo/breast-cancer/2"
cp models/faults/nan.onnx "$out/repo/breast-cancer/1/model.onnx"
cp models/repository/breast-cancer/2/model.onnx "$out/repo/breast-cancer/2/model.onnx"
bin=target/release/modelgate
$bin serve --models "$out/repo" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --state-dir "$out/state" >"$out/server.out" 2>"$out/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q '^try:' "$out/server.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^modelgate ready: Predict (modelgate.v1) on //p' "$out/server.out")
admin=$(sed -n 's/^  admin on //p' "$out/server.out")

$bin admin --admin-addr "$admin" start breast-cancer canary --candidate 1 --steps 50,100 \
  --step-seconds 3600 --step-samples 1000000 >/dev/null
target/release/loadgen --addr "$addr" --model breast-cancer --rate 400 --duration 5 --warmup 0 \
  --first-feature 20 --label rollback-load >"$out/load.json" &
load=$!
wait $load
$bin admin --admin-addr "$admin" events --model breast-cancer --json >"$out/events.json"
python3 - "$out/events.json" "$out/load.json" <<'PY'
import json, sys
events = json.load(open(sys.argv[1]))["events"]
load = json.loads(open(sys.argv[2]).read())
started = next(e for e in events if e["action"] == "started")["at_ms"]
rb = [e for e in events if e["action"] == "rolled_back"]
print()
if not rb:
    print("no automatic rollback within the run")
    sys.exit(1)
ev = json.loads(rb[0]["event_json"])
print(f"automatic rollback {rb[0]['at_ms'] - started} ms after the NaN canary started "
      f"(trigger {ev['trigger']}, {int(ev['numbers']['count'])} NaN of {int(ev['numbers']['requests'])} canary requests); "
      f"load: {load['rps']:.0f} req/s offered at 400/s, {load['errors']} errors")
PY

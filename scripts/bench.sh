#!/usr/bin/env bash
# `make bench`: everything measured side by side in one run, one table at the
# end, every ratio computed from numbers of this run.
#
#   0. the floor: a zero-work gRPC server (benches/src/bin/floor_server.rs:
#      the gateway's tonic, services and HTTP/2 settings, correctly shaped
#      zeros as answers) beside the gateway, breast-cancer v1 batch 1 at
#      concurrency 1, 8, 32, over KServe v2 ModelInfer (the protocol issue
#      19's targets are stated in) and modelgate's Predict (what every other
#      row here uses), floor and gateway alternated point by point;
#   1. raw ONNX Runtime in process (same session settings) vs the gateway,
#      batch 1: breast-cancer v1 at concurrency 1, 8, 32 (the gateway's
#      Predict rows of 0.); the heavier cnn at concurrency 1 and = cores;
#   2. dynamic batching off (max_batch = 1) vs on (32) at concurrency 32, for
#      breast-cancer v1, the cnn and a wide MLP whose 16 MiB of weights are
#      streamed per call (benches/python/make_mlp.py, generated here);
#   3. shadow off/on alternated (scripts/bench-shadow.sh);
#   4. a hand-rolled Python grpcio + onnxruntime server (benches/python)
#      speaking the same Predict proto, same load and rows, concurrency 1 and 8.
#
#   BENCH_SECONDS=10   seconds measured per point (after 1 s warm-up)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${BENCH_SECONDS:-10}
cores=$(nproc)
out=target/bench
mkdir -p "$out"
results=$out/results.jsonl
: >"$results"
bin=target/release/modelgate
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

# serve <name> <repo>: starts a gateway, sets $addr.
serve() {
  local dir=$out/$1
  rm -rf "$dir/state" && mkdir -p "$dir"
  $bin serve --models "$2" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --no-watch --state-dir "$dir/state" >"$dir/server.out" 2>"$dir/server.log" &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q '^try:' "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^modelgate ready: Predict (modelgate.v1) on //p' "$dir/server.out")
  [ -n "$addr" ] || { echo "bench: $1 did not start; see $dir/server.log" >&2; exit 1; }
}
load() { # load <label> <addr> <model> <concurrency> [protocol: predict (default) or kserve]
  target/release/loadgen --addr "$2" --model "$3" --concurrency "$4" --protocol "${5:-predict}" --duration "$secs" \
    --label "$1" | tee -a "$results"
}
raw() { # raw <label> <model file> <concurrency>
  target/release/raw_ort --model "$2" --concurrency "$3" --duration "$secs" --label "$1" | tee -a "$results"
}

# The Python side: the baseline server and the batching model's generator.
venv=.cache/venv-baseline
if [ "$(cat "$venv/requirements.installed" 2>/dev/null)" != "$(cat benches/python/requirements.txt)" ]; then
  rm -rf "$venv" && python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r benches/python/requirements.txt
  cp benches/python/requirements.txt "$venv/requirements.installed"
fi
"$venv/bin/python" benches/python/make_mlp.py "$out/mlp.onnx"

echo "machine: $cores cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# 0. The floor beside the gateway (the bundled repository, default settings).
serve gateway models/repository
gw=$addr
target/release/floor_server --models models/repository >"$out/floor.out" 2>"$out/floor.log" &
pids+=($!)
for _ in $(seq 1 200); do grep -q '^floor ready' "$out/floor.out" 2>/dev/null && break; sleep 0.1; done
floor=$(sed -n 's/^floor ready: Predict (modelgate.v1) on //p' "$out/floor.out")
[ -n "$floor" ] || { echo "bench: the floor server did not start; see $out/floor.log" >&2; exit 1; }
for proto in kserve predict; do
  for c in 1 8 32; do
    load "floor-$proto:breast-cancer:$c" "$floor" breast-cancer "$c" "$proto"
    # The Predict rows are also table 1's gateway rows.
    if [ "$proto" = predict ]; then label="gateway:breast-cancer:$c"; else label="gateway-$proto:breast-cancer:$c"; fi
    load "$label" "$gw" breast-cancer "$c" "$proto"
  done
done

# 1. Raw ORT vs the gateway: breast-cancer's gateway rows are 0.'s Predict rows.
for c in 1 8 32; do
  raw "raw:breast-cancer:$c" models/repository/breast-cancer/1/model.onnx "$c"
done
for c in 1 "$cores"; do
  raw "raw:cnn:$c" models/repository/cnn/1/model.onnx "$c"
  load "gateway:cnn:$c" "$gw" cnn "$c"
done

# 2. Batching off vs on, concurrency 32, each in its own gateway.
for mb in 1 32; do
  repo=$out/batch-$mb/repo
  rm -rf "$repo" && mkdir -p "$repo"
  for m in breast-cancer cnn mlp; do
    mkdir -p "$repo/$m/1"
    if [ "$m" = mlp ]; then cp "$out/mlp.onnx" "$repo/$m/1/model.onnx"; else cp "models/repository/$m/1/model.onnx" "$repo/$m/1/"; fi
    printf 'intra_op_threads = 1\nqueue_capacity = 1024\nmax_batch = %s\n' "$mb" >"$repo/$m/model.toml"
  done
  serve "batch-$mb" "$repo"
  for m in breast-cancer cnn mlp; do
    load "batch$mb:$m:32" "$addr" "$m" 32
  done
done

# 3. Shadow isolation (its own gateway; alternated rounds).
BENCH_SECONDS=$secs scripts/bench-shadow.sh >"$out/shadow.txt"
cat "$out/shadow.txt"

# 4. The hand-rolled Python baseline, then the gateway again right after.
stubs=$out/pystubs
rm -rf "$stubs" && mkdir -p "$stubs"
"$venv/bin/python" -m grpc_tools.protoc -Iproto --python_out="$stubs" --grpc_python_out="$stubs" proto/modelgate/v1/predict.proto
touch "$stubs/modelgate/__init__.py" "$stubs/modelgate/v1/__init__.py"
"$venv/bin/python" benches/python/baseline_server.py "$stubs" models/repository/breast-cancer/1/model.onnx breast-cancer \
  >"$out/python.out" 2>"$out/python.log" &
pids+=($!)
for _ in $(seq 1 200); do grep -q '^listening on' "$out/python.out" 2>/dev/null && break; sleep 0.1; done
py=$(sed -n 's/^listening on //p' "$out/python.out")
for c in 1 8; do
  load "python:breast-cancer:$c" "$py" breast-cancer "$c"
  load "gateway-again:breast-cancer:$c" "$gw" breast-cancer "$c"
done

python3 - "$results" "$out/shadow/results.jsonl" "$cores" <<'PY'
import json, statistics, sys
rows = {json.loads(l)["bench"]: json.loads(l) for l in open(sys.argv[1])}
shadow = [json.loads(l) for l in open(sys.argv[2])]
cores = int(sys.argv[3])
g = lambda k: rows.get(k)
print()
print(f"modelgate bench — {cores} cores, batch-1 requests, one run (µs; ratios from this run)")
print()
print("0. the floor (a zero-work tonic server, same settings and load) vs the gateway, breast-cancer v1")
print(f"   {'protocol':<8} {'conc':>4} | {'floor req/s':>11} {'p50':>5} {'p99':>6} | {'gw req/s':>9} {'p50':>5} {'p99':>6} | {'gw/floor req/s':>14} {'p99 gw/floor':>12} {'+p50':>5}")
floor_rows = {}
for proto in ("kserve", "predict"):
    for c in (1, 8, 32):
        f = g(f"floor-{proto}:breast-cancer:{c}")
        w = g(f"gateway:breast-cancer:{c}" if proto == "predict" else f"gateway-{proto}:breast-cancer:{c}")
        if f and w:
            floor_rows[(proto, c)] = (f, w)
            print(f"   {proto:<8} {c:>4} | {f['rps']:>11.0f} {f['p50_us']:>5} {f['p99_us']:>6} | {w['rps']:>9.0f} {w['p50_us']:>5} {w['p99_us']:>6} | "
                  f"{w['rps']/f['rps']:>14.2f} {w['p99_us']/max(f['p99_us'], 1):>12.2f} {w['p50_us']-f['p50_us']:>+5}")
for proto in ("kserve", "predict"):
    one, eight = floor_rows.get((proto, 1)), floor_rows.get((proto, 8))
    if one and eight:
        checks = [
            ("conc 8 req/s >= 0.85x floor", eight[1]["rps"] >= 0.85 * eight[0]["rps"]),
            ("conc 8 p99 <= 1.3x floor", eight[1]["p99_us"] <= 1.3 * eight[0]["p99_us"]),
            ("conc 1 p50 <= floor + 40", one[1]["p50_us"] <= one[0]["p50_us"] + 40),
        ]
        print(f"   issue 19 targets, {proto}: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks))
print("   (one point each; `make bench-floor` alternates rounds and adds the floor that runs the model)")
print()
print("1. raw ONNX Runtime in process vs the gateway")
print(f"   {'model':<14} {'conc':>4} | {'raw p50':>7} {'raw p99':>7} {'raw req/s':>9} | {'gw p50':>7} {'gw p99':>7} {'gw req/s':>9} | {'+p50':>6} {'+p99':>6} {'gw/raw req/s':>12}")
for model, levels in (("breast-cancer", (1, 8, 32)), ("cnn", (1, cores))):
    for c in levels:
        r, w = g(f"raw:{model}:{c}"), g(f"gateway:{model}:{c}")
        if r and w:
            print(f"   {model:<14} {c:>4} | {r['p50_us']:>7} {r['p99_us']:>7} {r['rps']:>9.0f} | {w['p50_us']:>7} {w['p99_us']:>7} {w['rps']:>9.0f} | "
                  f"{w['p50_us']-r['p50_us']:>+6} {w['p99_us']-r['p99_us']:>+6} {w['rps']/r['rps']:>12.2f}")
print()
print("2. dynamic batching at concurrency 32 (max_batch 1 vs 32)")
print(f"   {'model':<14} | {'off rows/s':>10} {'off p99':>7} | {'on rows/s':>10} {'on p99':>7} | {'on/off rows/s':>13}")
for model in ("breast-cancer", "cnn", "mlp"):
    a, b = g(f"batch1:{model}:32"), g(f"batch32:{model}:32")
    if a and b:
        print(f"   {model:<14} | {a['rows_per_s']:>10.0f} {a['p99_us']:>7} | {b['rows_per_s']:>10.0f} {b['p99_us']:>7} | {b['rows_per_s']/a['rows_per_s']:>13.2f}")
print()
off = [r for r in shadow if r["bench"] == "shadow-off"]
on = [r for r in shadow if r["bench"] == "shadow-on"]
if off and on:
    med = statistics.median
    print("3. shadow v2 mirroring 100% beside champion v1, concurrency 8, alternated rounds")
    print(f"   champion p50 off/on (median) {med([r['p50_us'] for r in off]):.0f} / {med([r['p50_us'] for r in on]):.0f};"
          f" p99 {med([r['p99_us'] for r in off]):.0f} / {med([r['p99_us'] for r in on]):.0f};"
          f" p99 on/off {med([r['p99_us'] for r in on]) / max(med([r['p99_us'] for r in off]), 1):.2f} (drops: see the shadow table above)")
    print()
print("4. hand-rolled Python grpcio + onnxruntime vs the gateway, breast-cancer v1, same proto and rows")
print(f"   {'conc':>4} | {'py p50':>7} {'py p99':>7} {'py req/s':>9} | {'gw p50':>7} {'gw p99':>7} {'gw req/s':>9} | {'gw/py req/s':>11}")
for c in (1, 8):
    p, w = g(f"python:breast-cancer:{c}"), g(f"gateway-again:breast-cancer:{c}")
    if p and w:
        print(f"   {c:>4} | {p['p50_us']:>7} {p['p99_us']:>7} {p['rps']:>9.0f} | {w['p50_us']:>7} {w['p99_us']:>7} {w['rps']:>9.0f} | {w['rps']/p['rps']:>11.2f}")
PY

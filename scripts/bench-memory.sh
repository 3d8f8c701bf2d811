#!/usr/bin/env bash
# Resident memory of one version with 1, 2 and 4 ORT sessions (sessions share
# ORT's prepacked-weights container): the RSS growth while the version loaded
# and warmed (ListModels' memory_bytes), for breast-cancer v2 and cnn.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench/memory
bin=target/release/modelgate
echo
echo "resident memory of one loaded, warmed version by ORT sessions (KiB; RSS growth during its load)"
printf '%-16s %8s %8s %8s\n' model "1" "2" "4"
for m in breast-cancer cnn; do
  row="$m"
  for s in 1 2 4; do
    dir=$out/$m-$s
    rm -rf "$dir" && mkdir -p "$dir/repo/$m/2"
    src=models/repository/$m/2/model.onnx
    [ -f "$src" ] || src=models/repository/$m/1/model.onnx
    cp "$src" "$dir/repo/$m/2/model.onnx"
    printf 'intra_op_threads = 1\nsessions = %s\n' "$s" >"$dir/repo/$m/model.toml"
    $bin serve --models "$dir/repo" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --metrics-listen off \
      --no-watch --state-dir "$dir/state" >"$dir/server.out" 2>"$dir/server.log" &
    pid=$!
    for _ in $(seq 1 100); do grep -q '^try:' "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
    admin=$(sed -n 's/^  admin on //p' "$dir/server.out")
    kib=$($bin admin --admin-addr "$admin" list-models --json | python3 -c \
      'import json, sys; print(json.load(sys.stdin)["models"][0]["versions"][0]["memory_bytes"] // 1024)')
    kill $pid; wait $pid 2>/dev/null || true
    row="$row $kib"
  done
  printf '%-16s %8s %8s %8s\n' $row
done

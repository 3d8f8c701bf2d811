# Sourced by scripts/bench-floor.sh and scripts/profile.sh: starts the
# gateway (`$MODELGATE_BIN`, default target/release/modelgate, with
# `$SERVE_ARGS`) and the floor server (target/release/floor_server) on
# ephemeral loopback ports, both serving models/repository, and waits until
# both print their ready lines. Sets gateway_pid, floor_pid, gateway_addr and
# floor_addr, and adds the pids to the caller's `pids` array (which its EXIT
# trap kills). $1 names the caller in errors, $2 is its output folder.
start_floor_pair() {
  local who=$1 out=$2
  rm -rf "$out/state"
  # shellcheck disable=SC2086
  ${MODELGATE_BIN:-target/release/modelgate} serve --models models/repository --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --no-watch --state-dir "$out/state" ${SERVE_ARGS:-} \
    >"$out/gateway.out" 2>"$out/gateway.log" &
  gateway_pid=$!
  pids+=("$gateway_pid")
  start_floor "$who" "$out" floor
  floor_pid=$started_floor_pid floor_addr=$started_floor_addr
  await_addr "$who" gateway "$out/gateway" '^try:' 'modelgate ready: Predict (modelgate.v1) on '
  gateway_addr=$ready_addr
}

# Waits (up to 60 s) until `$3.out` has a line matching `$4`, then sets
# ready_addr from the line starting with `$5` (a sed pattern without `/`);
# exits naming `$2` and `$3.log` when there is none.
await_addr() {
  local who=$1 what=$2 base=$3 ready=$4 prefix=$5
  for _ in $(seq 1 600); do
    grep -q "$ready" "$base.out" 2>/dev/null && break
    sleep 0.1
  done
  ready_addr=$(sed -n "s/^$prefix//p" "$base.out")
  [ -n "$ready_addr" ] || { echo "$who: the $what did not start; see $base.log" >&2; exit 1; }
}

# Starts one floor server (`$3` names its files in `$2`; the rest are
# floor_server flags, e.g. --run-model) and waits for its ready line. Sets
# started_floor_pid and started_floor_addr and adds the pid to `pids`.
# FLOOR_CPUS (a taskset list) starts it on those cores only.
start_floor() {
  local who=$1 out=$2 name=$3 launch=()
  shift 3
  [ -z "${FLOOR_CPUS:-}" ] || launch=(taskset -c "$FLOOR_CPUS")
  "${launch[@]}" target/release/floor_server --models models/repository "$@" >"$out/$name.out" 2>"$out/$name.log" &
  started_floor_pid=$!
  pids+=("$started_floor_pid")
  await_addr "$who" "floor server ($name)" "$out/$name" '^floor ready' 'floor ready: Predict (modelgate.v1) on '
  started_floor_addr=$ready_addr
}

# Thread switches (voluntary + involuntary) of process `$1` so far, summed
# over its threads: a server's wake-ups, read per request by the benches.
thread_switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ {s += $2} END {print s + 0}'
}

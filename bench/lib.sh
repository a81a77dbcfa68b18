# Shared by the benchmark scripts: build, start a server (danmaku or a peer) on a free port, run the bench
# against it, stop it. Source it; do not run it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DANMAKU=$ROOT/target/release/danmaku
OUT=${BENCH_OUT:-$ROOT/target/bench}
mkdir -p "$OUT"

# The bench opens thousands of viewers per source address and sends as fast as asked, as one user ("bench"): the
# rate limits a public server wants would refuse most of it. Every danmaku process a script starts takes these.
LOGIC_NO_LIMITS=(--comment-rate-per-user 0 --comment-rate-per-ip 0)
GATEWAY_NO_LIMITS=(--max-connections-per-ip 0 --new-connections-per-ip 0)
NO_LIMITS=("${LOGIC_NO_LIMITS[@]}" "${GATEWAY_NO_LIMITS[@]}")

build() {
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
}

# Installs the peers (Bun, Node ws, raw writer) if they are not built yet.
need_peers() {
  if [ ! -x "$ROOT/bench/peers/raw/target/release/raw-peer" ] || [ ! -x "$ROOT/bench/peers/node_modules/.bin/bun" ] \
    || [ ! -d "$ROOT/bench/peers/node_modules/ws" ]; then
    "$ROOT/bench/peers/install" >&2
  fi
}

# start_server KIND [danmaku serve flags...]: sets SERVER_PID and SERVER_PORT. KIND: danmaku (rate limits lifted),
# bun, node-ws, raw, raw-uring (the raw peer with its fan-out sends submitted through an io_uring per thread).
start_server() {
  SERVER_ARGS=("$@")
  local kind=$1; shift
  local log=$OUT/$kind.server.log
  # The server truncates its log only once it runs: the previous server's `listening on` line must not be read
  # meanwhile as this one's port.
  rm -f "$log" "$log.err"
  case $kind in
    danmaku) "$DANMAKU" serve --listen 127.0.0.1:0 "${NO_LIMITS[@]}" "$@" >"$log" 2>"$log.err" & ;;
    bun) "$ROOT/bench/peers/node_modules/.bin/bun" "$ROOT/bench/peers/bun/server.js" --port 0 --batch-ms 100 >"$log" 2>"$log.err" & ;;
    node-ws) node "$ROOT/bench/peers/node-ws/server.js" --port 0 --batch-ms 100 >"$log" 2>"$log.err" & ;;
    raw) "$ROOT/bench/peers/raw/target/release/raw-peer" --port 0 --batch-ms 100 --threads 2 >"$log" 2>"$log.err" & ;;
    raw-uring) "$ROOT/bench/peers/raw/target/release/raw-peer" --port 0 --batch-ms 100 --threads 2 --uring >"$log" 2>"$log.err" & ;;
    *) echo "unknown server kind $kind" >&2; return 2 ;;
  esac
  SERVER_PID=$!
  local i
  for i in $(seq 1 200); do
    if grep -q '^listening on ' "$log" 2>/dev/null; then
      SERVER_PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$log" | head -n 1)
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "$kind exited at start: $(cat "$log.err")" >&2; return 1; }
    sleep 0.05
  done
  echo "$kind did not start" >&2
  return 1
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

# run_bench KIND LABEL [bench flags...]: one bench run against the running server, JSON to $OUT/LABEL.json.
# This box is a VM on a shared host: when the hypervisor takes more than STEAL_MAX % of the CPU time during a run
# (the report's host.steal_pct), that run measured the neighbours, not the server. It is kept aside as
# LABEL.steal-N.json and run again on a fresh server (a peak RSS must not carry over), up to STEAL_TRIES runs in
# all; the last one counts whatever its steal, and its table row shows it.
STEAL_MAX=${STEAL_MAX:-8}
STEAL_TRIES=${STEAL_TRIES:-4}
run_bench() {
  local kind=$1 label=$2; shift 2
  local proto=v1 try steal
  [ "$kind" = danmaku ] || proto=plain
  for try in $(seq 1 "$STEAL_TRIES"); do
    echo "== $label: danmaku bench --protocol $proto $*" >&2
    "$DANMAKU" bench --url "ws://127.0.0.1:$SERVER_PORT" --protocol "$proto" --server-pid "$SERVER_PID" \
      --json "$OUT/$label.json" "$@" >"$OUT/$label.txt" 2>"$OUT/$label.err"
    cat "$OUT/$label.txt" >&2
    steal=$(python3 -c 'import json, sys; h = json.load(open(sys.argv[1])).get("host") or {}; print(h.get("steal_pct", 0))' \
      "$OUT/$label.json" 2>/dev/null || echo 0)
    if [ "$try" -eq "$STEAL_TRIES" ] || ! awk -v s="$steal" -v m="$STEAL_MAX" 'BEGIN {exit !(s > m)}'; then
      return 0
    fi
    echo "== $label: the hypervisor took ${steal}% of the CPU time (> STEAL_MAX ${STEAL_MAX}%): run kept aside as $label.steal-$try.json, measured again" >&2
    mv "$OUT/$label.json" "$OUT/$label.steal-$try.json"
    stop_server
    start_server "${SERVER_ARGS[@]}"
  done
}

machine() {
  echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), open files $(ulimit -Hn)"
}

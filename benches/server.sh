# benches/server.sh: sourced by the shell benches, after scripts/lib.sh, from the top of the tree.
#
# bench_args [ROUNDS] [BINARY...] installs what the shell benches use and sets ROUNDS (default 3)
# and bins (absolute paths; default target/release/custodian, built first), ROOT (the top of the
# tree) and WORK (a temporary directory, removed with the servers in it on exit).
bench_args() {
  ensure_packages softhsm2 wrk curl python3
  ROUNDS=${1:-3}
  shift || true
  if [ $# -eq 0 ]; then
    cargo build --release --locked --bin custodian >&2
    set -- "$PWD/target/release/custodian"
  fi
  bins=()
  local b
  for b in "$@"; do bins+=("$(readlink -f "$b")"); done
  ROOT=$PWD
  WORK=$(mktemp -d)
  trap 'pkill -f "serve --config $WORK/" 2>/dev/null || true; rm -rf "$WORK"' EXIT
}

# start_server BINARY DIR [AUDIT_LINES] starts a fresh server in DIR: SQLite, a fresh SoftHSM2
# token, log filter `warn`, listening on a free loopback port, AUDIT_LINES in its [audit] table.
# It creates the key `bench` and sets SERVER_PID, SERVER_URL and SERVER_TOKEN (the bootstrap
# admin token). The caller stops it (kill "$SERVER_PID").
start_server() {
  local bin=$1 d=$2 port
  port=$(free_port)
  SOFTHSM2_CONF=$("$ROOT/softhsm/setup" "$d/softhsm")
  export SOFTHSM2_CONF
  cat > "$d/custodian.toml" <<T
[server]
listen = "127.0.0.1:$port"
[store]
kind = "sqlite"
path = "$d/custodian.db"
[backend]
kind = "pkcs11"
module = "$(softhsm_module)"
token_label = "bench"
user_pin_file = "$d/user.pin"
[log]
format = "text"
filter = "warn"
[audit]
${3:-}
T
  env -u RUST_LOG "$bin" token init --config "$d/custodian.toml" --so-pin-file "$d/so.pin" >/dev/null 2>&1
  setsid env -u RUST_LOG "$bin" serve --config "$d/custodian.toml" > "$d/out.txt" 2> "$d/err.txt" < /dev/null &
  SERVER_PID=$!
  for _ in $(seq 200); do grep -q listening "$d/out.txt" 2>/dev/null && break; sleep 0.05; done
  SERVER_TOKEN=$(grep -i token "$d/out.txt" | head -1 | awk '{print $NF}')
  SERVER_URL="http://127.0.0.1:$port"
  curl -sf -X POST -H "Authorization: Bearer $SERVER_TOKEN" -H 'content-type: application/json' \
    -d '{"name":"bench"}' "$SERVER_URL/v1/keys" >/dev/null
}

# alternate FUNCTION calls `FUNCTION ROUND BINARY` for each of ROUNDS rounds and each binary in
# bins, reversing the binaries' order every other round.
alternate() {
  local fn=$1 round i bin order
  for round in $(seq "$ROUNDS"); do
    order=("${bins[@]}")
    if [ $((round % 2)) -eq 0 ]; then
      order=()
      for ((i = ${#bins[@]} - 1; i >= 0; i--)); do order+=("${bins[$i]}"); done
    fi
    for bin in "${order[@]}"; do "$fn" "$round" "$bin"; done
  done
}

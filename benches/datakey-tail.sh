#!/usr/bin/env bash
# benches/datakey-tail.sh [ROUNDS] [BINARY...]
#
# The tail of `datakey` at one concurrency, binaries alternated: for each round and each binary,
# a fresh server (SQLite, a fresh SoftHSM2 token, log filter `warn`), a 3 s warm-up at c=32,
# then `wrk -t1 -c$C -d${SECS}s` on `POST /v1/keys/bench/datakey`. Prints per row: rate,
# latency percentiles, the server's CPU ticks, the machine's steal ticks, how many requests
# waited over 3.2 / 6.4 / 12.8 ms for their audit record (`custodian_audit_wait_duration_seconds`),
# and the CPU ticks of the audit writer and checkpointer threads over the whole run.
#
# Defaults: 3 rounds of target/release/custodian (built first). Environment: C (32), SECS (8),
# AUDIT (extra lines for the config's [audit] table, e.g. "checkpoint_records = 1000000").
# Not part of the test command (docs/performance.md, "Checkpoints beside the writer").
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. benches/server.sh
bench_args "$@"
C=${C:-32}
SECS=${SECS:-8}

row() {
  local bin=$1 d pid tok url
  d=$(mktemp -d "$WORK/row.XXXX")
  start_server "$bin" "$d" "${AUDIT:-}"
  pid=$SERVER_PID tok=$SERVER_TOKEN url=$SERVER_URL
  cat > "$d/datakey.lua" <<L
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $tok"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"context":{"app":"bench"}}'
done = function(s, l, r)
  io.write(string.format("ops/s %.0f p50 %.2f p90 %.2f p99 %.2f p99.9 %.2f max %.2f ms errors %d",
    s.requests / (s.duration / 1e6), l:percentile(50) / 1000, l:percentile(90) / 1000,
    l:percentile(99) / 1000, l:percentile(99.9) / 1000, l.max / 1000,
    s.errors.status + s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))
end
L
  wrk -t1 -c32 -d3s -s "$d/datakey.lua" "$url/v1/keys/bench/datakey" >/dev/null
  local cpu0 steal0 cpu1 steal1 line
  cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  steal0=$(awk '/^cpu /{print $9}' /proc/stat)
  line=$(wrk -t1 -c"$C" -d"${SECS}s" -s "$d/datakey.lua" "$url/v1/keys/bench/datakey" | tail -1)
  cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  steal1=$(awk '/^cpu /{print $9}' /proc/stat)
  local waits
  waits=$(curl -sf -H "Authorization: Bearer $tok" "$url/metrics" | python3 -c '
import sys
b = {}
for l in sys.stdin:
    if l.startswith("custodian_audit_wait_duration_seconds_bucket"):
        le = l.split("le=\"")[1].split("\"")[0]
        b[le] = float(l.split()[-1])
n = b.get("+Inf", 0)
print(" ".join(f"{int(n - b.get(le, 0))}/{int(n)} over {ms} ms" for le, ms in (("0.0032", 3.2), ("0.0064", 6.4), ("0.0128", 12.8))))')
  local writer=0 ckpt=0 t comm ticks
  for t in /proc/"$pid"/task/*; do
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    ticks=$(awk '{print $14+$15}' "$t/stat" 2>/dev/null) || continue
    case "$comm" in
      custodian-audit) writer=$((writer + ticks)) ;;
      custodian-ckpt) ckpt=$((ckpt + ticks)) ;;
    esac
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  echo "$(basename "$bin") c=$C: $line | server CPU ticks $((cpu1 - cpu0)), steal ticks $((steal1 - steal0)) | audit waits: $waits | whole run incl. warm-up: audit writer $writer ticks, checkpointer $ckpt ticks"
}

for _ in $(seq "$ROUNDS"); do
  for bin in "${bins[@]}"; do row "$bin"; done
done

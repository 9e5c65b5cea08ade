#!/usr/bin/env bash
# benches/rewrap-foreground.sh [ROUNDS] [BINARY...]
#
# Target 4's foreground line, binaries alternated, with a job long enough to hold the whole
# window: for each round and each binary, a fresh server (SQLite, a fresh SoftHSM2 token, log
# filter `warn`, the default re-wrap throttle), secrets written under the key `rw` by
# `wrk -t1 -c16` for ${SECS}s (12,000–19,000 here), then `datakey` at c=8: 2 s of warm-up,
# ${SECS}+1 s without a job, the key `rw` rotated (its re-wrap job starts at once), and ${SECS}s
# with the job. Prints per row: the secrets written, rate and p99 without and with the job,
# their p99 ratio (the target asks ≤ 1.5) and the job's state and progress at the end of the
# window (it must still be running, so the whole window was under the job).
#
# Defaults: 3 rounds of target/release/custodian (built first). Environment: SECS (3).
# Not part of the test command (docs/performance.md, "Device calls on a lane of their own").
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. benches/server.sh
bench_args "$@"
SECS=${SECS:-3}

run() {
  local bin=$2 d tok u pid
  d=$(mktemp -d "$WORK/run.XXXX")
  start_server "$bin" "$d"
  pid=$SERVER_PID tok=$SERVER_TOKEN u=$SERVER_URL
  local auth=(-H "Authorization: Bearer $tok" -H 'content-type: application/json')
  curl -sf -X POST "${auth[@]}" -d '{"name":"rw"}' "$u/v1/keys" >/dev/null
  cat > "$d/put.lua" <<L
wrk.method = "PUT"
wrk.headers["Authorization"] = "Bearer $tok"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"value_text":"v","key":"rw"}'
local n = 0
request = function() n = n + 1; return wrk.format(nil, "/v1/secrets/rw/x-" .. n) end
done = function(s, l, r) io.write(string.format("%d\n", s.requests)) end
L
  cat > "$d/datakey.lua" <<L
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $tok"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"context":{"app":"bench"}}'
done = function(s, l, r)
  io.write(string.format("%.0f %.3f %d\n", s.requests / (s.duration / 1e6), l:percentile(99) / 1000,
    s.errors.status + s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))
end
L
  local written rate0 p990 err0 rate1 p991 err1 job
  written=$(wrk -t1 -c16 -d"${SECS}s" -s "$d/put.lua" "$u/v1/secrets/rw/" | tail -1)
  wrk -t1 -c8 -d2s -s "$d/datakey.lua" "$u/v1/keys/bench/datakey" >/dev/null
  read -r rate0 p990 err0 < <(wrk -t1 -c8 -d"$((SECS + 1))s" -s "$d/datakey.lua" "$u/v1/keys/bench/datakey" | tail -1)
  curl -sf -X POST "${auth[@]}" -d '{}' "$u/v1/keys/rw/rotate" >/dev/null
  read -r rate1 p991 err1 < <(wrk -t1 -c8 -d"${SECS}s" -s "$d/datakey.lua" "$u/v1/keys/bench/datakey" | tail -1)
  job=$(curl -sf "${auth[@]}" "$u/v1/jobs" | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
print(j["state"], j["done"], "done")')
  printf '%s: %s secrets | no job: %s/s p99 %s ms | with the job: %s/s p99 %s ms | ratio %s | errors %s | job at the end: %s\n' \
    "$(basename "$bin")" "$written" "$rate0" "$p990" "$rate1" "$p991" \
    "$(awk -v a="$p991" -v b="$p990" 'BEGIN{printf "%.2f", a / b}')" "$((err0 + err1))" "$job"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

alternate run

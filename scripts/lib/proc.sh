#!/usr/bin/env bash
# proc.sh: process helpers for scripts/up and scripts/down (sourced).
#
# Contract:
#   proc_pidfile_alive FILE NAME  exit 0 if FILE holds the pid of a live
#                                 process whose command line contains NAME
#                                 (guards against a recycled pid)
#   proc_stop_pidfile FILE NAME TIMEOUT
#                                 SIGTERM that process, wait up to TIMEOUT s,
#                                 then SIGKILL; removes FILE. No-op if dead.
#   proc_find_cmdline DIR/ [NAME]
#                                 print the pids whose command line contains
#                                 DIR/ or whose working directory is inside
#                                 DIR (and whose command line contains NAME,
#                                 if given), one per line
#   proc_kill_pids TIMEOUT PID... SIGTERM, wait, then SIGKILL what is left

# Quiet on purpose: a process may exit between the /proc glob and the read.
proc__cmdline() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null; }

proc_pidfile_alive() {
  local file=$1 name=$2 pid
  [ -f "$file" ] || return 1
  pid=$(cat "$file" 2>/dev/null)
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  case "$(proc__cmdline "$pid")" in *"$name"*) return 0 ;; esac
  return 1
}

proc_kill_pids() {
  local timeout=$1; shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null
  local deadline=$((SECONDS + timeout)) p left
  while :; do
    left=()
    for p in "$@"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
    [ ${#left[@]} -eq 0 ] && return 0
    [ $SECONDS -ge $deadline ] && break
    sleep 0.2
  done
  echo "down: pid(s) ${left[*]} did not exit in ${timeout}s after SIGTERM; sending SIGKILL" >&2
  kill -KILL "${left[@]}" 2>/dev/null
  return 0
}

proc_stop_pidfile() {
  local file=$1 name=$2 timeout=$3
  if proc_pidfile_alive "$file" "$name"; then
    proc_kill_pids "$timeout" "$(cat "$file")"
  fi
  rm -f "$file"
}

proc_find_cmdline() {
  local needle=$1 name=${2:-} d pid cmd cwd
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = "$$" ] && continue
    cmd=$(proc__cmdline "$pid") || continue
    [ -n "$cmd" ] || continue
    if [ -n "$name" ]; then
      case "$cmd" in *"$name"*) ;; *) continue ;; esac
    fi
    case "$cmd" in
      *"$needle"*) ;;
      *)
        # The agent starts QEMU inside the sandbox's dir with relative
        # paths: the dir shows in the working directory, not the cmdline.
        cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || continue
        case "$cwd/" in "$needle"*) ;; *) continue ;; esac
        ;;
    esac
    echo "$pid"
  done
}

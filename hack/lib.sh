# Shared helpers for hack/*.sh. Source it; it defines functions only.
# shellcheck shell=bash

# repo_root prints the repository root (the parent of hack/).
repo_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}

# log prints a timestamped progress line on stderr, prefixed by the script name.
log() {
  printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "$(basename "$0" .sh)" "$*" >&2
}

# die prints an error and exits non-zero.
die() {
  log "ERROR: $*"
  exit 1
}

# now_s prints seconds since the epoch, for timings.
now_s() {
  date +%s
}

# need_cmd fails with a clear message unless every named command is on PATH.
need_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "required command '$c' not found on PATH"
  done
}

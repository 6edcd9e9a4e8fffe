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

# apt_ensure PKG...: installs the Debian packages that are missing, with no recommends and
# without starting their services; does nothing (no apt, no root needed) when all are there.
# The package lists are refreshed only when an install fails on stale lists, or when they
# were never fetched on this machine.
apt_ensure() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "Debian packages ${missing[*]} are missing and this is not root (no sudo either): run as root"
    sudo=(sudo -n)
  fi
  need_cmd apt-get
  # Package scripts must not start services (nginx would take port 80, named port 53):
  # deny with a policy-rc.d for the duration, unless the machine already has one.
  local policy=/usr/sbin/policy-rc.d created=0 rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null && "${sudo[@]}" chmod 0755 "$policy" && created=1
  fi
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q)
  log "apt: installing ${missing[*]}"
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    "${apt[@]}" update >/dev/null || rc=$?
  fi
  if [ "$rc" -eq 0 ] && ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null; then
    log "apt: install failed; refreshing the package lists once"
    "${apt[@]}" update >/dev/null && "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  fi
  [ "$created" -eq 1 ] && "${sudo[@]}" rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get could not install ${missing[*]}"
  log "apt: installed ${missing[*]}"
}

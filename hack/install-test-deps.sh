#!/usr/bin/env bash
# Installs what the tests and benchmarks need on a fresh Debian machine; idempotent.
#   - Debian packages: real TLS clients and servers the tests and benches compare against.
#   - Go tools pinned by version into bin/tools/ (fortio).
# Runs non-interactively; needs root (or sudo) only when a package is missing.
# Usage: hack/install-test-deps.sh
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$(repo_root)"
TOOLS_DIR="$ROOT/bin/tools"

# openssl, curl: real TLS clients (s_client, --cert) in integration tests.
# nginx, wrk: the TLS-terminating baseline and load generator of the sidecar bench.
# iproute2: `ss` for port and connection checks; procps: `ps` for RSS measurements.
# ca-certificates: Go and curl need a system trust store file to exist.
APT_PACKAGES=(openssl curl nginx wrk iproute2 procps ca-certificates)

# Go tools: "binary module@version package".
GO_TOOLS=(
  "fortio fortio.org/fortio@v1.66.0 fortio.org/fortio"
)

t0=$(now_s)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

need_cmd dpkg-query
missing=()
for p in "${APT_PACKAGES[@]}"; do
  if installed "$p"; then
    log "apt: $p already installed"
  else
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "packages ${missing[*]} are missing and this is not root (no sudo either): run as root"
    sudo=(sudo -n)
  fi
  need_cmd apt-get
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts must not start services (nginx would grab port 80): deny with a
  # policy-rc.d for the duration, unless the machine already has one.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 0755 "$policy"
    created_policy=1
  fi
  cleanup_policy() {
    if [ "$created_policy" -eq 1 ]; then "${sudo[@]}" rm -f "$policy"; fi
  }
  trap cleanup_policy EXIT
  log "apt: updating package lists (missing: ${missing[*]})"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
    die "apt-get update failed"
  log "apt: installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    die "apt-get install ${missing[*]} failed"
fi

need_cmd go
mkdir -p "$TOOLS_DIR"
for spec in "${GO_TOOLS[@]}"; do
  read -r bin modver pkg <<<"$spec"
  want="${modver##*@}"
  mod="${modver%@*}"
  have=""
  if [ -x "$TOOLS_DIR/$bin" ]; then
    # The module version recorded in the binary itself, so a stale build is noticed.
    have="$(go version -m "$TOOLS_DIR/$bin" 2>/dev/null | awk -v m="$mod" '$1 == "mod" && $2 == m { print $3 }')"
  fi
  if [ "$have" = "$want" ]; then
    log "go: $bin $want already in bin/tools"
    continue
  fi
  t1=$(now_s)
  log "go: installing $pkg@$want into bin/tools${have:+ (replacing $have)}"
  GOBIN="$TOOLS_DIR" GOWORK=off GOFLAGS= CGO_ENABLED=0 go install -trimpath "$pkg@$want" ||
    die "go install $pkg@$want failed"
  log "go: $bin $want installed in $(( $(now_s) - t1 ))s"
done

log "done in $(( $(now_s) - t0 ))s"

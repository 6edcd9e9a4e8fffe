#!/usr/bin/env bash
# Installs what the ACME end-to-end tests (e2e/acmetest, e2e/acme) need:
#   - BIND9 (named, tsig-keygen, nsupdate) from Debian: the RFC 2136 DNS server;
#   - Pebble, the ACME test server, built from the Go module proxy into bin/tools/pebble
#     (Debian's pebble is 2.4.0: no ARI, no profiles), with its test certificates in
#     bin/tools/pebble-certs/ (pebble.minica.pem, cert.pem, key.pem).
#
# Usage: hack/acme-deps.sh [-f|--force]
#
# Idempotent and fast when done: apt runs only when named or tsig-keygen is missing (as
# root), and Pebble is rebuilt only when bin/tools/.pebble.version does not match.
# Pebble is pinned in hack/tools/pebble (a module of its own, so its dependencies stay
# out of the product's go.mod).
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PEBBLE_MODULE=github.com/letsencrypt/pebble/v2
PEBBLE_VERSION=v2.10.1
# Bump when the build recipe changes, to invalidate existing stamps.
RECIPE=1

ROOT="$(repo_root)"
TOOLS="$ROOT/bin/tools"
STAMP="$TOOLS/.pebble.version"
WANT="$PEBBLE_MODULE@$PEBBLE_VERSION recipe=$RECIPE"

force=0
for arg in "$@"; do
  case "$arg" in
    -f|--force) force=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg'" ;;
  esac
done

install_bind() {
  if command -v named >/dev/null 2>&1 && command -v tsig-keygen >/dev/null 2>&1 && command -v nsupdate >/dev/null 2>&1; then
    return
  fi
  apt_ensure bind9 bind9-dnsutils
  # The package enables a system named on port 53; the tests start their own.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now named >/dev/null 2>&1 || true
  fi
  command -v named >/dev/null 2>&1 || die "named not on PATH after installing bind9"
}

build_pebble() {
  if [ "$force" -eq 0 ] && [ -x "$TOOLS/pebble" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] &&
    [ -f "$TOOLS/pebble-certs/pebble.minica.pem" ] && [ -f "$TOOLS/pebble-certs/cert.pem" ] && [ -f "$TOOLS/pebble-certs/key.pem" ]; then
    return
  fi
  need_cmd go
  mkdir -p "$TOOLS/pebble-certs"
  local start
  start="$(now_s)"
  log "building pebble $PEBBLE_VERSION"
  (
    cd "$ROOT/hack/tools/pebble"
    # The tools module pins the version; -mod=mod lets go fill a missing go.sum line.
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$TOOLS/pebble.tmp" "$PEBBLE_MODULE/cmd/pebble"
  )
  local dir
  dir="$(cd "$ROOT/hack/tools/pebble" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "$PEBBLE_MODULE")"
  [ -n "$dir" ] && [ -d "$dir/test/certs" ] || die "pebble module directory not found in the module cache"
  install -m 0644 "$dir/test/certs/pebble.minica.pem" "$TOOLS/pebble-certs/pebble.minica.pem"
  install -m 0644 "$dir/test/certs/localhost/cert.pem" "$TOOLS/pebble-certs/cert.pem"
  install -m 0600 "$dir/test/certs/localhost/key.pem" "$TOOLS/pebble-certs/key.pem"
  mv -f "$TOOLS/pebble.tmp" "$TOOLS/pebble"
  printf '%s\n' "$WANT" >"$STAMP"
  log "pebble ready in $(($(now_s) - start))s"
}

install_bind
build_pebble

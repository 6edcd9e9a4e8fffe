#!/usr/bin/env bash
# Builds CoreDNS (the cluster DNS server of the local node, see e2e/cluster) from the Go
# module proxy into bin/k8s/coredns, with CoreDNS's default plugin set.
#
# Usage: hack/coredns.sh [-f|--force]
#
# github.com/coredns/coredns has no replace directives, so `go install MODULE@VERSION` builds
# it exactly as its own go.mod/go.sum pin it; no wrapper module is needed.
#
# Caching: skipped when bin/k8s/coredns exists and bin/k8s/.coredns.version matches. A
# machine-level cache in ${PODTLS_CACHE_DIR:-$HOME/.cache/podtls} survives fresh clones.
#
# Environment: COREDNS_VERSION (default v1.14.7), PODTLS_CACHE_DIR.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
# Bump when the build recipe changes, to invalidate existing stamps.
RECIPE=1

ROOT="$(repo_root)"
OUT_DIR="$ROOT/bin/k8s"
CACHE_DIR="${PODTLS_CACHE_DIR:-${HOME:-/root}/.cache/podtls}/coredns-$COREDNS_VERSION"
NAME=coredns

force=0
for arg in "$@"; do
  case "$arg" in
    -f|--force) force=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg'" ;;
  esac
done

need_cmd go mktemp
[[ "$COREDNS_VERSION" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "COREDNS_VERSION '$COREDNS_VERSION' is not of the form vX.Y.Z"
STAMP="$COREDNS_VERSION recipe=$RECIPE"

is_current() {
  [ -x "$1/$NAME" ] && [ -f "$1/.$NAME.version" ] && [ "$(cat "$1/.$NAME.version")" = "$STAMP" ]
}

# install_binary SRC DST: copy binary and stamp via temp files and rename, so an interrupted
# run never leaves a half-written binary that looks current.
install_binary() {
  mkdir -p "$2"
  cp "$1/$NAME" "$2/.$NAME.tmp.$$"
  chmod 0755 "$2/.$NAME.tmp.$$"
  mv -f "$2/.$NAME.tmp.$$" "$2/$NAME"
  echo "$STAMP" >"$2/.$NAME.version.tmp.$$"
  mv -f "$2/.$NAME.version.tmp.$$" "$2/.$NAME.version"
}

if [ "$force" -eq 0 ] && is_current "$OUT_DIR"; then
  log "coredns $COREDNS_VERSION: up to date in bin/k8s"
  exit 0
fi
if [ "$force" -eq 0 ] && is_current "$CACHE_DIR"; then
  install_binary "$CACHE_DIR" "$OUT_DIR"
  log "coredns $COREDNS_VERSION: copied from machine cache $CACHE_DIR"
  exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/podtls-coredns-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

t0=$(now_s)
log "coredns $COREDNS_VERSION: building (CGO_ENABLED=0, -trimpath, default plugins)"
(cd "$WORK" && env GOWORK=off CGO_ENABLED=0 GOBIN="$WORK" \
  go install -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
  "github.com/coredns/coredns@$COREDNS_VERSION") ||
  die "go install github.com/coredns/coredns@$COREDNS_VERSION failed (see the compiler output above)"
install_binary "$WORK" "$OUT_DIR"
if install_binary "$WORK" "$CACHE_DIR" 2>/dev/null; then
  cached="stored in $CACHE_DIR"
else
  cached="could not store in machine cache $CACHE_DIR (continuing)"
fi
log "coredns $COREDNS_VERSION: built in $(( $(now_s) - t0 ))s, $(( $(stat -c %s "$OUT_DIR/$NAME") / 1048576 )) MB; $cached"

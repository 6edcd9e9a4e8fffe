#!/usr/bin/env bash
# Builds CoreDNS (the cluster DNS server of the local node, see e2e/cluster) from the Go
# module proxy into bin/k8s/coredns, with only the plugins the local cluster uses.
#
# Usage: hack/coredns.sh [-f|--force]
#
# CoreDNS's own main links ~60 plugins (cloud DNS SDKs, etcd, geoip, QUIC...): 258 s cold on
# 2 cores. This builds a small main in a throwaway module instead, the way CoreDNS documents
# external plugin sets: coremain plus the plugins below, each registering itself in init.
# The module requires only github.com/coredns/coredns, so every dependency resolves to the
# version CoreDNS's own go.mod pins.
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
RECIPE=2

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

# The plugins of the local cluster's Corefile (e2e/cluster/config.go), plus those of a
# stock kubeadm Corefile (forward, loop, reload) so it can be used as one.
PLUGINS=(bind cache errors forward health kubernetes loadbalance loop ready reload)

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
# The module cache marks files read-only; make the temp tree removable.
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT

t0=$(now_s)
log "coredns $COREDNS_VERSION: building with plugins ${PLUGINS[*]} (CGO_ENABLED=0, -trimpath)"
mkdir -p "$WORK/src"
printf 'module podtls.invalid/coredns-build\n\ngo 1.25\n\nrequire github.com/coredns/coredns %s\n' \
  "$COREDNS_VERSION" >"$WORK/src/go.mod"
{
  echo '// Command coredns is CoreDNS with the plugins the podtls local cluster uses.'
  echo 'package main'
  echo
  echo 'import ('
  echo '	_ "github.com/coredns/coredns/core/dnsserver"'
  echo '	"github.com/coredns/coredns/coremain"'
  for p in "${PLUGINS[@]}"; do
    echo "	_ \"github.com/coredns/coredns/plugin/$p\""
  done
  echo ')'
  echo
  echo 'func main() { coremain.Run() }'
} >"$WORK/src/main.go"
(cd "$WORK/src" && env GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 \
  go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
  -o "$WORK/$NAME" .) ||
  die "go build of coredns $COREDNS_VERSION failed (see the compiler output above)"
# The binary must carry every plugin asked for (it lists them, with those they import,
# such as metadata and transfer, one per line).
have="$("$WORK/$NAME" -plugins)"
for p in "${PLUGINS[@]}"; do
  grep -qx "[[:space:]]*$p" <<<"$have" || die "coredns lacks plugin $p; it has: $(tr '\n' ' ' <<<"$have")"
done
install_binary "$WORK" "$OUT_DIR"
if install_binary "$WORK" "$CACHE_DIR" 2>/dev/null; then
  cached="stored in $CACHE_DIR"
else
  cached="could not store in machine cache $CACHE_DIR (continuing)"
fi
log "coredns $COREDNS_VERSION: built in $(( $(now_s) - t0 ))s with plugins $(tr '\n' ' ' <<<"$have"), $(( $(stat -c %s "$OUT_DIR/$NAME") / 1048576 )) MB; $cached"

#!/usr/bin/env bash
# Builds helm from the Go module proxy into bin/tools/helm of the repository, for the chart
# tests (helm lint/template/install against envtest) and the local-node install.
#
# Usage: hack/helm.sh [-f|--force]
#
# Caching: skipped when bin/tools/helm exists and bin/tools/.helm.version matches
# HELM_VERSION. A machine-level cache in ${PODTLS_CACHE_DIR:-$HOME/.cache/podtls} survives
# fresh clones: the binary is copied from it when present and stored into it after a build.
#
# Environment: HELM_VERSION (default v3.19.5), PODTLS_CACHE_DIR.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELM_VERSION="${HELM_VERSION:-v3.19.5}"
# Bump when the build recipe (flags, stamping) changes, to invalidate existing stamps.
RECIPE=1

ROOT="$(repo_root)"
OUT_DIR="$ROOT/bin/tools"
CACHE_DIR="${PODTLS_CACHE_DIR:-${HOME:-/root}/.cache/podtls}/helm-$HELM_VERSION"
STAMP="$HELM_VERSION recipe=$RECIPE"

force=0
for arg in "$@"; do
  case "$arg" in
    -f|--force) force=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg'" ;;
  esac
done

[[ "$HELM_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "HELM_VERSION '$HELM_VERSION' is not of the form v3.MINOR.PATCH"
need_cmd go mktemp

# is_current DIR: the binary exists in DIR and its stamp matches.
is_current() {
  [ -x "$1/helm" ] && [ -f "$1/.helm.version" ] && [ "$(cat "$1/.helm.version")" = "$STAMP" ]
}

# install_to SRC DST: copy binary + stamp atomically (temp file, then rename), so an
# interrupted run never leaves a half-written binary that looks current.
install_to() {
  local src="$1" dst="$2"
  mkdir -p "$dst" &&
    cp "$src/helm" "$dst/.helm.tmp.$$" &&
    chmod 0755 "$dst/.helm.tmp.$$" &&
    mv -f "$dst/.helm.tmp.$$" "$dst/helm" &&
    echo "$STAMP" >"$dst/.helm.version.tmp.$$" &&
    mv -f "$dst/.helm.version.tmp.$$" "$dst/.helm.version" || {
    rm -f "$dst/.helm.tmp.$$" "$dst/.helm.version.tmp.$$" 2>/dev/null
    return 1
  }
}

if [ "$force" -eq 0 ] && is_current "$OUT_DIR"; then
  log "helm $HELM_VERSION already in $OUT_DIR"
  exit 0
fi
if [ "$force" -eq 0 ] && is_current "$CACHE_DIR"; then
  install_to "$CACHE_DIR" "$OUT_DIR" || die "copy helm from $CACHE_DIR failed"
  log "helm $HELM_VERSION copied from the machine cache $CACHE_DIR"
  exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/podtls-helm-build.XXXXXX")"
trap 'chmod -R u+w "$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT

t0=$(now_s)
log "building helm $HELM_VERSION from the Go module proxy (about 1.5 min the first time)"
# helm's own Makefile stamps internal/version; without it `helm version` says v3.x-dev-ish.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
(cd "$WORK" && GOWORK=off GOBIN="$WORK/bin" CGO_ENABLED=0 \
  go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") ||
  die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed (Go module proxy reachable? GOPROXY=$(go env GOPROXY))"

got="$("$WORK/bin/helm" version --template '{{.Version}}')" || die "built helm does not run"
[ "$got" = "$HELM_VERSION" ] || die "built helm reports version '$got', want $HELM_VERSION"

install_to "$WORK/bin" "$OUT_DIR" || die "install helm into $OUT_DIR failed"
install_to "$WORK/bin" "$CACHE_DIR" || log "could not store helm in the machine cache $CACHE_DIR (continuing)"
log "helm $HELM_VERSION built into $OUT_DIR in $(( $(now_s) - t0 ))s"

#!/usr/bin/env bash
# Builds real Kubernetes control-plane binaries (and etcd) from the Go module proxy into
# bin/k8s/ of the repository, for envtest-based integration tests and a local node.
#
# Usage: hack/k8s-binaries.sh [-f|--force] [COMPONENT...]
#   COMPONENT: kube-apiserver kubectl etcd (the default set), kubelet, kube-controller-manager,
#              kube-scheduler, kube-proxy, or "all".
#
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging modules with
# local paths), so each build happens in a throwaway wrapper module that requires
# k8s.io/kubernetes and replaces every staging module with its published v0.X.Y version. The
# replace list is read from k8s.io/kubernetes's own go.mod, so bumping K8S_VERSION just works.
#
# Caching: a component is skipped when bin/k8s/<name> exists and bin/k8s/.<name>.version
# matches. A machine-level cache in ${PODTLS_CACHE_DIR:-$HOME/.cache/podtls} survives fresh
# clones: binaries are copied from it when present and stored into it after a build.
#
# Environment: K8S_VERSION (default v1.37.2), ETCD_VERSION (default v3.7.3), PODTLS_CACHE_DIR.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
# Bump when the build recipe (flags, stamping) changes, to invalidate existing stamps.
RECIPE=1

ROOT="$(repo_root)"
OUT_DIR="$ROOT/bin/k8s"
CACHE_BASE="${PODTLS_CACHE_DIR:-${HOME:-/root}/.cache/podtls}"

DEFAULT_COMPONENTS=(kube-apiserver kubectl etcd)
ALL_COMPONENTS=(kube-apiserver kubectl etcd kubelet kube-controller-manager kube-scheduler kube-proxy)

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
}

force=0
components=()
for arg in "$@"; do
  case "$arg" in
    -f|--force) force=1 ;;
    -h|--help) usage; exit 0 ;;
    all) components+=("${ALL_COMPONENTS[@]}") ;;
    kube-apiserver|kubectl|etcd|kubelet|kube-controller-manager|kube-scheduler|kube-proxy)
      components+=("$arg") ;;
    *) die "unknown component '$arg' (want one of: ${ALL_COMPONENTS[*]} all)" ;;
  esac
done
if [ "${#components[@]}" -eq 0 ]; then
  components=("${DEFAULT_COMPONENTS[@]}")
fi

need_cmd go awk sed mktemp

[[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "K8S_VERSION '$K8S_VERSION' is not of the form v1.MINOR.PATCH"
K8S_MINOR="${BASH_REMATCH[1]}"
# Staging modules (k8s.io/api, k8s.io/client-go, ...) are published as v0.MINOR.PATCH.
STAGING_VERSION="v0.${K8S_MINOR}.${BASH_REMATCH[2]}"
[[ "$ETCD_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "ETCD_VERSION '$ETCD_VERSION' is not of the form v3.MINOR.PATCH"

version_of() {
  if [ "$1" = etcd ]; then echo "$ETCD_VERSION"; else echo "$K8S_VERSION"; fi
}

cache_dir_of() {
  if [ "$1" = etcd ]; then echo "$CACHE_BASE/etcd-$ETCD_VERSION"; else echo "$CACHE_BASE/k8s-$K8S_VERSION"; fi
}

stamp_value() {
  echo "$(version_of "$1") recipe=$RECIPE"
}

# is_current DIR NAME: the binary exists in DIR and its stamp matches the wanted version.
is_current() {
  local dir="$1" name="$2"
  [ -x "$dir/$name" ] && [ -f "$dir/.$name.version" ] &&
    [ "$(cat "$dir/.$name.version")" = "$(stamp_value "$name")" ]
}

# install_binary SRC_DIR DST_DIR NAME: copy binary + stamp atomically (temp file, then rename),
# so an interrupted run never leaves a half-written binary that looks current.
install_binary() {
  local src="$1" dst="$2" name="$3"
  mkdir -p "$dst" &&
    cp "$src/$name" "$dst/.$name.tmp.$$" &&
    chmod 0755 "$dst/.$name.tmp.$$" &&
    mv -f "$dst/.$name.tmp.$$" "$dst/$name" &&
    stamp_value "$name" >"$dst/.$name.version.tmp.$$" &&
    mv -f "$dst/.$name.version.tmp.$$" "$dst/.$name.version" || {
    rm -f "$dst/.$name.tmp.$$" "$dst/.$name.version.tmp.$$" 2>/dev/null
    return 1
  }
}

# One scratch directory per run, made here in the main shell (helpers below run in command
# substitutions, i.e. subshells, whose variable assignments would be lost).
WORK="$(mktemp -d "${TMPDIR:-/tmp}/podtls-k8s-build.XXXXXX")"
cleanup() {
  # The module cache marks files read-only; make the temp tree removable.
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

work_dir() {
  echo "$WORK"
}

# Both wrapper modules ignore any go.work of the caller and may add missing go.sum lines.
go_env=(env GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0)

K8S_MOD_DIR=""
# k8s_wrapper_module prepares (once) a module requiring k8s.io/kubernetes with the staging
# replaces, and sets K8S_MOD_DIR.
k8s_wrapper_module() {
  [ -n "$K8S_MOD_DIR" ] && return 0
  local dir gomod replaces count t0
  dir="$(work_dir)/k8s"
  mkdir -p "$dir"
  t0=$(now_s)
  log "downloading k8s.io/kubernetes@$K8S_VERSION (source zip, may take a minute when not cached)"
  local dl
  dl="$(cd "$dir" && "${go_env[@]}" go mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>&1)" ||
    die "go mod download k8s.io/kubernetes@$K8S_VERSION failed (Go module proxy reachable? GOPROXY=$(go env GOPROXY)): $dl"
  gomod="$(printf '%s\n' "$dl" | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')"
  [ -n "$gomod" ] && [ -f "$gomod" ] || die "could not locate go.mod of k8s.io/kubernetes@$K8S_VERSION in the module cache"

  # Staging modules: replaced with ./staging/... AND required at v0.0.0 (this leaves out the
  # sample-* modules, which are replaced but not required).
  replaces="$(awk '
    /^replace[[:space:]]*\($/ { blk = "replace"; next }
    /^require[[:space:]]*\($/ { blk = "require"; next }
    /^\)/ { blk = ""; next }
    {
      line = $0; sub(/\/\/.*/, "", line)
      n = split(line, f, /[[:space:]]+/)
      i = 1; if (f[1] == "") i = 2
      kind = blk
      if (f[i] == "replace" || f[i] == "require") { kind = f[i]; i++ }
      if (kind == "replace" && f[i+1] == "=>" && f[i+2] ~ /^\.\/staging\//) staged[f[i]] = 1
      if (kind == "require" && f[i+1] == "v0.0.0") zero[f[i]] = 1
    }
    END { for (m in staged) if (m in zero) print m }
  ' "$gomod" | sort)"
  count="$(printf '%s\n' "$replaces" | grep -c . || true)"
  [ "$count" -gt 0 ] || die "found no staging modules in $gomod; has the layout of k8s.io/kubernetes changed?"
  log "k8s.io/kubernetes@$K8S_VERSION replaces $count staging modules; pinning them to $STAGING_VERSION"

  {
    echo "module podtls.invalid/k8s-build"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    printf '%s\n' "$replaces" | while IFS= read -r m; do
      echo "replace $m => $m $STAGING_VERSION"
    done
  } >"$dir/go.mod"
  log "wrapper module ready in $(( $(now_s) - t0 ))s"
  K8S_MOD_DIR="$dir"
}

ETCD_MOD_DIR=""
etcd_wrapper_module() {
  [ -n "$ETCD_MOD_DIR" ] && return 0
  local dir
  dir="$(work_dir)/etcd"
  mkdir -p "$dir"
  printf 'module podtls.invalid/etcd-build\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$ETCD_VERSION" >"$dir/go.mod"
  ETCD_MOD_DIR="$dir"
}

# build OUTDIR NAME...: compile the components into OUTDIR. The Kubernetes ones are built
# by one `go build` so they share one package load and the go command runs their compiles
# and links side by side; etcd lives in a module of its own.
build() {
  local out="$1" name k8s_pkgs=() etcd=0
  shift
  for name in "$@"; do
    if [ "$name" = etcd ]; then etcd=1; else k8s_pkgs+=("k8s.io/kubernetes/cmd/$name"); fi
  done
  if [ "$etcd" -eq 1 ]; then
    etcd_wrapper_module
    (cd "$ETCD_MOD_DIR" && "${go_env[@]}" go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3) ||
      die "go build go.etcd.io/etcd/server/v3 failed (see the compiler output above)"
  fi
  if [ "${#k8s_pkgs[@]}" -gt 0 ]; then
    k8s_wrapper_module
    # Stamp the real version (what k8s's own build does), so --version and kubectl's skew
    # checks see v1.X.Y rather than v0.0.0-master.
    local p ldflags="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR -X $p.gitTreeState=clean"
    done
    (cd "$K8S_MOD_DIR" && "${go_env[@]}" go build -trimpath -ldflags "$ldflags" -o "$out/" "${k8s_pkgs[@]}") ||
      die "go build ${k8s_pkgs[*]} failed (see the compiler output above)"
  fi
  for name in "$@"; do
    check_version "$out/$name" "$name"
  done
}

# check_version BINARY NAME: the binary runs and reports the version it was built as.
check_version() {
  local bin="$1" name="$2" want got
  want="$(version_of "$name")"
  case "$name" in
    kubectl) got="$("$bin" version --client 2>&1 || true)" ;;
    *) got="$("$bin" --version 2>&1 || true)" ;;
  esac
  # etcd prints "etcd Version: 3.7.3", Kubernetes binaries "Kubernetes v1.37.2".
  case "$got" in
    *"$want"* | *"${want#v}"*) log "$name reports: $(printf '%s' "$got" | head -n 1)" ;;
    *) die "$bin does not report version $want: $(printf '%s' "$got" | head -n 3)" ;;
  esac
}

mkdir -p "$OUT_DIR"
# Serialise concurrent runs (e.g. parallel make targets) on the same checkout.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$OUT_DIR/.lock"
  if ! flock -n 9; then
    log "another hack/k8s-binaries.sh holds $OUT_DIR/.lock; waiting"
    flock 9
  fi
fi

total0=$(now_s)
declare -A seen=()
todo=()
for name in "${components[@]}"; do
  [ -n "${seen[$name]:-}" ] && continue
  seen[$name]=1
  want="$(version_of "$name")"
  cache="$(cache_dir_of "$name")"
  if [ "$force" -eq 0 ] && is_current "$OUT_DIR" "$name"; then
    log "$name $want: up to date in bin/k8s"
    continue
  fi
  if [ "$force" -eq 0 ] && is_current "$cache" "$name"; then
    install_binary "$cache" "$OUT_DIR" "$name" || die "could not copy $name from $cache into $OUT_DIR"
    log "$name $want: copied from machine cache $cache"
    continue
  fi
  todo+=("$name")
done
if [ "${#todo[@]}" -gt 0 ]; then
  t0=$(now_s)
  log "building ${todo[*]} (Kubernetes $K8S_VERSION, etcd $ETCD_VERSION; CGO_ENABLED=0, -trimpath)"
  stage="$(work_dir)/out"
  mkdir -p "$stage"
  build "$stage" "${todo[@]}"
  for name in "${todo[@]}"; do
    install_binary "$stage" "$OUT_DIR" "$name" || die "could not install $name into $OUT_DIR"
    cache="$(cache_dir_of "$name")"
    if install_binary "$stage" "$cache" "$name" 2>/dev/null; then
      cached="stored in $cache"
    else
      cached="could not store in machine cache $cache (continuing)"
    fi
    log "$name $(version_of "$name"): $(( $(stat -c %s "$OUT_DIR/$name") / 1048576 )) MB; $cached"
  done
  log "built ${todo[*]} in $(( $(now_s) - t0 ))s"
fi
log "done in $(( $(now_s) - total0 ))s: $(cd "$OUT_DIR" && ls | tr '\n' ' ')"

#!/usr/bin/env bash
# Renders manifests/install.yaml from charts/podtls with the default values, for users who
# install with `kubectl apply -f` instead of Helm. Builds helm first (hack/helm.sh, cached).
#
# Usage: hack/manifests.sh [--check]
#   --check  render to a temporary file and fail if manifests/install.yaml differs (CI).
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$(repo_root)"
OUT="$ROOT/manifests/install.yaml"
NAMESPACE=podtls-system
# helm template asks no cluster, so it renders for a Kubernetes version of its own choosing
# (v1.20.0), which the chart's kubeVersion refuses: render for the version podtls is tested
# on (the Makefile's K8S_VERSION). The chart does not depend on the version otherwise.
KUBE_VERSION="${K8S_VERSION:-v1.37.2}"

check=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg'" ;;
  esac
done

# Quiet when helm is already built; its output is shown if the build fails.
if ! helm_log="$(bash "$ROOT/hack/helm.sh" 2>&1)"; then
  printf '%s\n' "$helm_log" >&2
  die "building helm failed"
fi
HELM="$ROOT/bin/tools/helm"

tmp="$(mktemp "${TMPDIR:-/tmp}/podtls-install.XXXXXX.yaml")"
trap 'rm -f "$tmp"' EXIT

# render writes the install manifest to stdout. Helm's own caches stay out of $HOME.
render() {
  cat <<HEADER
# podtls: generated from charts/podtls with the default values by hack/manifests.sh
# (make manifests). Do not edit; change the chart and regenerate.
#
#   kubectl apply -f manifests/install.yaml
#   kubectl -n $NAMESPACE rollout status deployment/podtls-controller
#   kubectl label namespace NAME podtls.io/inject=enabled
#
# Helm gives you values (ACME, your own CA, images, resources): see docs/install.md.
---
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
  labels:
    app.kubernetes.io/name: podtls
HEADER
  local cache
  cache="$(mktemp -d "${TMPDIR:-/tmp}/podtls-helm-home.XXXXXX")"
  HELM_CACHE_HOME="$cache/cache" HELM_CONFIG_HOME="$cache/config" HELM_DATA_HOME="$cache/data" \
    "$HELM" template podtls "$ROOT/charts/podtls" --namespace "$NAMESPACE" --skip-tests \
    --kube-version "$KUBE_VERSION"
  local rc=$?
  rm -rf "$cache"
  return $rc
}

render >"$tmp" || die "helm template charts/podtls failed"

if [ "$check" -eq 1 ]; then
  if ! diff -u "$OUT" "$tmp"; then
    die "manifests/install.yaml is stale: run 'make manifests' (bash hack/manifests.sh) and commit it"
  fi
  log "manifests/install.yaml is up to date"
  exit 0
fi
mkdir -p "$(dirname "$OUT")"
cp "$tmp" "$OUT"
log "wrote manifests/install.yaml"

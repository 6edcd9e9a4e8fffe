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
# nghttp2-client: h2load, the HTTP/2 load generator of the sidecar bench's h2 rows.
# iproute2: `ss` for port and connection checks; procps: `ps` for RSS measurements.
# ca-certificates: Go and curl need a system trust store file to exist.
# default-jdk-headless: keytool and a JDK HttpsServer read the PKCS#12 and JKS stores of
# app-owned certificates (java runs a single source file, which needs the JDK's compiler).
APT_PACKAGES=(openssl curl nginx wrk nghttp2-client iproute2 procps ca-certificates default-jdk-headless)

# Go tools: "binary module@version package".
GO_TOOLS=(
  "fortio fortio.org/fortio@v1.66.0 fortio.org/fortio"
)

t0=$(now_s)

apt_ensure "${APT_PACKAGES[@]}"

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

#!/usr/bin/env bash
# Installs the Debian packages the local single-node cluster (e2e/cluster) needs: containerd,
# runc, the CNI plugins, iptables, conntrack, socat, iproute2, util-linux (nsenter), procps
# (sysctl) and skopeo. Idempotent: packages
# already installed are left alone and apt is not touched at all when nothing is missing.
# Needs root (CI runs as root).
#
# Usage: hack/node-deps.sh
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(containerd runc containernetworking-plugins iptables conntrack socat iproute2 util-linux procps skopeo)

apt_ensure "${PACKAGES[@]}"
# On a systemd machine the package also starts a system containerd; the e2e cluster runs its
# own private instance (own socket, state and runc root) beside it and never touches it.
log "node packages present: ${PACKAGES[*]}"

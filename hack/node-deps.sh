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

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  log "all node packages present: ${PACKAGES[*]}"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}) and not root; run: sudo bash $0"
need_cmd apt-get
export DEBIAN_FRONTEND=noninteractive
log "installing: ${missing[*]}"
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}"
# On a systemd machine the package also starts a system containerd; the e2e cluster runs its
# own private instance (own socket, state and runc root) beside it and never touches it.
log "installed: ${missing[*]}"

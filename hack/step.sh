#!/usr/bin/env bash
# Runs one long step of a make target with one progress line before it (what it does and how
# long it takes the first time) and one after (how long it took), both stamped with the time
# since make started. The step's own output goes to bin/logs/NAME.log; on failure its last
# lines are printed. PODTLS_VERBOSE=1 prints everything instead.
#
# Usage: hack/step.sh NAME "TITLE" "FIRST-TIME ESTIMATE" CMD [ARG...]
#        hack/step.sh --announce "TITLE" "FIRST-TIME ESTIMATE"   (only the line before; for
#        steps whose own output people should see, such as go test)
# Environment: PODTLS_T0 (epoch seconds when make started; the Makefile exports it).
set -uo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0="${PODTLS_T0:-$(now_s)}"
fmt() { # fmt SECONDS -> 1m05s
  local s="$1"
  if [ "$s" -ge 60 ]; then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

if [ "${1:-}" = --announce ]; then
  [ "$#" -eq 3 ] || die "usage: $0 --announce TITLE ESTIMATE"
  printf '==> [%6s] %s (first time: %s)\n' "$(fmt $(($(now_s) - t0)))" "$2" "$3"
  exit 0
fi
[ "$#" -ge 4 ] || die "usage: $0 NAME TITLE ESTIMATE CMD [ARG...]"
name="$1" title="$2" estimate="$3"
shift 3

logdir="$(repo_root)/bin/logs"
mkdir -p "$logdir"
logfile="$logdir/$name.log"
start=$(now_s)
printf '==> [%6s] %s (first time: %s; cached afterwards)\n' "$(fmt $((start - t0)))" "$title" "$estimate"
if [ "${PODTLS_VERBOSE:-0}" = 1 ]; then
  "$@" 2>&1 | tee "$logfile"
  rc=${PIPESTATUS[0]}
else
  "$@" >"$logfile" 2>&1
  rc=$?
fi
end=$(now_s)
if [ "$rc" -ne 0 ]; then
  printf '    FAILED after %s (exit %d); last lines of %s:\n' "$(fmt $((end - start)))" "$rc" "$logfile"
  tail -n 40 "$logfile" | sed 's/^/    | /'
  exit "$rc"
fi
printf '    done in %s  (log: bin/logs/%s.log)\n' "$(fmt $((end - start)))" "$name"

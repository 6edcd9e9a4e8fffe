#!/usr/bin/env bash
# Runs every native Go fuzz target in the module for a short time each.
# Usage: hack/fuzz.sh [FUZZTIME]   (default 10s)
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-10s}"
failed=0
count=0
while IFS= read -r pkg; do
  dir="$(go list -f '{{.Dir}}' "$pkg")"
  targets="$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u || true)"
  for target in $targets; do
    count=$((count + 1))
    echo "=== fuzz $pkg $target ($fuzztime)"
    if ! go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" >"/tmp/podtls-fuzz.$$.log" 2>&1; then
      cat "/tmp/podtls-fuzz.$$.log"
      echo "--- FAIL: fuzz $pkg $target"
      failed=$((failed + 1))
    else
      tail -n 1 "/tmp/podtls-fuzz.$$.log"
    fi
  done
done < <(go list ./...)
rm -f "/tmp/podtls-fuzz.$$.log"
echo "fuzz: $((count - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Runs every native Go fuzz target in the module for a short time each.
# Usage: hack/fuzz.sh [FUZZTIME]   (default 10s)
#
# Go <= 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" at the -fuzztime boundary, having found nothing (golang/go#75804,
# fixed in Go 1.27). A real failure always writes its input under
# testdata/fuzz/<target>/ and says so; such a run fails at once. A run that
# failed with only that deadline message, and wrote no input, runs once more:
# it fails the job if it fails again.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-10s}"
failed=0
count=0
retried=0
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# -fuzzminimizetime 1s: the coordinator also minimizes every new interesting
# input, up to 60 s by default; in a window of seconds a slow target (large
# inputs, e.g. FuzzTransform, FuzzAdmissionReview) would spend it all there
# instead of exploring. A failing input is still written, less minimized.
run() { go test "$1" -run '^$' -fuzz "^${2}\$" -fuzztime "$fuzztime" -fuzzminimizetime 1s >"$log" 2>&1; }

# coordinator_race is true when the log shows the target failing only with the
# coordinator's deadline and no failing input.
coordinator_race() {
  ! grep -q 'Failing input written to' "$log" &&
    grep -A1 -- "^--- FAIL: $1 " "$log" | tail -n 1 | grep -qx '[[:space:]]*context deadline exceeded'
}

while IFS= read -r pkg; do
  dir="$(go list -f '{{.Dir}}' "$pkg")"
  targets="$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u || true)"
  for target in $targets; do
    count=$((count + 1))
    echo "=== fuzz $pkg $target ($fuzztime)"
    ok=1
    if ! run "$pkg" "$target"; then
      ok=0
      if coordinator_race "$target"; then
        echo "    $target stopped with the Go coordinator's deadline race (golang/go#75804) and no failing input; running it once more"
        retried=$((retried + 1))
        run "$pkg" "$target" && ok=1
      fi
    fi
    if [ "$ok" -eq 1 ]; then
      tail -n 1 "$log"
    else
      cat "$log"
      echo "--- FAIL: fuzz $pkg $target"
      failed=$((failed + 1))
    fi
  done
done < <(go list ./...)
echo "fuzz: $((count - failed)) passed, $failed failed, $retried rerun after the coordinator race"
[ "$failed" -eq 0 ]

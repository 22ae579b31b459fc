#!/bin/sh
# Run each unit-test binary; print one summary line for the whole set.
# Each binary prints its own "N passed, M failed" line and exits non-zero on failure.
status=0; passed=0; failed=0
for t in "$@"; do
  out=$("$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  line=$(printf '%s\n' "$out" | grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed' | tail -n 1)
  p=$(printf '%s' "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/'); f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ "$rc" -ne 0 ] || [ -z "$line" ]; then status=1; [ -z "$line" ] && failed=$((failed + 1)) && echo "$t: crashed or printed no summary (exit $rc)"; fi
done
echo "unit tests: $passed passed, $failed failed"
exit $status

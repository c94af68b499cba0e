#!/usr/bin/env bash
# End-to-end tests of `netpol connections` and `netpol diff`: exit codes, the JSON shape the
# issue fixes, every output format, filters, and a rendered picture when Graphviz is there.
# Expected connections come from the upstream scenario's own truth table (y/a is the only pod
# x/a admits) and from the NetworkPolicy API, not from np's output.
set -uo pipefail
netpol="$1"
testdata="$2"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

scenario="$testdata/upstream/allow-only-from-pod-in-different-namespace.yaml"

# What can reach x/a: only y/a (upstream's table), on every port and protocol.
out=$("$netpol" connections -f "$scenario" --to x/a 2>/dev/null); rc=$?
[[ $rc -eq 0 && "$out" == "y/a => x/a : All connections" ]] || fail "connections --to x/a: rc=$rc: $out"

# The JSON shape: {"connections": [{"from", "to", "ports": {"TCP": [[a, b], ...]}}]}.
"$netpol" connections -f "$scenario" --to x/a --port 80-81 --protocol TCP -o json >"$tmp/c.json" ||
  fail "connections -o json exit $?"
/usr/bin/python3 - "$tmp/c.json" <<'PY' || fail "connections -o json shape"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc == {"connections": [{"from": "y/a", "to": "x/a", "ports": {"TCP": [[80, 81]]}}]}, doc
PY

# Other formats carry the same rows.
"$netpol" connections -f "$scenario" --to x/a -o csv | grep -qx "y/a,x/a,TCP,1-65535" || fail "csv"
"$netpol" connections -f "$scenario" --to x/a -o md | grep -qF '| `y/a` | `x/a` | All connections |' || fail "md"
"$netpol" connections -f "$scenario" --to x/a -o dot | grep -qF '"y/a" -> "x/a"' || fail "dot"
if command -v dot >/dev/null; then
  "$netpol" connections -f "$scenario" --pods-only -o svg >"$tmp/c.svg" && grep -q "<svg" "$tmp/c.svg" ||
    fail "svg through Graphviz"
  "$netpol" connections -f "$scenario" --pods-only -o png >"$tmp/c.png" &&
    [[ "$(head -c 4 "$tmp/c.png" | tail -c 3)" == "PNG" ]] || fail "png through Graphviz"
else
  echo "note: Graphviz's dot is not installed; svg/png not rendered"
fi

# Filters: a glob source, a named port that the destination defines (serve-80-tcp is 80/TCP).
out=$("$netpol" connections -f "$scenario" --from 'y/*' --to x/a --port serve-80-tcp 2>/dev/null)
[[ "$out" == "y/a => x/a : TCP 80" ]] || fail "named port filter: $out"
"$netpol" connections -f "$scenario" --port 0 >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "port 0 must be rejected"
"$netpol" connections -f "$scenario" --from nonsense >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "bad --from"

# Nothing evaluated is an error, not an empty success.
printf 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}}\n' >"$tmp/policy-only.yaml"
"$netpol" connections -f "$tmp/policy-only.yaml" >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "no pods must exit 2"

# diff: identical inputs -> 0 and no change; a policy that opens TCP 80 from namespace y -> 1.
"$netpol" diff --before "$scenario" --after "$scenario" >"$tmp/same.txt"; rc=$?
[[ $rc -eq 0 ]] && grep -qx "no change in connectivity" "$tmp/same.txt" || fail "diff identical: rc=$rc"
before="$testdata/upstream/stacked-policies-overlapping-pod-selectors-before.yaml"
after="$testdata/upstream/stacked-policies-overlapping-pod-selectors-after.yaml"
"$netpol" diff --before "$before" --after "$after" --pods-only --to x/a >"$tmp/diff.txt"; rc=$?
[[ $rc -eq 1 ]] || fail "diff changed: exit $rc"
grep -qx "+ y/b => x/a : TCP 80" "$tmp/diff.txt" || { fail "diff lacks y/b => x/a TCP 80"; cat "$tmp/diff.txt"; }
"$netpol" diff --before "$after" --after "$before" --pods-only --to x/a -o json >"$tmp/back.json"
/usr/bin/python3 - "$tmp/back.json" <<'PY' || fail "diff -o json: reversing swaps added and removed"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["added"] == [], doc
assert {"from": "y/b", "to": "x/a", "ports": {"TCP": [[80, 80]]}} in doc["removed"], doc
PY
"$netpol" diff --before "$before" >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "diff without --after must exit 2"

if [[ $failures -gt 0 ]]; then echo "$failures failure(s)"; exit 1; fi
echo "all analysis CLI tests passed"

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

# --explain: x/a is isolated by its one policy, whose only rule admits y/a; y/a has no egress
# policy (the scenario's manifests).
rule="x/allow-ns-y-pod-a-via-namespace-pod-selector spec.ingress[0]"
out=$("$netpol" connections -f "$scenario" --to x/a --explain 2>/dev/null)
[[ "$out" == "y/a => x/a : All connections
    egress at y/a: not isolated
    ingress at x/a: $rule" ]] || fail "connections --explain: $out"
"$netpol" connections -f "$scenario" --to x/a --explain -o json >"$tmp/why.json" || fail "--explain -o json exit $?"
/usr/bin/python3 - "$tmp/why.json" "$rule" <<'PY' || fail "connections --explain -o json"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["connections"][0]["why"] == {"egress": ["not isolated"], "ingress": [sys.argv[2]]}, doc
PY
"$netpol" connections -f "$scenario" --to x/a --explain -o csv | grep -qxF "y/a,x/a,TCP,1-65535,not isolated,$rule" ||
  fail "connections --explain -o csv"
"$netpol" connections -f "$scenario" --to x/a --explain -o md | grep -qF "| egress: not isolated<br>ingress: $rule |" ||
  fail "connections --explain -o md"
"$netpol" connections -f "$scenario" --explain -o dot >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "--explain -o dot must exit 2"
# The stacked policies: after, the new policy's rule admits y/b on TCP 80; before, x/a was
# isolated by the first policy alone, whose rule admits only TCP 81.
"$netpol" diff --before "$before" --after "$after" --pods-only --from y/b --to x/a --explain >"$tmp/why.txt"
grep -qx "    after: ingress at x/a: x/allow-client-a-via-ns-selector-80 spec.ingress\[0\]" "$tmp/why.txt" &&
  grep -qx "    before: ingress at x/a: isolated by x/allow-client-a-via-ns-selector; no rule admits" "$tmp/why.txt" ||
  { fail "diff --explain"; cat "$tmp/why.txt"; }
"$netpol" diff --before "$before" --after "$after" --pods-only --from y/b --to x/a --explain -o csv >"$tmp/why.csv"
grep -qxF "added,y/b,x/a,TCP,80,not isolated,x/allow-client-a-via-ns-selector-80 spec.ingress[0],,isolated by x/allow-client-a-via-ns-selector; no rule admits" "$tmp/why.csv" ||
  { fail "diff --explain -o csv"; cat "$tmp/why.csv"; }
# (to a file: diff exits 1 on a change, which pipefail would report)
"$netpol" diff --before "$before" --after "$after" --pods-only --from y/b --to x/a --explain -o md >"$tmp/why.md"
grep -qF '| added | `y/b` | `x/a` | TCP 80 | egress: not isolated<br>ingress: x/allow-client-a-via-ns-selector-80 spec.ingress[0] | ingress: isolated by x/allow-client-a-via-ns-selector; no rule admits |' "$tmp/why.md" ||
  fail "diff --explain -o md"
"$netpol" diff --before "$before" --after "$after" --pods-only --from y/b --to x/a --explain -o json >"$tmp/why.json"
/usr/bin/python3 - "$tmp/why.json" <<'PY' || fail "diff --explain -o json"
import json, sys
entry = json.load(open(sys.argv[1]))["added"][0]
assert entry["why"]["ingress"] == ["x/allow-client-a-via-ns-selector-80 spec.ingress[0]"], entry
assert entry["why_not"] == {"egress": [], "ingress": ["isolated by x/allow-client-a-via-ns-selector; no rule admits"]}, entry
PY

# matrix --group-by. Upstream's table for the scenario (only y/a reaches x/a): from y to x
# some pairs are allowed (y/a -> x/a) and some denied (y/b -> x/a); from x to y every pair is
# (nothing isolates y).
"$netpol" matrix -f "$scenario" --group-by namespace -o json >"$tmp/grouped.json" || fail "matrix --group-by exit $?"
/usr/bin/python3 - "$tmp/grouped.json" <<'PY' || fail "matrix --group-by namespace: upstream's cells"
import json, sys
doc = json.load(open(sys.argv[1]))
names = [g["name"] for g in doc["groups"]]
assert doc["group_by"] == "namespace" and names == ["x", "y", "z"], doc
assert doc["groups"][0]["pods"] == ["x/a", "x/b", "x/c"], doc
cells = doc["matrices"][0]["cells"]
assert cells[names.index("y")][names.index("x")] == "mixed", cells
assert cells[names.index("x")][names.index("y")] == "allowed", cells
PY
out=$("$netpol" matrix -f "$scenario" --group-by namespace)
grep -q '^y  *~  *\.  *\.$' <<<"$out" || fail "matrix --group-by text: row y: $out"
"$netpol" matrix -f "$scenario" --group-by pods >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "--group-by pods must exit 2"
# Every grouped cell equals the reference's ungrouped cells folded by group: namespaces of
# upstream scenarios, and the shop's workloads with one pod per replica.
group_check() {  # ARGS... (input flags); $group: workload or namespace
  "$netpol" matrix "$@" --engine reference -o json --port 80,5432,9000 --protocol TCP,UDP >"$tmp/flat.json" &&
    "$netpol" matrix "$@" --group-by "$group" -o json --port 80,5432,9000 --protocol TCP,UDP >"$tmp/grouped.json" ||
    { fail "matrix $* --group-by $group: exit $?"; return; }
  /usr/bin/python3 - "$tmp/flat.json" "$tmp/grouped.json" "$group" <<'PY' || fail "matrix $* --group-by $group: cells differ from the reference"
import json, sys
flat, grouped, by = (json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3])
made = flat.get("synthesized", {})
def group(pod):
    if by == "namespace":
        return pod.split("/")[0]
    return made[pod].split(" ", 1)[1] if pod in made else pod
names = [g["name"] for g in grouped["groups"]]
assert sorted(set(map(group, flat["pods"]))) == names, (names, flat["pods"])
seen = set()
for f, g in zip(flat["matrices"], grouped["matrices"]):
    assert (f["protocol"], f["port"]) == (g["protocol"], g["port"])
    for r, rg in enumerate(names):
        for c, cg in enumerate(names):
            values = {f["allowed"][i][j] for i, a in enumerate(flat["pods"]) if group(a) == rg
                      for j, b in enumerate(flat["pods"]) if group(b) == cg}
            want = "mixed" if len(values) == 2 else "allowed" if values == {True} else "denied"
            assert g["cells"][r][c] == want, (f["protocol"], f["port"], rg, cg, g["cells"][r][c], want)
            seen.add(want)
print(sorted(seen))
PY
}
group=namespace group_check -f "$scenario"
group=namespace group_check -f "$testdata/upstream/stacked-policies-overlapping-pod-selectors-after.yaml"
group=workload group_check -f "$testdata/workloads/shop" --expand-replicas
group=namespace group_check -f "$testdata/workloads/shop" --expand-replicas

if [[ $failures -gt 0 ]]; then echo "$failures failure(s)"; exit 1; fi
echo "all analysis CLI tests passed"

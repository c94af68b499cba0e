#!/usr/bin/env bash
# End-to-end tests of the `netpol` command: exit codes (0 allowed/valid, 1 denied, 2 error),
# messages naming file, line, object and field path, the exact JSON shape of `matrix -o json`
# (checked against an upstream scenario's transcribed truth table), and bad input of every
# kind giving exit 2 — never a crash.
set -uo pipefail
netpol="$1"
testdata="$2"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
source "$(dirname "${BASH_SOURCE[0]}")/test_lib.sh"  # run NAME EXIT [patterns...] -- ARGS

scenario="$testdata/upstream/allow-only-from-pod-in-different-namespace.yaml"

run "validate accepts a scenario" 0 "valid: 1 NetworkPolicies, 9 Pods, 3 Namespaces" -- validate -f "$scenario"
run "check allowed" 0 "ALLOWED: y/a -> x/a TCP/80" "admitted by x/allow-ns-y-pod-a-via-namespace-pod-selector spec.ingress[0]" -- \
  check -f "$scenario" --from y/a --to x/a --port 80
run "check denied" 1 "DENIED: y/b -> x/a TCP/80" "no rule of those policies admits this flow" -- \
  check -f "$scenario" --from y/b --to x/a --port 80
run "check denied, reference engine" 1 "DENIED: y/b -> x/a TCP/80" -- \
  check -f "$scenario" --from y/b --to x/a --port 80 --engine=reference
run "explain always exits 0" 0 "DENIED" -- explain -f "$scenario" --from y/b --to x/a --port 80
run "check from an outside address" 1 "DENIED: 192.0.2.1 -> x/a TCP/80" "not applicable" -- \
  check -f "$scenario" --from 192.0.2.1 --to x/a --port 80
run "check by pod IP" 0 "ALLOWED: y/a -> x/a" -- check -f "$scenario" --from 10.2.0.1 --to x/a --port 80
run "check UDP" 1 "DENIED: y/b -> x/a UDP/81" -- check -f "$scenario" --from y/b --to x/a --port 81 --protocol UDP
run "stdin input" 0 "valid:" -- validate -f - <"$scenario"

cat >"$tmp/endport.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-db
  namespace: shop
spec:
  podSelector: {}
  ingress:
  - ports:
    - port: 80
      endPort: 79
YAML
run "invalid endPort names file, line, object, field" 2 \
  "endport.yaml:11: NetworkPolicy shop/allow-db: spec.ingress[0].ports[0].endPort" "invalid: 1 error" -- \
  validate -f "$tmp/endport.yaml"

cat >"$tmp/cidr.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-cidr, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock:
        cidr: 10.0.0.0/33
YAML
run "invalid CIDR" 2 "NetworkPolicy shop/bad-cidr: spec.ingress[0].from[0].ipBlock.cidr" -- validate -f "$tmp/cidr.yaml"
run "invalid input refuses check" 2 "spec.ingress[0].from[0].ipBlock.cidr" -- \
  check -f "$tmp/cidr.yaml" --from a/b --to c/d

cat >"$tmp/label.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-label, namespace: shop}
spec:
  podSelector:
    matchLabels:
      "-bad-key": x
YAML
run "invalid label key" 2 "spec.podSelector.matchLabels" -- validate -f "$tmp/label.yaml"

printf 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: "unterminated\n' >"$tmp/malformed.yaml"
run "malformed YAML" 2 "malformed.yaml:" -- validate -f "$tmp/malformed.yaml"
printf '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}\n' >"$tmp/malformed.json"
run "malformed JSON" 2 "malformed.json:" -- matrix -f "$tmp/malformed.json"
head -c 4096 /dev/urandom >"$tmp/garbage.yaml" 2>/dev/null || printf '\x00\x01\xff\xfe' >"$tmp/garbage.yaml"
run "binary garbage" 2 "garbage.yaml" -- validate -f "$tmp/garbage.yaml"
run "missing file" 2 "$tmp/nope.yaml" -- validate -f "$tmp/nope.yaml"
run "no input" 2 "-f" -- matrix
run "unknown pod" 2 "no pod \"x/zz\"" -- check -f "$scenario" --from x/zz --to x/a
run "bad port" 2 "bad port" -- check -f "$scenario" --from x/a --to x/b --port 70000
run "bad protocol" 2 "ICMP" -- matrix -f "$scenario" --protocol ICMP
run "unknown flag" 2 "unknown flag --bogus" -- matrix -f "$scenario" --bogus
run "unknown command" 2 "unknown command" -- frobnicate
run "neither end in the cluster" 2 "neither end" -- check -f "$scenario" --from 192.0.2.1 --to 192.0.2.2

# Every command checks its writes: a full device is an error (exit 2), never a silent
# truncated output. /dev/full fails every write with ENOSPC.
if [[ -w /dev/full ]]; then
  full_case() {
    local name="$1"; shift
    local err rc
    err="$("$netpol" "$@" 2>&1 >/dev/full)"
    rc=$?
    if [[ $rc -eq 2 ]] && grep -qF "cannot write" <<<"$err"; then
      echo "ok   $name to a full device: exit 2"
    else
      echo "FAIL $name to a full device: exit $rc"; echo "$err" | head -5; failures=$((failures + 1))
    fi
  }
  full_case "validate" validate -f "$scenario"
  full_case "check" check -f "$scenario" --from y/a --to x/a --port 80
  full_case "check (denied)" check -f "$scenario" --from y/b --to x/a --port 80
  full_case "explain" explain -f "$scenario" --from y/b --to x/a --port 80
  full_case "matrix" matrix -f "$scenario"
  full_case "matrix -o json" matrix -f "$scenario" -o json
  full_case "compile" compile -f "$scenario" --node node-1 --backend nft
  full_case "compile --ir" compile -f "$scenario" --node node-1 --ir
  full_case "compile --explain" compile -f "$scenario" --node node-1 --explain --from y/a --to x/a --port 80
  full_case "help" help
  full_case "compile -o /dev/full" compile -f "$scenario" --node node-1 -o /dev/full
else
  echo "skip /dev/full cases: /dev/full is not writable here"
fi

# --engine: the help's name for the indexed engine is the flag's.
run "--engine=indexed" 1 "DENIED: y/b -> x/a" -- check -f "$scenario" --from y/b --to x/a --engine=indexed
run "--engine=engine (older name)" 1 "DENIED: y/b -> x/a" -- check -f "$scenario" --from y/b --to x/a --engine=engine
run "--engine=bogus" 2 "--engine must be 'indexed' or 'reference'" -- check -f "$scenario" --from y/b --to x/a --engine=bogus
# (Read whole first: grep -q may stop reading before netpol has written all of it.)
help_text="$("$netpol" help)"
if grep -qF -- "--engine NAME          indexed" <<<"$help_text"; then
  echo "ok   help names the engine 'indexed'"
else
  echo "FAIL help does not name the engine 'indexed'"; failures=$((failures + 1))
fi

# Bytes from the input never reach the output raw: a kind and a name with ESC, CR and LF
# cannot draw on the terminal or forge a "valid:" line.
printf 'apiVersion: v1\nkind: "Evil\\e[2J\\r\\nvalid: 9 NetworkPolicies"\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: "ns\\nvalid: 1 NetworkPolicies"}\n' >"$tmp/forge.yaml"
out="$("$netpol" validate -f "$tmp/forge.yaml" 2>&1)"
rc=$?
if [[ $rc -eq 2 ]] && ! grep -q $'\x1b\|\r' <<<"$out" && ! grep -q '^valid:' <<<"$out" &&
   grep -qF 'Namespace "ns\nvalid: 1 NetworkPolicies": metadata.name' <<<"$out"; then
  echo "ok   names and kinds are escaped"
else
  echo "FAIL names and kinds are escaped (exit $rc)"; cat -A <<<"$out" | head -10; failures=$((failures + 1))
fi
printf 'apiVersion: v1\nkind: "Evil\\e[2J\\r\\nvalid: 9 NetworkPolicies"\nmetadata: {name: x}\n' >"$tmp/forge-kind.yaml"
out="$("$netpol" validate -f "$tmp/forge-kind.yaml" 2>&1)"
if grep -qxF 'valid: 0 NetworkPolicies, 0 Pods, 0 Namespaces; skipped 1 "Evil\x1b[2J\r\nvalid: 9 NetworkPolicies"' <<<"$out"; then
  echo "ok   a skipped kind is escaped"
else
  echo "FAIL a skipped kind is escaped"; cat -A <<<"$out" | head -5; failures=$((failures + 1))
fi

# -f DIR says what it skips; kubectl skips *.YAML too (case-sensitive extensions).
mkdir -p "$tmp/dir"
printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n' >"$tmp/dir/a.yaml"
printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n' >"$tmp/dir/B.YAML"
ln -sf nowhere.yaml "$tmp/dir/dangling.yaml"
run "-f DIR reports skipped entries" 2 "B.YAML: warning: skipped: kubectl reads only the lowercase extensions" \
  "dangling.yaml: skipped: a dangling symbolic link" -- validate -f "$tmp/dir"

# The same input compiles to the same IR in every process (hash iteration order is salted
# per process: class numbering must not depend on it).
first=""
same=1
for i in 1 2 3 4 5 6 7 8; do
  sum="$("$netpol" compile -f "$testdata/upstream/egress-cidr-except.yaml" --node node-1 --ir 2>&1 | cksum)"
  [[ -z "$first" ]] && first="$sum"
  [[ "$sum" != "$first" ]] && same=0
done
if [[ $same -eq 1 && -n "$first" ]]; then
  echo "ok   compile --ir is deterministic"
else
  echo "FAIL compile --ir differs between runs"; failures=$((failures + 1))
fi

# matrix -o json: exact shape, and the truth table equals upstream's expectation (transcribed
# in the scenario file; "?" cells unchecked).
"$netpol" matrix -f "$scenario" -o json --port 80,81 --protocol TCP,UDP >"$tmp/matrix.json"
rc=$?
if [[ $rc -ne 0 ]]; then
  echo "FAIL matrix -o json: exit $rc"; failures=$((failures + 1))
elif /usr/bin/python3 - "$tmp/matrix.json" "$scenario" <<'PY'
import json, sys, yaml
m = json.load(open(sys.argv[1]))
assert list(m.keys()) == ["pods", "matrices"], m.keys()
pods = m["pods"]
assert pods == sorted(pods, key=lambda p: tuple(p.split("/"))), pods
assert [(x["protocol"], x["port"]) for x in m["matrices"]] == [
    ("TCP", 80), ("TCP", 81), ("UDP", 80), ("UDP", 81)], m["matrices"]
for x in m["matrices"]:
    assert list(x.keys()) == ["protocol", "port", "allowed"], x.keys()
    assert len(x["allowed"]) == len(pods) and all(len(r) == len(pods) for r in x["allowed"])
    assert all(isinstance(v, bool) for r in x["allowed"] for v in r)
checked = 0
for doc in yaml.safe_load_all(open(sys.argv[2])):
    if not doc or doc.get("kind") != "ReachabilityExpectation":
        continue
    for case in doc["cases"]:
        lines = [l.split() for l in case["table"].strip("\n").splitlines()]
        header = [c for c in lines[0] if c != "-"]
        got = next(x for x in m["matrices"]
                   if x["protocol"] == case["protocol"] and x["port"] == case["port"])
        for row in lines[1:]:
            src, cells = row[0], row[1:]
            for dst, cell in zip(header, cells):
                if cell == "?":
                    continue
                want = cell == "."
                have = got["allowed"][pods.index(src)][pods.index(dst)]
                assert have == want, (case["protocol"], case["port"], src, dst, want, have)
                checked += 1
assert checked > 50, checked
PY
then
  echo "ok   matrix -o json shape and upstream truth table"
else
  echo "FAIL matrix -o json"; failures=$((failures + 1))
fi

if [[ $failures -gt 0 ]]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all CLI tests passed"

#!/usr/bin/env bash
# `netpol lint` end to end on manifests as kept in git: the shop app (testdata/workloads/shop)
# alone, and with the policies of testdata/lint/shop-typos, whose planted mistakes and the
# findings they must give are listed, read from the manifests, in testdata/lint/README.md.
# Also: exit codes for --fail-on, the text line shape, bad flags, and the note check/explain
# print when a verdict depends on an address np invented. Needs /usr/bin/python3.
set -uo pipefail
netpol="$1"
shop="$2/workloads/shop"
typos="$2/lint/shop-typos"
half="$2/lint/report-from-half.yaml"
python=/usr/bin/python3
failures=0
tmp="${TEST_TMPDIR:-$(mktemp -d)}"

fail() { echo "FAIL $1"; failures=$((failures + 1)); }
ok() { echo "ok   $1"; }

# findings NAME WANT_EXIT EXPECTED -- ARGS: `netpol lint ARGS -o json` exits WANT_EXIT and
# its findings, as "CODE SEVERITY KIND OBJECT FIELD" lines, are exactly EXPECTED.
findings() {
  local name="$1" want="$2" expected="$3"
  shift 4
  local out rc
  out="$("$netpol" lint "$@" -o json 2>"$tmp/stderr")"
  rc=$?
  local got
  got="$("$python" -c '
import json, sys
doc = json.loads(sys.stdin.read())
rows = sorted(" ".join([f["code"], f["severity"], f["kind"], f["object"], f["field"] or "-"])
              for f in doc["findings"])
counts = {"error": 0, "warning": 0, "info": 0}
for f in doc["findings"]:
    counts[f["severity"]] += 1
    assert f["file"] and f["line"] > 0 and f["message"], f
assert doc["counts"] == counts, (doc["counts"], counts)
print("\n".join(rows))' <<<"$out" 2>&1)"
  local want_rows
  want_rows="$(sort <<<"$expected")"
  if [[ $rc -ne $want ]]; then
    fail "$name: exit $rc, want $want"; cat "$tmp/stderr"
  elif [[ "$got" != "$want_rows" ]]; then
    fail "$name: findings differ"; diff <(echo "$want_rows") <(echo "$got")
  else
    ok "$name"
  fi
}

# The shop app alone: default-deny-ingress isolates the five shop pods for ingress and no
# policy isolates egress (NP107); frontend-from-cluster's ipBlock 10.244.0.0/16 is the whole
# IPv4 pod CIDR, so it holds every pod's address (NP108) but does not split it (no NP109).
findings "the shop app gives only two infos" 0 \
"NP107 info Namespace shop -
NP108 info NetworkPolicy shop/frontend-from-cluster spec.ingress[0].from[0].ipBlock" \
  -- -f "$shop"

findings "each planted mistake is found" 1 \
"NP101 warning NetworkPolicy shop/frontend-to-api spec.podSelector
NP102 warning NetworkPolicy shop/api-egress spec.egress[0].to[0].podSelector
NP103 warning NetworkPolicy shop/api-egress spec.egress[1].to[0].namespaceSelector.matchLabels[kubernetes.io/metadata.name]
NP104 warning NetworkPolicy shop/api-metrics spec.ingress[0].ports[0].port
NP105 warning NetworkPolicy shop/api-metrics -
NP107 info Namespace shop -
NP108 info NetworkPolicy shop/frontend-from-cluster spec.ingress[0].from[0].ipBlock" \
  -- -f "$shop" -f "$typos"

# With ipBlocks for outside addresses only, the ipBlock no longer decides on pods.
findings "--ipblock-scope=external drops NP108" 0 "NP107 info Namespace shop -" \
  -- -f "$shop" --ipblock-scope=external

# exit NAME WANT ARGS: `netpol ARGS` exits WANT.
exit_is() {
  local name="$1" want="$2"
  shift 2
  "$netpol" "$@" >"$tmp/out" 2>&1
  local rc=$?
  if [[ $rc -eq $want ]]; then ok "$name"; else fail "$name: exit $rc, want $want"; cat "$tmp/out"; fi
}
exit_is "--fail-on info fails on the shop app's infos" 1 lint -f "$shop" --fail-on info
exit_is "--fail-on error passes warnings" 0 lint -f "$shop" -f "$typos" --fail-on error
exit_is "--fail-on none passes warnings" 0 lint -f "$shop" -f "$typos" --fail-on=none
exit_is "a bad --fail-on is a usage error" 2 lint -f "$shop" --fail-on fatal
exit_is "a bad -o is a usage error" 2 lint -f "$shop" -o yaml
exit_is "no input is an error" 2 lint
exit_is "a flag lint does not read is an error" 2 lint -f "$shop" --port 80
exit_is "lint --help" 0 lint --help

# The text line: file:line: CODE severity Kind ns/name: field: message. The podSelector with
# the typo "frontned" is on line 12 of the typos file.
out="$("$netpol" lint -f "$shop" -f "$typos" 2>/dev/null)"
line="$typos/policies.yaml:12: NP101 warning NetworkPolicy shop/frontend-to-api: spec.podSelector: "
if grep -qF -- "$line" <<<"$out" && grep -qF "0 errors, 5 warnings, 2 info" <<<"$out"; then
  ok "text lines and summary"
else
  fail "text lines and summary"; echo "$out"
fi

# explain on a pod made from a workload, where an ipBlock covering half of the pod CIDR
# (10.244.0.0/17 of 10.244.0.0/16; testdata/lint/report-from-half.yaml) decides: the note
# names the address np assigned.
out="$("$netpol" explain -f "$shop" -f "$half" --from shop/api --to shop/report --port 80 2>&1)"
if grep -qF "note: the verdict depends on the address np assigned to shop/api-0 (10.244." <<<"$out" &&
   grep -qF "shop/report-from-half spec.ingress[0].from[0].ipBlock" <<<"$out"; then
  ok "explain notes the invented address that decides"
else
  fail "explain notes the invented address that decides"; echo "$out"
fi
out="$("$netpol" explain -f "$shop" --from shop/frontend --to shop/api --port 9000 2>&1)"
if grep -qF "note: the verdict" <<<"$out"; then
  fail "explain adds no note when no ipBlock splits the pod CIDR"; echo "$out"
else
  ok "explain adds no note when no ipBlock splits the pod CIDR"
fi
findings "lint reports the split pod CIDR" 1 \
"NP107 info Namespace shop -
NP108 info NetworkPolicy shop/frontend-from-cluster spec.ingress[0].from[0].ipBlock
NP109 warning NetworkPolicy shop/report-from-half spec.ingress[0].from[0].ipBlock" \
  -- -f "$shop" -f "$half"
# With the pod CIDR 10.244.0.0/17 the block holds all of it: an info that it holds pods.
findings "no split when the block holds the whole pod CIDR" 0 \
"NP107 info Namespace shop -
NP108 info NetworkPolicy shop/frontend-from-cluster spec.ingress[0].from[0].ipBlock
NP108 info NetworkPolicy shop/report-from-half spec.ingress[0].from[0].ipBlock" \
  -- -f "$shop" -f "$half" --pod-cidr 10.244.0.0/17

if ((failures > 0)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "all passed"

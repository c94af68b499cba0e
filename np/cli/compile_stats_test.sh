#!/usr/bin/env bash
# `netpol compile --stats` and `--budget` end to end (issue 8 item 6): the capacity report in
# text and JSON (its IR sizes agree with `compile --ir`), exit 1 when a program does not fit,
# and `compile` refusing with exit 2 and the numbers — never printing a program past a
# limit or budget.
set -uo pipefail
netpol="$1"
testdata="$2"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
failures=0
scenario="$testdata/upstream/egress-cidr-except.yaml"

# expect NAME EXPECTED_EXIT [grep patterns...] -- ARGS: runs netpol, checks exit and output.
expect() {
  local name="$1" want="$2"
  shift 2
  local patterns=()
  while [[ "$1" != "--" ]]; do patterns+=("$1"); shift; done
  shift
  "$netpol" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [[ $rc -ne $want ]]; then
    echo "FAIL $name: exit $rc, want $want"; head -20 "$tmp/out" "$tmp/err"; failures=$((failures + 1)); return
  fi
  for p in "${patterns[@]}"; do
    if ! grep -qF -- "$p" "$tmp/out" "$tmp/err"; then
      echo "FAIL $name: output lacks: $p"; head -20 "$tmp/out" "$tmp/err"; failures=$((failures + 1)); return
    fi
  done
  echo "ok   $name"
}

expect "stats, every backend" 0 "nft: fits" "iptables: fits" "ebpf: fits" "  identities" \
  "  ipsets" "limit 65,472" "  map_entries" "budget 2,000,000" -- \
  compile -f "$scenario" --stats --backend all
expect "stats, one backend" 0 "nft: fits" -- compile -f "$scenario" --stats --backend nft
if grep -q "iptables:" "$tmp/out"; then echo "FAIL stats, one backend: other backends shown"; failures=$((failures + 1)); fi

# JSON: the IR's sizes equal those of the IR itself; every backend fits; items carry numbers.
"$netpol" compile -f "$scenario" --stats --backend all -o json >"$tmp/stats.json" || {
  echo "FAIL stats -o json: exit $?"; failures=$((failures + 1)); }
"$netpol" compile -f "$scenario" --ir --ir-format json >"$tmp/ir.json" || {
  echo "FAIL compile --ir: exit $?"; failures=$((failures + 1)); }
if /usr/bin/python3 - "$tmp/stats.json" "$tmp/ir.json" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
ir = json.load(open(sys.argv[2]))
assert stats["identities"] == len(ir["identities"]), (stats["identities"], len(ir["identities"]))
assert stats["address_ranges"] == len(ir["ipv4"]) + len(ir["ipv6"])
assert stats["endpoints"] == len(ir["endpoints"])
rules = sum(len(t.get(d, {}).get("rules", [])) for t in ir.get("tables", []) for d in ("ingress", "egress"))
assert stats["rules"] == rules, (stats["rules"], rules)
assert [b["backend"] for b in stats["backends"]] == ["nft", "iptables", "ebpf"]
for b in stats["backends"]:
    assert b["fits"] is True, b
    for item in b["items"]:
        assert isinstance(item["used"], int) and isinstance(item["limit"], int), item
        assert item["limit"] == 0 or item["used"] <= item["limit"], item
nft = {i["name"]: i for i in stats["backends"][0]["items"]}
assert nft["identities"]["used"] == len(ir["identities"]) and nft["identities"]["limit"] == 65534
PY
then echo "ok   stats -o json agrees with the IR"; else echo "FAIL stats -o json"; failures=$((failures + 1)); fi

# Past a budget (lowered here): --stats says so with exit 1; compile refuses with exit 2,
# naming the item and its numbers, and prints nothing.
expect "stats over a budget" 1 "iptables: DOES NOT FIT" "OVER budget 1 " -- \
  compile -f "$scenario" --stats --backend all --budget iptables.ipv4_rules=1
# The refusal names the count the capacity report gives (how many rules the iptables program
# has is the backend's business; that the two agree, and exceed the budget, is this test's).
ipv4_rules="$(/usr/bin/python3 -c '
import json, sys
ipt = [b for b in json.load(open(sys.argv[1]))["backends"] if b["backend"] == "iptables"][0]
print([i["used"] for i in ipt["items"] if i["name"] == "ipv4_rules"][0])' "$tmp/stats.json")"
if ! [[ "$ipv4_rules" =~ ^[0-9]+$ ]] || ((ipv4_rules < 2)); then
  echo "FAIL iptables ipv4_rules from --stats: '$ipv4_rules'"; failures=$((failures + 1))
fi
expect "compile refuses past a budget" 2 "ipv4_rules $ipv4_rules > budget 1" "--budget ipv4_rules=N" -- \
  compile -f "$scenario" --backend iptables --budget ipv4_rules=1
if [[ -s "$tmp/out" ]]; then echo "FAIL compile refuses past a budget: printed a program"; failures=$((failures + 1)); fi
expect "a raised budget lets it through" 0 "table inet np" -- \
  compile -f "$scenario" --backend nft --budget rules=1000000
expect "a hard limit is no budget" 2 "a hard limit cannot be raised" -- \
  compile -f "$scenario" --backend nft --budget identities=5
expect "an unknown budget" 2 "no budget \"tables\"" -- compile -f "$scenario" --backend ebpf --budget tables=5
expect "a malformed budget" 2 "is not NAME=N" -- compile -f "$scenario" --backend nft --budget rules
expect "an unknown backend" 2 "no backend \"pf\"" -- compile -f "$scenario" --stats --backend nft,pf

# Policy tiers: the IR holds them as ordered tier rules (each named by kind, policy, priority,
# direction[index] and rule name, as upstream's manifest writes them), and --stats counts them;
# --flatten-tiers folds them into the port rules instead.
tiered="$testdata/tiers/v1alpha2/admin-egress-node-peers.yaml"
for form in ordered flattened; do
  flags=(-f "$tiered" --node node-1)
  [[ $form == flattened ]] && flags+=(--flatten-tiers)
  "$netpol" compile "${flags[@]}" --stats --backend nft -o json >"$tmp/stats.json" &&
    "$netpol" compile "${flags[@]}" --ir --ir-format json >"$tmp/ir.json" || {
      echo "FAIL tiers $form: exit $?"; failures=$((failures + 1)); continue; }
  if /usr/bin/python3 - "$tmp/stats.json" "$tmp/ir.json" "$form" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
ir = json.load(open(sys.argv[2]))
directions = [t.get(d, {}) for t in ir["tables"] for d in ("ingress", "egress")]
tier_rules = [r for d in directions for r in d.get("admin", []) + d.get("baseline", [])]
assert stats["tier_rules"] == len(tier_rules), (stats["tier_rules"], len(tier_rules))
assert stats["rules"] == sum(len(d.get("rules", [])) for d in directions)
if sys.argv[3] == "flattened":
    assert not tier_rules
else:
    origins = [r["origin"] for r in tier_rules]
    want = ('ClusterNetworkPolicy node-and-cidr-as-peers-example priority 75 egress[0] '
            '"allow-egress-to-36363-on-nodes"')
    assert want in origins, origins
    first = next(r for r in tier_rules if r["origin"] == want)
    assert first["action"] == "TIER_ALLOW" and first["protocol"] == "TCP", first
    assert first["first_port"] == 36363 and first["last_port"] == 36363, first
PY
  then echo "ok   tiers $form: --stats counts the IR's tier rules"; else echo "FAIL tiers $form"; failures=$((failures + 1)); fi
done
expect "stats text counts tier rules" 0 " tier rules" -- compile -f "$tiered" --node node-1 --stats --backend nft

if [[ $failures -gt 0 ]]; then echo "$failures failure(s)"; exit 1; fi
echo "all passed"

#!/usr/bin/env bash
# netpol on inputs with policy tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
# ClusterNetworkPolicy): validate counts them; check, explain and matrix evaluate them with the
# indexed engine (no fallback note); connections and diff read the engine's tier tables;
# compile lowers them for every backend (probe, which needs root, runs in
# np/probe/ci_probe.sh) but refuses a domainNames peer in a Deny rule, which no datapath can
# enforce offline.
# Expected verdicts are upstream's (testdata/tiers, network-policy-api's conformance suite).
set -uo pipefail
netpol="$1"
testdata="$2"
source "$(dirname "${BASH_SOURCE[0]}")/test_lib.sh"

nodes="$testdata/tiers/v1alpha2/admin-egress-node-peers.yaml"
harry=network-policy-conformance-gryffindor/harry-potter-1
old_note="does not evaluate the policy tiers yet"
named="ClusterNetworkPolicy node-and-cidr-as-peers-example"

run "validate counts the tier kinds and nodes" 0 "1 ClusterNetworkPolicy, 2 Node" -- validate -f "$nodes"
run "validate -o json counts them" 0 '"ClusterNetworkPolicy": 1, "Node": 2' -- validate -f "$nodes" -o json
# Upstream: CNPAdminTierEgressNodePeers step 3 expects TCP 36364 to node-2 denied, step 1
# TCP 36363 allowed.
run "check a denied node flow" 1 \
  "DENIED by Admin tier, $named (priority 75) spec.egress[2]" -- \
  check -f "$nodes" --from "$harry" --to 172.18.0.3 --port 36364
run "check an allowed node flow" 0 "ALLOWED" -- \
  check -f "$nodes" --from "$harry" --to 172.18.0.3 --port 36363
run "check with --engine=reference" 1 "DENIED by Admin tier, $named" -- \
  check -f "$nodes" --from "$harry" --to 172.18.0.3 --port 36364 --engine=reference
run "matrix" 0 "" -- matrix -f "$nodes" --port 80
for backend in nft iptables ebpf; do
  run "compile --backend $backend enforces the tiers" 0 "$named" -- \
    compile -f "$nodes" --node node-1 --backend "$backend"
  run "compile --flatten-tiers --backend $backend enforces the folded tiers" 0 "$named" -- \
    compile -f "$nodes" --node node-1 --flatten-tiers --backend "$backend"
done
# Upstream supports domainNames in Allow/Accept rules only; in a Deny rule np cannot know the
# addresses to deny, and matching none would let the traffic through.
fqdn="${TEST_TMPDIR:-/tmp}/fqdn-deny.yaml"
cat >"$fqdn" <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: a}
status: {podIP: 10.0.0.1}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-example}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  egress:
  - {action: Deny, to: [{domainNames: [example.com]}]}
YAML
run "compile refuses a domainNames peer in a Deny rule" 2 \
  "ClusterNetworkPolicy no-example: spec.egress[0].to[0].domainNames (action Deny)" -- \
  compile -f "$fqdn" --backend nft
run "check still evaluates it (not evaluable offline)" 0 "not evaluable offline" -- \
  check -f "$fqdn" --from a/p --to 93.184.216.34 --port 443
# connections and diff read the tier tables. Upstream (same test): from harry-potter-1 to
# node-2, TCP 36363 is allowed (rule 0 accepts it), UDP 34345 passes on to NetworkPolicy,
# which isolates nothing here, so it is allowed; everything else is denied by rule 2.
# Both nodes run linux: their addresses, neighbours, form one range.
node_range="172.18.0.2-172.18.0.3"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
run "connections to a node address" 0 "$harry => $node_range : TCP 36363; UDP 34345" -- \
  connections -f "$nodes" --from "$harry" --to 172.18.0.3
run "connections --explain names the tier rule and the default" 0 \
  "egress at $harry: Admin tier, $named (priority 75) spec.egress[0] \"allow-egress-to-36363-on-nodes\": " \
  " | not isolated" -- connections -f "$nodes" --from "$harry" --to 172.18.0.3 --explain
# A tier rule's text holds commas and quotes: CSV quotes the field (RFC 4180).
"$netpol" connections -f "$nodes" --from "$harry" --to 172.18.0.3 --explain -o csv 2>/dev/null >"$tmp/why.csv"
/usr/bin/python3 - "$tmp/why.csv" "$named" <<'PY' || { echo "FAIL connections --explain -o csv quoting"; failures=$((failures + 1)); }
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
tcp = [r for r in rows if r["protocol"] == "TCP"][0]
assert tcp["egress_why"] == (f'Admin tier, {sys.argv[2]} (priority 75) spec.egress[0] '
                             '"allow-egress-to-36363-on-nodes": Allow | not isolated'), tcp
assert tcp["ingress_why"] == "", tcp
PY
# The same policy with rule 0 moved to TCP 36365: a tier policy edit (diffed incrementally,
# the after state as changes to the before engine). 36363 now falls to rule 2's Deny.
sed 's/number: 36363/number: 36365/' "$nodes" >"$tmp/moved.yaml"
run "diff of a tier policy edit" 1 "+ $harry => $node_range : TCP 36365" "- $harry => $node_range : TCP 36363" -- \
  diff --before "$nodes" --after "$tmp/moved.yaml" --from "$harry" --to 172.18.0.3
run "diff --explain names tier, policy, priority and rule on each side" 1 \
  "before: egress at $harry: Admin tier, $named (priority 75) spec.egress[0]" \
  "after: egress at $harry: Admin tier, $named (priority 75) spec.egress[2] \"deny-egress-to-slytherin-and-nodes-and-internet\": Deny" -- \
  diff --before "$nodes" --after "$tmp/moved.yaml" --from "$harry" --to 172.18.0.3 --explain
# The same through the AdminNetworkPolicy (v1alpha1) of upstream's
# AdminNetworkPolicyEgressNodePeers, and a Node edit. The whole output must match: a pair the
# incremental diff visited wrongly shows up as an extra or missing line.
anp_nodes="$testdata/tiers/v1alpha1/anp-egress-node-peers.yaml"
exact() {  # NAME EXPECTED_EXIT EXPECTED_STDOUT -- ARGS
  local name="$1" want="$2" expected="$3" out rc
  shift 4
  out="$("$netpol" "$@" 2>/dev/null)"
  rc=$?
  if [[ $rc -ne $want || "$out" != "$expected" ]]; then
    echo "FAIL $name: exit $rc (want $want), output:"; echo "$out" | head -20
    echo "want:"; echo "$expected"; failures=$((failures + 1)); return
  fi
  echo "ok   $name"
}
sed "/^kind: AdminNetworkPolicy/,\$ s/port: 36363/port: 36365/" "$anp_nodes" >"$tmp/anp-moved.yaml"
exact "diff of an AdminNetworkPolicy edit" 1 \
  "+ $harry => $node_range : TCP 36365
- $harry => $node_range : TCP 36363" -- \
  diff --before "$anp_nodes" --after "$tmp/anp-moved.yaml" --from "$harry" --to 172.18.0.0/16
# node-2 relabeled off kubernetes.io/os=linux: rules 0 (Allow TCP 36363) and 1 (Pass UDP
# 5353) no longer select it, rule 2's 0.0.0.0/0 still does, so both ports are denied to it
# and nothing changes toward node-1.
sed '/^  name: node-2$/,/^---/ s|kubernetes.io/os: linux|kubernetes.io/os: windows|' "$anp_nodes" >"$tmp/node-relabeled.yaml"
exact "diff of a Node relabel" 1 "- $harry => 172.18.0.3-172.18.0.3 : TCP 36363; UDP 5353" -- \
  diff --before "$anp_nodes" --after "$tmp/node-relabeled.yaml" --from "$harry" --to 172.18.0.0/16
for command in "check -f $nodes --from $harry --to 172.18.0.3 --port 36364" "matrix -f $nodes --port 80"; do
  # shellcheck disable=SC2086
  if [[ "$("$netpol" $command 2>&1)" == *"$old_note"* || "$("$netpol" $command 2>&1)" == *"note:"*"tiers"* ]]; then
    echo "FAIL $command still falls back to the reference"; failures=$((failures + 1))
  fi
done

if [[ $failures -gt 0 ]]; then echo "$failures failure(s)"; exit 1; fi
echo "all passed"

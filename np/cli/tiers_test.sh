#!/usr/bin/env bash
# netpol on inputs with policy tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
# ClusterNetworkPolicy): validate counts them; check, explain and matrix evaluate them with the
# indexed engine (no fallback note); compile lowers them for every backend (probe, which needs
# root, runs in np/probe/ci_probe.sh) but refuses a domainNames peer in a Deny rule, which no
# datapath can enforce offline; connections, which reads the engine's tables directly and does
# not handle tiers yet, refuses with exit 2 and the policies' names.
# Expected verdicts are upstream's (testdata/tiers, network-policy-api's conformance suite).
set -uo pipefail
netpol="$1"
testdata="$2"
source "$(dirname "${BASH_SOURCE[0]}")/test_lib.sh"

nodes="$testdata/tiers/v1alpha2/admin-egress-node-peers.yaml"
harry=network-policy-conformance-gryffindor/harry-potter-1
unhandled="does not handle the policy tiers yet"
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
done
run "connections refuses" 2 "listing connections $unhandled" -- connections -f "$nodes"
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
for command in "check -f $nodes --from $harry --to 172.18.0.3 --port 36364" "matrix -f $nodes --port 80"; do
  # shellcheck disable=SC2086
  if [[ "$("$netpol" $command 2>&1)" == *"$old_note"* || "$("$netpol" $command 2>&1)" == *"note:"*"tiers"* ]]; then
    echo "FAIL $command still falls back to the reference"; failures=$((failures + 1))
  fi
done

if [[ $failures -gt 0 ]]; then echo "$failures failure(s)"; exit 1; fi
echo "all passed"

#!/usr/bin/env bash
# netpol on inputs with policy tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
# ClusterNetworkPolicy): validate counts them; check, explain and matrix evaluate them with the
# reference evaluator and say so; compile, connections and probe — which need the indexed
# engine, which does not evaluate tiers yet — refuse with exit 2 and the policies' names.
# Expected verdicts are upstream's (testdata/tiers, network-policy-api's conformance suite).
set -uo pipefail
netpol="$1"
testdata="$2"
source "$(dirname "${BASH_SOURCE[0]}")/test_lib.sh"

nodes="$testdata/tiers/v1alpha2/admin-egress-node-peers.yaml"
harry=network-policy-conformance-gryffindor/harry-potter-1
refused="the indexed engine does not evaluate the policy tiers yet"
named="ClusterNetworkPolicy node-and-cidr-as-peers-example"

run "validate counts the tier kinds and nodes" 0 "1 ClusterNetworkPolicy, 2 Node" -- validate -f "$nodes"
run "validate -o json counts them" 0 '"ClusterNetworkPolicy": 1, "Node": 2' -- validate -f "$nodes" -o json
# Upstream: CNPAdminTierEgressNodePeers step 3 expects TCP 36364 to node-2 denied, step 1
# TCP 36363 allowed.
run "check a denied node flow" 1 "note: $refused" \
  "DENIED by Admin tier, $named (priority 75) spec.egress[2]" -- \
  check -f "$nodes" --from "$harry" --to 172.18.0.3 --port 36364
run "check an allowed node flow" 0 "ALLOWED" -- \
  check -f "$nodes" --from "$harry" --to 172.18.0.3 --port 36363
run "check with --engine=reference needs no note" 1 "DENIED" -- \
  check -f "$nodes" --from "$harry" --to 172.18.0.3 --port 36364 --engine=reference
run "matrix uses the reference" 0 "note: $refused" -- matrix -f "$nodes" --port 80
run "compile refuses" 2 "netpol compile: $refused" "$named" -- \
  compile -f "$nodes" --node node-1 --backend nft
run "connections refuses" 2 "$refused" -- connections -f "$nodes"
run "probe refuses before building a network" 2 "$refused" -- probe -f "$nodes" --backend nft
if [[ "$("$netpol" check -f "$nodes" --from "$harry" --to 172.18.0.3 --port 36364 --engine=reference 2>&1)" == *"note: $refused"* ]]; then
  echo "FAIL --engine=reference printed the note"; failures=$((failures + 1))
fi

if [[ $failures -gt 0 ]]; then echo "$failures failure(s)"; exit 1; fi
echo "all passed"

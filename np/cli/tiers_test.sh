#!/usr/bin/env bash
# netpol on inputs with policy tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
# ClusterNetworkPolicy): validate counts them; check, explain and matrix evaluate them with the
# indexed engine (no fallback note); compile, connections and probe — which need the IR or
# read the engine's tables directly, neither of which handles tiers yet — refuse with exit 2
# and the policies' names.
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
run "compile refuses" 2 "the IR lowering $unhandled" "$named" -- \
  compile -f "$nodes" --node node-1 --backend nft
run "connections refuses" 2 "listing connections $unhandled" -- connections -f "$nodes"
run "probe refuses before building a network" 2 "probing the datapaths $unhandled" -- \
  probe -f "$nodes" --backend nft
for command in "check -f $nodes --from $harry --to 172.18.0.3 --port 36364" "matrix -f $nodes --port 80"; do
  # shellcheck disable=SC2086
  if [[ "$("$netpol" $command 2>&1)" == *"$old_note"* || "$("$netpol" $command 2>&1)" == *"note:"*"tiers"* ]]; then
    echo "FAIL $command still falls back to the reference"; failures=$((failures + 1))
  fi
done

if [[ $failures -gt 0 ]]; then echo "$failures failure(s)"; exit 1; fi
echo "all passed"

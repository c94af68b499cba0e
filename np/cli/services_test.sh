#!/usr/bin/env bash
# End-to-end tests of Services as check/explain destinations (np/services.h), of ports given
# by name, and of check/explain -o json, on testdata/services (see its README for the scenario)
# and testdata/workloads/shop. Every expected verdict was worked out by hand from the
# NetworkPolicy API on the resolved target port; the comment on each says which rule decides.
set -uo pipefail
netpol="$1"
data="$2/services"
shop="$2/workloads/shop"
failures=0
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
in=(-f "$data/pods.yaml" -f "$data/services.yaml")

# Bazel runs tests from the runfiles root; by hand, run from the repository root.
source np/cli/expect.sh

expect "validate reads Services" 0 "valid: 1 NetworkPolicies, 5 Pods, 0 Namespaces, 3 Services" \
  -n "skipped" -- validate "${in[@]}"

# Named targetPort: web-a serves http on 8080 (admitted by web-8080), web-b on 8081 (isolated,
# no rule admits 8081); web-c has no port "http", so it is no endpoint (not a denial).
expect "service, named targetPort per pod" 1 \
  "Service ns/web port http (TCP/80 -> targetPort http): 1 of 2 backing pods ALLOWED, 1 DENIED" \
  "Services are not a policy input" \
  "ALLOWED: ns/client -> ns/web-a TCP/8080" "DENIED: ns/client -> ns/web-b TCP/8081" \
  'not an endpoint: ns/web-c (no container port named "http" for TCP)' \
  -n "web-z" -- check "${in[@]}" --from ns/client --to svc/ns/web --port http
expect "service port by number" 1 "1 of 2 backing pods ALLOWED" -- \
  check "${in[@]}" --from ns/client --to svc/ns/web --port 80
# Numeric targetPort 9000: every web pod is an endpoint, none admits 9000.
expect "service, numeric targetPort" 1 \
  "Service ns/web port raw (TCP/81 -> targetPort 9000): 0 of 3 backing pods ALLOWED, 3 DENIED" \
  "DENIED: ns/client -> ns/web-c TCP/9000" -- check "${in[@]}" --from ns/client --to svc/ns/web --port raw
# The Service port's protocol is used: the policy's rule is TCP 8080 only, so UDP 53 is denied.
expect "service port protocol" 1 "DENIED: ns/client -> ns/web-a UDP/53" -- \
  check "${in[@]}" --from ns/client --to svc/ns/web --port dns
expect "a contradicting --protocol" 2 "port http is TCP, not UDP" -- \
  check "${in[@]}" --from ns/client --to svc/ns/web --port http --protocol UDP
expect "several ports need --port" 2 "has 3 ports" -- check "${in[@]}" --from ns/client --to svc/ns/web
expect "an unknown Service port" 2 "has no port https" "http TCP/80 -> targetPort http" -- \
  check "${in[@]}" --from ns/client --to svc/ns/web --port https
expect "a Service without selector" 2 "Service ns/manual has no selector" -- \
  check "${in[@]}" --from ns/client --to svc/ns/manual
expect "a Service selecting no pod" 2 "no endpoint pod" -n "ALLOWED" -- \
  check "${in[@]}" --from ns/client --to svc/ns/nobody
expect "explain a Service selecting no pod" 2 "no endpoint pod" -- \
  explain "${in[@]}" --from ns/client --to svc/ns/nobody
expect "no such Service" 2 'no Service "ns/absent"' -- check "${in[@]}" --from ns/client --to svc/ns/absent
expect "a Service is not a source" 2 "a Service is not a packet source" -- \
  check "${in[@]}" --from svc/ns/web --to ns/client
# explain: per pod explanation, exit 0 though one pod is denied.
expect "explain a Service" 0 "1 of 2 backing pods ALLOWED" "admitted by ns/web-8080 spec.ingress[0]" \
  "no rule of those policies admits this flow" -- \
  explain "${in[@]}" --from ns/client --to svc/ns/web --port http
# The shop manifests: frontend's only port 80 -> targetPort http, 8080 on the Deployment's pod;
# frontend-from-cluster admits the pod CIDR 10.244.0.0/16 on http, where api-0's address is.
expect "Service over synthesized pods" 0 \
  "Service shop/frontend port 80 (TCP/80 -> targetPort http): 1 of 1 backing pod ALLOWED" \
  "shop/frontend-0 is synthesized from Deployment shop/frontend" -- \
  explain -f "$shop" --from shop/api --to svc/shop/frontend

# "svc/NAME" is still pod NAME of a namespace called svc: only svc/NAMESPACE/NAME is a Service.
cat >"$tmp/svc-namespace.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: svc}
status: {podIP: 10.0.2.1}
YAML
expect "a namespace called svc" 0 "ALLOWED: ns/client -> svc/web TCP/80" -n "Service" -- \
  check "${in[@]}" -f "$tmp/svc-namespace.yaml" --from ns/client --to svc/web

# Ports by name on a pod destination.
expect "pod port by name" 1 "port http of ns/web-b is TCP/8081" "DENIED: ns/client -> ns/web-b TCP/8081" -- \
  check "${in[@]}" --from ns/client --to ns/web-b --port http
expect "pod port by name, allowed" 0 "ALLOWED: ns/client -> ns/web-a TCP/8080" -- \
  check "${in[@]}" --from ns/client --to ns/web-a --port http
expect "pod without the port name" 2 \
  'pod ns/web-c has no container port named "http" for TCP (its named ports: metrics TCP/9090)' -- \
  check "${in[@]}" --from ns/client --to ns/web-c --port http

# Services change no verdict: the matrix is the same with and without them.
"$netpol" matrix -f "$data/pods.yaml" --port 80,8080,8081,9000 -o json >"$tmp/without.json" 2>/dev/null
"$netpol" matrix "${in[@]}" --port 80,8080,8081,9000 -o json >"$tmp/with.json" 2>/dev/null
if [[ -s "$tmp/with.json" ]] && cmp -s "$tmp/without.json" "$tmp/with.json"; then
  echo "ok   Services change no matrix cell"
else
  echo "FAIL Services change no matrix cell"; failures=$((failures + 1))
fi

# ...nor the IR, nor any backend's program.
same=1
for what in "--ir --ir-format json" "--backend nft" "--backend iptables" "--backend ebpf"; do
  # shellcheck disable=SC2086
  "$netpol" compile -f "$data/pods.yaml" $what >"$tmp/without.out" 2>/dev/null || same=0
  # shellcheck disable=SC2086
  "$netpol" compile "${in[@]}" $what >"$tmp/with.out" 2>/dev/null || same=0
  [[ -s "$tmp/with.out" ]] && cmp -s "$tmp/without.out" "$tmp/with.out" || { same=0; echo "differs: $what"; }
done
if ((same)); then echo "ok   Services change no IR or backend program"; else
  echo "FAIL Services change no IR or backend program"; failures=$((failures + 1)); fi

# -o json: check on a Service, on a pod, and explain; parsed by Python, fields checked.
"$netpol" check "${in[@]}" --from ns/client --to svc/ns/web --port http -o json >"$tmp/svc.json" 2>/dev/null
svc_rc=$?
"$netpol" check "${in[@]}" --from ns/client --to ns/web-b --port http -o json >"$tmp/pod.json" 2>/dev/null
pod_rc=$?
"$netpol" explain -f "$shop" --from shop/api --to shop/frontend --port 8080 -o json >"$tmp/explain.json" 2>/dev/null
explain_rc=$?
if [[ $svc_rc -eq 1 && $pod_rc -eq 1 && $explain_rc -eq 0 ]] &&
  /usr/bin/python3 - "$tmp/svc.json" "$tmp/pod.json" "$tmp/explain.json" <<'PY'
import json, sys
svc, pod, explain = (json.load(open(p)) for p in sys.argv[1:4])
assert svc["destination"] == {"kind": "service", "name": "ns/web"}, svc["destination"]
assert svc["allowed"] is False and svc["port"] == 80 and svc["protocol"] == "TCP", svc
s = svc["service"]
assert (s["port_name"], s["target_port"]) == ("http", "http"), s
assert "not a policy input" in s["note"]
assert [(e["destination"]["name"], e["port"], e["allowed"]) for e in s["endpoints"]] == \
    [("ns/web-a", 8080, True), ("ns/web-b", 8081, False)], s["endpoints"]
a = s["endpoints"][0]["ingress"]
assert a["isolated"] and a["isolating_policies"] == ["ns/web-8080"], a
assert a["admitting_rules"] == [{"policy": "ns/web-8080", "direction": "Ingress", "rule": 0}], a
assert s["endpoints"][1]["ingress"]["admitting_rules"] == []
assert s["not_endpoints"] == [{"pod": "ns/web-c",
                               "reason": 'no container port named "http" for TCP'}], s
assert pod["source"] == {"kind": "pod", "name": "ns/client", "ips": ["10.0.0.9"]}, pod["source"]
assert pod["destination"]["name"] == "ns/web-b" and pod["port"] == 8081, pod
assert pod["port_name"] == "http" and pod["allowed"] is False and pod["family"] == "IPv4", pod
assert pod["egress"] == {"applies": True, "allowed": True, "isolated": False,
                         "isolating_policies": [], "admitting_rules": [],
                         "shared_addresses": []}, pod["egress"]
# shop: api-from-frontend isolates shop/frontend? No: frontend-from-cluster and the default
# deny isolate it; the cluster CIDR rule admits api-0 on 8080 (= http).
assert explain["source"]["synthesized_from"] == "Deployment shop/api", explain["source"]
assert explain["destination"]["synthesized_from"] == "Deployment shop/frontend"
assert explain["allowed"] is True
assert {"policy": "shop/frontend-from-cluster", "direction": "Ingress", "rule": 0} in \
    explain["ingress"]["admitting_rules"], explain["ingress"]
PY
then echo "ok   check/explain -o json"; else echo "FAIL check/explain -o json (exits $svc_rc $pod_rc $explain_rc)"; failures=$((failures + 1)); fi
expect "-o must be text or json" 2 "-o must be text or json" -- \
  check "${in[@]}" --from ns/client --to ns/web-a -o yaml

if ((failures > 0)); then echo "$failures failed"; exit 1; fi
echo "all passed"

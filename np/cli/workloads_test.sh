#!/usr/bin/env bash
# End-to-end tests of workloads as pods (np/workloads.h) and of "nothing passes vacuously",
# on testdata/workloads: an application's manifests with no Pod objects. Every expected
# verdict was derived by hand from the NetworkPolicy API; the comment on each says which
# rule decides it.
set -uo pipefail
netpol="$1"
shop="$2/workloads/shop"
live="$2/workloads/live-api-pod.yaml"
failures=0
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
# What a repository without workloads holds: a Service, and a hostNetwork pod that
# NetworkPolicy does not apply to.
no_pods="$tmp/no-pods.yaml"
cat >"$no_pods" <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: shop}
spec:
  hostNetwork: true
  containers: [{name: agent, image: agent:1}]
status: {phase: Running, podIP: 192.168.1.10}
YAML

# expect NAME EXIT [-n] PATTERN... -- ARGS: netpol ARGS must exit EXIT and print every
# PATTERN (after -n: must not print the following patterns).
expect() {
  local name="$1" want="$2" negate=0
  shift 2
  local present=() absent=()
  while [[ "$1" != "--" ]]; do
    if [[ "$1" == "-n" ]]; then negate=1; elif ((negate)); then absent+=("$1"); else present+=("$1"); fi
    shift
  done
  shift
  local out rc
  out="$("$netpol" "$@" 2>&1)"
  rc=$?
  local problem=""
  [[ $rc -ne $want ]] && problem="exit $rc, want $want"
  for p in "${present[@]}"; do grep -qF -- "$p" <<<"$out" || problem="${problem:-output lacks: $p}"; done
  for p in "${absent[@]+"${absent[@]}"}"; do grep -qF -- "$p" <<<"$out" && problem="${problem:-output has: $p}"; done
  if [[ -n "$problem" ]]; then
    echo "FAIL $name: $problem"; echo "$out" | head -20; failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
}

expect "validate counts workloads and synthesized pods" 0 \
  "valid: 6 NetworkPolicies, 0 Pods, 2 Namespaces, 8 workloads (8 pods synthesized)" "skipped 1 Service" \
  -- validate -f "$shop"
expect "one pod per replica with --expand-replicas" 0 "8 workloads (12 pods synthesized)" \
  -- validate -f "$shop" --expand-replicas

# api-from-frontend admits app=frontend on "http", which is 9000 on the api pods.
expect "Deployment to Deployment, named port" 0 "ALLOWED: shop/frontend-0 -> shop/api-0 TCP/9000" \
  "shop/frontend-0 is synthesized from Deployment shop/frontend" \
  "shop/api-0 is synthesized from Deployment shop/api" -- \
  check -f "$shop" --from shop/frontend --to shop/api --port 9000
# 9001 is "admin": only api-metrics-from-monitoring admits it, from namespace monitoring.
expect "admin port closed to frontend" 1 "DENIED: shop/frontend-0 -> shop/api-0 TCP/9001" -- \
  check -f "$shop" --from shop/frontend --to shop/api --port 9001
expect "DaemonSet pod reaches admin port" 0 "ALLOWED: monitoring/node-exporter-0 -> shop/api-0 TCP/9001" -- \
  check -f "$shop" --from monitoring/node-exporter --to shop/api --port 9001
expect "ReplicationController pod reaches admin port" 0 "ALLOWED" -- \
  check -f "$shop" --from monitoring/legacy-scraper --to shop/api --port 9001
expect "ReplicaSet pod reaches admin port" 0 "ALLOWED" -- \
  check -f "$shop" --from monitoring/probe --to shop/api --port 9001
# postgres-from-api-and-report: app In (api, report) on TCP 5432.
expect "Deployment to StatefulSet" 0 "ALLOWED: shop/api-0 -> shop/postgres-0 TCP/5432" -- \
  check -f "$shop" --from shop/api --to shop/postgres --port 5432
expect "CronJob to StatefulSet" 0 "ALLOWED: shop/report-0 -> shop/postgres-0 TCP/5432" -- \
  check -f "$shop" --from shop/report --to shop/postgres --port 5432
expect "frontend to StatefulSet denied" 1 "DENIED" -- \
  check -f "$shop" --from shop/frontend --to shop/postgres --port 5432
# primary-from-migrate selects statefulset.kubernetes.io/pod-name=postgres-0 and admits
# batch.kubernetes.io/job-name=migrate: both labels only a controller adds.
expect "Job to StatefulSet pod 0 by controller labels" 0 \
  "admitted by shop/primary-from-migrate spec.ingress[0]" -- \
  check -f "$shop" --from shop/migrate --to shop/postgres-0 --port 5432
expect "Job to StatefulSet pod 1 denied" 1 "DENIED: shop/migrate-0 -> shop/postgres-1 TCP/5432" -- \
  check -f "$shop" --expand-replicas --from shop/migrate --to shop/postgres-1 --port 5432
# frontend-from-cluster admits ipBlock 10.244.0.0/16 on "http" (8080): synthesized pods are
# inside it with the default pod CIDR, outside it with another.
expect "synthesized address inside the ipBlock" 0 "ALLOWED: shop/api-0 -> shop/frontend-0 TCP/8080" \
  "address 10.244." -- check -f "$shop" --from shop/api --to shop/frontend --port 8080
expect "synthesized address outside the ipBlock" 1 "DENIED: shop/api-0 -> shop/frontend-0 TCP/8080" \
  "address 10.99." -- \
  check -f "$shop" --pod-cidr 10.99.0.0/16,fd00:99::/64 --from shop/api --to shop/frontend --port 8080
expect "bad --pod-cidr" 2 "--pod-cidr" -- check -f "$shop" --pod-cidr 10.0.0.0/33 --from shop/api --to shop/frontend
expect "two IPv4 pod CIDRs" 2 "more than one IPv4" -- validate -f "$shop" --pod-cidr 10.1.0.0/16,10.2.0.0/16

expect "matrix -o json names synthesized pods" 0 \
  '"synthesized": {"monitoring/legacy-scraper-0": "ReplicationController monitoring/legacy-scraper"' \
  '"shop/postgres-0": "StatefulSet shop/postgres"' -- matrix -f "$shop" -o json

# A live pod of Deployment api (owned by its ReplicaSet) replaces the synthesized one, and
# keeps 10.244.0.1: no synthesized pod may take it (a shared address would quarantine both).
expect "live pod not doubled" 0 "not synthesized: 1 live pod of the input belongs to it" \
  "1 Pods, 2 Namespaces, 8 workloads (7 pods synthesized)" -n "shared" "quarantine" -- \
  validate -f "$shop" -f "$live"
expect "synthesized pod of a live workload absent" 2 'no pod "shop/api-0"' -- \
  check -f "$shop" -f "$live" --from shop/api-0 --to shop/frontend --port 8080
expect "live pod evaluated" 0 "ALLOWED: shop/api-5d8f7c9b4-x2x9q -> shop/frontend-0 TCP/8080" \
  -n "10.244.0.1 assigned" -- \
  explain -f "$shop" -f "$live" --from shop/api-5d8f7c9b4-x2x9q --to shop/frontend --port 8080

# Nothing passes vacuously: policies without any pod.
expect "check refuses an input without pods" 2 "nothing to evaluate: 6 NetworkPolicies but no pod" \
  "skipped 1 Service" "left out 1 pod" -- check -f "$shop/policies.yaml" -f "$no_pods" \
  --from 10.0.0.1 --to 10.0.0.2 --port 80
expect "matrix refuses an input without pods" 2 "nothing to evaluate" -- matrix -f "$shop/policies.yaml"
expect "validate warns about an input without pods" 0 "warning: no pod takes part in pod networking" \
  -- validate -f "$shop/policies.yaml"

# A directory as a repository holds it: a stray JSON array of test output beside manifests is
# skipped with a warning; named explicitly, it is still an error.
mkdir -p "$tmp/repo"
cp -r "$shop" "$tmp/repo/"
echo '[{"test": "frontend-to-api", "passed": true}]' >"$tmp/repo/results.json"
expect "a non-Kubernetes file in a directory is skipped" 0 \
  "results.json:1: warning: skipped: not a Kubernetes object" "8 workloads" "1 (not Kubernetes)" -- \
  validate -f "$tmp/repo"
expect "a non-Kubernetes file named explicitly is an error" 2 "a document must be an object" -- \
  validate -f "$tmp/repo/results.json"

# CLI habits: COMMAND --help / -h print that command's usage (exit 0), not "unknown flag".
expect "check --help" 0 "usage: netpol check" "--from A --to B" "common flags:" -n "matrix    truth" -- check --help
expect "matrix -h" 0 "usage: netpol matrix" "truth table of every pod pair" -n "compile   --backend" -- matrix -h
# Flags a command does not read are errors, not silently ignored.
expect "matrix rejects --from" 2 "--from does not apply to matrix" -- \
  matrix -f "$shop" --from shop/api --to shop/frontend
expect "validate rejects --port" 2 "--port=80 does not apply to validate" -- validate -f "$shop" --port=80
expect "check rejects -o" 2 "-o does not apply to check" -- \
  check -f "$shop" -o json --from shop/api --to shop/frontend --port 8080
expect "check still takes its own flags" 0 "ALLOWED" -- check -f "$shop" --from=shop/api \
  --to shop/frontend --port 8080 --protocol TCP --engine reference --allow-self=false --ipblock-scope all

# validate -o json: its documented shape, with the counts and every diagnostic.
"$netpol" validate -f "$shop" -f "$live" -o json >"$tmp/validate.json"
rc=$?
if [[ $rc -eq 0 ]] && /usr/bin/python3 - "$tmp/validate.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
assert list(v) == ["valid", "objects", "skipped", "diagnostics"], list(v)
assert v["valid"] is True
assert v["objects"] == {"NetworkPolicy": 6, "Pod": 1, "Namespace": 2, "workloads": 8,
                        "synthesized_pods": 7, "pods_in_networking": 8}, v["objects"]
assert v["skipped"] == {"Service": 1}, v["skipped"]
d = [x for x in v["diagnostics"] if x["object"] == "shop/api"]
assert len(d) == 1 and d[0]["severity"] == "warning" and d[0]["kind"] == "Deployment", d
assert d[0]["file"].endswith("shop/api.yaml") and d[0]["line"] == 1, d
PY
then echo "ok   validate -o json"; else echo "FAIL validate -o json (exit $rc)"; failures=$((failures + 1)); fi
expect "validate -o json, invalid input" 2 '"valid": false' '"severity": "error"' -- \
  validate -o json -f "$tmp/repo/results.json"

# What lives only in the cluster: DNS egress with --cluster-pod, --namespace-labels and
# --namespace-labels-file (testdata/workloads/dns-egress). Expected verdicts by hand:
# shop/egress-dns-only admits egress from every shop pod only to pods labelled
# k8s-app=kube-dns in the namespace whose kubernetes.io/metadata.name is kube-system, on
# 53/UDP and 53/TCP; monitoring/egress-dns-legacy-label admits egress from every monitoring
# pod to every pod of namespaces labelled name=kube-system, on 53/UDP only. No policy
# selects kube-system's pods, so their ingress is open.
dns="$2/workloads/dns-egress"
coredns="kube-system/coredns:k8s-app=kube-dns:dns=53/UDP,dns-tcp=53/TCP"
metrics="kube-system/metrics-server:k8s-app=metrics-server"
egress=(-f "$shop" -f "$dns/egress.yaml" --cluster-pod "$coredns" --cluster-pod "$metrics")
expect "dns: shop reaches the DNS pods on 53/UDP" 0 \
  "ALLOWED: shop/api-0 -> kube-system/coredns-0 UDP/53" \
  "kube-system/coredns-0 is synthesized from --cluster-pod kube-system/coredns" -- \
  check "${egress[@]}" --from shop/api --to kube-system/coredns --port 53 --protocol UDP
expect "dns: and on 53/TCP" 0 "ALLOWED" -- \
  check "${egress[@]}" --from shop/api --to kube-system/coredns --port 53 --protocol TCP
expect "dns: not on another port (the rule's ports)" 1 "DENIED" -- \
  check "${egress[@]}" --from shop/api --to kube-system/coredns --port 80
expect "dns: not to another kube-system pod (podSelector k8s-app=kube-dns)" 1 "DENIED" -- \
  check "${egress[@]}" --from shop/api --to kube-system/metrics-server --port 53 --protocol UDP
expect "dns: egress isolation closes api -> postgres" 1 "egress at shop/api-0: DENIED" -- \
  check "${egress[@]}" --from shop/api --to shop/postgres --port 5432
expect "dns: without --cluster-pod there is no DNS pod to ask about" 2 'no pod "kube-system/coredns"' -- \
  check -f "$shop" -f "$dns/egress.yaml" --from shop/api --to kube-system/coredns --port 53 --protocol UDP
expect "dns: the legacy name label is absent without --namespace-labels" 1 "DENIED" -- \
  check "${egress[@]}" --from monitoring/probe --to kube-system/coredns --port 53 --protocol UDP
expect "dns: --namespace-labels gives it" 0 "ALLOWED" -- \
  check "${egress[@]}" --namespace-labels kube-system:name=kube-system \
  --from monitoring/probe --to kube-system/coredns --port 53 --protocol UDP
expect "dns: the file form gives it too" 0 "ALLOWED" -- \
  check "${egress[@]}" --namespace-labels-file "$dns/cluster-namespaces.txt" \
  --from monitoring/probe --to kube-system/coredns --port 53 --protocol UDP
expect "dns: namespaceSelector alone admits every pod of the namespace" 0 "ALLOWED" -- \
  check "${egress[@]}" --namespace-labels kube-system:name=kube-system \
  --from monitoring/probe --to kube-system/metrics-server --port 53 --protocol UDP
expect "dns: UDP only for monitoring" 1 "DENIED" -- \
  check "${egress[@]}" --namespace-labels kube-system:name=kube-system \
  --from monitoring/probe --to kube-system/coredns --port 53 --protocol TCP
expect "dns: matrix and validate take the flags" 0 "kube-system/coredns-0" -- \
  matrix "${egress[@]}" --namespace-labels kube-system:name=kube-system --port 53 --protocol UDP
expect "dns: validate counts the cluster pods" 0 "valid: 8 NetworkPolicies" "(10 pods synthesized)" -- \
  validate "${egress[@]}" --namespace-labels kube-system:name=kube-system
expect "namespace labels for a namespace the input defines: an error naming both" 2 \
  "--namespace-labels: Namespace monitoring: labels given here, but the input defines this namespace too (" \
  "namespace.yaml:8)" -- \
  check "${egress[@]}" --namespace-labels monitoring:team=obs --from shop/api --to shop/frontend --port 8080
expect "namespace labels are validated as a Namespace's" 2 \
  "--namespace-labels: Namespace kube-system: metadata.labels" -- \
  validate -f "$shop" --namespace-labels 'kube-system:bad!key=x'
expect "namespace labels: the form" 2 '--namespace-labels: "kube-system" is not NAMESPACE:KEY=VALUE' -- \
  validate -f "$shop" --namespace-labels kube-system
expect "namespace labels: one key, two values" 2 "metadata.labels[team]: given twice" -- \
  validate -f "$shop" --namespace-labels kube-system:team=a --namespace-labels kube-system:team=b
printf '# ok\n\nkube-system:name=kube-system\nkube-system\n' >"$tmp/labels.txt"
expect "namespace labels file: errors name file and line" 2 "labels.txt:4: \"kube-system\" is not" -- \
  validate -f "$shop" --namespace-labels-file "$tmp/labels.txt"
expect "namespace labels file: a missing file" 2 "--namespace-labels-file: cannot read" -- \
  validate -f "$shop" --namespace-labels-file "$tmp/none.txt"
expect "cluster pod: the form" 2 '--cluster-pod: "coredns" is not NAMESPACE/NAME' -- \
  validate -f "$shop" --cluster-pod coredns
expect "cluster pod: validated as a Pod, naming the flag" 2 "--cluster-pod: Pod kube-system/coredns-0: spec.containers[0].ports[0].protocol" -- \
  validate -f "$shop" --cluster-pod kube-system/coredns::53/udp

# compile and probe: a flag the mode does not read is an error (exit 2), two modes too; every
# documented combination still passes the check (probe's with a missing input, so that the
# run stops at reading it, before any namespace is made: what CI runs is in
# np/probe/ci_probe.sh).
u="$2/upstream/allow-all.yaml"
expect "compile: --from without --explain" 2 "--from does not apply to compile" -- \
  compile -f "$u" --backend nft --from x/a
expect "compile --ir: --backend" 2 "--backend does not apply to compile --ir" -- compile -f "$u" --ir --backend nft
expect "compile --ir-format without --ir" 2 "--ir-format does not apply to compile" -- \
  compile -f "$u" --ir-format json
expect "compile --stats: --port" 2 "--port does not apply to compile --stats" -- \
  compile -f "$u" --stats --port 80
expect "compile: --engine" 2 "--engine does not apply to compile" -- compile -f "$u" --engine reference
expect "compile: two modes" 2 "--stats and --ir are different modes" -- compile -f "$u" --ir --stats
expect "compile --explain: two modes" 2 "--ir and --explain are different modes" -- \
  compile -f "$u" --ir --explain --from x/a --to x/b
expect "compile: a node without pods" 2 "no pod of the input runs on node nosuch" "nodes: node-1" -- \
  compile -f "$u" --node nosuch
expect "compile: the program" 0 "table inet np" -n "does not apply" -- \
  compile -f "$u" --backend nft --node node-1 --budget rules=100 --allow-self --ipblock-scope all
expect "compile --ir --ir-format json -o" 0 -n "does not apply" -- \
  compile -f "$u" --ir --ir-format json --node node-1 -o "$tmp/ir.json"
expect "compile --explain with its flags" 0 "engine (whole cluster): ALLOWED" -- \
  compile -f "$u" --explain --from x/a --to y/b --port 80 --protocol TCP --family 4 --backend iptables --node node-1
expect "compile --stats with its flags" 0 '"backends"' -- \
  compile -f "$u" --stats --backend all --budget nft.rules=100000 -o json
expect "compile --noir (a bool set false is read)" 0 "table inet np" -- compile -f "$u" --noir
expect "probe: --engine" 2 "--engine does not apply to probe" -- probe -f "$u" --engine reference
expect "probe: --swaps without --swap-with" 2 "--swaps does not apply to probe" -- probe -f "$u" --swaps 3
expect "probe --swap-with: -o" 2 "-o does not apply to probe --swap-with" -- \
  probe -f "$u" --swap-with "$u" -o json
expect "probe --swap-with: --external" 2 "--external=192.0.2.1 does not apply to probe --swap-with" -- \
  probe -f "$u" --swap-with "$u" --external=192.0.2.1
expect "probe --cleanup: -f" 2 "-f does not apply to probe --cleanup" -- probe --cleanup -f "$u"
expect "probe --cleanup: --backend" 2 "--backend does not apply to probe --cleanup" -- probe --cleanup --backend nft
expect "probe: two modes" 2 "--swap-with and --each are different modes" -- probe --each -f "$u" --swap-with "$u"
mkdir -p "$tmp/no-scenarios"
expect "probe --each: a directory without scenarios" 2 "no .yaml, .yml or .json file" -- \
  probe --each -f "$tmp/no-scenarios" --backend nft
missing="$tmp/missing.yaml"
expect "probe: CI's matrix comparison passes the check" 2 "missing.yaml" -n "does not apply" -- \
  probe --backend nft --port 80,81 --protocol TCP,UDP -o json -f "$missing"
expect "probe --swap-with: CI's update test passes the check" 2 "missing.yaml" -n "does not apply" -- \
  probe --backend nft --swaps 40 -f "$missing" --swap-with "$missing"
expect "probe --each: CI's suites pass the check" 2 "missing.yaml" -n "does not apply" -- \
  probe --each -f "$missing" --backend nft
expect "probe: every flag of one scenario passes the check" 2 "missing.yaml" -n "does not apply" -- \
  probe --backend iptables --port 80 --protocol TCP --family 4 -o json --external 192.0.2.1 \
  --nosample-external --timeout-ms 100 --retry-timeout-ms 1000 --allow-self --ipblock-scope all \
  --cluster-pod kube-system/dns --namespace-labels kube-system:a=b -f "$missing"
expect "probe --each: -o json and --external pass the check" 2 "missing.yaml" -n "does not apply" -- \
  probe --each --backend ebpf -o json --external 192.0.2.1 -f "$missing"
expect "connections: --engine" 2 "--engine does not apply to connections" -- \
  connections -f "$shop" --engine reference

# Nothing left out silently: check and matrix print what validate prints about pods that
# exist but take no part in pod networking, and name the reason when asked about one.
cat >"$tmp/left-out.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {containers: [{name: c}]}
status: {phase: Running, podIP: 10.1.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: shop}
spec: {containers: [{name: c}]}
status: {phase: Succeeded}
YAML
summary="skipped 1 Service; left out 2 pods: shop/agent (hostNetwork), shop/done (phase Succeeded)"
expect "validate names the left-out pods" 0 "$summary" -- validate -f "$no_pods" -f "$tmp/left-out.yaml"
expect "matrix names them too" 0 "note: $summary" -- matrix -f "$no_pods" -f "$tmp/left-out.yaml"
expect "check names them too" 0 "note: $summary" -- \
  check -f "$no_pods" -f "$tmp/left-out.yaml" --from shop/web --to shop/web
expect "check on a hostNetwork pod says why" 2 \
  "pod shop/agent is hostNetwork: NetworkPolicy does not apply to it" -n "no pod" -- \
  check -f "$no_pods" -f "$tmp/left-out.yaml" --from shop/agent --to shop/web
expect "check on a finished pod says why" 2 "pod shop/done is in phase Succeeded" -n "no pod" -- \
  explain -f "$no_pods" -f "$tmp/left-out.yaml" --from shop/web --to shop/done
cat >"$tmp/host-daemonset.yaml" <<'YAML'
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-agent, namespace: shop}
spec:
  template:
    spec:
      hostNetwork: true
      containers: [{name: c}]
YAML
expect "a hostNetwork workload, named by the workload" 2 "pod shop/node-agent-0 is hostNetwork" -- \
  check -f "$tmp/left-out.yaml" -f "$tmp/host-daemonset.yaml" --from shop/web --to shop/node-agent
# Commands that would answer from nothing: filters that match nothing.
expect "connections: --from matching no pod" 2 'from "nope/*" matches no pod of the input' -- \
  connections -f "$shop" --from 'nope/*'
expect "connections: a workload name is not its pods" 2 "it names a workload: its pods are shop/api-*" -- \
  connections -f "$shop" --to shop/api
expect "connections: a port name no container has" 2 'port "nosuchname" is the name of no container port' -- \
  connections -f "$shop" --port nosuchname
expect "connections: a CIDR without pods and without outside ranges" 2 'to "192.0.2.0/24" matches no pod' -- \
  connections -f "$shop" --to 192.0.2.0/24 --pods-only
expect "connections: a CIDR outside the cluster is a range" 0 "10.245.0.0-255.255.255.255" -- \
  connections -f "$shop" --to 192.0.2.0/24
expect "diff: --to matching no pod in either state" 2 'to "shop/nope-*" matches no pod' -- \
  diff --before "$shop" --after "$shop" --to 'shop/nope-*'
expect "matrix: an empty --port list" 2 "no port given" -- matrix -f "$shop" --port ,

if ((failures > 0)); then echo "$failures failed"; exit 1; fi
echo "all passed"

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

# Bazel runs tests from the runfiles root; by hand, run from the repository root.
source np/cli/expect.sh

expect "validate counts workloads and synthesized pods" 0 \
  "valid: 6 NetworkPolicies, 0 Pods, 2 Namespaces, 8 workloads (8 pods synthesized), 1 Service" \
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
  "left out 1 pod" -- check -f "$shop/policies.yaml" -f "$no_pods" \
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
expect "check rejects --pods-only" 2 "--pods-only does not apply to check" -- \
  check -f "$shop" --pods-only --from shop/api --to shop/frontend --port 8080
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
                        "synthesized_pods": 7, "Service": 1, "pods_in_networking": 8}, v["objects"]
assert v["skipped"] == {}, v["skipped"]
d = [x for x in v["diagnostics"] if x["object"] == "shop/api"]
assert len(d) == 1 and d[0]["severity"] == "warning" and d[0]["kind"] == "Deployment", d
assert d[0]["file"].endswith("shop/api.yaml") and d[0]["line"] == 1, d
PY
then echo "ok   validate -o json"; else echo "FAIL validate -o json (exit $rc)"; failures=$((failures + 1)); fi
expect "validate -o json, invalid input" 2 '"valid": false' '"severity": "error"' -- \
  validate -o json -f "$tmp/repo/results.json"

if ((failures > 0)); then echo "$failures failed"; exit 1; fi
echo "all passed"

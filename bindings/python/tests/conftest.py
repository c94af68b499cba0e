"""Shared fixtures of the netpol tests: where testdata/ is, and a small cluster."""

import os
from pathlib import Path

import pytest

import netpol

# testdata/ of the repository (bindings/python/tests -> ../../../testdata), or NP_TESTDATA.
TESTDATA = Path(os.environ.get("NP_TESTDATA", Path(__file__).resolve().parents[3] / "testdata"))

ENGINES = ["engine", "reference"]

# Namespaces web and db; web/frontend may reach db/postgres on 5432 only; db/backup is
# isolated for ingress with no rule; web/debug runs with hostNetwork (left out).
SMALL = """
apiVersion: v1
kind: Namespace
metadata: {name: web, labels: {team: web}}
---
apiVersion: v1
kind: Namespace
metadata: {name: db}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend, namespace: web, labels: {app: frontend}}
spec:
  containers: [{name: c, image: nginx}]
status: {phase: Running, podIP: 10.0.1.1, podIPs: [{ip: 10.0.1.1}, {ip: "fd00::1:1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: postgres, namespace: db, labels: {app: postgres}}
spec:
  containers:
  - name: pg
    image: postgres
    ports: [{name: pg, containerPort: 5432}]
status: {phase: Running, podIP: 10.0.2.1, podIPs: [{ip: 10.0.2.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: backup, namespace: db, labels: {app: backup}}
spec:
  containers: [{name: c, image: restic}]
status: {phase: Running, podIP: 10.0.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: debug, namespace: web}
spec:
  hostNetwork: true
  containers: [{name: c, image: busybox}]
status: {phase: Running, podIP: 192.168.0.10}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: postgres-from-web, namespace: db}
spec:
  podSelector: {matchLabels: {app: postgres}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: web}}
      podSelector: {matchLabels: {app: frontend}}
    ports: [{port: pg}]
  - from:
    - ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}
    ports: [{port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backup-isolated, namespace: db}
spec:
  podSelector: {matchLabels: {app: backup}}
  policyTypes: [Ingress]
---
apiVersion: v1
kind: Service
metadata: {name: postgres, namespace: db}
spec: {ports: [{port: 5432}]}
"""


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def small(engine):
    return netpol.Cluster.from_yaml(SMALL, source_name="small.yaml", engine=engine)


@pytest.fixture
def testdata():
    assert TESTDATA.is_dir(), f"testdata not found at {TESTDATA} (set NP_TESTDATA)"
    return TESTDATA


@pytest.fixture
def small_yaml():
    return SMALL

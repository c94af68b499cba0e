"""The upstream e2e scenarios (testdata/upstream) and the documentation examples (testdata/docs)
driven from Python: every ReachabilityExpectation table and flow, compared with netpol.

The expected verdicts come from the data files (transcribed from upstream's e2e suite and the
documentation; format: testdata/upstream/README.md), read here with PyYAML -- an independent
YAML parser -- never from netpol's own output. Each scenario is checked

* with both evaluators (the indexed engine and the reference), loaded by from_files;
* with the cluster objects passed to from_objects as PyYAML dicts (camelCase), and again
  rewritten into the snake_case form of the Kubernetes Python client's to_dict();

and a mutation check shows that the comparison can fail: flipping any one expected cell makes
the tables unequal.
"""

import functools
import os
import re
from pathlib import Path

import pytest
import yaml  # Debian: python3-yaml

import netpol

TESTDATA = Path(os.environ.get("NP_TESTDATA", Path(__file__).resolve().parents[3] / "testdata"))
FILES = sorted((TESTDATA / "upstream").glob("*.yaml")) + sorted((TESTDATA / "docs").glob("*.yaml"))
KIND = "ReachabilityExpectation"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it


def ids(path):
    return f"{path.parent.name}/{path.stem}"


def test_all_scenarios_are_found():
    # 60 upstream files and 15 documentation examples (the READMEs' counts).
    assert len([f for f in FILES if f.parent.name == "upstream"]) == 60
    assert len([f for f in FILES if f.parent.name == "docs"]) == 15


@functools.lru_cache(maxsize=None)
def read(path):
    """(cluster objects, expectation documents) of one file. Callers must not modify them."""
    with open(path) as f:
        documents = [d for d in yaml.load_all(f, Loader=_LOADER) if d is not None]
    objects = [d for d in documents if d.get("kind") != KIND]
    expectations = [d for d in documents if d.get("kind") == KIND]
    assert expectations, f"{path}: no {KIND} document"
    return objects, expectations


def options(expectation):
    o = expectation.get("options") or {}
    scope = {"AllAddresses": "all", "ExternalOnly": "external"}[o.get("ipBlockScope", "AllAddresses")]
    return {"allow_self": bool(o.get("alwaysAllowSelf", False)), "ipblock_scope": scope}


_CELL = re.compile(r"^[.X?]$")


def expected_table(case):
    """The case's table, read by Reachability.from_table, with an independent count of its
    "."/"X" cells: a parser that dropped cells would make every comparison pass."""
    table = netpol.Reachability.from_table(case["table"], port=case["port"],
                                           protocol=case["protocol"])
    rows = [line.split() for line in case["table"].splitlines() if line.strip()][1:]
    symbols = [cell for row in rows for cell in row[1:]]
    assert all(_CELL.match(s) for s in symbols)
    assert sum(1 for _, _, v in table if v is not None) == sum(1 for s in symbols if s != "?")
    assert len(list(table)) == len(symbols)
    return table


def check(path, cluster_for):
    """Compares every case and flow of the file with the cluster that cluster_for(options)
    builds. Returns how many cells and flows were checked."""
    _, expectations = read(path)
    checked = 0
    for expectation in expectations:
        cluster = cluster_for(options(expectation))
        name = expectation["metadata"]["name"]
        for case in expectation.get("cases") or []:
            expected = expected_table(case)
            actual = cluster.matrix(port=case["port"], protocol=case["protocol"])
            assert actual == expected, (
                f"{path.name} [{name}] {case['protocol']}/{case['port']}:\n"
                + expected.diff(actual)
            )
            checked += sum(1 for _, _, v in expected if v is not None)
        for flow in expectation.get("flows") or []:
            allowed = cluster.allowed(flow["from"], flow["to"], flow["port"], flow["protocol"])
            assert allowed == flow["allowed"], (
                f"{path.name} [{name}]: {flow['from']} -> {flow['to']} "
                f"{flow['protocol']}/{flow['port']}: expected "
                f"{'allowed' if flow['allowed'] else 'denied'}\n"
                + str(cluster.explain(flow["from"], flow["to"], flow["port"], flow["protocol"]))
            )
            checked += 1
    assert checked > 0
    return checked


@pytest.mark.parametrize("engine", ["engine", "reference"])
@pytest.mark.parametrize("path", FILES, ids=ids)
def test_from_files(path, engine):
    check(path, lambda o: netpol.Cluster.from_files(path, engine=engine, **o))


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_from_objects(path):
    objects, _ = read(path)
    check(path, lambda o: netpol.Cluster.from_objects(objects, **o))


# --- the snake_case form of the Kubernetes Python client ---------------------------------------

# The client's attribute names that plain snake_casing would not give.
_SNAKE = {"podIP": "pod_ip", "podIPs": "pod_i_ps", "hostIP": "host_ip", "from": "_from",
          "except": "_except", "apiVersion": "api_version"}
_USER_MAPS = {"labels", "annotations", "matchLabels", "nodeSelector"}


def _snake_key(key):
    if key in _SNAKE:
        return _SNAKE[key]
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def to_client_dict(value, key=None):
    """A manifest as `V1Xxx(...).to_dict()` returns it: snake_case attribute names, user
    maps untouched, unset optional fields present as None."""
    if isinstance(value, dict):
        if key in _USER_MAPS:
            return dict(value)
        out = {_snake_key(k): to_client_dict(v, k) for k, v in value.items()}
        if key in ("podSelector", "namespaceSelector"):
            out.setdefault("match_expressions", None)
        if key == "metadata":
            out.setdefault("annotations", None)
            out.setdefault("deletion_timestamp", None)
        return out
    if isinstance(value, list):
        return [to_client_dict(v, key) for v in value]
    return value


def as_client_list(objects):
    """Pods as one V1PodList (items without kind, as the API returns list items); the other
    objects without kind and api_version, to be inferred."""
    pods = [to_client_dict(o) for o in objects if o["kind"] == "Pod"]
    for pod in pods:
        pod["kind"] = pod["api_version"] = None
    others = []
    for o in objects:
        if o["kind"] != "Pod":
            d = to_client_dict(o)
            d["kind"] = d["api_version"] = None
            others.append(d)
    return [{"api_version": "v1", "kind": "PodList", "metadata": {"resource_version": "7"},
             "items": pods}] + others


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_from_client_dicts(path):
    objects, _ = read(path)
    client = as_client_list(objects)
    assert "'pod_i_ps'" in repr(client)  # really the client's spelling
    check(path, lambda o: netpol.Cluster.from_objects(client, **o))


# --- the comparison can fail --------------------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_a_flipped_expectation_fails(path):
    """Flip each checked cell of the first table in turn: netpol must disagree every time."""
    _, expectations = read(path)
    expectation = next(e for e in expectations if e.get("cases"))
    case = expectation["cases"][0]
    cluster = netpol.Cluster.from_files(path, **options(expectation))
    actual = cluster.matrix(port=case["port"], protocol=case["protocol"])
    expected = expected_table(case)
    flips = 0
    for source, destination, allowed in expected:
        if allowed is None:
            continue
        wrong = expected.copy()
        wrong[source, destination] = not allowed
        assert actual != wrong, f"{source} -> {destination} flipped, still equal"
        assert wrong.differences(actual) == [
            netpol.Difference(source, destination, expected=not allowed, actual=allowed)]
        flips += 1
    assert flips > 0

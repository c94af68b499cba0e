"""netpol.Cluster: constructors, options, what it holds, allowed / explain / matrix."""

import os
import pathlib
import threading

import pytest

import netpol


# --- constructors ----------------------------------------------------------------------------


def test_from_yaml_reads_objects(small):
    assert small.pods == ["db/backup", "db/postgres", "web/frontend"]  # debug: hostNetwork
    assert small.namespaces == ["db", "web"]
    assert small.policies == ["db/backup-isolated", "db/postgres-from-web"]
    assert small.skipped_kinds == {}
    assert small.services() == ["db/postgres"]


def test_from_yaml_takes_bytes_and_names_the_source(small_yaml):
    cluster = netpol.Cluster.from_yaml(small_yaml.encode())
    assert len(cluster.pods) == 3
    with pytest.raises(netpol.ValidationError) as info:
        netpol.Cluster.from_yaml(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\n", source_name="inline.yaml"
        )
    assert info.value.errors[0].file == "inline.yaml"


def test_from_yaml_rejects_other_types():
    with pytest.raises(TypeError):
        netpol.Cluster.from_yaml(["not", "text"])


def test_cluster_cannot_be_constructed_directly():
    with pytest.raises(TypeError, match="from_files"):
        netpol.Cluster()


def test_from_files_takes_a_file_a_directory_a_path_or_a_list(tmp_path, testdata, small_yaml):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "all.yaml").write_text(small_yaml)
    (tmp_path / "notes.txt").write_text("not read: only *.yaml, *.yml, *.json")
    by_dir = netpol.Cluster.from_files(tmp_path)
    by_str = netpol.Cluster.from_files(str(tmp_path / "sub" / "all.yaml"))
    by_list = netpol.Cluster.from_files([pathlib.Path(tmp_path / "sub" / "all.yaml")])
    assert by_dir.pods == by_str.pods == by_list.pods == ["db/backup", "db/postgres", "web/frontend"]
    two = netpol.Cluster.from_files(
        [testdata / "upstream" / "default-deny-ingress.yaml", tmp_path / "sub"]
    )
    assert len(two.pods) == 9 + 3


def test_from_files_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        netpol.Cluster.from_files(tmp_path / "nope.yaml")


def test_from_files_needs_a_path():
    with pytest.raises(ValueError):
        netpol.Cluster.from_files([])


def test_options_are_kept_and_checked(small_yaml):
    cluster = netpol.Cluster.from_yaml(small_yaml, engine="reference", allow_self=True,
                                       ipblock_scope="external")
    assert (cluster.engine, cluster.allow_self, cluster.ipblock_scope) == (
        "reference", True, "external")
    default = netpol.Cluster.from_yaml(small_yaml)
    assert (default.engine, default.allow_self, default.ipblock_scope) == ("engine", False, "all")
    with pytest.raises(ValueError, match="engine"):
        netpol.Cluster.from_yaml(small_yaml, engine="fast")
    with pytest.raises(ValueError, match="ipblock_scope"):
        netpol.Cluster.from_yaml(small_yaml, ipblock_scope="pods")


def test_warnings_name_the_left_out_pod(small):
    texts = [str(w) for w in small.warnings]
    assert any("web/debug" in t and "hostNetwork" in t for t in texts), texts
    w = next(w for w in small.warnings if "web/debug" in str(w))
    assert w.severity == "warning"
    assert w.kind == "Pod" and w.object == "web/debug"
    assert w.file == "small.yaml" and isinstance(w.line, int)


def test_pod_ips_and_labels(small):
    assert small.pod_ips("web/frontend") == ["10.0.1.1", "fd00::1:1"]
    assert small.pod_labels("db/postgres") == {"app": "postgres"}
    with pytest.raises(netpol.PodNotFoundError):
        small.pod_ips("web/nope")


def test_repr(small):
    assert repr(small).startswith("<netpol.Cluster 3 pods, 2 policies, 2 namespaces")


# --- allowed -----------------------------------------------------------------------------------


def test_allowed_by_named_port_and_number(small):
    assert small.allowed("web/frontend", "db/postgres", port=5432)
    assert not small.allowed("web/frontend", "db/postgres", port=22)
    assert not small.allowed("web/frontend", "db/postgres", port=5432, protocol="UDP")
    assert not small.allowed("db/backup", "db/postgres", port=5432)


def test_allowed_defaults_to_tcp_80(small):
    # Nothing isolates web/frontend: everything reaches it.
    assert small.allowed("db/postgres", "web/frontend")
    assert not small.allowed("web/frontend", "db/backup")


def test_protocol_is_case_insensitive(small):
    assert small.allowed("web/frontend", "db/postgres", 5432, "tcp")
    assert not small.allowed("web/frontend", "db/postgres", 5432, "sctp")


def test_external_addresses(small):
    assert small.allowed("203.0.113.7", "db/postgres", port=5432)
    assert not small.allowed("203.0.113.200", "db/postgres", port=5432)  # in except
    assert not small.allowed("198.51.100.1", "db/postgres", port=5432)
    assert small.allowed("db/postgres", "198.51.100.1", port=443)  # no egress isolation
    assert small.allowed("2001:db8::1", "web/frontend")


def test_a_pod_address_is_that_pod(small):
    assert small.allowed("10.0.1.1", "db/postgres", port=5432)  # web/frontend's IP
    assert not small.allowed("10.0.2.2", "db/postgres", port=5432)  # db/backup's IP


def test_a_bare_name_is_in_namespace_default(small):
    with pytest.raises(netpol.PodNotFoundError) as info:
        small.allowed("frontend", "db/postgres")
    assert info.value.pod == "default/frontend"


def test_unknown_pod_is_pod_not_found_a_key_error(small):
    with pytest.raises(KeyError) as info:
        small.allowed("web/frontend", "db/nope")
    assert isinstance(info.value, netpol.PodNotFoundError)
    assert info.value.pod == "db/nope"
    assert str(info.value).startswith('no pod "db/nope" in the cluster')


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_bad_port(small, port):
    with pytest.raises(ValueError, match="port must be from 1 to 65535"):
        small.allowed("web/frontend", "db/postgres", port=port)


def test_bad_protocol(small):
    with pytest.raises(ValueError, match="protocol must be TCP, UDP or SCTP"):
        small.allowed("web/frontend", "db/postgres", 80, "ICMP")


def test_neither_end_a_pod(small):
    with pytest.raises(ValueError, match="NetworkPolicy does not govern"):
        small.allowed("198.51.100.1", "198.51.100.2")


def test_allow_self_option(small_yaml):
    plain = netpol.Cluster.from_yaml(small_yaml)
    self_ok = netpol.Cluster.from_yaml(small_yaml, allow_self=True)
    assert not plain.allowed("db/backup", "db/backup")
    assert self_ok.allowed("db/backup", "db/backup")
    e = self_ok.explain("db/backup", "db/backup")
    assert e.allowed and e.allowed_as_self


def test_ipblock_scope_option(small_yaml):
    # A policy whose only peer is an ipBlock holding db/backup's address.
    text = small_yaml + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontend-from-block, namespace: web}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.2.0/24}}]
"""
    everything = netpol.Cluster.from_yaml(text)
    external = netpol.Cluster.from_yaml(text, ipblock_scope="external")
    assert everything.allowed("db/backup", "web/frontend")
    assert not external.allowed("db/backup", "web/frontend")


# --- explain -----------------------------------------------------------------------------------


def test_explain_denied(small):
    e = small.explain("web/frontend", "db/backup", port=80)
    assert not e.allowed
    assert (e.source, e.destination, e.port, e.protocol, e.family) == (
        "web/frontend", "db/backup", 80, "TCP", "IPv4")
    assert e.egress.applies and not e.egress.isolated and e.egress.allowed
    assert e.ingress.isolated and not e.ingress.allowed
    assert e.ingress.isolating_policies == ["db/backup-isolated"]
    assert e.ingress.allowing_rules == []
    text = str(e)
    assert text.startswith("DENIED: web/frontend -> db/backup TCP/80 (IPv4)")
    assert "isolated by db/backup-isolated" in text
    assert "no rule of those policies admits this flow" in text
    assert repr(e) == "<netpol.Explanation DENIED: web/frontend -> db/backup TCP/80>"


def test_explain_allowed_names_the_rule(small):
    e = small.explain("web/frontend", "db/postgres", port=5432)
    assert e.allowed
    [rule] = e.ingress.allowing_rules
    assert (rule.policy, rule.direction, rule.index) == ("db/postgres-from-web", "Ingress", 0)
    assert str(rule) == "db/postgres-from-web spec.ingress[0]"
    assert "admitted by db/postgres-from-web spec.ingress[0]" in str(e)


def test_explain_external_end(small):
    e = small.explain("203.0.113.7", "db/postgres", port=5432)
    assert e.allowed and e.source == "203.0.113.7"
    assert not e.egress.applies  # the source is outside the cluster
    assert [str(r) for r in e.ingress.allowing_rules] == ["db/postgres-from-web spec.ingress[1]"]
    assert "not applicable" in str(e)


def test_explain_agrees_with_allowed(small):
    for source in small.pods:
        for destination in small.pods:
            for port in (80, 5432):
                assert small.explain(source, destination, port).allowed == small.allowed(
                    source, destination, port)


# --- matrix ------------------------------------------------------------------------------------


def test_matrix(small):
    m = small.matrix(port=5432)
    assert isinstance(m, netpol.Reachability)
    assert m.pods == tuple(small.pods)
    assert (m.port, m.protocol, m.computed) == (5432, "TCP", True)
    assert m["web/frontend", "db/postgres"] is True
    assert m["db/backup", "db/postgres"] is False
    assert m["db/postgres", "db/backup"] is False
    assert m["db/postgres", "web/frontend"] is True
    for source, destination, allowed in m:
        assert allowed == small.allowed(source, destination, 5432)


def test_matrix_protocol(small):
    m = small.matrix(port=5432, protocol="udp")
    assert m.protocol == "UDP"
    assert m["web/frontend", "db/postgres"] is False
    with pytest.raises(ValueError):
        small.matrix(port=70000)


def test_matrix_equals_expectation(small):
    expected = netpol.Reachability(small, default=True)
    expected.deny_ingress_to("db/backup").deny_ingress_to("db/postgres")
    expected.allow("web/frontend", "db/postgres")
    assert small.matrix(port=5432) == expected
    assert small.matrix(port=80) != expected


def test_engine_and_reference_agree_on_testdata(testdata):
    for path in sorted((testdata / "upstream").glob("*.yaml"))[:10]:
        a = netpol.Cluster.from_files(path, engine="engine")
        b = netpol.Cluster.from_files(path, engine="reference")
        for port in (80, 81):
            assert a.matrix(port) == b.matrix(port), path.name


# --- threads -----------------------------------------------------------------------------------


def test_a_cluster_is_shared_by_threads(small):
    expected = {(s, d): small.allowed(s, d, 5432) for s in small.pods for d in small.pods}
    failures = []

    def worker():
        for _ in range(200):
            for (s, d), allowed in expected.items():
                if small.allowed(s, d, 5432) != allowed:
                    failures.append((s, d))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_rules_compare_and_hash(small):
    a = small.explain("web/frontend", "db/postgres", port=5432).ingress.allowing_rules[0]
    b = small.explain("10.0.1.1", "db/postgres", port=5432).ingress.allowing_rules[0]
    c = small.explain("203.0.113.1", "db/postgres", port=5432).ingress.allowing_rules[0]
    assert a == b and hash(a) == hash(b) and a != c
    assert {a, b, c} == {a, c}
    assert repr(a) == "<netpol.Rule db/postgres-from-web spec.ingress[0]>"

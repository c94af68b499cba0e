"""Error types: ParseError, ValidationError (both ValueError, with .errors), PodNotFoundError
(KeyError), FileNotFoundError; each error naming object, field path, file and line."""

import pytest

import netpol

BAD_END_PORT = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-db, namespace: default}
spec:
  podSelector: {}
  ingress:
  - ports:
    - port: 5432
    - port: 6000
      endPort: 5999
"""


def test_hierarchy():
    assert issubclass(netpol.ParseError, netpol.InputError)
    assert issubclass(netpol.ValidationError, netpol.InputError)
    assert issubclass(netpol.InputError, ValueError)
    assert issubclass(netpol.PodNotFoundError, KeyError)
    assert not issubclass(netpol.ParseError, netpol.ValidationError)


def test_validation_error_names_object_field_file_and_line():
    with pytest.raises(netpol.ValidationError) as info:
        netpol.Cluster.from_yaml(BAD_END_PORT, source_name="policy.yaml")
    [error] = info.value.errors
    assert error.severity == "error"
    assert error.kind == "NetworkPolicy"
    assert error.object == "default/allow-db"
    assert error.field == "spec.ingress[0].ports[1].endPort"
    assert "must be greater than or equal to `port`" in error.message
    assert (error.file, error.line) == ("policy.yaml", 10)
    assert str(error) == (
        "policy.yaml:10: NetworkPolicy default/allow-db: spec.ingress[0].ports[1].endPort: "
        "Invalid value: 5999: must be greater than or equal to `port`"
    )
    assert str(error) in str(info.value)
    assert str(info.value).startswith("1 error in the input:")
    assert repr(error).startswith("<netpol.Diagnostic error: ")


def test_validation_error_from_files_has_the_path(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(BAD_END_PORT)
    with pytest.raises(ValueError) as info:  # catchable as ValueError
        netpol.Cluster.from_files(path)
    assert isinstance(info.value, netpol.ValidationError)
    assert info.value.errors[0].file == str(path)


def test_every_error_is_reported():
    two = BAD_END_PORT + "---\n" + BAD_END_PORT.replace("allow-db", "allow-db-2")
    with pytest.raises(netpol.ValidationError) as info:
        netpol.Cluster.from_yaml(two)
    assert [e.object for e in info.value.errors] == ["default/allow-db", "default/allow-db-2"]
    assert str(info.value).startswith("2 errors in the input:")


def test_duplicate_objects_are_validation_errors():
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\n" \
          "spec: {containers: [{name: c, image: i}]}\n"
    with pytest.raises(netpol.ValidationError, match="duplicate object"):
        netpol.Cluster.from_yaml(pod + "---\n" + pod)


def test_malformed_yaml_is_a_parse_error():
    with pytest.raises(netpol.ParseError) as info:
        netpol.Cluster.from_yaml("kind: Pod\nmetadata: {name: [\n", source_name="broken.yaml")
    [error] = info.value.errors
    assert error.file == "broken.yaml" and error.line is not None
    assert error.kind == "" and error.object == ""
    assert isinstance(info.value, ValueError)


def test_malformed_json_is_a_parse_error():
    with pytest.raises(netpol.ParseError):
        netpol.Cluster.from_yaml('{"kind": "Pod", "metadata": ')


def test_unknown_field_is_a_parse_error():
    with pytest.raises(netpol.ParseError) as info:
        netpol.Cluster.from_yaml(BAD_END_PORT.replace("podSelector", "podSelectr"))
    [error] = info.value.errors
    assert error.field == "spec.podSelectr"
    assert "unknown field" in error.message
    assert error.line == 5


def test_wrong_type_is_a_parse_error():
    with pytest.raises(netpol.ParseError, match=r"spec.ingress\[0\].ports\[0\].port"):
        netpol.Cluster.from_yaml(BAD_END_PORT.replace("port: 5432", "port: [1]"))


def test_missing_api_version_is_a_parse_error():
    with pytest.raises(netpol.ParseError, match="apiVersion is missing"):
        netpol.Cluster.from_yaml("kind: Pod\nmetadata: {name: a}\n")


def test_errors_carry_warnings_too():
    text = BAD_END_PORT + """---
apiVersion: v1
kind: pod
metadata: {name: lower, namespace: default}
"""
    with pytest.raises(netpol.ValidationError) as info:
        netpol.Cluster.from_yaml(text)
    [warning] = info.value.warnings
    assert warning.severity == "warning"
    assert "did you mean Pod?" in warning.message


def test_from_objects_errors_name_the_object_and_have_no_line():
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "n", "namespace": "d"},
        "spec": {"pod_selector": {}, "ingress": [{"ports": [{"port": 6000, "end_port": 10}]}]},
    }
    with pytest.raises(netpol.ValidationError) as info:
        netpol.Cluster.from_objects([{"kind": "Namespace", "apiVersion": "v1",
                                      "metadata": {"name": "d"}}, policy])
    [error] = info.value.errors
    assert (error.file, error.line) == ("objects[1]", None)
    assert error.field == "spec.ingress[0].ports[0].endPort"
    assert str(error).startswith("objects[1]: NetworkPolicy d/n: spec.ingress[0].ports[0].endPort")


def test_pod_not_found_is_a_key_error():
    cluster = netpol.Cluster.from_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\n"
        "spec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 10.0.0.1}\n")
    with pytest.raises(KeyError) as info:
        cluster.explain("x/a", "x/b")
    assert isinstance(info.value, netpol.PodNotFoundError)
    assert info.value.pod == "x/b"
    assert "x/b" in str(info.value) and not str(info.value).startswith("'")


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        netpol.Cluster.from_files("/nonexistent/netpol/manifests.yaml")


def test_findings_past_1000_are_counted_not_kept():
    # 2000 empty ports with an endPort each: "may not be specified when `port` is not
    # specified" (ValidateNetworkPolicyPort), one error per port.
    ports = "".join("    - endPort: 80\n" for _ in range(2000))
    text = BAD_END_PORT.split("  - ports:")[0] + "  - ports:\n" + ports
    with pytest.raises(netpol.ValidationError) as info:
        netpol.Cluster.from_yaml(text, source_name="many.yaml")
    errors = info.value.errors
    assert len(errors) == 1001
    assert errors[-1].omitted_errors == 1000 and errors[-1].omitted_warnings == 0
    assert errors[-1].message.startswith("... and 1000 more errors not shown")
    assert all(e.omitted_errors == 0 for e in errors[:-1])
    assert str(info.value).startswith("2000 errors in the input:")
    assert "... and 1980 more errors" in str(info.value)

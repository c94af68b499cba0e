"""Services as destinations (np/services.h) and ports given by name, through `import netpol`,
on testdata/services (its README describes the scenario) and testdata/workloads/shop. Expected
verdicts were worked out by hand from the NetworkPolicy API on each pod's resolved target
port, as in np/cli/services_test.sh."""

import pytest

import netpol

from conftest import ENGINES, TESTDATA

DATA = TESTDATA / "services"


@pytest.fixture(params=ENGINES)
def cluster(request):
    return netpol.Cluster.from_files(DATA, engine=request.param)


def test_services_are_listed(cluster):
    assert cluster.services() == ["ns/manual", "ns/nobody", "ns/web"]
    assert cluster.skipped_kinds == {}


def test_named_target_port_per_pod(cluster):
    # web-a serves "http" on 8080 (admitted by web-8080), web-b on 8081 (not admitted):
    # not every endpoint is allowed.
    assert cluster.allowed("ns/client", "svc/ns/web", port="http") is False
    e = cluster.explain("ns/client", "svc/ns/web", port="http")
    assert isinstance(e, netpol.ServiceExplanation)
    assert (e.service, e.port, e.port_name, e.protocol, e.target_port) == \
        ("ns/web", 80, "http", "TCP", "http")
    assert [(x.destination, x.port, x.allowed) for x in e.endpoints] == \
        [("ns/web-a", 8080, True), ("ns/web-b", 8081, False)]
    assert [str(r) for r in e.endpoints[0].ingress.allowing_rules] == \
        ["ns/web-8080 spec.ingress[0]"]
    assert e.not_endpoints == [("ns/web-c", 'no container port named "http" for TCP')]
    assert e.allowed is False
    text = str(e)
    assert "1 of 2 backing pods ALLOWED, 1 DENIED" in text
    assert "Services are not a policy input" in text
    # By number, the same port.
    assert [x.port for x in cluster.explain("ns/client", "svc/ns/web", port=80).endpoints] == \
        [8080, 8081]


def test_numeric_target_port_and_protocol(cluster):
    # raw: 81 -> 9000 on all three pods; web-8080 admits none of them.
    e = cluster.explain("ns/client", "svc/ns/web", port="raw")
    assert [(x.destination, x.port, x.allowed) for x in e.endpoints] == \
        [("ns/web-a", 9000, False), ("ns/web-b", 9000, False), ("ns/web-c", 9000, False)]
    # dns is UDP 53: the protocol comes from the Service port.
    e = cluster.explain("ns/client", "svc/ns/web", port="dns")
    assert {(x.protocol, x.port) for x in e.endpoints} == {("UDP", 53)}
    with pytest.raises(ValueError, match="port http is TCP, not UDP"):
        cluster.allowed("ns/client", "svc/ns/web", port="http", protocol="UDP")
    with pytest.raises(ValueError, match="has 3 ports"):
        cluster.allowed("ns/client", "svc/ns/web")


def test_services_without_endpoints(cluster):
    with pytest.raises(ValueError, match="has no selector"):
        cluster.allowed("ns/client", "svc/ns/manual")
    with pytest.raises(ValueError, match="no endpoint pod"):
        cluster.allowed("ns/client", "svc/ns/nobody")
    e = cluster.explain("ns/client", "svc/ns/nobody")
    assert e.endpoints == [] and e.allowed is False
    with pytest.raises(KeyError, match="no Service"):
        cluster.allowed("ns/client", "svc/ns/absent", port=80)
    with pytest.raises(ValueError, match="not a packet source"):
        cluster.allowed("svc/ns/web", "ns/client")


def test_pod_port_by_name(cluster):
    assert cluster.allowed("ns/client", "ns/web-a", port="http") is True  # 8080
    assert cluster.allowed("ns/client", "ns/web-b", port="http") is False  # 8081
    assert cluster.explain("ns/client", "ns/web-b", port="http").port == 8081
    with pytest.raises(ValueError, match=r'pod ns/web-c has no container port named "http" '
                                         r'for TCP \(its named ports: metrics TCP/9090\)'):
        cluster.allowed("ns/client", "ns/web-c", port="http")
    # Numbers still work, as ints and as digit strings; the default is 80.
    assert cluster.allowed("ns/client", "ns/web-a", port=8080) is True
    assert cluster.allowed("ns/client", "ns/web-a", port="8080") is True
    assert cluster.explain("ns/client", "ns/web-a").port == 80


def test_services_change_no_verdict():
    for engine in ENGINES:
        with_services = netpol.Cluster.from_files(DATA, engine=engine)
        without = netpol.Cluster.from_files(DATA / "pods.yaml", engine=engine)
        assert with_services.namespaces == without.namespaces
        for port in (53, 80, 8080, 8081, 9000):
            for protocol in ("TCP", "UDP"):
                assert with_services.matrix(port, protocol) == without.matrix(port, protocol)


def test_service_over_synthesized_pods():
    shop = netpol.Cluster.from_files(TESTDATA / "workloads" / "shop")
    # frontend's only port: 80 -> targetPort http = 8080 on the Deployment's pod;
    # frontend-from-cluster admits the pod CIDR, where api-0's address is.
    assert shop.allowed("shop/api", "svc/shop/frontend") is True
    e = shop.explain("shop/api", "svc/shop/frontend")
    assert [(x.destination, x.port) for x in e.endpoints] == [("shop/frontend-0", 8080)]
    assert shop.synthesized_from(e.endpoints[0].destination) == "Deployment shop/frontend"

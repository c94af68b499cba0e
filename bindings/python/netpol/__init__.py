"""netpol: Kubernetes NetworkPolicy, evaluated exactly -- for policy tests in Python.

    import netpol
    cluster = netpol.Cluster.from_files(["manifests/"])   # or from_yaml(text) / from_objects([...])
    assert cluster.allowed("web/frontend-6d9f", "db/postgres-0", port=5432)
    assert not cluster.allowed("web/frontend-6d9f", "db/postgres-0", port=22)
    print(cluster.explain("x/a", "y/b", port=80, protocol="TCP"))
    expected = netpol.Reachability(cluster, default=True)
    expected.deny_ingress_to("x/a")
    expected.allow("x/b", "x/a")
    assert cluster.matrix(port=80) == expected   # pytest shows a table diff on failure

The verdicts come from np's C++ engine (or, with ``engine="reference"``, from its literal
reading of the API specification); the GIL is released while loading and evaluating, and a
Cluster is immutable, so threads may share one.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from . import _netpol
from ._errors import InputError, NoPodsWarning, ParseError, PodNotFoundError, ValidationError
from ._lint import Finding
from ._netpol import Diagnostic, DirectionVerdict, Explanation, Rule, ServiceExplanation
from ._objects import to_json_documents
from ._reachability import Difference, GroupedReachability, Reachability

__all__ = [
    "Cluster",
    "Reachability",
    "GroupedReachability",
    "Difference",
    "Explanation",
    "ServiceExplanation",
    "DirectionVerdict",
    "Rule",
    "Diagnostic",
    "Finding",
    "InputError",
    "ParseError",
    "ValidationError",
    "PodNotFoundError",
    "NoPodsWarning",
]

__version__ = "0.1.0"

PathLike = Union[str, "os.PathLike[str]"]


def _port_specs(ports: Optional[Sequence[Union[int, str]]]) -> List[str]:
    if ports is None:
        return []
    if isinstance(ports, (int, str)):
        ports = [ports]
    return [str(p) for p in ports]


def _namespace_labels(given: Optional[Mapping[str, Mapping[str, str]]]) -> Dict[str, Dict[str, str]]:
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise TypeError("namespace_labels takes a dict: namespace -> {label: value}, not "
                        f"{type(given).__name__}")
    out: Dict[str, Dict[str, str]] = {}
    for namespace, labels in given.items():
        if not isinstance(labels, Mapping):
            raise TypeError(f"namespace_labels[{namespace!r}] must be a dict of labels, not "
                            f"{type(labels).__name__}")
        out[str(namespace)] = {str(k): str(v) for k, v in labels.items()}
    return out


class Cluster:
    """A validated, immutable set of Namespaces, Pods and NetworkPolicies, with an evaluator.

    Options (keyword-only, for every constructor):
      engine: "engine" (the compiled, indexed engine; default) or "reference" (the
        specification read literally: slow, obvious; the oracle the engine is tested against).
      allow_self: a pod's traffic to itself is always allowed (CNIs differ; default False:
        evaluated like any other flow).
      ipblock_scope: "all" (ipBlocks match pod IPs too, as upstream's conformance suite
        expects; default) or "external" (ipBlocks match only addresses outside the cluster).
      namespace_labels: {namespace: {label: value}} for namespaces that live only in the
        cluster (e.g. ``{"kube-system": {"name": "kube-system"}}``): each then exists with
        these labels plus kubernetes.io/metadata.name. A namespace the input defines is a
        ValidationError (its manifest is where its labels belong).
      cluster_pods: pods that live only in the cluster, as strings
        "NAMESPACE/NAME[:KEY=VALUE,...[:[PORTNAME=]PORT[/PROTOCOL],...]]", e.g.
        ``"kube-system/coredns:k8s-app=kube-dns:dns=53/UDP,dns-tcp=53/TCP"``: made like a
        workload's pod (NAME-0 with an address from pod_cidrs; "NAMESPACE/NAME" names it).

    Endpoints are "namespace/name" ("name" alone means "default/name"), or an IP address: the
    pod that has it, else a peer outside the cluster.
    """

    # _pod_cidrs: as given to the constructor (None: the default), for lint().
    __slots__ = ("_impl", "_pod_cidrs")

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError(
            "use Cluster.from_files(paths), Cluster.from_yaml(text) or Cluster.from_objects(dicts)"
        )

    @classmethod
    def _load(cls, paths: Sequence[str], texts: Sequence, engine: str, allow_self: bool,
              ipblock_scope: str, pod_cidrs: Optional[Sequence[str]] = None,
              expand_replicas: bool = False,
              namespace_labels: Optional[Mapping[str, Mapping[str, str]]] = None,
              cluster_pods: Optional[Sequence[str]] = None) -> "Cluster":
        if isinstance(pod_cidrs, str):
            pod_cidrs = [pod_cidrs]
        if isinstance(cluster_pods, str):
            cluster_pods = [cluster_pods]
        self = object.__new__(cls)
        self._pod_cidrs = None if pod_cidrs is None else [str(c) for c in pod_cidrs]
        self._impl = _netpol.Cluster.load(
            list(paths), list(texts), engine=engine, allow_self=bool(allow_self),
            ipblock_scope=ipblock_scope,
            pod_cidrs=None if pod_cidrs is None else [str(c) for c in pod_cidrs],
            expand_replicas=bool(expand_replicas),
            namespace_labels=_namespace_labels(namespace_labels),
            cluster_pods=[str(p) for p in cluster_pods or []],
        )
        if self._impl.policies and not self._impl.pods:
            # A policy test on this cluster would pass without evaluating anything.
            skipped = ", ".join(f"{n} {k}" for k, n in sorted(self._impl.skipped_kinds.items()))
            warnings.warn(
                NoPodsWarning(
                    f"{len(self._impl.policies)} NetworkPolicies but no pod takes part in pod "
                    "networking: give Pods or workloads (Deployments, StatefulSets, ...)"
                    + (f"; skipped {skipped}" if skipped else "")),
                stacklevel=3)
        return self

    @classmethod
    def from_files(
        cls,
        paths: Union[PathLike, Iterable[PathLike]],
        *,
        engine: str = "engine",
        allow_self: bool = False,
        ipblock_scope: str = "all",
        pod_cidrs: Optional[Sequence[str]] = None,
        expand_replicas: bool = False,
        namespace_labels: Optional[Mapping[str, Mapping[str, str]]] = None,
        cluster_pods: Optional[Sequence[str]] = None,
    ) -> "Cluster":
        """Reads YAML/JSON files, or every *.yaml, *.yml and *.json below a directory, as
        kubectl writes them (multi-document, `kind: List`, `kubectl get -o yaml` dumps).
        Workloads (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob,
        ReplicationController) become the pods their controllers would make: one named
        WORKLOAD-0 per workload (``expand_replicas=True``: one per replica), with addresses
        from ``pod_cidrs`` (default ``["10.244.0.0/16", "fd00:10:244::/64"]``); "ns/WORKLOAD"
        names its first pod. Other kinds are skipped (see skipped_kinds). With policies but
        no pod, a NoPodsWarning is issued (a test would pass vacuously).

        Raises ParseError, ValidationError (ValueError), FileNotFoundError."""
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        names = [os.fsdecode(p) for p in paths]
        if not names:
            raise ValueError("from_files: no path given")
        return cls._load(names, [], engine, allow_self, ipblock_scope, pod_cidrs,
                         expand_replicas, namespace_labels, cluster_pods)

    @classmethod
    def from_yaml(
        cls,
        text: Union[str, bytes],
        *,
        source_name: str = "<yaml>",
        engine: str = "engine",
        allow_self: bool = False,
        ipblock_scope: str = "all",
        pod_cidrs: Optional[Sequence[str]] = None,
        expand_replicas: bool = False,
        namespace_labels: Optional[Mapping[str, Mapping[str, str]]] = None,
        cluster_pods: Optional[Sequence[str]] = None,
    ) -> "Cluster":
        """Reads YAML or JSON text (one or more documents). `source_name` names it in errors.

        Raises ParseError, ValidationError (ValueError)."""
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise TypeError(f"from_yaml takes str or bytes, not {type(text).__name__}")
        return cls._load([], [_netpol.TextInput(text, source_name, True)], engine, allow_self,
                         ipblock_scope, pod_cidrs, expand_replicas, namespace_labels,
                         cluster_pods)

    @classmethod
    def from_objects(
        cls,
        objects: Union[Mapping[str, Any], Iterable[Any]],
        *,
        engine: str = "engine",
        allow_self: bool = False,
        ipblock_scope: str = "all",
        pod_cidrs: Optional[Sequence[str]] = None,
        expand_replicas: bool = False,
        namespace_labels: Optional[Mapping[str, Mapping[str, str]]] = None,
        cluster_pods: Optional[Sequence[str]] = None,
    ) -> "Cluster":
        """Takes Kubernetes objects as Python dicts: plain manifests or
        ``ApiClient().sanitize_for_serialization(obj)`` (camelCase), ``obj.to_dict()`` of the
        Kubernetes Python client (snake_case, None for unset fields), or the client's model
        objects themselves. Lists (``{"kind": "PodList", "items": [...]}``) are read item by
        item; an item without ``kind`` (as the client returns list items) gets it from the
        list, the model class, or its fields (spec.podSelector: NetworkPolicy;
        spec.containers: Pod; no namespace and no spec: Namespace). Errors name the object as
        ``objects[i]`` (``objects[i].items[j]``) with its field path.

        Raises ParseError, ValidationError (ValueError), TypeError for non-dicts."""
        documents = to_json_documents(objects)
        texts = [_netpol.TextInput(text, name, False) for name, text in documents]
        return cls._load([], texts, engine, allow_self, ipblock_scope, pod_cidrs,
                         expand_replicas, namespace_labels, cluster_pods)

    # --- what the cluster holds ----------------------------------------------------------

    @property
    def pods(self) -> List[str]:
        """Every pod that takes part in pod networking, "namespace/name", sorted."""
        return self._impl.pods

    @property
    def namespaces(self) -> List[str]:
        """Every namespace, including those only referenced by pods or policies, sorted."""
        return self._impl.namespaces

    @property
    def policies(self) -> List[str]:
        """Every NetworkPolicy, "namespace/name", sorted."""
        return self._impl.policies

    @property
    def warnings(self) -> List[Diagnostic]:
        """Accepted, but worth a look: left-out pods (Succeeded, Failed, hostNetwork),
        duplicate pod IPs, kinds spelt in the wrong case, ..."""
        return self._impl.warnings

    @property
    def skipped_kinds(self) -> Dict[str, int]:
        """Kinds that were read but play no part (ConfigMap, Secret, ...) -> how many."""
        return self._impl.skipped_kinds

    @property
    def engine(self) -> str:
        return self._impl.engine

    @property
    def allow_self(self) -> bool:
        return self._impl.allow_self

    @property
    def ipblock_scope(self) -> str:
        return self._impl.ipblock_scope

    def pod_ips(self, pod: str) -> List[str]:
        """The pod's addresses (status.podIPs), in order."""
        return self._impl.pod_ips(pod)

    def pod_labels(self, pod: str) -> Dict[str, str]:
        return self._impl.pod_labels(pod)

    def synthesized_from(self, pod: str) -> Optional[str]:
        """"Deployment shop/api" when np made the pod from that workload, else None."""
        return self._impl.synthesized_from(pod)

    # --- verdicts ------------------------------------------------------------------------

    def allowed(self, source: str, destination: str, port: Union[int, str, None] = None,
                protocol: Optional[str] = None) -> bool:
        """Whether a connection from `source` to `destination` on `protocol`/`port` is
        allowed: egress at the source pod and ingress at the destination pod both admit it.

        ``port`` is a number (default 80) or a name: the destination pod's container port of
        that name for ``protocol`` (default TCP). ``destination`` may be a Service,
        ``"svc/namespace/name"``: ``port`` is then a Service port (number or name; may be
        left out when the Service has one), the protocol is that port's, and the answer is
        True only when every endpoint pod is allowed on its own targetPort.

        Raises PodNotFoundError (KeyError) for an unknown pod, KeyError for an unknown
        Service; ValueError for a bad port or protocol, when neither end is a pod, or when a
        Service has no endpoint pod (nothing would be evaluated)."""
        return self._impl.allowed(source, destination, port, protocol)

    def explain(self, source: str, destination: str, port: Union[int, str, None] = None,
                protocol: Optional[str] = None) -> Union[Explanation, ServiceExplanation]:
        """The verdict with its reasons: for each side, whether the pod is isolated, by which
        policies, and which rules admit the flow. ``print()`` it for the text the netpol
        command prints. For a Service destination (see ``allowed``), a ServiceExplanation:
        one Explanation per endpoint pod, and the selected pods that are no endpoint."""
        return self._impl.explain(source, destination, port, protocol)

    def services(self) -> List[str]:
        """Every Service, "namespace/name", sorted. Services are a query convenience: they
        change no verdict (NetworkPolicy sees pods and their ports)."""
        return self._impl.services()

    def matrix(self, port: int = 80, protocol: str = "TCP",
               group_by: Optional[str] = None) -> Union[Reachability, GroupedReachability]:
        """The truth table of every pod to every pod (rows: source, columns: destination).
        With ``group_by="workload"`` or ``"namespace"`` (``netpol matrix --group-by``): a
        GroupedReachability, one row and column per workload ("namespace/name"; a pod made
        from no workload is its own group) or namespace, each cell "allowed", "denied" or
        "mixed" over the pod pairs it covers."""
        if group_by not in (None, "workload", "namespace"):
            raise ValueError(f"group_by must be 'workload' or 'namespace', not {group_by!r}")
        cells = self._impl.matrix(port, protocol)
        impl = self._impl

        def explain(source: str, destination: str) -> Explanation:
            return impl.explain(source, destination, port, protocol)

        table = Reachability._from_cells(impl.pods, cells, port, protocol.upper(), explain)
        if group_by is None:
            return table
        if group_by == "namespace":
            return GroupedReachability(table, lambda pod: pod.split("/", 1)[0], group_by)

        def workload(pod: str) -> str:
            made_from = impl.synthesized_from(pod)  # "Deployment shop/api"
            return pod if made_from is None else made_from.split(" ", 1)[1]

        return GroupedReachability(table, workload, group_by)

    # --- analyses ------------------------------------------------------------------------

    def connections(self, source: str = "", destination: str = "",
                    ports: Optional[Sequence[Union[int, str]]] = None,
                    protocols: Optional[Sequence[str]] = None,
                    external: bool = True, explain: bool = False) -> List[Dict[str, Any]]:
        """Every ordered pair of endpoints that can connect, with exactly which ports per
        protocol, over every port: ``[{"from": "x/a", "to": "x/b", "ports": {"TCP": [(80, 80)]}}]``
        (the shape of ``netpol connections -o json``). Ends are pods ("namespace/name") and,
        unless ``external=False``, the address ranges outside the cluster that policies tell
        apart ("10.0.0.0-10.255.255.255"). ``source``/``destination`` filter the ends: a pod
        (``*`` globs), an IP or a CIDR. ``ports``: numbers, "8000-8090" ranges, names or "all".
        ``explain=True`` adds ``"why": {"egress": [...], "ingress": [...]}`` to each entry: the
        rules that decide its ports at the source and at the destination (``--explain``)."""
        return self._impl.connections(source, destination, _port_specs(ports),
                                      list(protocols or []), external, explain)

    def diff(self, other: "Cluster", source: str = "", destination: str = "",
             ports: Optional[Sequence[Union[int, str]]] = None,
             protocols: Optional[Sequence[str]] = None,
             external: bool = True, explain: bool = False) -> Dict[str, List[Dict[str, Any]]]:
        """What changes from this cluster to ``other``: ``{"added": [...], "removed": [...]}``,
        entries shaped as in ``connections()`` (ports allowed only after, only before). Empty
        lists when nothing changes; ``a.diff(b)`` is ``b.diff(a)`` with the lists swapped.
        ``explain=True`` adds ``"why"`` (what allows the ports in the state that allows them)
        and ``"why_not"`` (what denies them in the other state) to each entry."""
        return self._impl.diff(other._impl, source, destination, _port_specs(ports),
                               list(protocols or []), external, explain)

    def lint(self) -> List[Finding]:
        """Findings about policies that validate but probably do not do what was meant, as
        ``netpol lint`` reports them (codes NP101-NP109, documented in np/analysis/lint.h and
        the README): selectors that match no pod or namespace of the input, namespaces named
        but not defined, named ports no destination has, policies that change no connection,
        rules that admit everything, one-sided isolation, ipBlocks that hold pod addresses or
        split the pod CIDR np assigned addresses from. ``[f for f in c.lint() if f.severity
        != "info"]`` is what ``netpol lint`` fails on by default."""
        return [Finding(*t) for t in _netpol.lint(self._impl, self._pod_cidrs)]

    def __repr__(self) -> str:
        return (
            f"<netpol.Cluster {len(self.pods)} pods, {len(self.policies)} policies, "
            f"{len(self.namespaces)} namespaces; engine={self.engine!r}>"
        )

# Type stubs for netpol._netpol, the pybind11 module (bindings/python/_netpol.cc).
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

class Diagnostic:
    """One finding about the input, naming object and field path."""
    @property
    def severity(self) -> str: ...  # "error" or "warning"
    @property
    def kind(self) -> str: ...  # "NetworkPolicy", "Pod", "Namespace"; "" before it is known
    @property
    def object(self) -> str: ...  # "namespace/name" ("name" for a Namespace); "" if unknown
    @property
    def field(self) -> str: ...  # e.g. "spec.ingress[0].ports[1].endPort"; may be ""
    @property
    def message(self) -> str: ...
    # Not 0 only on the last entry of a list cut short (np keeps at most 1000 findings): how
    # many errors and warnings it stands for; its message says so.
    @property
    def omitted_errors(self) -> int: ...
    @property
    def omitted_warnings(self) -> int: ...
    @property
    def file(self) -> Optional[str]: ...  # the path, "<yaml>", "objects[3]"; None if none
    @property
    def line(self) -> Optional[int]: ...  # 1-based; None when unknown (from_objects)

class Rule:
    """A rule of a policy: spec.ingress[index] or spec.egress[index]."""
    @property
    def policy(self) -> str: ...  # "namespace/name"
    @property
    def direction(self) -> str: ...  # "Ingress" or "Egress"
    @property
    def index(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class DirectionVerdict:
    """What one side decided: egress at the source pod, or ingress at the destination pod."""
    @property
    def applies(self) -> bool: ...  # False when that end is outside the cluster
    @property
    def isolated(self) -> bool: ...
    @property
    def isolating_policies(self) -> List[str]: ...
    @property
    def allowing_rules(self) -> List[Rule]: ...
    @property
    def shared_addresses(self) -> List[str]:
        """Addresses of the pod that another live pod holds too: the pod is quarantined
        (every flow from or to it denied), see the README's "Shared addresses"."""
        ...
    @property
    def allowed(self) -> bool: ...

class Explanation:
    """A verdict on one flow with its reasons; str() is the text `netpol explain` prints."""
    @property
    def allowed(self) -> bool: ...
    @property
    def allowed_as_self(self) -> bool: ...
    @property
    def family(self) -> Optional[str]: ...  # "IPv4", "IPv6", None (no common family)
    @property
    def egress(self) -> DirectionVerdict: ...
    @property
    def ingress(self) -> DirectionVerdict: ...
    @property
    def source(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def protocol(self) -> str: ...

class ServiceExplanation:
    """Verdicts on every endpoint pod of a Service port; str() is the text `netpol explain
    --to svc/...` prints. Services are not a policy input: each verdict is pod to pod."""
    @property
    def allowed(self) -> bool: ...  # every endpoint pod allowed (False when there is none)
    @property
    def service(self) -> str: ...  # "namespace/name"
    @property
    def port(self) -> int: ...  # the Service port
    @property
    def port_name(self) -> str: ...  # "" for a single unnamed port
    @property
    def protocol(self) -> str: ...
    @property
    def target_port(self) -> str: ...  # as the Service writes it: "8080" or "http"
    @property
    def endpoints(self) -> List[Explanation]: ...  # one per endpoint pod, on its targetPort
    @property
    def not_endpoints(self) -> List[Tuple[str, str]]: ...  # (pod, why it is no endpoint)

class TextInput:
    def __init__(self, text: str, source_name: str, keep_lines: bool = ...) -> None: ...

class Cluster:
    @staticmethod
    def load(
        paths: Sequence[str],
        texts: Sequence[TextInput],
        engine: str = ...,
        allow_self: bool = ...,
        ipblock_scope: str = ...,
        pod_cidrs: Optional[Sequence[str]] = ...,
        expand_replicas: bool = ...,
        namespace_labels: Mapping[str, Mapping[str, str]] = ...,
        cluster_pods: Sequence[str] = ...,
    ) -> Cluster: ...
    @property
    def pods(self) -> List[str]: ...
    @property
    def namespaces(self) -> List[str]: ...
    @property
    def policies(self) -> List[str]: ...
    @property
    def warnings(self) -> List[Diagnostic]: ...
    @property
    def skipped_kinds(self) -> Dict[str, int]: ...
    @property
    def engine(self) -> str: ...
    @property
    def allow_self(self) -> bool: ...
    @property
    def ipblock_scope(self) -> str: ...
    def pod_ips(self, pod: str) -> List[str]: ...
    def pod_labels(self, pod: str) -> Dict[str, str]: ...
    def synthesized_from(self, pod: str) -> Optional[str]: ...
    def allowed(self, source: str, destination: str, port: Union[int, str, None] = ...,
                protocol: Optional[str] = ...) -> bool: ...
    def explain(
        self, source: str, destination: str, port: Union[int, str, None] = ...,
        protocol: Optional[str] = ...
    ) -> Union[Explanation, ServiceExplanation]: ...
    def services(self) -> List[str]: ...
    def connections(self, source: str, destination: str, ports: List[str],
                    protocols: List[str], external: bool,
                    explain: bool = ...) -> List[Dict[str, Any]]: ...
    def diff(self, other: Cluster, source: str, destination: str, ports: List[str],
             protocols: List[str], external: bool,
             explain: bool = ...) -> Dict[str, List[Dict[str, Any]]]: ...
    def matrix(self, port: int = ..., protocol: str = ...) -> bytes: ...

# np/analysis/lint.h: (code, name, severity, kind, object, field, file, line, message) per
# finding; netpol.Finding names them.
def lint(
    cluster: Cluster, pod_cidrs: Optional[Sequence[str]] = ...
) -> List[Tuple[str, str, str, str, str, str, Optional[str], Optional[int], str]]: ...

"""Kubernetes objects as Python dicts -> the JSON the loader reads.

``Cluster.from_objects`` accepts objects the way the Kubernetes Python client hands them out:

* plain manifests and ``ApiClient().sanitize_for_serialization(obj)``: camelCase keys, as the API
  writes them;
* ``obj.to_dict()``: snake_case attribute names (``pod_selector``, ``match_labels``,
  ``_from``, ``_except``, ``pod_i_ps``), ``None`` for every unset field, ``datetime`` values,
  and list items without ``kind``/``api_version``;
* the client's model objects themselves (anything with ``to_dict()``, e.g. ``V1Pod``).

Each object is turned into the API's camelCase JSON and handed to np's loader, which decodes
and validates it exactly as it reads files: there is one decoder, in C++. The conversion knows
which fields hold user data (labels, annotations, matchLabels, nodeSelector): their keys are
never rewritten.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any, Iterable, Iterator, List, Mapping, Tuple

__all__ = ["to_json_documents"]

# Fields whose value is a map of user-chosen keys (label keys may contain "_").
_USER_MAPS = frozenset(
    {"labels", "annotations", "matchLabels", "nodeSelector", "data", "binaryData", "stringData"}
)

# Attribute names of the Python client that plain camelCasing gets wrong.
_IRREGULAR = {
    "pod_ip": "podIP",
    "pod_i_ps": "podIPs",
    "pod_ips": "podIPs",
    "host_ip": "hostIP",
    "host_i_ps": "hostIPs",
    "host_ips": "hostIPs",
    "cluster_ip": "clusterIP",
    "cluster_i_ps": "clusterIPs",
    "external_i_ps": "externalIPs",
    "load_balancer_ip": "loadBalancerIP",
    "host_ipc": "hostIPC",
    "host_pid": "hostPID",
    "uid": "uid",
}

_KINDS = {
    "Pod": "v1",
    "Namespace": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
}


def _camel(key: str) -> str:
    irregular = _IRREGULAR.get(key)
    if irregular is not None:
        return irregular
    # `_from`, `_except` (the client's spelling of Python keywords), `except_`.
    key = key.strip("_")
    if "_" not in key:
        return key
    first, *rest = key.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _value(value: Any) -> Any:
    """A JSON-ready copy: camelCase keys (outside user maps), no None, dates as text."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if item is None:
                continue
            name = _camel(key) if isinstance(key, str) else key
            if name in _USER_MAPS and isinstance(item, Mapping):
                out[name] = {str(k): _scalar(v) for k, v in item.items() if v is not None}
            else:
                out[name] = _value(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_value(item) for item in value if item is not None]
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _value(value.to_dict())
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping) or isinstance(value, (list, tuple)):
        return _value(value)
    return str(value)


_MODEL_NAME = re.compile(r"^V\d+(?:(?:alpha|beta)\d+)?(?P<kind>[A-Z]\w*)$")


def _kind_of_model(obj: Any) -> str | None:
    m = _MODEL_NAME.match(type(obj).__name__)
    return m.group("kind") if m else None


def _infer_kind(obj: Mapping) -> str | None:
    """The kind of an object that lacks one (the client leaves it out of list items)."""
    spec = obj.get("spec")
    if isinstance(spec, Mapping):
        if "podSelector" in spec:
            return "NetworkPolicy"
        if "containers" in spec:
            return "Pod"
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping) and "namespace" not in metadata:
        if spec is None or (isinstance(spec, Mapping) and set(spec) <= {"finalizers"}):
            return "Namespace"
    return None


def _documents(obj: Any, name: str, kind_hint: str | None) -> Iterator[Tuple[str, dict]]:
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, Mapping):
        kind_hint = _kind_of_model(obj) or kind_hint
        obj = obj.to_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"{name}: expected a dict (a Kubernetes object), got {type(obj).__name__}"
        )
    doc = _value(obj)
    items = doc.get("items")
    kind = doc.get("kind")
    if isinstance(items, list) and (kind is None or kind == "List" or kind.endswith("List")):
        # A list (kubectl's `List`, the API's `PodList`, a client V1PodList): its items,
        # each on its own, so that items without kind get one inferred.
        item_kind = kind[:-4] if isinstance(kind, str) and kind.endswith("List") else None
        if kind_hint and kind_hint.endswith("List"):
            item_kind = item_kind or kind_hint[:-4]
        for i, item in enumerate(obj.get("items") or []):
            yield from _documents(item, f"{name}.items[{i}]", item_kind or None)
        return
    if kind is None:
        kind = kind_hint if kind_hint in _KINDS else _infer_kind(doc)
        if kind is None:
            raise ValueError(
                f"{name}: the object has no 'kind', and it cannot be told from its fields "
                "(give kind: Namespace, Pod or NetworkPolicy)"
            )
        doc = {"kind": kind, **doc}
        if "apiVersion" not in doc:
            doc = {"apiVersion": _KINDS[kind], **doc}
    yield name, doc


def to_json_documents(objects: Any) -> List[Tuple[str, str]]:
    """[(source name, one-line JSON text)] for the loader; raises TypeError/ValueError."""
    if isinstance(objects, Mapping) or (hasattr(objects, "to_dict") and not isinstance(objects, (list, tuple))):
        objects = [objects]
    if isinstance(objects, (str, bytes)):
        raise TypeError("from_objects takes dicts; for YAML or JSON text use Cluster.from_yaml")
    out: List[Tuple[str, str]] = []
    for i, obj in enumerate(_iterate(objects)):
        for name, doc in _documents(obj, f"objects[{i}]", None):
            out.append((name, json.dumps(doc, ensure_ascii=False, allow_nan=False)))
    return out


def _iterate(objects: Iterable) -> Iterable:
    try:
        return iter(objects)
    except TypeError:
        raise TypeError(
            f"from_objects takes a list of dicts, got {type(objects).__name__}"
        ) from None

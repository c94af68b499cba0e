"""The type stubs (netpol/__init__.pyi, netpol/_netpol.pyi) describe what the package has."""

import ast
from pathlib import Path

import netpol
from netpol import _netpol

PACKAGE = Path(netpol.__file__).parent


def stub_classes(path):
    """{class name: names of its methods and annotated attributes} of a stub file."""
    classes = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            classes[node.name] = members
    return classes


def public(cls):
    return {n for n in dir(cls) if not n.startswith("_")}


def test_py_typed_and_stubs_are_shipped():
    assert (PACKAGE / "py.typed").exists()
    assert (PACKAGE / "__init__.pyi").exists() and (PACKAGE / "_netpol.pyi").exists()


def test_package_stub_matches_runtime():
    classes = stub_classes(PACKAGE / "__init__.pyi")
    for name in netpol.__all__:
        assert name in classes or name in ("Diagnostic", "DirectionVerdict", "Explanation",
                                           "Rule", "ServiceExplanation"), \
            f"{name} missing from __init__.pyi"
    for name in ("Cluster", "Reachability"):
        runtime = public(getattr(netpol, name))
        stubbed = {n for n in classes[name] if not n.startswith("_")}
        assert runtime == stubbed, (name, sorted(runtime ^ stubbed))


def test_extension_stub_matches_runtime():
    classes = stub_classes(PACKAGE / "_netpol.pyi")
    for name, members in classes.items():
        runtime = public(getattr(_netpol, name))
        stubbed = {n for n in members if not n.startswith("_")}
        assert runtime == stubbed, (name, sorted(runtime ^ stubbed))

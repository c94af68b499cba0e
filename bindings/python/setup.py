"""Builds netpol._netpol from the np C++ sources of this repository, offline.

Needs only what Debian 12 ships: python3-setuptools, pybind11-dev, python3-dev, protobuf-compiler
and the -dev packages of Abseil, RE2, protobuf and yaml-cpp (the same the Bazel build links).
protoc generates proto/k8s.pb.{h,cc} into the build directory; nothing is written to the
source tree except setuptools' own build/ and *.egg-info (ignored by git).

    /usr/bin/python3 -m pip install --no-build-isolation ./bindings/python

NP_SOURCE_DIR overrides where the np sources are (default: two directories up from here).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("NP_SOURCE_DIR", HERE.parent.parent)).resolve()

# The np libraries behind the public API the module uses; their .cc files are read from
# np/BUILD.bazel, so that a source added to the Bazel target is compiled here too.
NP_TARGETS = (("np", "types"), ("np", "cluster"), ("np", "reference"), ("np", "engine"),
              ("np", "evaluator"), ("np", "services"), ("np/analysis", "connections"),
              ("np/analysis", "lint"))
# Used only if np/BUILD.bazel cannot be read.
FALLBACK_SOURCES = [
    "np/types.cc",
    "np/cluster.cc",
    "np/internal/yaml_tree.cc",
    "np/loader.cc",
    "np/validation.cc",
    "np/verdict.cc",
    "np/reference.cc",
    "np/engine.cc",
    "np/engine_compile.cc",
    "np/engine_explain.cc",
    "np/evaluator.cc",
    "np/services.cc",
    "np/analysis/connections.cc",
    "np/analysis/lint.cc",
]


def bazel_blocks(text, rule):
    """{name: body} of each `rule(...)` call of a BUILD file (simple, flat BUILD files)."""
    blocks = {}
    for block in text.split(rule + "(")[1:]:
        name = re.search(r'^\s*name\s*=\s*"([^"]+)"', block, re.M)
        if name:
            blocks[name.group(1)] = block
    return blocks


def np_sources():
    sources = []
    for package, target in NP_TARGETS:
        try:
            blocks = bazel_blocks((ROOT / package / "BUILD.bazel").read_text(), "cc_library")
        except OSError:
            return FALLBACK_SOURCES
        srcs = re.search(r"srcs\s*=\s*\[(.*?)\]", blocks.get(target, ""), re.S)
        if not srcs:
            return FALLBACK_SOURCES
        sources += [package + "/" + f for f in re.findall(r'"([^"]+\.cc)"', srcs.group(1))]
    return list(dict.fromkeys(sources))


# Abseil libraries to link if third_party/system.BUILD cannot be read (Debian 12's names).
FALLBACK_LIBRARIES = ["absl_base", "absl_status", "absl_statusor", "absl_strings",
                      "absl_str_format_internal", "absl_hash", "absl_raw_hash_set",
                      "absl_synchronization", "absl_int128", "absl_throw_delegate",
                      "absl_raw_logging_internal", "absl_cord", "absl_time",
                      "re2", "protobuf", "yaml-cpp"]


def system_libraries():
    """The -l flags of @system//:absl, :re2, :protobuf and :yaml_cpp, as Bazel links them."""
    build = ROOT / "third_party" / "system.BUILD"
    try:
        text = build.read_text()
    except OSError:
        return FALLBACK_LIBRARIES + ["pthread"]
    libraries = []
    for name, block in bazel_blocks(text, "cc_library").items():
        if name in ("absl", "re2", "protobuf", "yaml_cpp"):
            libraries += re.findall(r'"-l([^"]+)"', block)
    return list(dict.fromkeys(libraries))


def pybind11_include():
    try:
        import pybind11  # python3-pybind11, when installed

        return pybind11.get_include()
    except ImportError:
        return "/usr/include"  # pybind11-dev


class BuildWithProto(build_ext):
    """Generates proto/k8s.pb.{h,cc} with protoc and adds the np sources before compiling."""

    def run(self):
        # setuptools compares source and object times only, not the headers a source
        # includes: rebuild everything so that a changed np header is never missed.
        self.force = True
        protoc = os.environ.get("PROTOC") or shutil.which("protoc") or "/usr/bin/protoc"
        gen = Path(self.build_temp).resolve() / "np_gen"
        out = gen / "proto"
        out.mkdir(parents=True, exist_ok=True)
        subprocess.check_call(
            [protoc, f"--proto_path={ROOT / 'proto'}", f"--cpp_out={out}",
             str(ROOT / "proto" / "k8s.proto")]
        )
        for ext in self.extensions:
            # Absolute paths outside this directory are added here, not in setup(), which
            # takes only relative ones (and objects then land under build_temp).
            ext.sources += [str(ROOT / s) for s in np_sources()] + [str(out / "k8s.pb.cc")]
            ext.include_dirs.append(str(gen))
        super().run()


if not (ROOT / "np" / "cluster.h").exists():
    sys.exit(f"setup.py: np sources not found under {ROOT} (set NP_SOURCE_DIR)")

extension = Extension(
    "netpol._netpol",
    sources=["_netpol.cc"],
    include_dirs=[str(ROOT), pybind11_include()],
    libraries=system_libraries(),
    language="c++",
    # -g0: Debian's Python adds -g, which makes the module 25 MB.
    extra_compile_args=["-std=c++17", "-fvisibility=hidden", "-g0", "-Wno-sign-compare",
                        "-Wno-unused-parameter"],
)

setup(ext_modules=[extension], cmdclass={"build_ext": BuildWithProto})

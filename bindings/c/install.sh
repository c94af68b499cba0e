#!/usr/bin/env bash
# Installs np's C library into a prefix: the header (PREFIX/include/np/np.h), libnp.so.1
# (soname libnp.so.1, only np_* exported) with the libnp.so link, and PREFIX/lib/pkgconfig/np.pc.
#
#   bindings/c/install.sh /usr/local
#   cc agent.c $(PKG_CONFIG_PATH=/usr/local/lib/pkgconfig pkg-config --cflags --libs np)
#
# Builds with Bazel from the repository (offline). The library needs Debian 12's shared
# Abseil, RE2, yaml-cpp, protobuf and libbpf at run time (the packages of .ci/packages.sh).
set -euo pipefail
if (($# != 1)); then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
repo="$(cd "$(dirname "$0")/../.." && pwd)"
mkdir -p "$1"
prefix="$(cd "$1" && pwd)"
abi_major=1  # NP_ABI_VERSION in np.h; bump together with the soname in BUILD.bazel

(cd "$repo" && bazel build //bindings/c:libnp.so >&2)
bin="$(cd "$repo" && bazel info bazel-bin 2>/dev/null)"

install -d "$prefix/include/np" "$prefix/lib/pkgconfig"
install -m 0644 "$repo/bindings/c/np.h" "$prefix/include/np/np.h"
install -m 0755 "$bin/bindings/c/libnp.so" "$prefix/lib/libnp.so.$abi_major"
ln -sfn "libnp.so.$abi_major" "$prefix/lib/libnp.so"
cat > "$prefix/lib/pkgconfig/np.pc" <<PC
prefix=$prefix
includedir=\${prefix}/include
libdir=\${prefix}/lib

Name: np
Description: Kubernetes NetworkPolicy, evaluated exactly: the C ABI of np (np.h)
Version: $abi_major.0.0
Cflags: -I\${includedir}/np
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lnp
PC
echo "installed np (ABI $abi_major) into $prefix" >&2

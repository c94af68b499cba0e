#!/usr/bin/env bash
# Builds the netpol extension with Bazel and runs the Python tests (bindings/python/tests and
# the shop and tenants examples) with Debian's /usr/bin/python3, which has pytest and PyYAML
# (apt-get install python3-pytest python3-yaml). Run from anywhere in the repository:
#
#   bash bindings/python/run_tests.sh [pytest arguments...]
#
# The package is assembled in a temporary directory: netpol/*.py from the source tree plus the
# _netpol.so Bazel built, put first on PYTHONPATH.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
python="${PYTHON:-/usr/bin/python3}"

bazel build //bindings/python:_netpol.so
so="$(bazel info bazel-bin 2>/dev/null)/bindings/python/_netpol.so"

site="$(mktemp -d "${TMPDIR:-/tmp}/netpol-py.XXXXXX")"
trap 'rm -rf "$site"' EXIT
cp -r bindings/python/netpol "$site/netpol"
cp "$so" "$site/netpol/_netpol.so"
chmod u+w "$site/netpol/_netpol.so"

export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
"$python" -c 'import netpol, sys; sys.stderr.write("netpol from %s\n" % netpol.__file__)'
exec "$python" -m pytest -p no:cacheprovider \
  bindings/python/tests bindings/python/examples/shop bindings/python/examples/tenants "$@"

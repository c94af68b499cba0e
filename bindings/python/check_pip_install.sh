#!/usr/bin/env bash
# Checks the pip install path the way a user takes it: a fresh virtual environment that sees
# Debian's packages (pytest, PyYAML), `pip install --no-build-isolation ./bindings/python`
# offline, `import netpol` from outside the source tree, then the test suite against the
# installed package (its pytest plugin registered by the entry point). About two minutes:
# setup.py compiles the np sources. Run from anywhere in the repository:
#
#   bash bindings/python/check_pip_install.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

venv="$(mktemp -d "${TMPDIR:-/tmp}/netpol-venv.XXXXXX")"
trap 'rm -rf "$venv"' EXIT
/usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --no-build-isolation --no-index ./bindings/python
(cd / && "$venv/bin/python" -c 'import netpol; print("import netpol:", netpol.__file__)')
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -p no:cacheprovider -q \
  bindings/python/tests bindings/python/examples/shop "$@"

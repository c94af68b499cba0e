# Sourced by .ci/demo and .ci/test: installs what building and testing np needs from
# Debian 12 (nothing else is reachable: no GitHub, no PyPI).
np_install_packages() {
  local packages=(
    bazel-bootstrap clang libabsl-dev libre2-dev libprotobuf-dev protobuf-compiler
    libgtest-dev libbenchmark-dev libyaml-cpp-dev libbpf-dev libelf-dev zlib1g-dev
    pybind11-dev python3-dev python3-pytest python3-yaml python3-pip python3-setuptools
    python3-venv nftables iptables ipset iproute2 graphviz golang-go pkg-config
  )
  local missing=()
  for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
}

#!/bin/sh
# Builds np/loader_fuzzer.cc with clang's libFuzzer, AddressSanitizer and UBSan (outside Bazel,
# against Debian's yaml-cpp, Abseil, RE2 and protobuf) and runs it on testdata/loader/.
#
#   np/fuzz_loader.sh [SECONDS]     # default 60; run from anywhere
#
# Environment: FUZZ_DIR (work directory; default /tmp/np_loader_fuzz), FUZZ_JOBS (parallel
# fuzzing processes; default 1), FUZZ_MAX_LEN (largest input in bytes; default 65536).
# New interesting inputs go to $FUZZ_DIR/corpus; crashes to $FUZZ_DIR/crash-*. To keep a
# crash as a regression seed, copy it under testdata/loader/malformed/ with a telling name.
set -eu

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${FUZZ_DIR:-/tmp/np_loader_fuzz}"
jobs="${FUZZ_JOBS:-1}"
max_len="${FUZZ_MAX_LEN:-65536}"
libdir=/usr/lib/x86_64-linux-gnu

mkdir -p "$work/gen" "$work/corpus"
cd "$root"

# The object models, generated like the Bazel genrules do.
mkdir -p "$work/gen/proto"
protoc --proto_path=proto --cpp_out="$work/gen/proto" proto/k8s.proto proto/tiers.proto

# Every Abseil library Debian ships (which ones np needs changes as it grows).
absl_libs="$(for f in "$libdir"/libabsl_*.so; do
  b="$(basename "$f" .so)"; printf -- '-l%s ' "${b#lib}"; done)"

# shellcheck disable=SC2086  # $absl_libs is a list of flags
clang++ -std=c++17 -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$root" -I"$work/gen" \
  np/loader_fuzzer.cc np/loader.cc np/protobuf_loader.cc np/internal/yaml_tree.cc \
  np/cluster.cc np/validation.cc np/verdict.cc np/types.cc np/workloads.cc np/internal/text.cc \
  np/tiers/decode.cc np/tiers/validation.cc \
  "$work/gen/proto/k8s.pb.cc" "$work/gen/proto/tiers.pb.cc" \
  -lyaml-cpp -lre2 -lprotobuf -lpthread $absl_libs \
  -o "$work/loader_fuzzer"

# Tokens of YAML syntax and of the objects, so mutations find the interesting paths sooner.
cat > "$work/loader.dict" <<'EOF'
"apiVersion: "
"kind: "
"networking.k8s.io/v1"
"NetworkPolicy"
"NetworkPolicyList"
"Namespace"
"Pod"
"List"
"items:"
"metadata:"
"name: "
"namespace: "
"labels:"
"spec:"
"status:"
"podSelector:"
"namespaceSelector:"
"matchLabels:"
"matchExpressions:"
"ipBlock:"
"cidr: "
"except:"
"ingress:"
"egress:"
"from:"
"to:"
"ports:"
"port: "
"endPort: "
"protocol: "
"policyTypes:"
"containers:"
"containerPort: "
"hostNetwork: "
"podIPs:"
"- "
": "
"---\x0a"
"...\x0a"
"{"
"}"
"["
"]"
"&a "
"*a"
"<<: "
"!!str "
"!!int "
"? "
"|\x0a"
"\x22"
"'"
"\x5c"
"null"
"~"
"yes"
"0x"
"2147483648"
"\x09"
EOF

# -rss_limit_mb guards against runaway memory; -timeout against hangs (both are bugs).
# With FUZZ_JOBS > 1 libFuzzer writes fuzz-<n>.log files into the current directory: $work.
parallel=""
if [ "$jobs" -gt 1 ]; then parallel="-jobs=$jobs -workers=$jobs"; fi
cd "$work"
# shellcheck disable=SC2086  # $parallel is a list of flags
"$work/loader_fuzzer" "$work/corpus" "$root/testdata/loader" \
  -dict="$work/loader.dict" -max_len="$max_len" -max_total_time="$seconds" \
  -timeout=10 -rss_limit_mb=2048 $parallel \
  -artifact_prefix="$work/" -print_final_stats=1

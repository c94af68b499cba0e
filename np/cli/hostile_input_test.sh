#!/usr/bin/env bash
# Hostile inputs of a few MB, generated here, run by `netpol` under `ulimit -v`: each must end
# with exit 0, 1 or 2 (never a signal such as SIGABRT from an uncaught std::bad_alloc) and
# print a bounded amount. They are the reports of issue 8 (a 290 KB file that took 3.2 GB and
# printed 820 MB; a 1.09 MB file that aborted; aliases of a 1 MiB scalar) and inputs of up to
# 10 MB made of what the loader, validation and the cluster index pay for per byte: tiny list
# items, duplicate keys, one item per line, a flat list of nulls.
set -uo pipefail
netpol="$1"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
python=/usr/bin/python3
failures=0
# The address space the command may use (KiB): 1.25 GiB. netpol's default memory budget is
# then 3/4 of it, so running out is its own clean error, not the allocator's.
limit_kib=1310720
# At most this much output (bytes, stdout and stderr together).
max_output=$((2 << 20))

# hostile NAME WANT_EXIT_CODES PATTERN -- ARGS: runs netpol under the limit.
hostile() {
  local name="$1" want="$2" pattern="$3"
  shift 4
  local rc
  (ulimit -v "$limit_kib"; exec "$netpol" "$@") >"$tmp/out" 2>&1
  rc=$?
  local size
  size=$(wc -c <"$tmp/out")
  if [[ $rc -ge 128 ]]; then
    echo "FAIL $name: killed by signal $((rc - 128))"; tail -3 "$tmp/out"; failures=$((failures + 1))
  elif [[ " $want " != *" $rc "* ]]; then
    echo "FAIL $name: exit $rc, want one of: $want"; tail -3 "$tmp/out"; failures=$((failures + 1))
  elif [[ $size -gt $max_output ]]; then
    echo "FAIL $name: printed $size bytes"; failures=$((failures + 1))
  elif [[ -n "$pattern" ]] && ! grep -qF -- "$pattern" "$tmp/out"; then
    echo "FAIL $name: output lacks: $pattern"; tail -3 "$tmp/out" | cut -c1-300
    failures=$((failures + 1))
  else
    echo "ok   $name: exit $rc, $size bytes of output"
  fi
}

gen() {
  "$python" - "$@" <<'PY'
import sys
kind, out = sys.argv[1], sys.argv[2]
args = [int(a) for a in sys.argv[3:]]
policy = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
          "metadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n")
pods = "".join("---\n{apiVersion: v1, kind: Pod, metadata: {name: p%d, namespace: x}, "
               "status: {podIP: 10.0.0.%d}}\n" % (i, i) for i in (1, 2))
if kind == "long-name":  # a long name times many findings
    name_len, items = args
    text = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: " +
            "a" * name_len + "\n  namespace: x\nspec:\n  podSelector:\n    matchExpressions: [" +
            ",".join(["{}"] * items) + "]\n")
elif kind == "alias-bytes":  # aliases of one big scalar
    size, aliases = args
    text = ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns\n  annotations:\n"
            "    a: &a " + "x" * size + "\n    b: [" + ",".join(["*a"] * aliases) + "]\n")
elif kind == "flow-peers":  # tiny list items in a field that is read
    (n,) = args
    text = policy + "  ingress:\n  - from: [" + ",".join(["{}"] * n) + "]\n" + pods
elif kind == "block-items":  # one item per line: every item has a line of its own
    (n,) = args
    text = policy + "  ingress:\n  - ports:\n" + "    - {}\n" * n + pods
elif kind == "null-rules":  # rules that allow everything, one byte and a comma each
    (n,) = args
    text = policy + "  ingress: [" + ",".join(["{}"] * n) + "]\n" + pods
elif kind == "duplicate-keys":
    (n,) = args
    text = ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns\n  labels: {" +
            ",".join(["a: b"] * n) + "}\n")
elif kind == "kinds":  # documents of kinds np skips, each of its own kind
    (n,) = args
    text = "".join("---\n{kind: K%d}\n" % i for i in range(n))
elif kind == "nulls":  # a flat list of nulls: a YAML node per byte
    (n,) = args
    text = "a: [" + ",".join([""] * n) + "]\n"
else:
    sys.exit("unknown kind " + kind)
open(out, "w").write(text)
PY
}

# Issue 8's reports.
gen long-name "$tmp/long-name-290k.yaml" 100000 63000
hostile "290 KB: long name x 189001 errors" "2" "more errors not shown" -- \
  validate -f "$tmp/long-name-290k.yaml"
gen long-name "$tmp/long-name-1m.yaml" 200000 300000
hostile "1.09 MB: long name x 900001 errors" "2" "more errors not shown" -- \
  validate -f "$tmp/long-name-1m.yaml"
hostile "1.09 MB: check" "2" "input rejected" -- \
  check -f "$tmp/long-name-1m.yaml" --from x/a --to x/b
gen alias-bytes "$tmp/alias-200.yaml" 1048576 200
hostile "200 aliases of a 1 MiB scalar" "2" "aliases repeat more than" -- \
  validate -f "$tmp/alias-200.yaml"
gen alias-bytes "$tmp/alias-4000.yaml" 1048576 4000
hostile "4000 aliases of a 1 MiB scalar" "2" "aliases repeat more than" -- \
  validate -f "$tmp/alias-4000.yaml"
# Ten files of 10 MiB of aliases each: the alias budget (16 MiB) is one per load, not one
# per file.
gen alias-bytes "$tmp/alias-10.yaml" 1048576 10
hostile "the alias budget spans files" "2" "aliases repeat more than" -- \
  validate $(for i in 1 2 3 4 5 6 7 8 9 10; do echo -f "$tmp/alias-10.yaml"; done)

# Up to 10 MB of what costs most per byte.
gen flow-peers "$tmp/flow-peers.yaml" 3000000
hostile "9 MB: 3M empty peers, validate" "2" "more errors not shown" -- \
  validate -f "$tmp/flow-peers.yaml"
gen block-items "$tmp/block-items.yaml" 1200000
hostile "8 MB: 1.2M ports, one per line, validate" "0" "valid: 1 NetworkPolicies" -- \
  validate -f "$tmp/block-items.yaml"
hostile "8 MB: 1.2M ports, one per line, check" "0 2" "" -- \
  check -f "$tmp/block-items.yaml" --from x/p1 --to x/p2
gen null-rules "$tmp/null-rules.yaml" 3000000
hostile "9 MB: 3M rules that allow all, matrix" "0 2" "" -- matrix -f "$tmp/null-rules.yaml"
gen duplicate-keys "$tmp/duplicate-keys.yaml" 2000000
hostile "10 MB: 2M duplicate keys" "2" "more errors not shown" -- \
  validate -f "$tmp/duplicate-keys.yaml"
gen kinds "$tmp/kinds.yaml" 500000
hostile "10 MB: 500000 kinds np skips" "0" "and 499990 objects of 499990 other kinds" -- \
  validate -f "$tmp/kinds.yaml"
gen nulls "$tmp/nulls.yaml" 9000000
hostile "9 MB: 9M nulls in one list" "2" "Object 'Kind' is missing" -- validate -f "$tmp/nulls.yaml"

# A budget too small for the input is a message and exit 2.
hostile "--memory-budget=64 on 8 MB" "2" "needs more memory than the budget of 64 MiB" -- \
  validate -f "$tmp/block-items.yaml" --memory-budget=64

if [[ $failures -gt 0 ]]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all hostile-input tests passed"

#!/bin/bash
# `netpol probe --backend ebpf` on every upstream scenario (no mismatch allowed) and the
# update test (issue 5 item 5): swaps between two policy sets while probing; no flow that
# both deny may connect. Needs root; skips otherwise.
set -u
if [ "$(id -u)" != 0 ]; then echo "skipped: needs root"; exit 0; fi
NETPOL="$1"
UPSTREAM=testdata/upstream  # in the runfiles tree, the working directory of a test
status=0
"$NETPOL" probe --each -f "$UPSTREAM" --backend ebpf | grep -E '^(PASS|FAIL)' || status=1
[ "${PIPESTATUS[0]}" = 0 ] || status=1
for pair in "default-deny-all deny-egress-from-all-pods-in-namespace" \
            "allow-ingress-for-a-target deny-egress-on-client-side"; do
  set -- $pair
  "$NETPOL" probe -f "$UPSTREAM/$1.yaml" --swap-with "$UPSTREAM/$2.yaml" --backend ebpf \
      --swaps 60 | tail -n 3 || status=1
done
exit $status

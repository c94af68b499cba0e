#!/bin/bash
# Does this kernel drop packets that look up an interval set declared in the same commit as
# the rules that reach it? (nft.h, "Why the sets go one commit ahead of the rules".) As root:
# in a network namespace of its own, UDP is sent to 127.0.0.1:9 as fast as one process can
# while the OUTPUT hook is switched N times to a fresh interval map that maps every address to
# `accept`; a packet that misses the map meets `drop` (sendto fails with EPERM, counted).
#   one: map and base-chain rules in one commit (what np did before 2026-12-01);
#   two: the map one commit ahead of the rules (what np does now);
#   edit: the live map's elements around 127.0.0.1 split and merged in one commit each.
# Usage: set_commit_window.sh [one|two|edit] [switches, default 300]. Prints sent / accepted /
# dropped (udp_blast.py).
set -eu
mode=${1:-one}; n=${2:-300}
ns=np-setwindow-$$
ip netns add "$ns"
trap 'kill $sender 2>/dev/null || true; ip netns del "$ns"' EXIT
ip -n "$ns" link set lo up
in_ns() { ip netns exec "$ns" "$@"; }
in_ns nft -f - <<'NFT'
table inet t {
  chain ok_0 {
    accept
  }
  map m_0 {
    type ipv4_addr : verdict
    flags interval
    elements = { 0.0.0.0-127.0.0.0 : jump ok_0, 127.0.0.1-127.0.0.9 : jump ok_0, 127.0.0.10-255.255.255.255 : jump ok_0 }
  }
  chain out {
    type filter hook output priority 0; policy accept;
    udp dport 9 ip daddr vmap @m_0
    udp dport 9 drop
  }
}
NFT
in_ns python3 "$(dirname "$0")/udp_blast.py" $((n / 10 + 5)) "$mode" &
sender=$!
sleep 0.5
map_of() {  # the declaration of generation $1's chain and map
  printf 'add chain inet t ok_%d { accept; }\n' "$1"
  printf 'add map inet t m_%d { type ipv4_addr : verdict; flags interval; elements = { 0.0.0.0-127.0.0.0 : jump ok_%d, 127.0.0.1-127.0.0.9 : jump ok_%d, 127.0.0.10-255.255.255.255 : jump ok_%d }; }\n' "$1" "$1" "$1" "$1"
}
rules_of() {
  printf 'flush chain inet t out\nadd rule inet t out udp dport 9 ip daddr vmap @m_%d\nadd rule inet t out udp dport 9 drop\n' "$1"
}
for g in $(seq 1 "$n"); do
  case "$mode" in
    one) { map_of "$g"; rules_of "$g"; } | in_ns nft -f - ;;
    two) map_of "$g" | in_ns nft -f -; rules_of "$g" | in_ns nft -f - ;;
    edit)
      if [ $((g % 2)) = 1 ]; then
        printf 'delete element inet t m_0 { 127.0.0.1-127.0.0.9 }\nadd element inet t m_0 { 127.0.0.1-127.0.0.4 : jump ok_0, 127.0.0.5 : jump ok_0, 127.0.0.6-127.0.0.9 : jump ok_0 }\n'
      else
        printf 'delete element inet t m_0 { 127.0.0.1-127.0.0.4, 127.0.0.5, 127.0.0.6-127.0.0.9 }\nadd element inet t m_0 { 127.0.0.1-127.0.0.9 : jump ok_0 }\n'
      fi | in_ns nft -f - ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  if [ "$mode" != edit ]; then
    printf 'delete map inet t m_%d\ndelete chain inet t ok_%d\n' $((g - 1)) $((g - 1)) | in_ns nft -f -
  fi
done
wait $sender

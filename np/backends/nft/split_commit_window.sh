#!/bin/bash
# Can one packet run one base chain's old rules and a later base chain's new rules? (nft.h,
# "Two tables: the safety argument", F1 and case (4).) As root: in a network namespace of its
# own, UDP is sent to 127.0.0.1:9 as fast as one process can while two OUTPUT base chains,
# `e` (priority 0, table e: the egress side) and `i` (priority 1, table i: the ingress side),
# are switched N times between two programs that both deny that flow — old: e allows,
# i drops; new: e drops, i allows. A send that succeeds was admitted (counted); a drop is
# EPERM. `e` first runs F filler rules that match nothing, so that the time between a
# packet's two generation reads is long enough to be hit.
#   one:    both chains rewritten in one commit (a both-sided in-place edit, naive). Fails.
#   sides:  e's commit, then i's, each direction in the same order: the state between the
#           new->old switch (e old, i new) admits. Fails (the "mutated order").
#   and:    the conjunction: one commit making each side drop what either program drops,
#           a grace period (membarrier), then one commit writing the target program.
#   nowait: `and` without the grace period (a packet may span both commits). May fail.
#   single: one base chain holding both sides (np's one table today). Never fails.
#   pairs:  the generation switch of nft.h case (5) in miniature: each program is a pair of
#           tables (e_<g>, i_<g>) in one of two priority bands; the new pair is added beside
#           the old one (a packet runs both: old AND new), a grace period, then the old pair
#           is deleted. Never fails.
# Usage: split_commit_window.sh [one|sides|and|nowait|single|pairs] [switches, default 300]
#   [filler rules, default 300]. Prints sent, accepted (admitted), dropped (udp_blast.py);
#   exits 1 when any was admitted.
set -eu
mode=${1:-one}; n=${2:-300}; filler=${3:-300}
ns=np-splitwindow-$$
ip netns add "$ns"
sender=
trap '[ -z "$sender" ] || kill $sender 2>/dev/null || true; ip netns del "$ns"' EXIT
ip -n "$ns" link set lo up
in_ns() { ip netns exec "$ns" "$@"; }
fill() { for _ in $(seq 1 "$filler"); do printf 'meta mark 0x5a5a5a5a drop\n'; done; }
drop='udp dport 9 drop'
# side <table> <chain> <rule or empty>: the chain's rules replaced (filler first in e).
side() {
  printf 'flush chain inet %s %s\n' "$1" "$2"
  if [ "${1%%_*}" = e ] || [ "$2" = e_side ]; then fill | sed "s/^/add rule inet $1 $2 /"; fi
  [ -z "$3" ] || printf 'add rule inet %s %s %s\n' "$1" "$2" "$3"
}
# pair <g> <old|new> <band>: tables e_<g> and i_<g> holding that program, in priority band 0
# (0, 1) or 1 (10, 11): a pair's two chains are consecutive, two pairs do not interleave.
pair() {
  local t
  for t in e i; do
    printf 'add table inet %s_%s\nadd chain inet %s_%s out { type filter hook output priority %d; policy accept; }\n' \
      "$t" "$1" "$t" "$1" $((10 * $3 + $([ $t = e ] && echo 0 || echo 1)))
  done
  if [ "$2" = old ]; then side "e_$1" out ''; side "i_$1" out "$drop"
  else side "e_$1" out "$drop"; side "i_$1" out ''; fi
}
unpair() { printf 'delete table inet e_%s\ndelete table inet i_%s\n' "$1" "$1"; }
if [ "$mode" = pairs ]; then
  program() { :; }
  pair 0 old 0 | in_ns nft -f -
elif [ "$mode" = single ]; then
  in_ns nft -f - <<'NFT'
table inet s {
  chain e_side { }
  chain i_side { }
  chain out { type filter hook output priority 0; policy accept; jump e_side; jump i_side; }
}
NFT
  # One base chain: a packet reads one generation bit for both sides.
  program() {  # old | new
    if [ "$1" = old ]; then side s e_side ''; side s i_side "$drop"
    else side s e_side "$drop"; side s i_side ''; fi
  }
else
  in_ns nft -f - <<'NFT'
table inet e {
  chain out { type filter hook output priority 0; policy accept; }
}
table inet i {
  chain out { type filter hook output priority 1; policy accept; }
}
NFT
  program() {
    if [ "$1" = old ]; then side e out ''; side i out "$drop"
    else side e out "$drop"; side i out ''; fi
  }
fi
program old | in_ns nft -f -
in_ns python3 "$(dirname "$0")/udp_blast.py" $((n / 20 + 5)) "$mode" --accepted-fails &
sender=$!
sleep 0.5
grace() { python3 -c 'import ctypes; ctypes.CDLL(None).syscall(324, 1, 0, 0)'; }  # MEMBARRIER_CMD_GLOBAL
to=new
g=0
for _ in $(seq 1 "$n"); do
  case "$mode" in
    pairs)
      pair $((g + 1)) "$to" $(((g + 1) % 2)) | in_ns nft -f -
      grace
      unpair "$g" | in_ns nft -f - ;;
    one|single) program "$to" | in_ns nft -f - ;;
    sides)
      program "$to" | awk '/ e / {print}' | in_ns nft -f -
      program "$to" | awk '/ i / {print}' | in_ns nft -f - ;;
    and|nowait)
      { side e out "$drop"; side i out "$drop"; } | in_ns nft -f -
      [ "$mode" = nowait ] || grace
      program "$to" | in_ns nft -f - ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  if [ "$to" = new ]; then to=old; else to=new; fi
  g=$((g + 1))
done
status=0
wait $sender || status=$?
sender=
exit $status

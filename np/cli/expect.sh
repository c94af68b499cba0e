# Shared by the netpol shell tests: `source` it after setting `netpol` and `failures`.
#
# expect NAME EXIT [-n] PATTERN... -- ARGS: netpol ARGS must exit EXIT and print every
# PATTERN (after -n: must not print the following patterns); counts failures.
expect() {
  local name="$1" want="$2" negate=0
  shift 2
  local present=() absent=()
  while [[ "$1" != "--" ]]; do
    if [[ "$1" == "-n" ]]; then negate=1; elif ((negate)); then absent+=("$1"); else present+=("$1"); fi
    shift
  done
  shift
  local out rc
  out="$("$netpol" "$@" 2>&1)"
  rc=$?
  local problem=""
  [[ $rc -ne $want ]] && problem="exit $rc, want $want"
  for p in "${present[@]}"; do grep -qF -- "$p" <<<"$out" || problem="${problem:-output lacks: $p}"; done
  for p in "${absent[@]+"${absent[@]}"}"; do grep -qF -- "$p" <<<"$out" && problem="${problem:-output has: $p}"; done
  if [[ -n "$problem" ]]; then
    echo "FAIL $name: $problem"; echo "$out" | head -20; failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
}

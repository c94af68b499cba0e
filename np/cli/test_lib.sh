# Shared by netpol's shell tests: `run NAME EXPECTED_EXIT [grep patterns...] -- ARGS` runs
# "$netpol" ARGS and checks its exit code and that its output (stdout and stderr) holds each
# pattern; failures are counted in $failures.
failures=0

run() {
  local name="$1" want="$2"
  shift 2
  local patterns=()
  while [[ "$1" != "--" ]]; do patterns+=("$1"); shift; done
  shift
  local out rc
  out="$("$netpol" "$@" 2>&1)"
  rc=$?
  if [[ $rc -ne $want ]]; then
    echo "FAIL $name: exit $rc, want $want"; echo "$out" | head -20; failures=$((failures + 1)); return
  fi
  for p in "${patterns[@]}"; do
    if ! grep -qF -- "$p" <<<"$out"; then
      echo "FAIL $name: output lacks: $p"; echo "$out" | head -20; failures=$((failures + 1)); return
    fi
  done
  echo "ok   $name"
}

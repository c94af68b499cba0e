#!/bin/bash
# netpol agent's usage errors, before it touches any kernel (no root needed): each exits 2
# with a JSON log line naming the problem. The agent on real namespaces is
# np/agent:agent_kernel_test.
set -u
netpol="$1"
failures=0
source "$(dirname "$0")/expect.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo '{"type":"BOOKMARK","object":{}}' >"$tmp/events.json"

expect "help names the agent's flags" 0 "--events" "--metrics-address" "--remove" -- agent --help
expect "events needed" 2 '"level":"error"' "--events PATH (or - for stdin) is needed" -- agent --netns h16none
expect "events missing" 2 "--events $tmp/none: No such file" -- agent --events "$tmp/none"
expect "kind checked" 2 '--kind: \"Service\" is not Pod, Namespace, NetworkPolicy, AdminNetworkPolicy' -- \
  agent --events "$tmp/events.json" --kind Service
expect "interfaces checked" 2 '--interfaces: \"eth0\" is not NAMESPACE/POD=IFNAME' -- \
  agent --events "$tmp/events.json" --interfaces eth0
expect "metrics address checked" 2 "is not IPV4:PORT" -- \
  agent --events "$tmp/events.json" --metrics-address localhost
expect "negative interval" 2 "--min-interval must not be negative" -- \
  agent --events "$tmp/events.json" --min-interval=-1s
expect "unknown backend" 2 'no backend \"pf\"' -- agent --events "$tmp/events.json" --backend pf
expect "remove reads no events" 2 "--events does not apply to agent" -- \
  agent --remove --events "$tmp/events.json"
expect "a flag of another command" 2 "--port does not apply to agent" -- \
  agent --events "$tmp/events.json" --port 80
expect "invalid initial state" 2 "input rejected" -- \
  agent --events "$tmp/events.json" -f "$tmp/events.json"

[[ $failures -eq 0 ]] || { echo "$failures failed"; exit 1; }

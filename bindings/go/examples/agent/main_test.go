package main

import (
	"os"
	"strings"
	"testing"
)

// The agent on upstream's "allow only from a pod in a different namespace" scenario: x/a
// admits only y/a. Expected verdicts follow the specification: with the policy y/b -> x/a is
// denied; once the policy is deleted, x/a is isolated by nothing and everything is allowed.
func TestAgentFollowsWatchEvents(t *testing.T) {
	const scenario = "../../../../testdata/upstream/allow-only-from-pod-in-different-namespace.yaml"
	data, err := os.ReadFile(scenario)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "name: allow-ns-y-pod-a-via-namespace-pod-selector") {
		t.Fatal("scenario changed: the policy name is no longer there")
	}
	// As kubectl prints events: indented objects one after another; the second delete
	// repeats the first, as a relist may; the pod event has no kind (kind from -kind would
	// be needed, so it carries one here).
	events := `{
    "type": "DELETED",
    "object": {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "allow-ns-y-pod-a-via-namespace-pod-selector", "namespace": "x"}}
}
{"type": "DELETED", "object": {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
 "metadata": {"name": "allow-ns-y-pod-a-via-namespace-pod-selector", "namespace": "x"}}}
{"type": "ADDED", "object": {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
 "metadata": {"name": "deny-all", "namespace": "x"}, "spec": {"podSelector": {}}}}
{"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "12"}}}
{"type": "ADDED", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "broken"}, "spec": {"hostNetwork": 1}}}
`
	var out strings.Builder
	err = run(scenario, "", "", []string{"y/b:x/a:TCP:80", "y/a:x/a:TCP:80", "x/a:y/b:TCP:80"},
		strings.NewReader(events), &out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"initial: y/b -> x/a TCP/80: (start) -> denied",
		"initial: y/a -> x/a TCP/80: (start) -> allowed",
		"initial: x/a -> y/b TCP/80: (start) -> allowed",
		"event 1 (DELETED NetworkPolicy x/allow-ns-y-pod-a-via-namespace-pod-selector): y/b -> x/a TCP/80: denied -> allowed",
		// event 2 repeats the delete: ignored, nothing changes. Event 3 isolates every pod
		// of x for ingress with no rule: both flows into x/a are denied; x/a's egress is not
		// isolated (policyTypes default to Ingress only).
		"event 3 (ADDED NetworkPolicy x/deny-all): y/b -> x/a TCP/80: allowed -> denied",
		"event 3 (ADDED NetworkPolicy x/deny-all): y/a -> x/a TCP/80: allowed -> denied",
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(got) != len(want)+1 {
		t.Fatalf("got:\n%s", out.String())
	}
	for i, w := range want {
		if got[i] != w {
			t.Errorf("line %d:\n got %s\nwant %s", i, got[i], w)
		}
	}
	if !strings.HasPrefix(got[len(want)], "event 5 (ADDED Pod broken): not applied: ") ||
		!strings.Contains(got[len(want)], "hostNetwork") {
		t.Errorf("a bad object is reported with its field: %s", got[len(want)])
	}
}

package np

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Namespaces x and y; pods x/a (app=a), x/b (app=b), y/c (app=b); policy x/allow-b selects
// app=a and admits ingress from app=b pods of namespace x on TCP 80.
const clusterYAML = `
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Namespace
metadata: {name: "y"}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: node-1}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: "y", labels: {app: b}}
status: {podIP: 10.0.1.1}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{from: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 80}]}]
`

func build(t testing.TB) *Engine {
	t.Helper()
	cluster, err := Load([]byte(clusterYAML), "cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	engine, err := cluster.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	return engine
}

func buildLive(t *testing.T) (*Engine, *Live) {
	t.Helper()
	e := build(t)
	live, err := NewLive(e)
	if err != nil {
		t.Fatal(err)
	}
	return e, live
}

func pod(t testing.TB, e interface{ FindPod(string) (PodID, error) }, key string) PodID {
	t.Helper()
	id, err := e.FindPod(key)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return id
}

// must(t).ok(engine.Allowed(...)) is the verdict, failing the test on an error.
type checker struct{ t *testing.T }

func must(t *testing.T) checker { return checker{t} }

func (m checker) ok(got bool, err error) bool {
	m.t.Helper()
	if err != nil {
		m.t.Fatal(err)
	}
	return got
}

func codeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestVersion(t *testing.T) {
	if LibraryABIVersion() != ABIVersion {
		t.Fatalf("libnp ABI %d, package expects %d", LibraryABIVersion(), ABIVersion)
	}
}

func TestVerdicts(t *testing.T) {
	e := build(t)
	defer e.Close()
	a, b, c := pod(t, e, "x/a"), pod(t, e, "x/b"), pod(t, e, "y/c")
	if !must(t).ok(e.Allowed(b, a, TCP, 80)) {
		t.Error("x/b -> x/a TCP/80: the rule admits app=b of x")
	}
	if must(t).ok(e.Allowed(c, a, TCP, 80)) {
		t.Error("y/c -> x/a: a podSelector alone selects in the policy's namespace only")
	}
	if must(t).ok(e.Allowed(b, a, UDP, 80)) {
		t.Error("UDP/80: the port without protocol is TCP")
	}
	if !must(t).ok(e.AllowedPacket(netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1"), TCP, 80)) {
		t.Error("packet from x/b's address")
	}
	if must(t).ok(e.AllowedPacket(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.0.0.1"), TCP, 80)) {
		t.Error("an external source is denied at isolated x/a")
	}
	out := make([]byte, 3)
	if err := e.AllowedBatch([]PodQuery{{Source: b, Destination: a, Protocol: TCP, Port: 80},
		{Source: c, Destination: a, Protocol: TCP, Port: 80}, {Source: a, Destination: c, Protocol: UDP, Port: 9}}, out); err != nil {
		t.Fatal(err)
	}
	if string(out) != "\x01\x00\x01" {
		t.Errorf("batch: %v", out)
	}
	// No allocation on the batched verdict path (the first version allocated cgo's
	// pointer-check closure on every call).
	batch := []PodQuery{{Source: b, Destination: a, Protocol: TCP, Port: 80}}
	if n := testing.AllocsPerRun(100, func() { _ = e.AllowedBatch(batch, out) }); n != 0 {
		t.Errorf("AllowedBatch allocates %v times per call", n)
	}
	// Errors are values with codes.
	if _, err := e.FindPod("x/nobody"); codeOf(err) != CodeNotFound || !strings.Contains(err.Error(), "x/nobody") {
		t.Errorf("FindPod: %v", err)
	}
	if _, err := e.Allowed(a, 9999, TCP, 80); codeOf(err) != CodeOutOfRange {
		t.Errorf("bad id: %v", err)
	}
	if _, err := e.Allowed(a, b, Protocol(1), 80); codeOf(err) != CodeInvalidArgument {
		t.Errorf("ICMP: %v", err)
	}
	if err := e.AllowedBatch([]PodQuery{{Source: a, Destination: 9999, Protocol: TCP}}, out); codeOf(err) != CodeOutOfRange {
		t.Errorf("bad batch: %v", err)
	}
	if err := e.AllowedBatch(make([]PodQuery, 4), out); codeOf(err) != CodeInvalidArgument {
		t.Errorf("short out: %v", err)
	}
	// Explain names the policy and rule.
	v, err := e.Explain("x/b", "x/a", TCP, 80)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Allowed || !v.Ingress.Isolated || len(v.Ingress.IsolatingPolicies) != 1 || v.Ingress.IsolatingPolicies[0] != "x/allow-b" ||
		len(v.Ingress.AllowingRules) != 1 || v.Ingress.AllowingRules[0] != (RuleRef{"x/allow-b", "Ingress", 0}) || v.Egress.Isolated {
		t.Errorf("explain: %+v", v)
	}
	// Lower and render.
	ir, err := e.Lower()
	if err != nil || len(ir) == 0 {
		t.Fatalf("lower: %v", err)
	}
	text, err := Render(ir, "nft")
	if err != nil || !strings.Contains(text, "10.0.0.1") {
		t.Errorf("render: %v\n%s", err, text)
	}
	if _, err := Render(ir, "pf"); codeOf(err) != CodeNotFound {
		t.Errorf("unknown backend: %v", err)
	}
	if _, err := Render([]byte{0xff, 0xff, 0xff}, "nft"); codeOf(err) != CodeInvalidArgument {
		t.Errorf("bad IR: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load([]byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"+
		"spec: {podSelector: {}, ingress: [{ports: [{port: 80, endPort: 79}]}]}\n"), "p.yaml")
	if codeOf(err) != CodeInvalidArgument || !strings.Contains(err.Error(), "spec.ingress[0].ports[0].endPort") {
		t.Errorf("validation error with field path: %v", err)
	}
	if _, err := Load([]byte("\xff\xfe{{{: ["), "bad.yaml"); codeOf(err) != CodeInvalidArgument {
		t.Errorf("bad bytes: %v", err)
	}
	cluster, err := Load([]byte(clusterYAML), "c")
	if err != nil {
		t.Fatal(err)
	}
	cluster.Close()
	if _, err := cluster.Build(nil); codeOf(err) != CodeInvalidHandle {
		t.Errorf("use after Close: %v", err)
	}
}

// Objects as a client-go informer hands them out (no kind, no apiVersion), and the deletes
// of a relist, which may name objects already gone.
func TestInformerObjectsAndRelistDeletes(t *testing.T) {
	e, live := buildLive(t)
	defer e.Close()
	defer live.Close()
	r, err := live.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	informerPod := []byte(`{"metadata":{"name":"d","namespace":"x","labels":{"app":"b"}},"status":{"podIP":"10.0.0.4"}}`)
	if err := live.Apply([]Change{{Object: informerPod}}); codeOf(err) != CodeInvalidArgument || !strings.Contains(err.Error(), "Kind") {
		t.Errorf("without a kind the object cannot be read: %v", err)
	}
	if err := live.Apply([]Change{{Kind: "Pod", Object: informerPod}}); err != nil {
		t.Fatal(err)
	}
	a, d := pod(t, r, "x/a"), pod(t, r, "x/d")
	if !must(t).ok(r.Allowed(d, a, TCP, 80)) {
		t.Error("x/d is app=b of x: admitted")
	}
	// The reader's batch: same verdict, no allocation, the bad query named by its index.
	out := make([]byte, 2)
	batch := []PodQuery{{Source: d, Destination: a, Protocol: TCP, Port: 80}, {Source: a, Destination: 9999, Protocol: TCP, Port: 80}}
	if err := r.AllowedBatch(batch[:1], out); err != nil || out[0] != 1 {
		t.Errorf("reader batch: %v %v", out, err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = r.AllowedBatch(batch[:1], out) }); n != 0 {
		t.Errorf("Reader.AllowedBatch allocates %v times per call", n)
	}
	if err := r.AllowedBatch(batch, out); codeOf(err) != CodeOutOfRange || !strings.Contains(err.Error(), "query 1:") {
		t.Errorf("bad reader batch: %v", err)
	}
	del := Change{Delete: true, Kind: "Pod", Namespace: "x", Name: "d"}
	if err := live.Apply([]Change{del}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Allowed(d, a, TCP, 80); codeOf(err) != CodeOutOfRange {
		t.Errorf("deleted pod: %v", err)
	}
	if err := live.Apply([]Change{del}); codeOf(err) != CodeInvalidArgument {
		t.Errorf("a second delete is an error by default: %v", err)
	}
	relist := []Change{del, del, {Delete: true, Kind: "NetworkPolicy", Namespace: "x", Name: "allow-b"},
		{Delete: true, Kind: "Namespace", Name: "gone"}}
	if err := live.Apply(relist, IgnoreMissing); err != nil {
		t.Fatalf("relist deletes: %v", err)
	}
	c := pod(t, r, "y/c")
	if !must(t).ok(r.Allowed(c, a, TCP, 80)) {
		t.Error("the policy's delete in the relist batch was applied")
	}
	// Watch events, as kubectl prints them, with a kindless informer object.
	event := []byte(`{"type":"ADDED","object":` + string(informerPod) + `}`)
	if err := live.ApplyEvent(event, "Pod"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.FindPod("x/d"); err != nil {
		t.Error(err)
	}
	gone := []byte(`{"type":"DELETED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"zz","namespace":"x"}}}`)
	if err := live.ApplyEvent(gone, ""); codeOf(err) != CodeInvalidArgument {
		t.Errorf("deleting what is absent: %v", err)
	}
	if err := live.ApplyEvent(gone, "", IgnoreMissing); err != nil {
		t.Errorf("relist: %v", err)
	}
	if err := live.ApplyEvent([]byte(`{"type":"ERROR","object":{"code":410}}`), ""); codeOf(err) != CodeFailedPrecondition {
		t.Errorf("ERROR event: %v", err)
	}
	// The shared-address quarantine shows in Explain.
	shared := []byte(`{"metadata":{"name":"e","namespace":"y"},"status":{"podIP":"10.0.0.2"}}`)
	if err := live.Apply([]Change{{Kind: "Pod", Object: shared}}); err != nil {
		t.Fatal(err)
	}
	snap, err := live.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	v, err := snap.Explain("x/b", "x/a", TCP, 80)
	if err != nil {
		t.Fatal(err)
	}
	if v.Allowed || len(v.Egress.SharedAddresses) != 1 || v.Egress.SharedAddresses[0] != "10.0.0.2" {
		t.Errorf("quarantine: %+v", v)
	}
}

// Readers on many goroutines while a writer flips the policy: every verdict is one of the
// two the policy allows, never an error. Meaningful under -race and GODEBUG=cgocheck=2.
func TestConcurrentReadersAndWriter(t *testing.T) {
	e, live := buildLive(t)
	defer e.Close()
	defer live.Close()
	a, b, c := pod(t, e, "x/a"), pod(t, e, "x/b"), pod(t, e, "y/c")
	policy := []byte(`{"metadata":{"name":"allow-b","namespace":"x"},"spec":{"podSelector":{"matchLabels":{"app":"a"}},` +
		`"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"b"}}}],"ports":[{"port":80}]}]}}`)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var verdicts atomic.Int64
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := live.NewReader()
			if err != nil {
				t.Error(err)
				return
			}
			defer r.Close()
			out := make([]byte, 2)
			queries := []PodQuery{{Source: b, Destination: a, Protocol: TCP, Port: 80}, {Source: c, Destination: a, Protocol: TCP, Port: 80}}
			for !stop.Load() {
				if err := r.AllowedBatch(queries, out); err != nil {
					t.Error(err)
					return
				}
				// x/b is admitted with or without the policy.
				if out[0] != 1 {
					t.Error("x/b -> x/a denied")
					return
				}
				verdicts.Add(2)
			}
		}()
	}
	for round := 0; round < 200; round++ {
		change := Change{Delete: true, Kind: "NetworkPolicy", Namespace: "x", Name: "allow-b"}
		if round%2 == 1 {
			change = Change{Kind: "NetworkPolicy", Object: policy}
		}
		if err := live.Apply([]Change{change}); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if verdicts.Load() == 0 {
		t.Error("no reader ran")
	}
}

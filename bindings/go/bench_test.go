package np

import (
	"fmt"
	"strings"
	"testing"
)

// A synthetic cluster: 50 namespaces of 20 pods (app=app-0..4), each namespace with two
// policies (one admitting app-1 on TCP 80, one from another namespace's app-2 on 443).
func syntheticCluster(b *testing.B) *Engine {
	var s strings.Builder
	for n := 0; n < 50; n++ {
		fmt.Fprintf(&s, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns-%d, labels: {team: t-%d}}\n", n, n%5)
		for p := 0; p < 20; p++ {
			fmt.Fprintf(&s, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p-%d, namespace: ns-%d, labels: {app: app-%d}}\nstatus: {podIP: 10.%d.%d.%d}\n",
				p, n, p%5, n/200, n%200, p+1)
		}
		fmt.Fprintf(&s, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: ns-%d}\n"+
			"spec: {podSelector: {matchLabels: {app: app-0}}, ingress: [{from: [{podSelector: {matchLabels: {app: app-1}}}], ports: [{port: 80}]}]}\n", n)
		fmt.Fprintf(&s, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: api, namespace: ns-%d}\n"+
			"spec: {podSelector: {matchLabels: {app: app-3}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: t-%d}}, podSelector: {matchLabels: {app: app-2}}}], ports: [{port: 443}]}]}\n", n, (n+1)%5)
	}
	cluster, err := Load([]byte(s.String()), "synthetic")
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.Close()
	e, err := cluster.Build(nil)
	if err != nil {
		b.Fatal(err)
	}
	return e
}

func queries(b *testing.B, e *Engine, n int) []PodQuery {
	var ids []PodID
	for ns := 0; ns < 50; ns++ {
		for p := 0; p < 20; p++ {
			ids = append(ids, pod(b, e, fmt.Sprintf("ns-%d/p-%d", ns, p)))
		}
	}
	q := make([]PodQuery, n)
	for i := range q {
		port := uint16(80)
		if i%2 == 1 {
			port = 443
		}
		q[i] = PodQuery{Source: ids[(i*7919)%len(ids)], Destination: ids[(i*104729+3)%len(ids)], Protocol: TCP, Port: port}
	}
	return q
}

// One verdict per cgo call.
func BenchmarkAllowed(b *testing.B) {
	e := syntheticCluster(b)
	defer e.Close()
	q := queries(b, e, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x := &q[i&1023]
		if _, err := e.Allowed(x.Source, x.Destination, x.Protocol, x.Port); err != nil {
			b.Fatal(err)
		}
	}
}

// 1024 verdicts per cgo call; ns/op is per verdict.
func BenchmarkAllowedBatch(b *testing.B) {
	e := syntheticCluster(b)
	defer e.Close()
	q := queries(b, e, 1024)
	out := make([]byte, len(q))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(q) {
		if err := e.AllowedBatch(q, out); err != nil {
			b.Fatal(err)
		}
	}
}

// A reader of a live engine on the synthetic cluster, 1024 queries, and what closes them.
func syntheticReader(b *testing.B) (*Reader, []PodQuery, func()) {
	e := syntheticCluster(b)
	live, err := NewLive(e)
	if err != nil {
		b.Fatal(err)
	}
	r, err := live.NewReader()
	if err != nil {
		b.Fatal(err)
	}
	return r, queries(b, e, 1024), func() {
		r.Close()
		live.Close()
		e.Close()
	}
}

// Through a live engine's reader (one Pin per call).
func BenchmarkReaderAllowed(b *testing.B) {
	r, q, done := syntheticReader(b)
	defer done()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x := &q[i&1023]
		if _, err := r.Allowed(x.Source, x.Destination, x.Protocol, x.Port); err != nil {
			b.Fatal(err)
		}
	}
}

// A live engine's reader, 1024 verdicts per cgo call; ns/op is per verdict.
func BenchmarkReaderAllowedBatch(b *testing.B) {
	r, q, done := syntheticReader(b)
	defer done()
	out := make([]byte, len(q))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(q) {
		if err := r.AllowedBatch(q, out); err != nil {
			b.Fatal(err)
		}
	}
}

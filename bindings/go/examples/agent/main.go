// Command agent is a CNI agent in miniature: it loads a cluster, follows watch events and
// prints how the verdicts of chosen flows change.
//
//	kubectl get namespaces,pods,networkpolicies -A -o yaml > cluster.yaml
//	kubectl get pods -A --watch --output-watch-events -o json |
//	    agent -f cluster.yaml -flow y/b:x/a:TCP:80 -flow x/a:10.0.0.9:UDP:53
//
// Each watch event ({"type": ..., "object": ...}; kubectl prints them indented, one after
// another) is applied to a live engine; deletes of objects already gone are ignored, as after
// a relist. After every event, each flow whose verdict changed is printed:
//
//	event 3 (ADDED Pod x/a): y/b -> x/a TCP/80: denied -> allowed
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"np.local/np"
)

type flow struct {
	text     string
	from, to string
	protocol np.Protocol
	port     uint16
	last     string // "allowed", "denied", or why there is no verdict
}

type flowList []string

func (f *flowList) String() string     { return strings.Join(*f, ",") }
func (f *flowList) Set(s string) error { *f = append(*f, s); return nil }

func parseFlow(text string) (flow, error) {
	parts := strings.Split(text, ":")
	// An IPv6 address has colons of its own: the last two fields are protocol and port.
	if len(parts) < 4 {
		return flow{}, fmt.Errorf("flow %q: want FROM:TO:PROTOCOL:PORT", text)
	}
	protoText, portText := parts[len(parts)-2], parts[len(parts)-1]
	ends := parts[:len(parts)-2]
	var from, to string
	if len(ends) == 2 {
		from, to = ends[0], ends[1]
	} else {
		return flow{}, fmt.Errorf("flow %q: write IPv6 ends as pods, or use IPv4", text)
	}
	protocols := map[string]np.Protocol{"TCP": np.TCP, "UDP": np.UDP, "SCTP": np.SCTP}
	protocol, ok := protocols[strings.ToUpper(protoText)]
	if !ok {
		return flow{}, fmt.Errorf("flow %q: protocol must be TCP, UDP or SCTP", text)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return flow{}, fmt.Errorf("flow %q: port: %v", text, err)
	}
	return flow{text: fmt.Sprintf("%s -> %s %s/%d", from, to, strings.ToUpper(protoText), port),
		from: from, to: to, protocol: protocol, port: uint16(port)}, nil
}

// verdict asks the current snapshot: through a reader for pod pairs (no allocation), by
// explain otherwise (an end given as an address).
func verdict(reader *np.Reader, live *np.Live, f flow) string {
	if _, err := netip.ParseAddr(f.from); err != nil {
		if _, err := netip.ParseAddr(f.to); err != nil {
			s, err1 := reader.FindPod(f.from)
			d, err2 := reader.FindPod(f.to)
			if err1 != nil || err2 != nil {
				return "no such pod"
			}
			ok, err := reader.Allowed(s, d, f.protocol, f.port)
			if err != nil {
				return err.Error()
			}
			return word(ok)
		}
	}
	snapshot, err := live.Snapshot()
	if err != nil {
		return err.Error()
	}
	defer snapshot.Close()
	v, err := snapshot.Explain(f.from, f.to, f.protocol, f.port)
	if err != nil {
		return "no such pod"
	}
	return word(v.Allowed)
}

func word(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}

func main() {
	var flows flowList
	clusterFile := flag.String("f", "", "initial cluster (YAML or JSON, as kubectl get -o yaml prints it); empty: none")
	kind := flag.String("kind", "", "kind of event objects that lack one (Pod, Namespace, NetworkPolicy)")
	nodeName := flag.String("node", "", "enforce only this node's pods")
	flag.Var(&flows, "flow", "FROM:TO:PROTOCOL:PORT to follow (repeat); FROM/TO are namespace/name or an IPv4 address")
	flag.Parse()
	if err := run(*clusterFile, *kind, *nodeName, flows, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run(clusterFile, kind, nodeName string, flowTexts []string, events io.Reader, out io.Writer) error {
	var followed []flow
	for _, text := range flowTexts {
		f, err := parseFlow(text)
		if err != nil {
			return err
		}
		followed = append(followed, f)
	}
	var data []byte
	if clusterFile != "" {
		var err error
		if data, err = os.ReadFile(clusterFile); err != nil {
			return err
		}
	}
	cluster, err := np.Load(data, clusterFile)
	if err != nil {
		return err
	}
	engine, err := cluster.Build(&np.Options{NodeName: nodeName})
	cluster.Close()
	if err != nil {
		return err
	}
	live, err := np.NewLive(engine)
	engine.Close()
	if err != nil {
		return err
	}
	defer live.Close()
	reader, err := live.NewReader()
	if err != nil {
		return err
	}
	defer reader.Close()

	w := bufio.NewWriter(out)
	defer w.Flush()
	report := func(label string) {
		for i := range followed {
			f := &followed[i]
			now := verdict(reader, live, *f)
			if now != f.last {
				fmt.Fprintf(w, "%s: %s: %s -> %s\n", label, f.text, orNone(f.last), now)
				f.last = now
			}
		}
		w.Flush()
	}
	report("initial")
	decoder := json.NewDecoder(bufio.NewReader(events))
	for n := 1; ; n++ {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("event %d: %v", n, err)
		}
		var head struct {
			Type   string
			Object struct {
				Kind     string
				Metadata struct{ Namespace, Name string }
			}
		}
		_ = json.Unmarshal(raw, &head) // only for the label; np reads the event itself
		objectKind := head.Object.Kind
		if objectKind == "" {
			objectKind = kind
		}
		label := fmt.Sprintf("event %d (%s %s %s)", n, head.Type, objectKind,
			strings.TrimPrefix(head.Object.Metadata.Namespace+"/"+head.Object.Metadata.Name, "/"))
		if err := live.ApplyEvent(raw, kind, np.IgnoreMissing); err != nil {
			// A bad object is reported and skipped; the engine keeps its last good state.
			fmt.Fprintf(w, "%s: not applied: %v\n", label, err)
			continue
		}
		report(label)
	}
}

func orNone(s string) string {
	if s == "" {
		return "(start)"
	}
	return s
}

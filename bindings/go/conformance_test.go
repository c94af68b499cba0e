package np

// The engine through Go against the expected truth tables of upstream's e2e scenarios and
// the documentation examples (testdata/upstream, testdata/docs; transcribed from upstream,
// never computed by np). The files' ReachabilityExpectation documents are read here with a
// few lines of text handling, since the standard library has no YAML.

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

type expectedCase struct {
	protocol Protocol
	port     uint16
	header   []string   // destination pods
	rows     [][]string // source pod, then one cell per destination
}

type expectedFlow struct {
	from, to string
	protocol Protocol
	port     uint16
	allowed  bool
}

type expectation struct {
	name                          string
	alwaysAllowSelf, externalOnly bool
	cases                         []expectedCase
	flows                         []expectedFlow
}

var flowLine = regexp.MustCompile(`^- \{from: "?([^",]+)"?, to: "?([^",]+)"?, protocol: (\w+), port: (\d+), allowed: (true|false)\}`)

func protocolOf(t *testing.T, text string) Protocol {
	switch text {
	case "TCP":
		return TCP
	case "UDP":
		return UDP
	case "SCTP":
		return SCTP
	}
	t.Fatalf("unknown protocol %q", text)
	return 0
}

func readExpectations(t *testing.T, text string) []expectation {
	var out []expectation
	for _, doc := range strings.Split(text, "\n---\n") {
		if !strings.Contains(doc, "\nkind: ReachabilityExpectation") {
			continue
		}
		e := expectation{}
		lines := strings.Split(doc, "\n")
		var current *expectedCase
		inTable := false
		for _, line := range lines {
			trimmed := strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "  name: ") && e.name == "":
				e.name = strings.TrimPrefix(line, "  name: ")
			case trimmed == "alwaysAllowSelf: true":
				e.alwaysAllowSelf = true
			case trimmed == "ipBlockScope: ExternalOnly":
				e.externalOnly = true
			case strings.HasPrefix(line, "- protocol: "):
				e.cases = append(e.cases, expectedCase{protocol: protocolOf(t, strings.TrimPrefix(line, "- protocol: "))})
				current = &e.cases[len(e.cases)-1]
				inTable = false
			case strings.HasPrefix(line, "  port: ") && current != nil:
				p, err := strconv.Atoi(strings.TrimPrefix(line, "  port: "))
				if err != nil {
					t.Fatal(err)
				}
				current.port = uint16(p)
			case strings.HasPrefix(line, "  table: |"):
				inTable = true
			case inTable && strings.HasPrefix(line, "    ") && trimmed != "":
				fields := strings.Fields(trimmed)
				if current.header == nil {
					if fields[0] == "-" {
						fields = fields[1:]
					}
					current.header = fields
				} else {
					current.rows = append(current.rows, fields)
				}
			case flowLine.MatchString(line):
				m := flowLine.FindStringSubmatch(line)
				port, _ := strconv.Atoi(m[4])
				e.flows = append(e.flows, expectedFlow{m[1], m[2], protocolOf(t, m[3]), uint16(port), m[5] == "true"})
				inTable = false
			default:
				if !strings.HasPrefix(line, "    ") {
					inTable = false
				}
			}
		}
		out = append(out, e)
	}
	return out
}

func TestConformanceData(t *testing.T) {
	var files []string
	for _, dir := range []string{"upstream", "docs"} {
		found, err := filepath.Glob(filepath.Join("..", "..", "testdata", dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, found...)
	}
	if len(files) < 20 {
		t.Fatalf("found only %d scenario files", len(files))
	}
	cells := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		expectations := readExpectations(t, string(data))
		if len(expectations) == 0 {
			t.Fatalf("%s: no expectation read", file)
		}
		cluster, err := Load(data, file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, e := range expectations {
			engine, err := cluster.Build(&Options{AlwaysAllowSelf: e.alwaysAllowSelf, IPBlockExternalOnly: e.externalOnly})
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			for _, c := range e.cases {
				var queries []PodQuery
				var want []byte
				for _, row := range c.rows {
					for j, cell := range row[1:] {
						if cell == "?" {
							continue
						}
						got, err := engine.AllowedKeys(row[0], c.header[j], c.protocol, c.port)
						if err != nil {
							t.Fatalf("%s: %v", file, err)
						}
						if got != (cell == ".") {
							t.Errorf("%s %s: %s -> %s %d/%d: got allowed=%v, upstream expects %q",
								file, e.name, row[0], c.header[j], c.protocol, c.port, got, cell)
						}
						s, _ := engine.FindPod(row[0])
						d, _ := engine.FindPod(c.header[j])
						queries = append(queries, PodQuery{Source: s, Destination: d, Protocol: c.protocol, Port: c.port})
						if cell == "." {
							want = append(want, 1)
						} else {
							want = append(want, 0)
						}
						cells++
					}
				}
				got := make([]byte, len(queries))
				if err := engine.AllowedBatch(queries, got); err != nil {
					t.Fatal(err)
				}
				if string(got) != string(want) {
					t.Errorf("%s %s: batch verdicts differ from upstream's table", file, e.name)
				}
			}
			for _, f := range e.flows {
				v, err := engine.Explain(f.from, f.to, f.protocol, f.port)
				if err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				if v.Allowed != f.allowed {
					t.Errorf("%s %s: flow %s -> %s: got %v, upstream expects %v", file, e.name, f.from, f.to, v.Allowed, f.allowed)
				}
				cells++
			}
			engine.Close()
		}
		cluster.Close()
	}
	if cells < 1000 {
		t.Fatalf("checked only %d verdicts", cells)
	}
	t.Logf("%d expected verdicts checked in %d files", cells, len(files))
}

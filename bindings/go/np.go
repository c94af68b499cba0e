// Package np is the Go binding of np: Kubernetes NetworkPolicy evaluated exactly, for CNI
// agents. It wraps the C ABI (np.h of the installed libnp, found with pkg-config) through cgo.
//
//	cluster, err := np.Load(yamlOrJSON, "dump.yaml")
//	engine, err := cluster.Build(&np.Options{NodeName: "node-1"})
//	a, _ := engine.FindPod("x/a")
//	b, _ := engine.FindPod("y/b")
//	ok, err := engine.Allowed(b, a, np.TCP, 80)
//
//	live, err := np.NewLive(engine)             // follows watch events
//	err = live.Apply(np.Change{Kind: "Pod", Object: informerJSON})   // no kind in the object
//	err = live.Apply(np.Change{Delete: true, Kind: "Pod", Namespace: "x", Name: "a"})
//	reader, _ := live.NewReader()               // one per goroutine
//	ok, err = reader.Allowed(b, a, np.TCP, 80)
//
// Thread safety: Cluster and Engine are immutable and safe for concurrent use. Live is safe
// for concurrent use (writers are serialized; readers never wait). A Reader belongs to one
// goroutine at a time. Close releases the C memory at once; otherwise a finalizer does.
package np

/*
#cgo pkg-config: np
#include <stdlib.h>
#include "np.h"

// The verdict path takes handles as integers: they point to C memory, and cgo's pointer
// checks on pointer arguments would cost a closure and an allocation per call.
static inline int np_go_engine_allowed(uintptr_t e, uint32_t s, uint32_t d, uint8_t p,
                                       uint16_t port) {
  return np_engine_allowed((const np_engine*)e, s, d, p, port);
}

// Batches: the failing query's index comes back in the result (code | index << 8; codes are
// below 256) instead of through a pointer to a Go variable, which would escape to the heap
// on every call.
static inline int64_t np_go_engine_allowed_batch(uintptr_t e, const np_pod_query* q, size_t n,
                                                 uint8_t* out) {
  size_t bad = 0;
  np_code code = np_engine_allowed_batch((const np_engine*)e, q, n, out, &bad);
  return code == NP_OK ? 0 : (int64_t)code | (int64_t)bad << 8;
}
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"unsafe"
)

// ABIVersion is the C ABI version this package was written for.
const ABIVersion = 1

// LibraryABIVersion is the ABI version of the loaded libnp.
func LibraryABIVersion() uint32 { return uint32(C.np_abi_version()) }

// Code classifies an Error, as np.h's np_code.
type Code int

const (
	CodeInvalidArgument    Code = C.NP_INVALID_ARGUMENT
	CodeNotFound           Code = C.NP_NOT_FOUND
	CodeFailedPrecondition Code = C.NP_FAILED_PRECONDITION
	CodeOutOfRange         Code = C.NP_OUT_OF_RANGE
	CodeUnimplemented      Code = C.NP_UNIMPLEMENTED
	CodeInternal           Code = C.NP_INTERNAL
	CodeResourceExhausted  Code = C.NP_RESOURCE_EXHAUSTED
	CodeInvalidHandle      Code = C.NP_INVALID_HANDLE
)

// Error is what every failing call returns: a code and a message that names the object
// and field path where it has them.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

// takeError turns a C status into an error and frees the C error.
func takeError(code C.np_code, cerr *C.np_error) error {
	if code == C.NP_OK {
		C.np_error_free(cerr)
		return nil
	}
	e := &Error{Code: Code(code), Message: C.GoString(C.np_error_message(cerr))}
	C.np_error_free(cerr)
	if e.Message == "" {
		e.Message = fmt.Sprintf("np: error code %d", code)
	}
	return e
}

// verdictError reads a verdict function's negative result.
func verdict(result C.int) (bool, error) {
	if result >= 0 {
		return result == 1, nil
	}
	code := Code(-result)
	return false, &Error{Code: code, Message: fmt.Sprintf("np: verdict failed with code %d (%s)", code, codeName(code))}
}

func codeName(c Code) string {
	switch c {
	case CodeInvalidArgument:
		return "invalid argument: protocol or address"
	case CodeNotFound:
		return "no such pod"
	case CodeOutOfRange:
		return "no live pod has this id"
	case CodeInvalidHandle:
		return "closed or invalid handle"
	}
	return "error"
}

// Protocol is an IANA protocol number that NetworkPolicy can name.
type Protocol uint8

const (
	TCP  Protocol = C.NP_TCP
	UDP  Protocol = C.NP_UDP
	SCTP Protocol = C.NP_SCTP
)

// PodID identifies a pod of an engine; stable across updates while the pod exists.
type PodID uint32

// Cluster is a validated set of Namespaces, Pods and NetworkPolicies.
type Cluster struct{ c *C.np_cluster }

// Load reads YAML or JSON (one or more documents, Lists; as kubectl prints them) and
// validates it with the API server's rules. sourceName names the input in messages.
func Load(data []byte, sourceName string) (*Cluster, error) {
	name := C.CString(sourceName)
	defer C.free(unsafe.Pointer(name))
	var out *C.np_cluster
	var cerr *C.np_error
	code := C.np_cluster_load(bytesPointer(data), C.size_t(len(data)), name, &out, &cerr)
	runtime.KeepAlive(data)
	if err := takeError(code, cerr); err != nil {
		return nil, err
	}
	c := &Cluster{out}
	runtime.SetFinalizer(c, (*Cluster).Close)
	return c, nil
}

// bytesPointer passes a []byte to C without a copy: the bytes hold no Go pointers, which
// the cgo rules allow for the duration of the call.
func bytesPointer(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// Close frees the cluster; engines built from it stay valid.
func (c *Cluster) Close() {
	C.np_cluster_free(c.c)
	c.c = nil
	runtime.SetFinalizer(c, nil)
}

// PodCount is the number of pods that take part in networking.
func (c *Cluster) PodCount() int {
	n := int(C.np_cluster_pod_count(c.c))
	runtime.KeepAlive(c)
	return n
}

// Options of Build.
type Options struct {
	NodeName            string // only this node's pods are enforced ("": the whole cluster)
	IPBlockExternalOnly bool   // ipBlocks match only addresses outside the cluster
	AlwaysAllowSelf     bool   // a pod may always reach itself
}

// Build compiles the cluster into an engine snapshot.
func (c *Cluster) Build(options *Options) (*Engine, error) {
	var opts C.np_engine_options
	opts.struct_size = C.size_t(unsafe.Sizeof(opts))
	if options != nil {
		if options.NodeName != "" {
			opts.node_name = C.CString(options.NodeName)
			defer C.free(unsafe.Pointer(opts.node_name))
		}
		opts.ipblock_external_only = cBool(options.IPBlockExternalOnly)
		opts.always_allow_self = cBool(options.AlwaysAllowSelf)
	}
	var out *C.np_engine
	var cerr *C.np_error
	code := C.np_engine_build(c.c, &opts, &out, &cerr)
	runtime.KeepAlive(c)
	if err := takeError(code, cerr); err != nil {
		return nil, err
	}
	return newEngine(out), nil
}

func cBool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Engine is an immutable compiled snapshot: verdicts in nanoseconds, from any goroutine.
type Engine struct{ e *C.np_engine }

func newEngine(e *C.np_engine) *Engine {
	engine := &Engine{e}
	runtime.SetFinalizer(engine, (*Engine).Close)
	return engine
}

// Close frees the snapshot handle.
func (e *Engine) Close() {
	C.np_engine_free(e.e)
	e.e = nil
	runtime.SetFinalizer(e, nil)
}

// FindPod returns the id of pod "namespace/name".
func (e *Engine) FindPod(key string) (PodID, error) {
	return findPod(key, func(k *C.char, id *C.uint32_t, cerr **C.np_error) C.np_code {
		code := C.np_engine_find_pod(e.e, k, id, cerr)
		runtime.KeepAlive(e)
		return code
	})
}

// findPod passes key to a find function of np.h as C memory.
func findPod(key string, find func(*C.char, *C.uint32_t, **C.np_error) C.np_code) (PodID, error) {
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	var id C.uint32_t
	var cerr *C.np_error
	code := find(ckey, &id, &cerr)
	return PodID(id), takeError(code, cerr)
}

// Allowed is the verdict on a connection from pod source to pod destination.
func (e *Engine) Allowed(source, destination PodID, protocol Protocol, port uint16) (bool, error) {
	r := C.np_go_engine_allowed(C.uintptr_t(uintptr(unsafe.Pointer(e.e))), C.uint32_t(source),
		C.uint32_t(destination), C.uint8_t(protocol), C.uint16_t(port))
	runtime.KeepAlive(e)
	return verdict(r)
}

// AllowedKeys is Allowed by pod keys "namespace/name".
func (e *Engine) AllowedKeys(source, destination string, protocol Protocol, port uint16) (bool, error) {
	s, d := C.CString(source), C.CString(destination)
	defer C.free(unsafe.Pointer(s))
	defer C.free(unsafe.Pointer(d))
	r := C.np_engine_allowed_keys(e.e, s, d, C.uint8_t(protocol), C.uint16_t(port))
	runtime.KeepAlive(e)
	return verdict(r)
}

func cAddress(a netip.Addr) (C.np_address, bool) {
	var out C.np_address
	switch {
	case a.Is4():
		out.family = 4
		b := a.As4()
		for i := range b {
			out.bytes[i] = C.uint8_t(b[i])
		}
	case a.Is6():
		out.family = 6
		b := a.As16()
		for i := range b {
			out.bytes[i] = C.uint8_t(b[i])
		}
	default:
		return out, false
	}
	return out, true
}

// AllowedPacket is the verdict on a packet: addresses of pods are those pods, others are
// outside the cluster.
func (e *Engine) AllowedPacket(source, destination netip.Addr, protocol Protocol, port uint16) (bool, error) {
	s, ok1 := cAddress(source)
	d, ok2 := cAddress(destination)
	if !ok1 || !ok2 {
		return false, &Error{Code: CodeInvalidArgument, Message: "np: invalid address"}
	}
	r := C.np_engine_allowed_packet(e.e, &s, &d, C.uint8_t(protocol), C.uint16_t(port))
	runtime.KeepAlive(e)
	return verdict(r)
}

// PodQuery is one flow of a batch; its layout is np.h's np_pod_query.
type PodQuery struct {
	Source, Destination PodID
	Protocol            Protocol
	_                   uint8
	Port                uint16
}

// Checked at compile time: PodQuery is passed to C as an array of np_pod_query.
var _ [unsafe.Sizeof(C.np_pod_query{}) - unsafe.Sizeof(PodQuery{})]struct{}
var _ [unsafe.Sizeof(PodQuery{}) - unsafe.Sizeof(C.np_pod_query{})]struct{}

// AllowedBatch writes the verdict on queries[i] to out[i] (1 allowed, 0 denied); out must be
// at least as long. One cgo call for the whole batch, no allocation.
func (e *Engine) AllowedBatch(queries []PodQuery, out []byte) error {
	if err := checkBatch(queries, out); err != nil || len(queries) == 0 {
		return err
	}
	result := C.np_go_engine_allowed_batch(C.uintptr_t(uintptr(unsafe.Pointer(e.e))),
		(*C.np_pod_query)(unsafe.Pointer(&queries[0])), C.size_t(len(queries)),
		(*C.uint8_t)(unsafe.Pointer(&out[0])))
	runtime.KeepAlive(e)
	return batchError(int64(result))
}

func checkBatch(queries []PodQuery, out []byte) error {
	if len(out) < len(queries) {
		return &Error{Code: CodeInvalidArgument, Message: "np: out is shorter than queries"}
	}
	return nil
}

// batchError turns np_go_*_allowed_batch's result into an error naming the bad query.
func batchError(result int64) error {
	if result == 0 {
		return nil
	}
	code := Code(result & 0xff)
	return &Error{Code: code, Message: fmt.Sprintf("np: query %d: %s", result>>8, codeName(code))}
}

// Side is what one end of a flow decided (egress at the source, ingress at the destination).
type Side struct {
	Applies           bool      `json:"applies"`
	Isolated          bool      `json:"isolated"`
	Allowed           bool      `json:"allowed"`
	IsolatingPolicies []string  `json:"isolating_policies"`
	AllowingRules     []RuleRef `json:"allowing_rules"`
	// Addresses of the pod that another live pod holds too: the pod is quarantined.
	SharedAddresses []string `json:"shared_addresses"`
}

// RuleRef is spec.<direction>[Rule] of Policy ("namespace/name").
type RuleRef struct {
	Policy    string `json:"policy"`
	Direction string `json:"direction"`
	Rule      int    `json:"rule"`
}

// Verdict is a verdict with its reasons.
type Verdict struct {
	Allowed       bool   `json:"allowed"`
	AllowedAsSelf bool   `json:"allowed_as_self"`
	Family        string `json:"family"`
	Egress        Side   `json:"egress"`
	Ingress       Side   `json:"ingress"`
}

// Explain gives the verdict with its reasons; source and destination are "namespace/name"
// or IP addresses.
func (e *Engine) Explain(source, destination string, protocol Protocol, port uint16) (*Verdict, error) {
	s, d := C.CString(source), C.CString(destination)
	defer C.free(unsafe.Pointer(s))
	defer C.free(unsafe.Pointer(d))
	var text *C.char
	var size C.size_t
	var cerr *C.np_error
	code := C.np_engine_explain(e.e, s, d, C.uint8_t(protocol), C.uint16_t(port), &text, &size, &cerr)
	runtime.KeepAlive(e)
	if err := takeError(code, cerr); err != nil {
		return nil, err
	}
	defer C.np_free(unsafe.Pointer(text))
	var v Verdict
	if err := json.Unmarshal(C.GoBytes(unsafe.Pointer(text), C.int(size)), &v); err != nil {
		return nil, &Error{Code: CodeInternal, Message: "np: explain JSON: " + err.Error()}
	}
	return &v, nil
}

// Lower returns the snapshot's compiled IR (np.ir.CompiledPolicy) as serialized protobuf.
func (e *Engine) Lower() ([]byte, error) {
	var data unsafe.Pointer
	var size C.size_t
	var cerr *C.np_error
	code := C.np_engine_lower(e.e, &data, &size, &cerr)
	runtime.KeepAlive(e)
	if err := takeError(code, cerr); err != nil {
		return nil, err
	}
	defer C.np_free(data)
	return C.GoBytes(data, C.int(size)), nil
}

// Render turns IR bytes into a backend's ruleset text ("nft", "iptables", "ebpf").
func Render(ir []byte, backend string) (string, error) {
	name := C.CString(backend)
	defer C.free(unsafe.Pointer(name))
	var text *C.char
	var size C.size_t
	var cerr *C.np_error
	code := C.np_render(bytesPointer(ir), C.size_t(len(ir)), name, &text, &size, &cerr)
	runtime.KeepAlive(ir)
	if err := takeError(code, cerr); err != nil {
		return "", err
	}
	defer C.np_free(unsafe.Pointer(text))
	return C.GoStringN(text, C.int(size)), nil
}

package np

/*
#include <stdlib.h>
#include "np.h"

// As np_go_engine_allowed (np.go): the handle as an integer keeps the verdict allocation-free.
static inline int np_go_reader_allowed(uintptr_t r, uint32_t s, uint32_t d, uint8_t p,
                                       uint16_t port) {
  return np_reader_allowed((np_reader*)r, s, d, p, port);
}

// As np_go_engine_allowed_batch (np.go).
static inline int64_t np_go_reader_allowed_batch(uintptr_t r, const np_pod_query* q, size_t n,
                                                 uint8_t* out) {
  size_t bad = 0;
  np_code code = np_reader_allowed_batch((np_reader*)r, q, n, out, &bad);
  return code == NP_OK ? 0 : (int64_t)code | (int64_t)bad << 8;
}
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Live holds the current snapshot of a cluster that changes: apply watch events to it while
// Readers answer verdicts. Safe for concurrent use.
type Live struct{ l *C.np_live }

// NewLive starts a live engine at a snapshot (which stays the caller's to close).
func NewLive(initial *Engine) (*Live, error) {
	var out *C.np_live
	var cerr *C.np_error
	code := C.np_live_new(initial.e, &out, &cerr)
	runtime.KeepAlive(initial)
	if err := takeError(code, cerr); err != nil {
		return nil, err
	}
	live := &Live{out}
	runtime.SetFinalizer(live, (*Live).Close)
	return live, nil
}

// Close frees the live engine; close its Readers first.
func (l *Live) Close() {
	C.np_live_free(l.l)
	l.l = nil
	runtime.SetFinalizer(l, nil)
}

// Change is an upsert (Object holds one object as JSON or YAML) or a delete (Delete set;
// Kind, Namespace and Name name the object).
type Change struct {
	Delete bool
	// "Namespace", "Pod", "NetworkPolicy", "AdminNetworkPolicy",
	// "BaselineAdminNetworkPolicy", "ClusterNetworkPolicy" or "Node". For an upsert, used
	// when Object has no kind, as objects from a client-go informer have none.
	Kind      string
	Object    []byte
	Namespace string // "" is "default"; ignored for the cluster-scoped kinds
	Name      string
}

// ApplyOption changes how Apply treats a batch.
type ApplyOption uint32

// IgnoreMissing makes deletes of absent objects no-ops, as an informer's relist needs.
const IgnoreMissing ApplyOption = C.NP_APPLY_IGNORE_MISSING

// Apply applies changes as one batch, all or nothing; on error the current snapshot stays
// and the error names every problem with its field path.
func (l *Live) Apply(changes []Change, options ...ApplyOption) error {
	if len(changes) == 0 {
		return nil
	}
	// cgo forbids passing Go memory that holds Go pointers, so the array and every string
	// it points to live in C memory for the call.
	array := (*[1 << 28]C.np_change)(C.calloc(C.size_t(len(changes)), C.size_t(unsafe.Sizeof(C.np_change{}))))[:len(changes):len(changes)]
	var owned []unsafe.Pointer
	defer func() {
		for _, p := range owned {
			C.free(p)
		}
		C.free(unsafe.Pointer(&array[0]))
	}()
	cstr := func(s string) *C.char {
		if s == "" {
			return nil
		}
		p := C.CString(s)
		owned = append(owned, unsafe.Pointer(p))
		return p
	}
	for i, c := range changes {
		a := &array[i]
		a.op = C.NP_CHANGE_UPSERT
		if c.Delete {
			a.op = C.NP_CHANGE_DELETE
		}
		a.kind = cstr(c.Kind)
		a.namespace_name = cstr(c.Namespace)
		a.name = cstr(c.Name)
		if len(c.Object) > 0 {
			a.data = C.CBytes(c.Object)
			owned = append(owned, a.data)
			a.size = C.size_t(len(c.Object))
		}
	}
	var cerr *C.np_error
	code := C.np_live_apply(l.l, &array[0], C.size_t(len(changes)), flags(options), &cerr)
	runtime.KeepAlive(l)
	return takeError(code, cerr)
}

func flags(options []ApplyOption) C.uint32_t {
	var f C.uint32_t
	for _, o := range options {
		f |= C.uint32_t(o)
	}
	return f
}

// ApplyEvent applies one watch event, {"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|
// "ERROR", "object": {...}} as the watch API and `kubectl get --watch --output-watch-events
// -o json` give it. kind is used when the object has none ("" if it has one). An ERROR
// event gives an Error with CodeFailedPrecondition: restart the watch.
func (l *Live) ApplyEvent(event []byte, kind string, options ...ApplyOption) error {
	var ckind *C.char
	if kind != "" {
		ckind = C.CString(kind)
		defer C.free(unsafe.Pointer(ckind))
	}
	var cerr *C.np_error
	code := C.np_live_apply_event(l.l, bytesPointer(event), C.size_t(len(event)), ckind,
		flags(options), &cerr)
	runtime.KeepAlive(event)
	runtime.KeepAlive(l)
	return takeError(code, cerr)
}

// Snapshot returns the current snapshot (for Explain, Lower, FindPod).
func (l *Live) Snapshot() (*Engine, error) {
	var out *C.np_engine
	var cerr *C.np_error
	code := C.np_live_snapshot(l.l, &out, &cerr)
	runtime.KeepAlive(l)
	if err := takeError(code, cerr); err != nil {
		return nil, err
	}
	return newEngine(out), nil
}

// Reader answers verdicts on the live engine's current snapshot without locks. One
// goroutine at a time; give each goroutine its own.
type Reader struct {
	r    *C.np_reader
	live *Live // keeps the live engine reachable while the reader is
}

// NewReader returns a reader of l.
func (l *Live) NewReader() (*Reader, error) {
	var out *C.np_reader
	var cerr *C.np_error
	code := C.np_reader_new(l.l, &out, &cerr)
	if err := takeError(code, cerr); err != nil {
		return nil, err
	}
	r := &Reader{out, l}
	runtime.SetFinalizer(r, (*Reader).Close)
	return r, nil
}

// Close frees the reader.
func (r *Reader) Close() {
	C.np_reader_free(r.r)
	r.r = nil
	runtime.SetFinalizer(r, nil)
}

// FindPod returns the id of pod "namespace/name" in the current snapshot.
func (r *Reader) FindPod(key string) (PodID, error) {
	return findPod(key, func(k *C.char, id *C.uint32_t, cerr **C.np_error) C.np_code {
		code := C.np_reader_find_pod(r.r, k, id, cerr)
		runtime.KeepAlive(r)
		return code
	})
}

// Allowed is Engine.Allowed on the current snapshot.
func (r *Reader) Allowed(source, destination PodID, protocol Protocol, port uint16) (bool, error) {
	v := C.np_go_reader_allowed(C.uintptr_t(uintptr(unsafe.Pointer(r.r))), C.uint32_t(source),
		C.uint32_t(destination), C.uint8_t(protocol), C.uint16_t(port))
	runtime.KeepAlive(r)
	return verdict(v)
}

// AllowedBatch is Engine.AllowedBatch on the current snapshot.
func (r *Reader) AllowedBatch(queries []PodQuery, out []byte) error {
	if err := checkBatch(queries, out); err != nil || len(queries) == 0 {
		return err
	}
	result := C.np_go_reader_allowed_batch(C.uintptr_t(uintptr(unsafe.Pointer(r.r))),
		(*C.np_pod_query)(unsafe.Pointer(&queries[0])), C.size_t(len(queries)),
		(*C.uint8_t)(unsafe.Pointer(&out[0])))
	runtime.KeepAlive(r)
	return batchError(int64(result))
}

/* np.h — the stable C ABI of np: load Kubernetes objects, compile them into a verdict
 * engine, answer "is this flow allowed?" and why, follow watch events, lower to the IR and
 * render a datapath's ruleset. For programs in C and for other languages' FFIs (the Go
 * package bindings/go is built on it). C99; no C++ or third-party type crosses it.
 *
 *   np_cluster* cluster = NULL;
 *   np_engine* engine = NULL;
 *   np_error* error = NULL;
 *   if (np_cluster_load(yaml, yaml_size, "dump.yaml", &cluster, &error) != NP_OK ||
 *       np_engine_build(cluster, NULL, &engine, &error) != NP_OK) {
 *     fprintf(stderr, "%s\n", np_error_message(error));   // names object and field path
 *     np_error_free(error);
 *   }
 *   uint32_t a, b;
 *   np_engine_find_pod(engine, "x/a", &a, NULL);
 *   np_engine_find_pod(engine, "y/b", &b, NULL);
 *   int allowed = np_engine_allowed(engine, a, b, NP_TCP, 80);   // 1, 0, or -(error code)
 *   np_engine_free(engine);
 *   np_cluster_free(cluster);
 *
 * Errors are values: every function that can fail returns an np_code (NP_OK on success)
 * and, when `error` is not NULL, stores an np_error with the code and a message naming the
 * object and field path; the caller frees it with np_error_free. Verdict functions return
 * 1 (allowed), 0 (denied) or a negative np_code, allocate nothing and never fail silently.
 * Nothing aborts or throws across this boundary. Handles carry a magic value: a NULL,
 * foreign or already freed handle gives NP_INVALID_HANDLE where the memory is still
 * readable (a guard against mistakes, not a security boundary).
 *
 * Stability: the ABI is versioned by NP_ABI_VERSION / np_abi_version(). Within one major
 * ABI version functions are only added, never changed or removed, and structs that may
 * grow start with `struct_size`. Only np_* symbols are exported (libnp.so.N, soname N).
 *
 * Thread safety: each function says. In short: np_cluster and np_engine handles are
 * immutable — any number of threads may use one at once; np_live: many readers (through
 * one np_reader per thread) and writers (serialized inside) at once; np_reader and
 * np_error belong to one thread at a time. Freeing a handle while another thread uses it
 * is the caller's bug.
 */
#ifndef NP_H_
#define NP_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NP_ABI_VERSION 1

/* The ABI version of the loaded library. A program built with NP_ABI_VERSION N runs with
 * a library whose np_abi_version() is N. Thread-safe. */
uint32_t np_abi_version(void);

typedef enum np_code {
  NP_OK = 0,
  NP_INVALID_ARGUMENT = 3, /* bad input: text, kind, protocol, address, option */
  NP_NOT_FOUND = 5,        /* no such pod, object or backend */
  NP_FAILED_PRECONDITION = 9,
  NP_OUT_OF_RANGE = 11,    /* a pod id that no live pod has */
  NP_UNIMPLEMENTED = 12,
  NP_INTERNAL = 13,
  NP_RESOURCE_EXHAUSTED = 8, /* out of memory */
  NP_INVALID_HANDLE = 64   /* NULL, foreign, or freed handle */
} np_code;

/* ------------------------------------------------------------------ errors */

typedef struct np_error np_error;
/* The error's code; NP_INVALID_HANDLE for NULL. Thread-safe on distinct errors. */
np_code np_error_code(const np_error* error);
/* Its message (UTF-8, NUL-terminated, valid until np_error_free); "" for NULL. */
const char* np_error_message(const np_error* error);
/* Frees an error; NULL is ignored. */
void np_error_free(np_error* error);

/* Frees memory np returned (explain JSON, IR bytes, rendered text); NULL is ignored. */
void np_free(void* data);

/* ------------------------------------------------------------------ clusters */

typedef struct np_cluster np_cluster;

/* Input formats for np_cluster_load_format. */
typedef enum np_format {
  NP_FORMAT_TEXT = 0,     /* YAML or JSON (JSON is YAML): one or more documents, Lists */
  NP_FORMAT_PROTOBUF = 1  /* the Kubernetes protobuf wire form ("k8s\0" envelope) */
} np_format;

/* Reads YAML or JSON (as `kubectl get -o yaml|json` prints it) and validates it with the API
 * server's rules. `source_name` names the input in messages (NULL: "input"). On success
 * *out receives a new cluster (free with np_cluster_free). Reentrant. */
np_code np_cluster_load(const void* data, size_t size, const char* source_name,
                        np_cluster** out, np_error** error);
/* The same with an explicit format. NP_FORMAT_PROTOBUF reads one envelope holding a
 * Namespace, Pod or NetworkPolicy or a List of one of them (PodList, ...), as the API server
 * returns it for application/vnd.kubernetes.protobuf. Reentrant. */
np_code np_cluster_load_format(const void* data, size_t size, np_format format,
                               const char* source_name, np_cluster** out, np_error** error);
/* Counts; -NP_INVALID_HANDLE for a bad handle. Thread-safe. */
int64_t np_cluster_pod_count(const np_cluster* cluster);
int64_t np_cluster_policy_count(const np_cluster* cluster);
/* Frees a cluster; NULL is ignored. Engines built from it stay valid. */
void np_cluster_free(np_cluster* cluster);

/* ------------------------------------------------------------------ engines */

/* IANA protocol numbers. */
enum { NP_TCP = 6, NP_UDP = 17, NP_SCTP = 132 };

typedef struct np_engine_options {
  size_t struct_size;        /* sizeof(np_engine_options): lets the struct grow */
  const char* node_name;     /* NULL or "": the whole cluster; else only this node's pods */
  int ipblock_external_only; /* nonzero: ipBlocks match only addresses outside the cluster */
  int always_allow_self;     /* nonzero: a pod may always reach itself */
} np_engine_options;

/* An immutable compiled snapshot. */
typedef struct np_engine np_engine;

/* Compiles a cluster (options NULL: defaults). Reentrant; `cluster` may be shared. */
np_code np_engine_build(const np_cluster* cluster, const np_engine_options* options,
                        np_engine** out, np_error** error);
/* Frees a snapshot handle; NULL is ignored. */
void np_engine_free(np_engine* engine);

/* The id of pod "namespace/name" (NUL-terminated). Ids are stable across updates for as
 * long as the pod exists. NP_NOT_FOUND when there is no such live pod. Thread-safe. */
np_code np_engine_find_pod(const np_engine* engine, const char* key, uint32_t* id,
                           np_error** error);

/* An IPv4 (family 4, bytes[0..3] in network order) or IPv6 (family 6) address. */
typedef struct np_address {
  uint8_t family;
  uint8_t bytes[16];
} np_address;
/* Parses address text ("10.0.0.1", "fd00::1"). Reentrant. */
np_code np_address_parse(const char* text, np_address* out, np_error** error);

/* Verdicts: 1 allowed, 0 denied, or a negative np_code (-NP_INVALID_HANDLE,
 * -NP_OUT_OF_RANGE for an id no live pod has, -NP_INVALID_ARGUMENT for another protocol
 * or a bad address). Allocation-free, lock-free, thread-safe. */
int np_engine_allowed(const np_engine* engine, uint32_t source, uint32_t destination,
                      uint8_t protocol, uint16_t port);
int np_engine_allowed_packet(const np_engine* engine, const np_address* source,
                             const np_address* destination, uint8_t protocol, uint16_t port);
/* By pod keys "namespace/name": -NP_NOT_FOUND when either is no live pod. */
int np_engine_allowed_keys(const np_engine* engine, const char* source,
                           const char* destination, uint8_t protocol, uint16_t port);

typedef struct np_pod_query {
  uint32_t source;
  uint32_t destination;
  uint8_t protocol;
  uint8_t padding;
  uint16_t port;
} np_pod_query;
typedef struct np_packet_query {
  np_address source;
  np_address destination;
  uint8_t protocol;
  uint8_t padding;
  uint16_t port;
} np_packet_query;
/* Batches: out[i] = 1 allowed, 0 denied. NP_OK, or the code of the first bad query (its
 * index in *bad_index when not NULL; nothing is written then). Allocation-free,
 * thread-safe. */
np_code np_engine_allowed_batch(const np_engine* engine, const np_pod_query* queries,
                                size_t count, uint8_t* out, size_t* bad_index);
np_code np_engine_allowed_packet_batch(const np_engine* engine,
                                       const np_packet_query* queries, size_t count,
                                       uint8_t* out, size_t* bad_index);

/* The verdict with its reasons as JSON (*json NUL-terminated, free with np_free):
 * {"allowed":b,"allowed_as_self":b,"family":"IPv4","egress":{side},"ingress":{side}} with
 * side = {"applies":b,"isolated":b,"allowed":b,"isolating_policies":["ns/name"],
 * "allowing_rules":[{"policy":"ns/name","direction":"Ingress","rule":0}],
 * "shared_addresses":["10.0.0.9"]} (non-empty shared_addresses: the pod is quarantined).
 * `source`/`destination`: "namespace/name" or an IP address (a pod's, else external).
 * Reentrant. */
np_code np_engine_explain(const np_engine* engine, const char* source,
                          const char* destination, uint8_t protocol, uint16_t port,
                          char** json, size_t* size, np_error** error);

/* The snapshot lowered to the IR (proto/compiled.proto np.ir.CompiledPolicy), serialized
 * protobuf bytes in *bytes (free with np_free); policy tiers as ordered tier rules
 * (np/lower.h). Reentrant. */
np_code np_engine_lower(const np_engine* engine, void** bytes, size_t* size,
                        np_error** error);
/* Renders serialized IR bytes with a backend ("nft", "iptables", "ebpf") as the text the
 * kernel's tool consumes (*text NUL-terminated, free with np_free). Reentrant. */
np_code np_render(const void* ir, size_t ir_size, const char* backend, char** text,
                  size_t* size, np_error** error);

/* ------------------------------------------------------------------ live engines */

typedef struct np_live np_live;
typedef struct np_reader np_reader;

/* A live engine starting at a snapshot (the snapshot handle stays the caller's). */
np_code np_live_new(const np_engine* initial, np_live** out, np_error** error);
/* Frees it; every np_reader of it must be freed first. NULL is ignored. */
void np_live_free(np_live* live);

enum {
  NP_CHANGE_UPSERT = 0,
  NP_CHANGE_DELETE = 1
};
/* One change. Upsert: `data`/`size` hold one object as YAML or JSON; `kind` ("Namespace",
 * "Pod", "NetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy",
 * "ClusterNetworkPolicy", "Node") is used when the object has no kind/apiVersion, as an
 * informer's objects lack them (NULL: the object must name its kind). Delete: `kind`,
 * `namespace_name` (NULL or "": "default"; ignored for the cluster-scoped kinds: Namespace,
 * the policy tiers, Node) and `name`; `data` is ignored. A change to a policy tier or Node
 * recompiles the tiers (np/engine.h). */
typedef struct np_change {
  uint32_t op;
  const char* kind;
  const void* data;
  size_t size;
  const char* namespace_name;
  const char* name;
} np_change;

/* Flags of np_live_apply. */
enum {
  /* Deleting an object the engine does not hold is not an error (an informer's relist
   * may delete what is already gone). */
  NP_APPLY_IGNORE_MISSING = 1
};

/* Applies changes as one batch: all or nothing; on error the current snapshot stays and
 * the message names each problem. Thread-safe: writers are serialized, readers never
 * wait. */
np_code np_live_apply(np_live* live, const np_change* changes, size_t count, uint32_t flags,
                      np_error** error);
/* Applies one watch event, {"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR",
 * "object": {...}} as JSON (one event of `kubectl get --watch --output-watch-events -o json`
 * or of the watch API). `kind` as in np_change (NULL: the object names it). BOOKMARK does
 * nothing; ERROR gives NP_FAILED_PRECONDITION (restart the watch). `flags` as np_live_apply.
 * Thread-safe as np_live_apply. */
np_code np_live_apply_event(np_live* live, const void* data, size_t size, const char* kind,
                            uint32_t flags, np_error** error);
/* A new handle to the current snapshot (for explain, lower, find). Thread-safe. */
np_code np_live_snapshot(const np_live* live, np_engine** out, np_error** error);

/* A reader: verdicts on the current snapshot without locks or waiting. One thread at a
 * time per reader (give each thread its own); beyond 256 readers of one np_live at once
 * the extra ones take a short lock on each verdict. np_reader_new is thread-safe. */
np_code np_reader_new(np_live* live, np_reader** out, np_error** error);
void np_reader_free(np_reader* reader);
/* As np_engine_find_pod / np_engine_allowed / _packet / _batch on the current snapshot. */
np_code np_reader_find_pod(np_reader* reader, const char* key, uint32_t* id, np_error** error);
int np_reader_allowed(np_reader* reader, uint32_t source, uint32_t destination,
                      uint8_t protocol, uint16_t port);
int np_reader_allowed_packet(np_reader* reader, const np_address* source,
                             const np_address* destination, uint8_t protocol, uint16_t port);
np_code np_reader_allowed_batch(np_reader* reader, const np_pod_query* queries, size_t count,
                                uint8_t* out, size_t* bad_index);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* NP_H_ */

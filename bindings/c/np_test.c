/* Tests of np.h from C: every function, its error paths, bad bytes and wrong kinds.
 * Expected verdicts follow the NetworkPolicy specification for the small cluster below
 * (each CHECK says which sentence decides it), not the engine's output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/c/np.h"

static int failures = 0;
#define CHECK(cond, why)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s (%s)\n", __FILE__, __LINE__, \
              #cond, why);                                                 \
      ++failures;                                                          \
    }                                                                      \
  } while (0)

/* Namespaces x and y; pods x/a (app=a, named port http=80), x/b (app=b), y/c (app=b);
 * policy x/allow-b selects app=a and admits ingress from app=b pods of x on TCP 80. */
static const char kCluster[] =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n"
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: \"y\"}\n---\n"
    "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: a}}\n"
    "spec: {nodeName: node-1, containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}\n"
    "status: {podIP: 10.0.0.1}\n---\n"
    "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x, labels: {app: b}}\n"
    "spec: {nodeName: node-2}\nstatus: {podIP: 10.0.0.2}\n---\n"
    "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: \"y\", labels: {app: b}}\n"
    "spec: {nodeName: node-2}\nstatus: {podIP: 10.0.1.1}\n---\n"
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
    "metadata: {name: allow-b, namespace: x}\n"
    "spec:\n  podSelector: {matchLabels: {app: a}}\n"
    "  ingress: [{from: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 80}]}]\n";

static np_cluster* Load(const char* text) {
  np_cluster* cluster = NULL;
  np_error* error = NULL;
  np_code code = np_cluster_load(text, strlen(text), "test.yaml", &cluster, &error);
  if (code != NP_OK) fprintf(stderr, "load: %s\n", np_error_message(error));
  np_error_free(error);
  return cluster;
}

static np_engine* Build(const np_cluster* cluster, const np_engine_options* options) {
  np_engine* engine = NULL;
  np_error* error = NULL;
  if (np_engine_build(cluster, options, &engine, &error) != NP_OK) {
    fprintf(stderr, "build: %s\n", np_error_message(error));
  }
  np_error_free(error);
  return engine;
}

static uint32_t Pod(const np_engine* engine, const char* key) {
  uint32_t id = 0;
  np_code code = np_engine_find_pod(engine, key, &id, NULL);
  CHECK(code == NP_OK, key);
  return id;
}

/* The error's code, and that its message contains `part`. */
static int ErrorSays(np_error* error, np_code code, const char* part) {
  int ok = np_error_code(error) == code && strstr(np_error_message(error), part) != NULL;
  if (!ok) {
    fprintf(stderr, "error %d \"%s\", wanted %d with \"%s\"\n", np_error_code(error),
            np_error_message(error), code, part);
  }
  np_error_free(error);
  return ok;
}

static void TestVersionAndErrors(void) {
  CHECK(np_abi_version() == NP_ABI_VERSION, "library and header agree");
  CHECK(np_error_code(NULL) == NP_INVALID_HANDLE, "NULL error");
  CHECK(strcmp(np_error_message(NULL), "") == 0, "NULL error has an empty message");
  np_error_free(NULL);
  np_free(NULL);
}

static void TestLoadErrors(void) {
  np_cluster* cluster = (np_cluster*)1;
  np_error* error = NULL;
  /* Bad bytes: not YAML. */
  const char bad[] = "\xff\xfe{{{: [";
  CHECK(np_cluster_load(bad, sizeof bad - 1, "bad.yaml", &cluster, &error) ==
            NP_INVALID_ARGUMENT, "malformed bytes");
  CHECK(cluster == NULL, "no cluster on error");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "bad.yaml"), "message names the input");
  /* Validation: endPort below port, rejected as the API server does, with the field path. */
  const char invalid[] =
      "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
      "metadata: {name: p, namespace: x}\n"
      "spec: {podSelector: {}, ingress: [{ports: [{port: 80, endPort: 79}]}]}\n";
  error = NULL;
  CHECK(np_cluster_load(invalid, strlen(invalid), NULL, &cluster, &error) == NP_INVALID_ARGUMENT,
        "endPort < port");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "spec.ingress[0].ports[0].endPort"), "field path");
  /* An object without kind is an error in a whole-cluster load. */
  const char kindless[] = "metadata: {name: a}\n";
  error = NULL;
  CHECK(np_cluster_load(kindless, strlen(kindless), NULL, &cluster, &error) ==
            NP_INVALID_ARGUMENT, "kind missing");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "Kind"), "names the missing kind");
  /* NULL arguments. */
  CHECK(np_cluster_load(kCluster, strlen(kCluster), NULL, NULL, NULL) == NP_INVALID_ARGUMENT,
        "NULL out");
  CHECK(np_cluster_load(NULL, 5, NULL, &cluster, NULL) == NP_INVALID_ARGUMENT, "NULL data");
  CHECK(np_cluster_load_format(kCluster, strlen(kCluster), (np_format)7, NULL, &cluster,
                               NULL) == NP_INVALID_ARGUMENT, "unknown format");
  /* Empty input is an empty cluster. */
  CHECK(np_cluster_load(NULL, 0, NULL, &cluster, NULL) == NP_OK, "empty input");
  CHECK(np_cluster_pod_count(cluster) == 0, "no pods");
  np_cluster_free(cluster);
}

static void TestVerdicts(void) {
  np_cluster* cluster = Load(kCluster);
  CHECK(cluster != NULL, "cluster loads");
  if (cluster == NULL) return;
  CHECK(np_cluster_pod_count(cluster) == 3, "three pods");
  CHECK(np_cluster_policy_count(cluster) == 1, "one policy");
  np_engine* engine = Build(cluster, NULL);
  np_cluster_free(cluster); /* the engine outlives its cluster */
  CHECK(engine != NULL, "engine builds");
  if (engine == NULL) return;
  uint32_t a = Pod(engine, "x/a"), b = Pod(engine, "x/b"), c = Pod(engine, "y/c");

  /* Isolated for ingress by allow-b; its rule admits app=b pods of the policy's namespace on
   * TCP 80 (port without protocol is TCP). */
  CHECK(np_engine_allowed(engine, b, a, NP_TCP, 80) == 1, "x/b is admitted");
  CHECK(np_engine_allowed(engine, c, a, NP_TCP, 80) == 0,
        "podSelector alone selects in the policy's namespace only");
  CHECK(np_engine_allowed(engine, b, a, NP_TCP, 81) == 0, "other port");
  CHECK(np_engine_allowed(engine, b, a, NP_UDP, 80) == 0, "other protocol");
  CHECK(np_engine_allowed(engine, a, b, NP_TCP, 80) == 1, "x/b is not isolated");
  CHECK(np_engine_allowed_keys(engine, "x/b", "x/a", NP_TCP, 80) == 1, "by key");
  CHECK(np_engine_allowed_keys(engine, "y/c", "x/a", NP_SCTP, 80) == 0, "by key, denied");

  /* Packets: pod addresses resolve to pods; an external source is denied at x/a. */
  np_address pa, pb, ext;
  CHECK(np_address_parse("10.0.0.1", &pa, NULL) == NP_OK, "parse");
  CHECK(np_address_parse("10.0.0.2", &pb, NULL) == NP_OK, "parse");
  CHECK(np_address_parse("192.168.1.1", &ext, NULL) == NP_OK, "parse");
  CHECK(pa.family == 4 && pa.bytes[0] == 10 && pa.bytes[3] == 1, "IPv4 in network order");
  CHECK(np_engine_allowed_packet(engine, &pb, &pa, NP_TCP, 80) == 1, "packet x/b -> x/a");
  CHECK(np_engine_allowed_packet(engine, &ext, &pa, NP_TCP, 80) == 0, "external -> x/a");
  CHECK(np_engine_allowed_packet(engine, &pa, &ext, NP_TCP, 443) == 1, "x/a egress open");
  np_address v6;
  CHECK(np_address_parse("fd00::1", &v6, NULL) == NP_OK, "IPv6 parses");
  CHECK(v6.family == 6 && v6.bytes[0] == 0xfd && v6.bytes[15] == 1, "IPv6 bytes");
  np_error* error = NULL;
  CHECK(np_address_parse("10.0.0.300", &v6, &error) == NP_INVALID_ARGUMENT, "bad address");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "10.0.0.300"), "names the text");

  /* Batches equal single verdicts; a bad query is reported by index, out untouched. */
  np_pod_query queries[4] = {{b, a, NP_TCP, 0, 80}, {c, a, NP_TCP, 0, 80},
                             {a, b, NP_UDP, 0, 53}, {b, a, NP_TCP, 0, 81}};
  uint8_t out[4] = {9, 9, 9, 9};
  CHECK(np_engine_allowed_batch(engine, queries, 4, out, NULL) == NP_OK, "batch");
  CHECK(out[0] == 1 && out[1] == 0 && out[2] == 1 && out[3] == 0, "batch verdicts");
  np_packet_query packets[2] = {{pb, pa, NP_TCP, 0, 80}, {ext, pa, NP_TCP, 0, 80}};
  CHECK(np_engine_allowed_packet_batch(engine, packets, 2, out, NULL) == NP_OK, "packets");
  CHECK(out[0] == 1 && out[1] == 0, "packet batch verdicts");
  size_t bad_index = 99;
  memset(out, 9, sizeof out);
  queries[2].protocol = 1; /* ICMP: not a NetworkPolicy protocol */
  CHECK(np_engine_allowed_batch(engine, queries, 4, out, &bad_index) == NP_INVALID_ARGUMENT,
        "bad protocol in batch");
  CHECK(bad_index == 2 && out[0] == 9, "index of the bad query, nothing written");
  queries[2].protocol = NP_UDP;
  queries[3].destination = 12345;
  CHECK(np_engine_allowed_batch(engine, queries, 4, out, &bad_index) == NP_OUT_OF_RANGE &&
            bad_index == 3, "bad pod id in batch");
  CHECK(np_engine_allowed_batch(engine, NULL, 1, out, NULL) == NP_INVALID_ARGUMENT, "NULL");
  CHECK(np_engine_allowed_batch(engine, NULL, 0, NULL, NULL) == NP_OK, "empty batch");
  /* A batch longer than the library's internal chunk (256): every verdict lands at its own
   * index, and a bad query near the end still leaves the first chunks' answers unwritten. */
  enum { kLong = 600 };
  static np_pod_query many[kLong];
  static uint8_t many_out[kLong];
  queries[3].destination = a;
  for (int i = 0; i < kLong; ++i) many[i] = queries[i % 4];
  memset(many_out, 9, sizeof many_out);
  CHECK(np_engine_allowed_batch(engine, many, kLong, many_out, NULL) == NP_OK, "long batch");
  int long_ok = 1;
  for (int i = 0; i < kLong; ++i) long_ok &= many_out[i] == (i % 2 == 0 ? 1 : 0);
  CHECK(long_ok, "long batch verdicts at their indexes");
  memset(many_out, 9, sizeof many_out);
  many[kLong - 1].source = 12345;
  CHECK(np_engine_allowed_batch(engine, many, kLong, many_out, &bad_index) ==
            NP_OUT_OF_RANGE && bad_index == kLong - 1, "bad pod id at the end of a long batch");
  CHECK(many_out[0] == 9 && many_out[300] == 9, "nothing written before the bad query either");
  packets[1].source.family = 5;
  CHECK(np_engine_allowed_packet_batch(engine, packets, 2, out, &bad_index) ==
            NP_INVALID_ARGUMENT && bad_index == 1, "bad family in batch");

  /* Verdict errors are negative codes. */
  CHECK(np_engine_allowed(engine, a, 12345, NP_TCP, 80) == -NP_OUT_OF_RANGE, "no such id");
  CHECK(np_engine_allowed(engine, a, b, 1, 80) == -NP_INVALID_ARGUMENT, "ICMP");
  CHECK(np_engine_allowed_keys(engine, "x/a", "x/zz", NP_TCP, 80) == -NP_NOT_FOUND, "no pod");
  CHECK(np_engine_allowed_keys(engine, NULL, "x/a", NP_TCP, 80) == -NP_INVALID_ARGUMENT, "NULL");
  CHECK(np_engine_allowed_packet(engine, NULL, &pa, NP_TCP, 80) == -NP_INVALID_ARGUMENT, "NULL");
  uint32_t id;
  error = NULL;
  CHECK(np_engine_find_pod(engine, "x/zz", &id, &error) == NP_NOT_FOUND, "find absent");
  CHECK(ErrorSays(error, NP_NOT_FOUND, "x/zz"), "names the pod");
  CHECK(np_engine_find_pod(engine, NULL, &id, NULL) == NP_INVALID_ARGUMENT, "NULL key");

  /* Explain: reasons as JSON, naming the isolating policy and the admitting rule. */
  char* json = NULL;
  size_t size = 0;
  CHECK(np_engine_explain(engine, "x/b", "x/a", NP_TCP, 80, &json, &size, NULL) == NP_OK,
        "explain");
  CHECK(json != NULL && strlen(json) == size, "NUL-terminated, size given");
  if (json != NULL) {
    CHECK(strncmp(json, "{\"allowed\":true", 15) == 0, "allowed");
    CHECK(strstr(json, "\"ingress\":{\"applies\":true,\"isolated\":true,\"allowed\":true,"
                       "\"isolating_policies\":[\"x/allow-b\"],\"allowing_rules\":[{\"policy\":"
                       "\"x/allow-b\",\"direction\":\"Ingress\",\"rule\":0}]") != NULL,
          "ingress side names policy and rule");
  }
  np_free(json);
  json = NULL;
  CHECK(np_engine_explain(engine, "192.168.1.1", "10.0.0.1", NP_TCP, 80, &json, NULL, NULL) ==
            NP_OK, "explain by addresses");
  if (json != NULL) {
    CHECK(strncmp(json, "{\"allowed\":false", 16) == 0, "external denied");
    CHECK(strstr(json, "\"egress\":{\"applies\":false") != NULL, "no egress side outside");
  }
  np_free(json);
  error = NULL;
  CHECK(np_engine_explain(engine, "x/zz", "x/a", NP_TCP, 80, &json, NULL, &error) ==
            NP_NOT_FOUND, "explain unknown pod");
  CHECK(ErrorSays(error, NP_NOT_FOUND, "source: \"x/zz\""), "names the end");
  error = NULL;
  CHECK(np_engine_explain(engine, "x/a", "x/b", 2, 80, &json, NULL, &error) ==
            NP_INVALID_ARGUMENT, "explain bad protocol");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "protocol 2"), "names the protocol");
  CHECK(np_engine_explain(engine, "x/a", "x/b", NP_TCP, 80, NULL, NULL, NULL) ==
            NP_INVALID_ARGUMENT, "NULL output");

  /* Lower to IR bytes and render them with each backend. */
  np_engine_options options;
  memset(&options, 0, sizeof options);
  options.struct_size = sizeof options;
  options.node_name = "node-1";
  np_cluster* again = Load(kCluster);
  np_engine* node = Build(again, &options);
  np_cluster_free(again);
  void* ir = NULL;
  size_t ir_size = 0;
  CHECK(np_engine_lower(node, &ir, &ir_size, NULL) == NP_OK && ir_size > 0, "lower");
  const char* backends[] = {"nft", "iptables", "ebpf"};
  for (int i = 0; i < 3; ++i) {
    char* text = NULL;
    size_t text_size = 0;
    CHECK(np_render(ir, ir_size, backends[i], &text, &text_size, NULL) == NP_OK, backends[i]);
    /* Node-1 enforces x/a only: its address is in every ruleset. */
    CHECK(text != NULL && strstr(text, "10.0.0.1") != NULL, "x/a's address is rendered");
    np_free(text);
  }
  char* text = NULL;
  error = NULL;
  CHECK(np_render(ir, ir_size, "pf", &text, NULL, &error) == NP_NOT_FOUND, "unknown backend");
  CHECK(ErrorSays(error, NP_NOT_FOUND, "pf"), "names the backend");
  const char garbage[] = "\xff\xff\xff\xff";
  error = NULL;
  CHECK(np_render(garbage, 4, "nft", &text, NULL, &error) == NP_INVALID_ARGUMENT, "bad IR");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "CompiledPolicy"), "says what it expected");
  CHECK(np_render(ir, ir_size, NULL, &text, NULL, NULL) == NP_INVALID_ARGUMENT, "NULL name");
  np_free(ir);
  /* Options: a struct_size too small for the fields is refused, not misread. */
  options.struct_size = 4;
  again = Load(kCluster);
  np_engine* refused = (np_engine*)1;
  error = NULL;
  CHECK(np_engine_build(again, &options, &refused, &error) == NP_INVALID_ARGUMENT, "size");
  CHECK(refused == NULL && ErrorSays(error, NP_INVALID_ARGUMENT, "struct_size"), "named");
  /* always_allow_self: x/a to itself is allowed only with it (x/a is isolated for ingress
   * and its rule admits app=b only). */
  options.struct_size = sizeof options;
  options.node_name = NULL;
  np_engine* plain = Build(again, NULL);
  options.always_allow_self = 1;
  np_engine* self = Build(again, &options);
  CHECK(np_engine_allowed(plain, a, a, NP_TCP, 80) == 0, "self is a flow like any other");
  CHECK(np_engine_allowed(self, a, a, NP_TCP, 80) == 1, "always_allow_self");
  np_engine_free(plain);
  np_engine_free(self);
  np_cluster_free(again);
  np_engine_free(node);
  np_engine_free(engine);
}

static int ApplyOne(np_live* live, np_change change, uint32_t flags, np_error** error) {
  return np_live_apply(live, &change, 1, flags, error);
}

static void TestLive(void) {
  np_cluster* cluster = Load(kCluster);
  np_engine* engine = Build(cluster, NULL);
  np_cluster_free(cluster);
  np_live* live = NULL;
  CHECK(np_live_new(engine, &live, NULL) == NP_OK, "live");
  np_engine_free(engine); /* the live engine keeps its own reference */
  np_reader* reader = NULL;
  CHECK(np_reader_new(live, &reader, NULL) == NP_OK, "reader");
  uint32_t a, b, c;
  CHECK(np_reader_find_pod(reader, "x/a", &a, NULL) == NP_OK, "find x/a");
  CHECK(np_reader_find_pod(reader, "x/b", &b, NULL) == NP_OK, "find x/b");
  CHECK(np_reader_find_pod(reader, "y/c", &c, NULL) == NP_OK, "find y/c");
  CHECK(np_reader_allowed(reader, c, a, NP_TCP, 80) == 0, "before: y/c denied");

  /* An informer's object: no kind, no apiVersion; the caller names the kind. */
  const char pod_d[] =
      "{\"metadata\":{\"name\":\"d\",\"namespace\":\"x\",\"labels\":{\"app\":\"b\"}},"
      "\"spec\":{\"nodeName\":\"node-2\"},\"status\":{\"podIP\":\"10.0.0.4\"}}";
  np_change upsert = {NP_CHANGE_UPSERT, "Pod", pod_d, sizeof pod_d - 1, NULL, NULL};
  np_error* error = NULL;
  CHECK(ApplyOne(live, upsert, 0, &error) == NP_OK, "kindless pod with explicit kind");
  np_error_free(error);
  uint32_t d;
  CHECK(np_reader_find_pod(reader, "x/d", &d, NULL) == NP_OK, "x/d exists");
  CHECK(np_reader_allowed(reader, d, a, NP_TCP, 80) == 1, "x/d is app=b in x: admitted");
  np_address pd, pa;
  np_address_parse("10.0.0.4", &pd, NULL);
  np_address_parse("10.0.0.1", &pa, NULL);
  CHECK(np_reader_allowed_packet(reader, &pd, &pa, NP_TCP, 80) == 1, "by packet too");
  /* Without the kind, the same object is refused as before. */
  np_change kindless = upsert;
  kindless.kind = NULL;
  error = NULL;
  CHECK(ApplyOne(live, kindless, 0, &error) == NP_INVALID_ARGUMENT, "kind needed");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "Kind"), "says so");
  kindless.kind = "Service";
  error = NULL;
  CHECK(ApplyOne(live, kindless, 0, &error) == NP_INVALID_ARGUMENT, "wrong kind");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "Service"), "names it");
  /* Bad bytes in a change, and an invalid object: nothing applied. */
  np_change bad = {NP_CHANGE_UPSERT, "Pod", "\x01{[", 3, NULL, NULL};
  error = NULL;
  CHECK(ApplyOne(live, bad, 0, &error) == NP_INVALID_ARGUMENT, "bad bytes");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "change[0]"), "names the change");
  const char bad_policy[] =
      "{\"metadata\":{\"name\":\"p\",\"namespace\":\"x\"},\"spec\":{\"podSelector\":{},"
      "\"ingress\":[{\"ports\":[{\"port\":80,\"endPort\":79}]}]}}";
  np_change invalid = {NP_CHANGE_UPSERT, "NetworkPolicy", bad_policy, sizeof bad_policy - 1,
                       NULL, NULL};
  error = NULL;
  CHECK(ApplyOne(live, invalid, 0, &error) == NP_INVALID_ARGUMENT, "invalid policy");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "endPort"), "field path");
  CHECK(np_reader_allowed(reader, b, a, NP_TCP, 80) == 1, "nothing applied");

  /* Delete the policy: x/a is no longer isolated. */
  np_change del = {NP_CHANGE_DELETE, "NetworkPolicy", NULL, 0, "x", "allow-b"};
  CHECK(ApplyOne(live, del, 0, NULL) == NP_OK, "delete policy");
  CHECK(np_reader_allowed(reader, c, a, NP_TCP, 80) == 1, "after: y/c allowed");
  /* A second delete is an error, unless the caller asks for relist semantics. */
  error = NULL;
  CHECK(ApplyOne(live, del, 0, &error) == NP_INVALID_ARGUMENT, "double delete");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "x/allow-b"), "names it");
  CHECK(ApplyOne(live, del, NP_APPLY_IGNORE_MISSING, NULL) == NP_OK, "idempotent delete");
  /* In one batch: delete x/d twice and a missing pod, with the flag: x/d is gone. */
  np_change batch[3] = {{NP_CHANGE_DELETE, "Pod", NULL, 0, "x", "d"},
                        {NP_CHANGE_DELETE, "Pod", NULL, 0, "x", "d"},
                        {NP_CHANGE_DELETE, "Pod", NULL, 0, NULL, "nobody"}};
  CHECK(np_live_apply(live, batch, 3, NP_APPLY_IGNORE_MISSING, NULL) == NP_OK, "relist batch");
  CHECK(np_reader_find_pod(reader, "x/d", &d, NULL) == NP_NOT_FOUND, "x/d deleted");
  CHECK(np_reader_allowed(reader, d, a, NP_TCP, 80) == -NP_OUT_OF_RANGE, "deleted id");
  /* Upsert then delete of a new object in one relist batch: the delete is not dropped. */
  np_change up_down[2] = {upsert, {NP_CHANGE_DELETE, "Pod", NULL, 0, "x", "d"}};
  CHECK(np_live_apply(live, up_down, 2, NP_APPLY_IGNORE_MISSING, NULL) == NP_OK, "up, down");
  CHECK(np_reader_find_pod(reader, "x/d", &d, NULL) == NP_NOT_FOUND, "x/d deleted again");
  /* Namespace deletes and change errors. */
  np_change ns_del = {NP_CHANGE_DELETE, "Namespace", NULL, 0, NULL, "zz"};
  CHECK(ApplyOne(live, ns_del, NP_APPLY_IGNORE_MISSING, NULL) == NP_OK, "absent namespace");
  CHECK(ApplyOne(live, ns_del, 0, NULL) == NP_INVALID_ARGUMENT, "absent namespace, strict");
  np_change nameless = {NP_CHANGE_DELETE, "Pod", NULL, 0, "x", NULL};
  CHECK(ApplyOne(live, nameless, 0, NULL) == NP_INVALID_ARGUMENT, "delete without name");
  np_change bad_op = {7, "Pod", NULL, 0, "x", "a"};
  CHECK(ApplyOne(live, bad_op, 0, NULL) == NP_INVALID_ARGUMENT, "unknown op");
  CHECK(ApplyOne(live, del, 1u << 5, NULL) == NP_INVALID_ARGUMENT, "unknown flag");
  CHECK(np_live_apply(live, NULL, 1, 0, NULL) == NP_INVALID_ARGUMENT, "NULL changes");
  CHECK(np_live_apply(live, NULL, 0, 0, NULL) == NP_OK, "empty batch");

  /* Snapshots of the live engine, and the quarantine of a shared address: a pod y/e with
   * x/b's address makes both unidentifiable, so every flow of x/b is denied. */
  const char pod_e[] =
      "{\"metadata\":{\"name\":\"e\",\"namespace\":\"y\"},\"status\":{\"podIP\":\"10.0.0.2\"}}";
  np_change share = {NP_CHANGE_UPSERT, "Pod", pod_e, sizeof pod_e - 1, NULL, NULL};
  CHECK(ApplyOne(live, share, 0, NULL) == NP_OK, "shared address");
  CHECK(np_reader_allowed(reader, b, a, NP_TCP, 80) == 0, "x/b quarantined");
  np_engine* snapshot = NULL;
  CHECK(np_live_snapshot(live, &snapshot, NULL) == NP_OK, "snapshot");
  char* json = NULL;
  CHECK(np_engine_explain(snapshot, "x/b", "x/a", NP_TCP, 80, &json, NULL, NULL) == NP_OK,
        "explain quarantine");
  CHECK(json != NULL && strstr(json, "\"shared_addresses\":[\"10.0.0.2\"]") != NULL,
        "explain names the shared address");
  np_free(json);
  np_pod_query q = {c, a, NP_TCP, 0, 80};
  uint8_t out = 9;
  CHECK(np_reader_allowed_batch(reader, &q, 1, &out, NULL) == NP_OK && out == 1, "batch");
  np_engine_free(snapshot);

  /* Watch events as kubectl prints them (indented, kind present), and as the API streams
   * informer objects (kind given by the caller). */
  const char added[] =
      "{\n    \"type\": \"ADDED\",\n    \"object\": {\n        \"apiVersion\": \"v1\",\n"
      "        \"kind\": \"Pod\",\n        \"metadata\": {\"name\": \"f\", \"namespace\": \"x\","
      " \"labels\": {\"app\": \"b\"}, \"annotations\": {\"n\": \"}{\\\"\"}},\n        \"status\": {\"podIP\": \"10.0.0.6\"}\n    }\n}\n";
  CHECK(np_live_apply_event(live, added, sizeof added - 1, NULL, 0, NULL) == NP_OK, "ADDED");
  uint32_t f;
  CHECK(np_reader_find_pod(reader, "x/f", &f, NULL) == NP_OK, "x/f added");
  const char modified[] =
      "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"f\",\"namespace\":\"x\"},"
      "\"status\":{\"podIP\":\"10.0.0.7\"}}}";
  CHECK(np_live_apply_event(live, modified, sizeof modified - 1, "Pod", 0, NULL) == NP_OK,
        "MODIFIED, kind from the caller");
  np_address p7;
  np_address_parse("10.0.0.7", &p7, NULL);
  CHECK(np_reader_allowed_packet(reader, &p7, &pa, NP_TCP, 80) == 1, "x/f moved to .7");
  const char deleted[] =
      "{\"type\":\"DELETED\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\","
      "\"metadata\":{\"name\":\"f\",\"namespace\":\"x\"}}}";
  CHECK(np_live_apply_event(live, deleted, sizeof deleted - 1, NULL, 0, NULL) == NP_OK, "DELETED");
  CHECK(np_reader_find_pod(reader, "x/f", &f, NULL) == NP_NOT_FOUND, "x/f gone");
  CHECK(np_live_apply_event(live, deleted, sizeof deleted - 1, NULL, 0, NULL) ==
            NP_INVALID_ARGUMENT, "deleted twice");
  CHECK(np_live_apply_event(live, deleted, sizeof deleted - 1, NULL, NP_APPLY_IGNORE_MISSING,
                            NULL) == NP_OK, "deleted twice, relist");
  const char bookmark[] = "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\"}}";
  CHECK(np_live_apply_event(live, bookmark, sizeof bookmark - 1, NULL, 0, NULL) == NP_OK, "bm");
  const char gone[] = "{\"type\":\"ERROR\",\"object\":{\"code\":410}}";
  error = NULL;
  CHECK(np_live_apply_event(live, gone, sizeof gone - 1, NULL, 0, &error) ==
            NP_FAILED_PRECONDITION, "ERROR event");
  CHECK(ErrorSays(error, NP_FAILED_PRECONDITION, "410"), "passes the status on");
  /* A policy tier as an informer hands it out: an AdminNetworkPolicy Deny of every pod's
   * ingress; deleted, nothing isolates x/a again. */
  CHECK(np_reader_allowed(reader, c, a, NP_TCP, 80) == 1, "before the ANP: y/c allowed");
  const char anp[] =
      "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"deny-all\"},"
      "\"spec\":{\"priority\":10,\"subject\":{\"namespaces\":{}},"
      "\"ingress\":[{\"name\":\"deny\",\"action\":\"Deny\",\"from\":[{\"namespaces\":{}}]}]}}}";
  CHECK(np_live_apply_event(live, anp, sizeof anp - 1, "AdminNetworkPolicy", 0, NULL) == NP_OK,
        "ANP ADDED");
  CHECK(np_reader_allowed(reader, c, a, NP_TCP, 80) == 0, "the Admin tier denies y/c");
  np_change anp_gone = {NP_CHANGE_DELETE, "AdminNetworkPolicy", NULL, 0, NULL, "deny-all"};
  CHECK(ApplyOne(live, anp_gone, 0, NULL) == NP_OK, "ANP deleted");
  CHECK(np_reader_allowed(reader, c, a, NP_TCP, 80) == 1, "allowed again");
  CHECK(ApplyOne(live, anp_gone, 0, NULL) == NP_INVALID_ARGUMENT, "ANP deleted twice");
  CHECK(ApplyOne(live, anp_gone, NP_APPLY_IGNORE_MISSING, NULL) == NP_OK, "twice, relist");
  const char* bad_events[] = {"", "[]", "{\"type\":\"ADDED\"}", "{\"type\":\"ADDED\",\"object\":{",
                              "{\"type\":\"RENAMED\",\"object\":{}}", "{\"type\" \"ADDED\"}",
                              "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\"}}"};
  for (size_t i = 0; i < sizeof bad_events / sizeof bad_events[0]; ++i) {
    error = NULL;
    CHECK(np_live_apply_event(live, bad_events[i], strlen(bad_events[i]), NULL, 0, &error) ==
              NP_INVALID_ARGUMENT, bad_events[i]);
    CHECK(strlen(np_error_message(error)) > 0, "a message");
    np_error_free(error);
  }
  CHECK(np_live_apply_event(live, NULL, 0, NULL, 0, NULL) == NP_INVALID_ARGUMENT, "NULL");
  CHECK(np_live_apply_event(live, deleted, sizeof deleted - 1, NULL, 8, NULL) ==
            NP_INVALID_ARGUMENT, "unknown flag");
  CHECK(np_live_apply_event(NULL, deleted, sizeof deleted - 1, NULL, 0, NULL) ==
            NP_INVALID_HANDLE, "NULL live");
  np_reader_free(reader);
  np_live_free(live);
}

/* Wrong kinds of handle and NULL handles: NP_INVALID_HANDLE, never a crash. */
static void TestHandles(void) {
  np_cluster* cluster = Load(kCluster);
  np_engine* engine = Build(cluster, NULL);
  np_error* error = NULL;
  np_engine* wrong_engine = (np_engine*)(void*)cluster;
  np_cluster* wrong_cluster = (np_cluster*)(void*)engine;
  CHECK(np_engine_allowed(wrong_engine, 0, 1, NP_TCP, 80) == -NP_INVALID_HANDLE, "cluster");
  CHECK(np_cluster_pod_count(wrong_cluster) == -NP_INVALID_HANDLE, "engine as cluster");
  np_engine* unbuilt = (np_engine*)1;
  CHECK(np_engine_build(wrong_cluster, NULL, &unbuilt, &error) == NP_INVALID_HANDLE, "build");
  CHECK(unbuilt == NULL && ErrorSays(error, NP_INVALID_HANDLE, "np_cluster"), "names the type");
  CHECK(np_engine_allowed(NULL, 0, 1, NP_TCP, 80) == -NP_INVALID_HANDLE, "NULL");
  CHECK(np_engine_allowed_packet(NULL, NULL, NULL, NP_TCP, 80) == -NP_INVALID_HANDLE, "NULL");
  CHECK(np_engine_allowed_keys(NULL, "x/a", "x/b", NP_TCP, 80) == -NP_INVALID_HANDLE, "NULL");
  CHECK(np_engine_allowed_batch(NULL, NULL, 0, NULL, NULL) == NP_INVALID_HANDLE, "NULL");
  CHECK(np_engine_allowed_packet_batch(NULL, NULL, 0, NULL, NULL) == NP_INVALID_HANDLE, "NULL");
  CHECK(np_engine_find_pod(wrong_engine, "x/a", NULL, NULL) == NP_INVALID_HANDLE, "find");
  char* json = NULL;
  CHECK(np_engine_explain(NULL, "x/a", "x/b", NP_TCP, 80, &json, NULL, NULL) ==
            NP_INVALID_HANDLE, "explain");
  void* ir = NULL;
  size_t n = 0;
  CHECK(np_engine_lower(wrong_engine, &ir, &n, NULL) == NP_INVALID_HANDLE, "lower");
  np_live* live = NULL;
  CHECK(np_live_new(wrong_engine, &live, NULL) == NP_INVALID_HANDLE && live == NULL, "live");
  CHECK(np_live_new(engine, NULL, NULL) == NP_INVALID_ARGUMENT, "NULL out");
  np_live* wrong_live = (np_live*)(void*)engine;
  CHECK(np_live_apply(wrong_live, NULL, 0, 0, NULL) == NP_INVALID_HANDLE, "apply");
  CHECK(np_live_snapshot(wrong_live, &unbuilt, NULL) == NP_INVALID_HANDLE && unbuilt == NULL,
        "snapshot");
  np_reader* reader = NULL;
  CHECK(np_reader_new(wrong_live, &reader, NULL) == NP_INVALID_HANDLE, "reader");
  np_reader* wrong_reader = (np_reader*)(void*)engine;
  uint32_t id;
  CHECK(np_reader_find_pod(wrong_reader, "x/a", &id, NULL) == NP_INVALID_HANDLE, "find");
  CHECK(np_reader_allowed(wrong_reader, 0, 1, NP_TCP, 80) == -NP_INVALID_HANDLE, "allowed");
  CHECK(np_reader_allowed_packet(NULL, NULL, NULL, NP_TCP, 80) == -NP_INVALID_HANDLE, "NULL");
  CHECK(np_reader_allowed_batch(NULL, NULL, 0, NULL, NULL) == NP_INVALID_HANDLE, "NULL");
  np_error* wrong_error = (np_error*)(void*)engine;
  CHECK(np_error_code(wrong_error) == NP_INVALID_HANDLE, "engine as error");
  /* Frees of a wrong kind or NULL are ignored (no double free follows below). */
  np_cluster_free((np_cluster*)(void*)engine);
  np_engine_free((np_engine*)(void*)cluster);
  np_live_free((np_live*)(void*)engine);
  np_reader_free((np_reader*)(void*)engine);
  np_error_free((np_error*)(void*)engine);
  np_cluster_free(NULL);
  np_engine_free(NULL);
  np_live_free(NULL);
  np_reader_free(NULL);
  CHECK(np_engine_allowed_keys(engine, "x/b", "x/a", NP_TCP, 80) == 1, "engine survived");
  np_engine_free(engine);
  np_cluster_free(cluster);
}

/* A minimal protobuf writer, to spell the Kubernetes wire form by field number (numbers
 * from upstream's generated.proto: ObjectMeta name 1, namespace 3, labels 11; Pod metadata
 * 1, status 3; PodStatus podIP 6; List items 2; runtime.Unknown typeMeta 1 {apiVersion 1,
 * kind 2}, raw 2, contentEncoding 3). */
typedef struct {
  unsigned char data[1024];
  size_t size;
} Buffer;

static void Put(Buffer* b, const void* bytes, size_t n) {
  memcpy(b->data + b->size, bytes, n);
  b->size += n;
}
static void Varint(Buffer* b, size_t v) {
  while (v >= 0x80) {
    b->data[b->size++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  b->data[b->size++] = (unsigned char)v;
}
static void Field(Buffer* b, int field, const void* bytes, size_t n) {
  Varint(b, (size_t)field << 3 | 2);
  Varint(b, n);
  Put(b, bytes, n);
}
static void StringField(Buffer* b, int field, const char* text) {
  Field(b, field, text, strlen(text));
}

static Buffer PodBytes(const char* ns, const char* name, const char* ip) {
  Buffer metadata = {{0}, 0}, status = {{0}, 0}, pod = {{0}, 0}, label = {{0}, 0};
  StringField(&metadata, 1, name);
  StringField(&metadata, 3, ns);
  StringField(&label, 1, "app");
  StringField(&label, 2, name);
  Field(&metadata, 11, label.data, label.size);
  StringField(&status, 6, ip);
  Field(&pod, 1, metadata.data, metadata.size);
  Field(&pod, 3, status.data, status.size);
  return pod;
}

static Buffer Envelope(const char* api_version, const char* kind, const Buffer* raw,
                       const char* encoding) {
  Buffer type_meta = {{0}, 0}, envelope = {{0}, 0};
  StringField(&type_meta, 1, api_version);
  StringField(&type_meta, 2, kind);
  Put(&envelope, "k8s\0", 4);
  Field(&envelope, 1, type_meta.data, type_meta.size);
  Field(&envelope, 2, raw->data, raw->size);
  if (encoding != NULL) StringField(&envelope, 3, encoding);
  StringField(&envelope, 4, "application/vnd.kubernetes.protobuf");
  return envelope;
}

static np_code LoadProtobuf(const Buffer* b, np_cluster** cluster, np_error** error) {
  return np_cluster_load_format(b->data, b->size, NP_FORMAT_PROTOBUF, "pods.pb", cluster,
                                error);
}

static void TestProtobuf(void) {
  Buffer a = PodBytes("x", "a", "10.0.0.1"), b = PodBytes("x", "b", "10.0.0.2");
  Buffer list = {{0}, 0};
  Field(&list, 2, a.data, a.size);
  Field(&list, 2, b.data, b.size);
  Buffer pods = Envelope("v1", "PodList", &list, NULL);
  np_cluster* cluster = NULL;
  np_error* error = NULL;
  CHECK(LoadProtobuf(&pods, &cluster, &error) == NP_OK, np_error_message(error));
  np_error_free(error);
  CHECK(np_cluster_pod_count(cluster) == 2, "both items of the PodList");
  np_engine* engine = Build(cluster, NULL);
  char* json = NULL;
  /* The addresses were decoded: 10.0.0.1 is x/a (a pod end: its egress side applies). */
  CHECK(np_engine_explain(engine, "10.0.0.1", "x/b", NP_TCP, 80, &json, NULL, NULL) == NP_OK &&
            strstr(json, "\"egress\":{\"applies\":true") != NULL, "10.0.0.1 is a pod");
  np_free(json);
  np_engine_free(engine);
  np_cluster_free(cluster);
  Buffer one = Envelope("v1", "Pod", &a, NULL);
  CHECK(LoadProtobuf(&one, &cluster, NULL) == NP_OK && np_cluster_pod_count(cluster) == 1,
        "a single Pod");
  np_cluster_free(cluster);

  /* Errors: each names what is wrong. */
  struct {
    Buffer bytes;
    const char* says;
  } bad[5];
  bad[0].bytes = one;
  memcpy(bad[0].bytes.data, "k8s!", 4);
  bad[0].says = "k8s";
  bad[1].bytes = one;
  bad[1].bytes.size = 20; /* cut short */
  bad[1].says = "envelope";
  bad[2].bytes = Envelope("v1", "ConfigMap", &a, NULL); /* a kind np does not read */
  bad[2].says = "ConfigMap";
  bad[3].bytes = Envelope("v2", "Pod", &a, NULL);
  bad[3].says = "apiVersion";
  bad[4].bytes = Envelope("v1", "Pod", &a, "gzip");
  bad[4].says = "gzip";
  for (int i = 0; i < 5; ++i) {
    error = NULL;
    cluster = (np_cluster*)1;
    CHECK(LoadProtobuf(&bad[i].bytes, &cluster, &error) == NP_INVALID_ARGUMENT, bad[i].says);
    CHECK(cluster == NULL && ErrorSays(error, NP_INVALID_ARGUMENT, bad[i].says), bad[i].says);
  }
  /* A list item that is not a Pod message: the item is named. */
  Buffer broken = {{0}, 0};
  Field(&broken, 2, a.data, a.size);
  Field(&broken, 2, "\xff\xff", 2);
  Buffer broken_list = Envelope("v1", "PodList", &broken, NULL);
  error = NULL;
  CHECK(LoadProtobuf(&broken_list, &cluster, &error) == NP_INVALID_ARGUMENT, "bad item");
  CHECK(ErrorSays(error, NP_INVALID_ARGUMENT, "PodList.items[1]"), "names the item");
}

int main(void) {
  TestVersionAndErrors();
  TestLoadErrors();
  TestVerdicts();
  TestLive();
  TestHandles();
  TestProtobuf();
  if (failures) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("all checks passed\n");
  return 0;
}

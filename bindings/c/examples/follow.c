/* follow: a C agent in miniature. Loads a cluster, then reads watch events (the JSON that
 * `kubectl get --watch --output-watch-events -o json` prints: objects one after another,
 * indented or not) from standard input and prints the verdict on one flow after each.
 *
 *   cc follow.c $(pkg-config --cflags --libs np) -o follow
 *   kubectl get pods,networkpolicies -A --watch --output-watch-events -o json |
 *       ./follow cluster.yaml y/b x/a 80
 *   initial: denied
 *   event 1: allowed
 *
 * Deletes of objects already gone are ignored (NP_APPLY_IGNORE_MISSING), as after a relist.
 * Builds as C99 and as C++ (np.h is both). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "np.h"

static char* ReadAll(FILE* f, size_t* size) {
  size_t cap = 1 << 16, n = 0;
  char* data = (char*)malloc(cap);
  size_t got;
  while (data != NULL && (got = fread(data + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      char* bigger = (char*)realloc(data, cap *= 2);
      if (bigger == NULL) free(data);
      data = bigger;
    }
  }
  *size = n;
  return data;
}

static const char* Verdict(np_live* live, const char* from, const char* to, uint16_t port) {
  np_engine* snapshot = NULL;
  if (np_live_snapshot(live, &snapshot, NULL) != NP_OK) return "error";
  int v = np_engine_allowed_keys(snapshot, from, to, NP_TCP, port);
  np_engine_free(snapshot);
  return v == 1 ? "allowed" : v == 0 ? "denied" : "no such pod";
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s CLUSTER.yaml FROM TO TCP-PORT < events\n", argv[0]);
    return 2;
  }
  if (np_abi_version() != NP_ABI_VERSION) {
    fprintf(stderr, "libnp has ABI %u, this program was built for %d\n", np_abi_version(),
            NP_ABI_VERSION);
    return 2;
  }
  FILE* f = fopen(argv[1], "rb");
  if (f == NULL) {
    perror(argv[1]);
    return 2;
  }
  size_t size = 0;
  char* text = ReadAll(f, &size);
  fclose(f);
  np_cluster* cluster = NULL;
  np_engine* engine = NULL;
  np_live* live = NULL;
  np_error* error = NULL;
  if (np_cluster_load(text, size, argv[1], &cluster, &error) != NP_OK ||
      np_engine_build(cluster, NULL, &engine, &error) != NP_OK ||
      np_live_new(engine, &live, &error) != NP_OK) {
    fprintf(stderr, "%s\n", np_error_message(error));
    return 2;
  }
  free(text);
  np_engine_free(engine);
  np_cluster_free(cluster);
  uint16_t port = (uint16_t)atoi(argv[4]);
  printf("initial: %s\n", Verdict(live, argv[2], argv[3], port));

  /* Split the stream into top-level JSON objects by brace depth, outside strings. */
  char* events = ReadAll(stdin, &size);
  size_t start = 0;
  int depth = 0, in_string = 0, number = 0;
  for (size_t i = 0; events != NULL && i < size; ++i) {
    char ch = events[i];
    if (in_string) {
      if (ch == '\\') ++i;
      else if (ch == '"') in_string = 0;
    } else if (ch == '"') {
      in_string = 1;
    } else if (ch == '{') {
      if (depth++ == 0) start = i;
    } else if (ch == '}' && --depth == 0) {
      ++number;
      error = NULL;
      if (np_live_apply_event(live, events + start, i + 1 - start, NULL,
                              NP_APPLY_IGNORE_MISSING, &error) != NP_OK) {
        printf("event %d: not applied: %s\n", number, np_error_message(error));
        np_error_free(error);
        continue;
      }
      printf("event %d: %s\n", number, Verdict(live, argv[2], argv[3], port));
    }
  }
  free(events);
  np_live_free(live);
  return 0;
}

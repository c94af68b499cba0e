// Every emitted ruleset loads (issue 8 item 3): what `netpol compile` prints for each backend
// — Backend::Render of the IR lowered from the cluster, per node and for the whole cluster —
// is loaded into the kernel, in a network namespace of the test's own: the nft text with
// `nft -f`, the iptables text's three parts with `ipset restore`, `iptables-restore` and
// `ip6tables-restore`, the eBPF maps by the loader (a generation loaded and filled). On every
// file of testdata/upstream, testdata/docs and testdata/loader that loads, on seeded random
// clusters (np/testgen) and on the distinct-peers cluster of the benchmarks. Render either
// succeeds and the kernel takes it, or fails with an error — never a program the kernel
// refuses. Needs root for the loading (without it, only Render is checked).
#include <dirent.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bench/cluster_generator.h"
#include "gtest/gtest.h"
#include "np/backends/backend.h"
#include "np/backends/ebpf/loader.h"
#include "np/backends/ebpf/maps.h"
#include "np/backends/util.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/loader.h"
#include "np/lower.h"
#include "np/testgen/random_cluster.h"

namespace np {
namespace {

using backends::RunCommand;

bool Root() { return geteuid() == 0; }

// Files below `dir` ending in .yaml, .yml or .json, sorted.
void ListInputs(const std::string& dir, std::vector<std::string>* out) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    std::string path = absl::StrCat(dir, "/", name);
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      ListInputs(path, out);
    } else if (absl::EndsWith(name, ".yaml") || absl::EndsWith(name, ".yml") ||
               absl::EndsWith(name, ".json")) {
      out->push_back(path);
    }
  }
}

// The nodes to compile for: each node of the cluster's pods, and the whole cluster ("").
std::set<std::string> Nodes(const Cluster& cluster) {
  std::set<std::string> nodes = {""};
  for (int i = 0; i < cluster.pod_count(); ++i) nodes.insert(cluster.pod(i).node_name);
  return nodes;
}

// The part of the iptables text between "# ==== <title>" and the next such line.
std::string Section(const std::string& text, absl::string_view title) {
  size_t start = text.find(absl::StrCat("# ==== ", title));
  if (start == std::string::npos) return "";
  start = text.find('\n', start) + 1;
  size_t end = text.find("# ==== ", start);
  return text.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

class LoadableTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (Root()) ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET)";
  }

  // Compiles `cluster` for each node and checks each backend's program; `what` names the
  // input in failures. Returns how many programs were loaded.
  int CheckCluster(const Cluster& cluster, const std::string& what,
                   absl::string_view refusal = "") {
    int loaded = 0;
    for (const std::string& node : Nodes(cluster)) {
      SCOPED_TRACE(absl::StrCat(what, ", node \"", node, "\""));
      EngineOptions options;
      options.node_name = node;
      absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(cluster, options);
      if (!engine.ok()) {
        ADD_FAILURE() << engine.status();
        continue;
      }
      absl::StatusOr<ir::CompiledPolicy> ir = LowerToIr(**engine);
      if (!ir.ok()) {
        ADD_FAILURE() << ir.status();
        continue;
      }
      loaded += CheckIr(*ir, refusal);
    }
    return loaded;
  }

  // `refusal`: a message Render may fail with instead (empty: Render must succeed).
  int CheckIr(const ir::CompiledPolicy& ir, absl::string_view refusal = "") {
    int loaded = 0;
    for (const char* name : {"nft", "iptables", "ebpf"}) {
      SCOPED_TRACE(name);
      std::unique_ptr<backends::Backend> backend = backends::MakeBackend(name);
      absl::StatusOr<std::string> text = backend->Render(ir);
      if (!text.ok() && !refusal.empty()) {
        EXPECT_TRUE(absl::StrContains(text.status().message(), refusal)) << text.status();
        continue;
      }
      // The lowering writes well-formed IRs of these small clusters, within every limit.
      if (!text.ok()) {
        ADD_FAILURE() << "Render: " << text.status();
        continue;
      }
      if (!Root()) continue;
      absl::Status s = Load(*backend, ir, *text);
      EXPECT_TRUE(s.ok()) << s << "\n" << text->substr(0, 4000);
      loaded += s.ok();
    }
    return loaded;
  }

  // Loads what Render printed, as an operator would, then removes it.
  static absl::Status Load(backends::Backend& backend, const ir::CompiledPolicy& ir,
                           const std::string& text) {
    absl::Status result = absl::OkStatus();
    if (backend.name() == "nft") {
      result = RunCommand({"nft", "-f", "-"}, text).status();
    } else if (backend.name() == "iptables") {
      const std::string ipset = Section(text, "ipset restore");
      if (!ipset.empty()) result = RunCommand({"ipset", "restore"}, ipset).status();
      if (result.ok()) {
        result = RunCommand({"iptables-restore", "--noflush"}, Section(text, "iptables-restore"))
                     .status();
      }
      if (result.ok()) {
        result = RunCommand({"ip6tables-restore", "--noflush"}, Section(text, "ip6tables-restore"))
                     .status();
      }
    } else {
      absl::StatusOr<backends::ebpf::MapContents> maps = backends::ebpf::BuildMaps(ir);
      if (!maps.ok()) return maps.status();
      result = backends::ebpf::Generation::Load(*maps, {}).status();
    }
    if (backend.name() != "ebpf") {
      absl::Status removed = backend.Remove({});
      if (result.ok()) result = removed;
    }
    return result;
  }
};

TEST_F(LoadableTest, EveryTestdataFile) {
  std::vector<std::string> files;
  for (const char* dir : {"testdata/upstream", "testdata/docs", "testdata/loader"}) {
    ListInputs(dir, &files);
  }
  ASSERT_GT(files.size(), 40u) << "testdata not found";
  int clusters = 0, loaded = 0;
  for (const std::string& file : files) {
    ClusterLoader loader;
    (void)loader.AddPath(file);
    absl::StatusOr<Cluster> cluster = loader.Build();
    if (!cluster.ok()) {
      // Only testdata/loader holds inputs meant to be rejected.
      EXPECT_TRUE(absl::StartsWith(file, "testdata/loader/")) << file << ": " << cluster.status();
      continue;
    }
    ++clusters;
    loaded += CheckCluster(*cluster, file);
  }
  std::cerr << clusters << " clusters of " << files.size() << " files; " << loaded
            << " programs loaded\n";
  EXPECT_GT(clusters, 40);
}

TEST_F(LoadableTest, RandomClusters) {
  int loaded = 0;
  for (uint64_t seed = 0; seed < 25; ++seed) {
    testgen::RandomCluster generator(seed);
    absl::StatusOr<Cluster> cluster = Cluster::Create(generator.Objects());
    ASSERT_TRUE(cluster.ok()) << "seed " << seed << ": " << cluster.status();
    loaded += CheckCluster(*cluster, absl::StrCat("random cluster seed ", seed));
  }
  std::cerr << loaded << " programs loaded\n";
}

// Two live pods with one address, both isolated (issue 8 item 3: nft wrote the address twice
// into a map and `nft -f` failed with "File exists" after `compile` exited 0). Each backend
// either refuses with an error naming the address and both pods, or — once the lowering
// gives the address to one pod only — writes a program that loads.
TEST_F(LoadableTest, SharedPodAddress) {
  std::string yaml = R"(
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
)";
  for (const char* pod : {"a", "b"}) {
    absl::StrAppend(&yaml, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ", pod,
                    ", namespace: x}\nspec: {nodeName: node-0, containers: [{name: c, image: i}]}\n"
                    "status: {phase: Running, podIP: 10.0.0.5, podIPs: [{ip: 10.0.0.5}]}\n");
  }
  ClusterLoader loader;
  ASSERT_TRUE(loader.AddText(yaml, "shared.yaml").ok());
  absl::StatusOr<Cluster> cluster = loader.Build();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  CheckCluster(*cluster, "two pods sharing 10.0.0.5",
               "endpoints[1] (x/b): address 10.0.0.5 is also endpoints[0] (x/a)'s");
}

// The benchmark's distinct-peers cluster through the engine: 2,000 ipBlock peers on ports of
// their own, each one prefix (written into the rules) or five (a set each).
TEST_F(LoadableTest, DistinctPeers) {
  for (int prefixes : {1, 5}) {
    absl::StatusOr<Cluster> cluster =
        Cluster::Create(bench::DistinctPeersCluster(2000, prefixes));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    CheckCluster(*cluster, absl::StrCat("2,000 distinct peers of ", prefixes, " prefixes"));
  }
}

}  // namespace
}  // namespace np

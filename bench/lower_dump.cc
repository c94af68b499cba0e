// Differential oracle for optimizations of the whole lowering (np/lower.cc,
// np/lower_align.cc, CheckIr): writes LowerToIr's and AlignNumbering's outputs, serialized
// deterministically, for the agent bench's two shapes and for seeded random clusters (half
// with policy tiers), each followed by random events whose lowerings are aligned onto the
// previous aligned program. Run it on the base commit and on the change and compare the
// files byte for byte (`cmp`): the optimization must not change a byte of output.
//   bazel build //bench:lower_dump && bazel-bin/bench/lower_dump OUT_DIR [SEEDS]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "bench/agent_workload.h"
#include "bench/cluster_generator.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/lower.h"
#include "np/lower_align.h"
#include "np/testgen/random_cluster.h"

namespace np {
namespace {

std::string Deterministic(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  return out;
}

// Appends a record: a label, then the serialized program or the error.
void Write(std::ofstream& out, const std::string& label,
           const absl::StatusOr<ir::CompiledPolicy>& ir, const AlignStats* stats) {
  std::string body = ir.ok() ? Deterministic(*ir) : absl::StrCat("error: ", ir.status().ToString());
  if (stats != nullptr) {
    absl::StrAppend(&body, " stats ", stats->compacted, " ", stats->identities.added, " ",
                    stats->identities.unused, " ", stats->identities.changed, " ",
                    stats->peer_sets.added, " ", stats->peer_sets.unused, " ",
                    stats->peer_sets.changed, " ", stats->tables.added, " ",
                    stats->tables.unused, " ", stats->tables.changed);
  }
  out << label << " " << body.size() << "\n" << body << "\n";
}

// `steps` events from `generator` on the engine of `objects`: each snapshot lowered (both
// forms) and the ordered lowering aligned onto the previous aligned one.
int Run(const std::string& path, ClusterObjects objects, const std::string& node,
        testgen::RandomCluster& generator, bool tiers, uint64_t seed, int steps) {
  std::ofstream out(path, std::ios::binary);
  absl::StatusOr<Cluster> cluster = Cluster::Create(std::move(objects));
  if (!cluster.ok()) {
    out << "cluster error " << cluster.status() << "\n";
    return 0;
  }
  EngineOptions options;
  options.node_name = node;
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster, options);
  if (!engine.ok()) {
    out << "engine error " << engine.status() << "\n";
    return 0;
  }
  std::shared_ptr<const Engine> current = *engine;
  std::mt19937_64 rng(seed);
  std::optional<ir::CompiledPolicy> installed;
  int records = 0;
  for (int step = 0; step < steps; ++step) {
    absl::StatusOr<ir::CompiledPolicy> next = LowerToIr(*current);
    Write(out, absl::StrCat("lower ", step), next, nullptr);
    LowerOptions flat;
    flat.flatten_tiers = true;
    Write(out, absl::StrCat("flat ", step), LowerToIr(*current, flat), nullptr);
    records += 2;
    if (next.ok()) {
      if (installed.has_value()) {
        AlignStats stats;
        absl::StatusOr<ir::CompiledPolicy> aligned = AlignNumbering(*installed, *next, &stats);
        Write(out, absl::StrCat("align ", step), aligned, &stats);
        ++records;
        if (aligned.ok()) installed = *std::move(aligned);
      } else {
        installed = *std::move(next);
      }
    }
    absl::StatusOr<Cluster> now = current->ToCluster();
    if (!now.ok()) break;
    const bool tier = tiers && rng() % 4 == 0;
    Change change = tier ? generator.RandomTierChange(*now) : generator.RandomChange(*now);
    absl::StatusOr<std::shared_ptr<const Engine>> after = current->Apply({change});
    if (!after.ok()) {
      out << "apply error " << after.status() << "\n";
      continue;
    }
    current = *after;
  }
  return records;
}

}  // namespace
}  // namespace np

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s OUT_DIR [SEEDS]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const int seeds = argc > 2 ? atoi(argv[2]) : 60;
  int records = 0;
  for (np::bench::NodeShape shape : {np::bench::NodeShape::kSmall, np::bench::NodeShape::kLarge}) {
    np::testgen::RandomCluster generator(7);
    const int steps = shape == np::bench::NodeShape::kSmall ? 12 : 4;
    records += np::Run(absl::StrCat(dir, "/shape", static_cast<int>(shape)),
                       np::bench::GenerateCluster(np::bench::OptionsFor(shape)), np::bench::kNode, generator, false,
                       7, steps);
  }
  for (uint64_t seed = 0; seed < static_cast<uint64_t>(seeds); ++seed) {
    np::testgen::RandomClusterOptions o;
    o.max_pods = 12;
    o.tier_chance = seed % 2 == 0 ? 1 : 0;
    np::testgen::RandomCluster generator(seed, o);
    records += np::Run(absl::StrCat(dir, "/seed", seed), generator.Objects(),
                       seed % 4 == 3 ? "" : "node-1", generator, o.tier_chance > 0, seed, 15);
  }
  printf("%d records\n", records);
  return 0;
}

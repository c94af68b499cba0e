// The engine state's policy indexes (np/internal/engine_state.h, `selector_policies` and
// `egress_named_policies`) against a brute-force reading of the live policies' rules, after
// every step of seeded random change sequences (pods, namespaces and NetworkPolicies added,
// edited and deleted). A batch whose new peer classes widen a selector rebuilds the tables of
// exactly the policies these lists name: a policy missing from them would keep a stale table
// (the verdict tests of engine_test see that only when a stale table happens to answer a
// probe differently). A failure prints the seed; replay it with NP_INDEX_SEED=<seed>.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "np/cluster.h"
#include "np/engine.h"
#include "np/internal/engine_state.h"
#include "np/testgen/random_cluster.h"

namespace np {
namespace {

using testgen::RandomCluster;

// Every difference between the state's lists and the policies' rules, as text.
std::vector<std::string> IndexProblems(const Engine& engine) {
  const internal::EngineState& s = internal::EngineAccess::State(engine);
  std::vector<std::string> problems;
  if (s.selector_policies.size() != s.selectors.size()) {
    problems.push_back(absl::StrCat("selector_policies has ", s.selector_policies.size(),
                                    " lists for ", s.selectors.size(), " selectors"));
    return problems;
  }
  std::vector<std::vector<uint32_t>> naming(s.selectors.size());
  std::vector<uint32_t> egress_named;
  for (uint32_t p = 0; p < s.policies.size(); ++p) {
    const internal::CompiledPolicy* policy = s.policies[p].get();
    if (policy == nullptr) continue;
    if (policy->has_egress_named_ports) egress_named.push_back(p);
    for (const auto& rules : policy->rules) {
      for (const internal::CompiledRule& rule : rules) {
        for (uint32_t selector : rule.selectors) {
          if (naming[selector].empty() || naming[selector].back() != p) {
            naming[selector].push_back(p);
          }
        }
      }
    }
  }
  for (uint32_t selector = 0; selector < naming.size(); ++selector) {
    const std::vector<uint32_t>& held = *s.selector_policies[selector];
    if (held != naming[selector]) {
      problems.push_back(absl::StrCat("selector ", selector, ": index {",
                                      absl::StrJoin(held, ","), "}, rules {",
                                      absl::StrJoin(naming[selector], ","), "}"));
    }
  }
  const std::vector<uint32_t> held =
      s.egress_named_policies != nullptr ? *s.egress_named_policies : std::vector<uint32_t>();
  if (held != egress_named) {
    problems.push_back(absl::StrCat("egress named ports: index {", absl::StrJoin(held, ","),
                                    "}, policies {", absl::StrJoin(egress_named, ","), "}"));
  }
  return problems;
}

void CheckSequence(uint64_t seed) {
  RandomCluster generator(seed);
  absl::StatusOr<Cluster> built = Cluster::Create(generator.Objects());
  ASSERT_TRUE(built.ok()) << "NP_INDEX_SEED=" << seed << ": " << built.status();
  std::optional<Cluster> cluster = *std::move(built);
  absl::StatusOr<std::shared_ptr<const Engine>> engine = Engine::Build(*cluster);
  ASSERT_TRUE(engine.ok()) << "NP_INDEX_SEED=" << seed << ": " << engine.status();
  std::vector<std::string> problems = IndexProblems(**engine);
  ASSERT_TRUE(problems.empty()) << "NP_INDEX_SEED=" << seed << " built\n"
                                << absl::StrJoin(problems, "\n");
  for (int step = 0; step < 40; ++step) {
    const Change change = generator.RandomChange(*cluster);
    absl::StatusOr<Cluster> next_cluster = cluster->Apply({change});
    absl::StatusOr<std::shared_ptr<const Engine>> next = (*engine)->Apply({change});
    ASSERT_EQ(next_cluster.ok(), next.ok()) << "NP_INDEX_SEED=" << seed << " step " << step;
    if (!next.ok()) continue;
    cluster = *std::move(next_cluster);
    engine = *std::move(next);
    problems = IndexProblems(**engine);
    ASSERT_TRUE(problems.empty()) << "NP_INDEX_SEED=" << seed << " step " << step << "\n"
                                  << absl::StrJoin(problems, "\n");
  }
}

TEST(PolicyIndexes, FollowRandomChangeSequences) {
  if (const char* v = std::getenv("NP_INDEX_SEED")) {
    CheckSequence(std::strtoull(v, nullptr, 10));
    return;
  }
  for (uint64_t seed = 1; seed <= 60; ++seed) ASSERT_NO_FATAL_FAILURE(CheckSequence(seed));
}

}  // namespace
}  // namespace np

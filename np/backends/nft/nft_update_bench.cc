// Update latency of the nft backend for a one-pod change (or a policy event: any two IRs): the IR before and after the change
// (`netpol compile --ir --ir-format text --node N -f ...`), swapped back and forth through
// Backend::Update in a network namespace of the benchmark's own, as the agent would. Prints
// p50/p99/max of Update, whether each swap stayed in place (the installed generation is
// unchanged), and, for comparison, the generation switch (Apply) and Build of the bigger IR.
// Then the same swaps through Backend::UpdateDelta with the deltas of DiffPrograms (the
// agent's issue-13 path), how many stayed on its own in-place path, and its parts: the plan
// from the delta alone (PlanDeltaUpdate), the index a full install builds (MakeDeltaIndex),
// and one RCU grace period (membarrier), which a local pod's two commits wait for.
//
//   bazel build -c opt //np/backends/nft:nft_update_bench
//   bazel-bin/np/backends/nft/nft_update_bench before.textproto after.textproto [swaps]
//   bazel-bin/np/backends/nft/nft_update_bench before.textproto +rule|+peerset|+unnamed [swaps]
// The second form makes `after` a policy added to one table of `before` (AddPolicyToOneTable):
// a policy event on stably numbered programs, which Update does in place. Its peers: an
// existing peer set, a new named one of named identities, or up to 8 identities no peer set
// names (then deleting the policy drops them: a cleanup commit after a grace period).
//
// In-place transactions go to the kernel as raw netlink batches (netlink.h); the line after
// UpdateDelta's says how many, their mean wall and CPU time (the CPU time is mostly the
// kernel's commit, charged to the sending thread). NP_NFT_NO_NETLINK=1 runs the same binary
// with libnftables for them instead (the path before netlink), for old/new comparisons.
//
// A/B lines: the same swaps alternately in place (PlanInPlaceUpdate, for a policy event on
// stably numbered IRs) and through the generation switch (NP_NFT_NO_IN_PLACE), two by two;
// for a policy event, UpdateDelta's own path (PlanPolicyDelta) against its default path
// (NP_NFT_NO_POLICY_DELTA: ApplyDelta on a copy, then Update), two by two. BEFORE may be a
// binary CompiledPolicy (a name ending in .pb), e.g. a record of bench/lower_dump.
//
// Needs root (creates and deletes netns np-nft-bench-<pid>).
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/text_format.h"
#include "np/backends/nft/nft.h"
#include "np/backends/util.h"

namespace np::backends::nft {
namespace {

// Text format, or (a name ending in .pb) the binary serialization.
bool ReadIr(const char* path, ir::CompiledPolicy* ir) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) return false;
  if (absl::EndsWith(path, ".pb")) return ir->ParseFromString(text.str());
  return google::protobuf::TextFormat::ParseFromString(text.str(), ir);
}

double Ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

std::string Percentiles(std::vector<double> ms) {
  if (ms.empty()) return "n/a";
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))]; };
  char buf[200];
  const size_t over = static_cast<size_t>(
      ms.end() - std::upper_bound(ms.begin(), ms.end(), 1.0));
  snprintf(buf, sizeof(buf), "p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms (n=%zu, %zu over 1 ms)",
           at(0.5), at(0.9), at(0.99), ms.back(), ms.size(), over);
  return buf;
}

uint64_t Generation(const std::string& netns) {
  absl::StatusOr<std::string> l = RunCommand({"nft", "-t", "list", "table", "inet", kTableName}, "", netns);
  return l.ok() ? ParseInstalled(*l).last_generation : 0;
}

// A policy added on the node, as the next program of stably numbered lowerings has it: the
// table with the most selected endpoints among those isolated for ingress gets one more rule
// (TCP 64999) and the policy's name. Its peers: the peer set of the table's first ingress
// rule (kExisting); a new peer set, the union of the first peer sets until it has more than
// six mark runs (kNewSet: a named set); or a new peer set of identities no peer set names
// (kUnnamed).
enum class Peers { kExisting, kNewSet, kUnnamed };
bool AddPolicyToOneTable(const ir::CompiledPolicy& before, Peers peers, ir::CompiledPolicy* next) {
  *next = before;
  std::vector<int> selected(before.tables_size());
  for (const ir::Endpoint& e : before.endpoints()) selected[e.table()] += e.selected() ? 1 : 0;
  int best = -1;
  for (int t = 0; t < before.tables_size(); ++t) {
    const ir::DirectionPolicy& in = before.tables(t).ingress();
    if (in.isolated() && in.rules_size() > 0 && selected[t] > 0 &&
        (best < 0 || selected[t] > selected[best])) {
      best = t;
    }
  }
  if (best < 0) return false;
  ir::Table* table = next->mutable_tables(best);
  uint32_t peer_set = table->ingress().rules(0).peer_set();
  if (peers == Peers::kUnnamed) {
    // Identities no peer set names (pods no policy's peers select yet): the add names them
    // anew, the delete drops them again (Update's cleanup commit after a grace period).
    std::set<uint32_t> named;
    for (const ir::PeerSet& s : before.peer_sets()) named.insert(s.identities().begin(), s.identities().end());
    ir::PeerSet* s = next->add_peer_sets();
    s->set_id(static_cast<uint32_t>(next->peer_sets_size() - 1));
    for (const ir::Identity& i : before.identities()) {
      if (named.count(i.id()) == 0 && i.pods_size() > 0 && s->identities_size() < 8) {
        s->add_identities(i.id());
      }
    }
    if (s->identities_size() == 0) return false;
    peer_set = s->id();
  } else if (peers == Peers::kNewSet) {
    std::set<uint32_t> ids;
    auto runs = [&] {
      int n = 0;
      int64_t last = -2;
      for (uint32_t id : ids) {
        n += static_cast<int64_t>(id) == last + 1 ? 0 : 1;
        last = id;
      }
      return n;
    };
    for (const ir::PeerSet& s : before.peer_sets()) {
      if (runs() > 6) break;
      if (!s.all()) ids.insert(s.identities().begin(), s.identities().end());
    }
    ir::PeerSet* s = next->add_peer_sets();
    s->set_id(static_cast<uint32_t>(next->peer_sets_size() - 1));
    for (uint32_t id : ids) s->add_identities(id);
    peer_set = s->id();
  }
  ir::PortRule* rule = table->mutable_ingress()->add_rules();
  rule->set_protocol(ir::TCP);
  rule->set_first_port(64999);
  rule->set_last_port(64999);
  rule->set_peer_set(peer_set);
  table->add_policies("bench/added");
  return CheckIr(*next).ok();
}

int Main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s BEFORE.textproto AFTER.textproto|+rule|+peerset|+unnamed [swaps]\n",
            argv[0]);
    return 2;
  }
  ir::CompiledPolicy irs[2];
  for (int i = 0; i < 2; ++i) {
    const std::string arg = argv[1 + i];
    if (i == 1 && (arg == "+rule" || arg == "+peerset" || arg == "+unnamed")) {
      const Peers peers = arg == "+rule"      ? Peers::kExisting
                          : arg == "+peerset" ? Peers::kNewSet
                                              : Peers::kUnnamed;
      if (!AddPolicyToOneTable(irs[0], peers, &irs[1])) {
        fprintf(stderr, "no table of BEFORE takes the policy\n");
        return 2;
      }
      continue;
    }
    if (!ReadIr(argv[1 + i], &irs[i])) {
      fprintf(stderr, "cannot read IR %s\n", argv[1 + i]);
      return 2;
    }
  }
  int swaps = 200;
  if (argc > 3 && !absl::SimpleAtoi(argv[3], &swaps)) return 2;
  // Stable numbering never shrinks the lists: a peer set only `after` has is an unused
  // tombstone in `before` (np/lower_align.h), so that both directions are deltas.
  while (irs[0].peer_sets_size() < irs[1].peer_sets_size()) {
    irs[0].add_peer_sets()->set_id(static_cast<uint32_t>(irs[0].peer_sets_size() - 1));
  }
  // NP_BENCH_WRITE_IRS=PREFIX: both IRs as text (PREFIX.before, PREFIX.after), for another
  // build of this bench to run the same pair (A/B against a base commit).
  if (const char* prefix = getenv("NP_BENCH_WRITE_IRS"); prefix != nullptr) {
    for (int i = 0; i < 2; ++i) {
      std::string text;
      google::protobuf::TextFormat::PrintToString(irs[i], &text);
      std::ofstream(absl::StrCat(prefix, i == 0 ? ".before" : ".after")) << text;
    }
  }
  absl::StatusOr<Program> before = Build(irs[0]);
  absl::StatusOr<Program> after = Build(irs[1]);
  if (!before.ok() || !after.ok()) {
    fprintf(stderr, "build: %s\n", std::string((before.ok() ? after : before).status().message()).c_str());
    return 1;
  }
  ElementPlan plan = PlanElementUpdate(WithGeneration(*before, 1), WithGeneration(*after, 1));
  printf("program: %zu rules, %zu sets, %zu elements; endpoints %d, identities %d\n",
         after->rule_count(), after->sets.size(), after->element_count(), irs[1].endpoints_size(),
         irs[1].identities_size());
  printf("plan: %s, %zu transaction(s)%s\n",
         plan.fallback.empty() ? "in place" : ("switch: " + plan.fallback).c_str(),
         plan.transactions.size(), plan.grace_period ? " with a grace period" : "");
  {
    const Program a = WithGeneration(*before, 1), b = WithGeneration(*after, 1);
    InPlacePlan in_place = PlanInPlaceUpdate(a, b);
    printf("in-place plan: %s, %zu rules and elements written\n",
           in_place.fallback.empty() ? "one transaction" : ("refused: " + in_place.fallback).c_str(),
           in_place.writes);
    std::vector<double> plan_ms;
    for (int i = 0; i < 20; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      InPlacePlan p = PlanInPlaceUpdate(a, b);
      plan_ms.push_back(Ms(t0));
    }
    printf("PlanInPlaceUpdate: %s\n", Percentiles(plan_ms).c_str());
  }
  std::vector<double> build_ms;
  for (int i = 0; i < 20; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<Program> p = Build(irs[1]);
    build_ms.push_back(Ms(t0));
  }
  printf("Build(after):   %s\n", Percentiles(build_ms).c_str());

  const std::string netns = absl::StrCat("np-nft-bench-", getpid());
  if (!RunCommand({"ip", "netns", "add", netns}).ok()) {
    fprintf(stderr, "ip netns add %s failed (root?)\n", netns.c_str());
    return 1;
  }
  int rc = 0;
  {
    std::unique_ptr<Backend> nft = MakeNftBackend();
    const Attachment where{{}, netns};
    if (absl::Status s = nft->Apply(irs[0], where); !s.ok()) {
      fprintf(stderr, "apply: %s\n", std::string(s.message()).c_str());
      rc = 1;
    }
    std::vector<double> update_ms;
    int cur = 0;
    const uint64_t generation = Generation(netns);
    for (int i = 0; i < swaps && rc == 0; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      absl::Status s = nft->Update(irs[cur], irs[1 - cur], where);
      update_ms.push_back(Ms(t0));
      if (!s.ok()) {
        fprintf(stderr, "update: %s\n", std::string(s.message()).c_str());
        rc = 1;
      }
      cur = 1 - cur;
    }
    // The same IR again: Build, renaming and the plan, no transaction (np's own share).
    std::vector<double> same_ms;
    for (int i = 0; i < std::max(10, swaps / 4) && rc == 0; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      absl::Status s = nft->Update(irs[cur], irs[cur], where);
      same_ms.push_back(Ms(t0));
      if (!s.ok()) rc = 1;
    }
    printf("Update (no change, np's share): %s\n", Percentiles(same_ms).c_str());
    const uint64_t switches = Generation(netns) - generation;
    printf("Update (swaps): %s; generation switches: %llu of %d\n", Percentiles(update_ms).c_str(),
           static_cast<unsigned long long>(switches), swaps);
    std::vector<double> apply_ms;
    for (int i = 0; i < std::max(5, swaps / 10) && rc == 0; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      absl::Status s = nft->Apply(irs[i % 2], where);
      apply_ms.push_back(Ms(t0));
      if (!s.ok()) rc = 1;
    }
    printf("Apply (switch): %s\n", Percentiles(apply_ms).c_str());
    // Update alternately in place and through the generation switch (NP_NFT_NO_IN_PLACE),
    // swap after swap in the same seconds: the A/B of the in-place path on a noisy machine.
    if (rc == 0 && nft->Apply(irs[0], where).ok()) {
      cur = 0;
      std::vector<double> ab_ms[2];
      const DeltaStats ab_before = DeltaStatsOf(*nft);
      for (int i = 0; i < 2 * swaps && rc == 0; ++i) {
        const int whole = (i / 2) % 2;  // two swaps (there and back) per mode, alternating
        if (whole) setenv("NP_NFT_NO_IN_PLACE", "1", 1);
        auto t0 = std::chrono::steady_clock::now();
        absl::Status s = nft->Update(irs[cur], irs[1 - cur], where);
        ab_ms[whole].push_back(Ms(t0));
        unsetenv("NP_NFT_NO_IN_PLACE");
        if (!s.ok()) {
          fprintf(stderr, "update: %s\n", std::string(s.message()).c_str());
          rc = 1;
        }
        cur = 1 - cur;
      }
      const DeltaStats ab = DeltaStatsOf(*nft);
      const uint64_t in_place = ab.update_in_place - ab_before.update_in_place;
      printf("A/B Update in place:  %s\nA/B Update switching: %s\n  (%llu in place, mean "
             "%.3f ms of it in the netlink batch; %llu by element edits, %llu switched; last: "
             "%s)\n",
             Percentiles(ab_ms[0]).c_str(), Percentiles(ab_ms[1]).c_str(),
             static_cast<unsigned long long>(in_place),
             in_place == 0 ? 0.0
                           : (ab.in_place_netlink_ns - ab_before.in_place_netlink_ns) / 1e6 / in_place,
             static_cast<unsigned long long>(ab.update_elements - ab_before.update_elements),
             static_cast<unsigned long long>(ab.update_switch - ab_before.update_switch),
             ab.last_update.c_str());
    }

    // The delta path, from irs[0] installed by a full Apply (which builds the index).
    std::optional<ir::CompiledPolicyDelta> deltas[2] = {DiffPrograms(irs[0], irs[1]),
                                                        DiffPrograms(irs[1], irs[0])};
    if (!deltas[0].has_value() || !deltas[1].has_value()) {
      printf("UpdateDelta: the two IRs differ in more than ranges, endpoints and pods\n");
    } else if (rc == 0 && nft->Apply(irs[0], where).ok()) {
      cur = 0;
      std::vector<double> delta_ms;
      const DeltaStats stats_before = DeltaStatsOf(*nft);
      const uint64_t g0 = Generation(netns);
      for (int i = 0; i < swaps && rc == 0; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        absl::Status s = nft->UpdateDelta(irs[cur], *deltas[cur], where);
        delta_ms.push_back(Ms(t0));
        if (!s.ok()) {
          fprintf(stderr, "update delta: %s\n", std::string(s.message()).c_str());
          rc = 1;
        }
        cur = 1 - cur;
      }
      const DeltaStats stats = DeltaStatsOf(*nft);
      printf("UpdateDelta (swaps): %s; in place on its own path %llu of %d (last fallback: '%s'), "
             "generation switches %llu\n",
             Percentiles(delta_ms).c_str(),
             static_cast<unsigned long long>(stats.in_place - stats_before.in_place), swaps,
             stats.last_fallback.c_str(), static_cast<unsigned long long>(Generation(netns) - g0));
      const uint64_t batches = stats.netlink_batches - stats_before.netlink_batches;
      printf("  netlink: %llu batches, mean %.3f ms each (parse, encode, send, the kernel's "
             "commit, acks), of which %.3f ms on the CPU; %llu fallbacks, %llu aborts%s%s\n",
             static_cast<unsigned long long>(batches),
             batches == 0 ? 0.0 : (stats.netlink_ns - stats_before.netlink_ns) / 1e6 / batches,
             batches == 0 ? 0.0 : (stats.netlink_cpu_ns - stats_before.netlink_cpu_ns) / 1e6 / batches,
             static_cast<unsigned long long>(stats.netlink_fallbacks - stats_before.netlink_fallbacks),
             static_cast<unsigned long long>(stats.netlink_aborts - stats_before.netlink_aborts),
             stats.last_netlink_error.empty() ? "" : "; last error: ",
             stats.last_netlink_error.c_str());
      // Policy deltas (tables, peer sets): alternately on UpdateDelta's own in-place path
      // (PlanPolicyDelta) and on the default path (NP_NFT_NO_POLICY_DELTA: ApplyDelta on a
      // copy, then Update, which builds and compares whole programs), two swaps per mode.
      if (!deltas[0]->tables().empty() || !deltas[0]->peer_sets().empty()) {
        std::vector<double> ab_ms[2];
        int gap_ms = 0;
        if (const char* gap = getenv("NP_BENCH_GAP_MS"); gap != nullptr) gap_ms = atoi(gap);
        const DeltaStats ab_before = DeltaStatsOf(*nft);
        for (int i = 0; i < 2 * swaps && rc == 0; ++i) {
          const int fallback = (i / 2) % 2;
          // Events spaced as on a node (NP_BENCH_GAP_MS, untimed): a deferred retirement's
          // grace period then passes before the next call, as it would between real events.
          if (gap_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
          if (fallback) setenv("NP_NFT_NO_POLICY_DELTA", "1", 1);
          auto t0 = std::chrono::steady_clock::now();
          absl::Status s = nft->UpdateDelta(irs[cur], *deltas[cur], where);
          ab_ms[fallback].push_back(Ms(t0));
          unsetenv("NP_NFT_NO_POLICY_DELTA");
          if (!s.ok()) {
            fprintf(stderr, "update delta: %s\n", std::string(s.message()).c_str());
            rc = 1;
          }
          cur = 1 - cur;
        }
        const DeltaStats ab = DeltaStatsOf(*nft);
        printf("A/B UpdateDelta policy in place: %s\nA/B UpdateDelta default path:    %s\n"
               "  (%llu policy deltas in place, %llu on the default path; in-place netlink "
               "batches (both paths) %.3f ms mean; %llu retirements deferred, their next call "
               "waited %.3f ms mean for the grace period; last: %s)\n",
               Percentiles(ab_ms[0]).c_str(), Percentiles(ab_ms[1]).c_str(),
               static_cast<unsigned long long>(ab.policy_in_place - ab_before.policy_in_place),
               static_cast<unsigned long long>(ab.full_path - ab_before.full_path),
               (ab.in_place_netlink_ns - ab_before.in_place_netlink_ns) / 1e6 /
                   std::max<uint64_t>(1, ab.policy_in_place - ab_before.policy_in_place +
                                             ab.update_in_place - ab_before.update_in_place),
               static_cast<unsigned long long>(ab.cleanups_deferred - ab_before.cleanups_deferred),
               ab.cleanups_committed == ab_before.cleanups_committed
                   ? 0.0
                   : (ab.cleanup_wait_ns - ab_before.cleanup_wait_ns) / 1e6 /
                         (ab.cleanups_committed - ab_before.cleanups_committed),
               ab.last_fallback.c_str());
        if (cur != 0) {
          (void)nft->UpdateDelta(irs[cur], *deltas[cur], where);
          cur = 0;
        }
        std::vector<double> policy_plan_ms;
        absl::StatusOr<DeltaIndex> policy_index = MakeDeltaIndex(irs[0], 1);
        for (int i = 0; i < swaps && policy_index.ok(); ++i) {
          DeltaIndexEdit edit;
          auto t0 = std::chrono::steady_clock::now();
          InPlacePlan p = PlanPolicyDelta(*policy_index, irs[0], *deltas[0], &edit);
          policy_plan_ms.push_back(Ms(t0));
          if (i == 0) {
            printf("policy delta plan: %s, %zu rules and elements written%s\n",
                   p.fallback.empty() ? "in place" : ("full path: " + p.fallback).c_str(),
                   p.writes, p.cleanup_text.empty() ? "" : ", a cleanup");
          }
        }
        printf("PlanPolicyDelta: %s\n", Percentiles(policy_plan_ms).c_str());
      }
      // Its parts, without the kernel.
      absl::StatusOr<DeltaIndex> index = MakeDeltaIndex(irs[0], 1);
      std::vector<double> plan_ms, index_ms, grace_ms;
      for (int i = 0; i < swaps && index.ok(); ++i) {
        DeltaIndexEdit edit;
        auto t0 = std::chrono::steady_clock::now();
        ElementPlan p = PlanDeltaUpdate(*index, irs[0], *deltas[0], &edit);
        plan_ms.push_back(Ms(t0));
        if (i == 0) {
          printf("delta plan: %s, %zu transaction(s)%s\n",
                 p.fallback.empty() ? "in place" : ("full path: " + p.fallback).c_str(),
                 p.transactions.size(), p.grace_period ? " with a grace period" : "");
          for (const std::string& t : p.transactions) printf("  ---\n%s", t.c_str());
        }
      }
      // Alternately with Build, so that the index's own share (what a full install now adds)
      // is the difference of two figures taken in the same seconds.
      std::vector<double> build_again_ms;
      for (int i = 0; i < 20; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        absl::StatusOr<DeltaIndex> again = MakeDeltaIndex(irs[0], 1);
        index_ms.push_back(Ms(t0));
        t0 = std::chrono::steady_clock::now();
        absl::StatusOr<Program> built = Build(irs[0]);
        build_again_ms.push_back(Ms(t0));
      }
      printf("Build(before), alternating with the next line: %s\n",
             Percentiles(build_again_ms).c_str());
      for (int i = 0; i < 50; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
        grace_ms.push_back(Ms(t0));
      }
      printf("PlanDeltaUpdate: %s\nMakeDeltaIndex (Build included): %s\nmembarrier: %s\n",
             Percentiles(plan_ms).c_str(), Percentiles(index_ms).c_str(),
             Percentiles(grace_ms).c_str());
    }
    (void)nft->Remove(where);
  }
  (void)RunCommand({"ip", "netns", "del", netns});
  return rc;
}

}  // namespace
}  // namespace np::backends::nft

int main(int argc, char** argv) { return np::backends::nft::Main(argc, argv); }

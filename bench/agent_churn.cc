// Sustained churn into one agent (issue 13): `--rate` watch events per second for `--seconds`
// (default 200/s for 60 s) — pods added and deleted on every node (node-0 included), pods
// relabelled into another deployment's labels, allow policies added, edited and deleted —
// fed to one np::agent::Agent over a real backend on a node of a synthetic cluster
// (bench/agent_workload.h), driven as RunLoop drives it: events are handled as they fall
// due, and a sync runs whenever SyncDue says so (min_interval coalescing), on one thread.
// While a sync runs, the events falling due wait, as they would in the agent's input pipe.
//
// Event k falls due at start + k/rate, and that instant is its "received" time, so a sync
// that falls behind shows up as lag instead of being hidden by a late read. Measured:
//   latency — per event, due -> the backend's Apply/Update returning with it (p50/p99/max);
//   backlog — events due and not yet in the kernel (read or not), its max per second;
//   pending — the agent's pending_events (read, not yet in the kernel), max;
//   lag     — the age of the oldest event not yet in the kernel, max per second;
//   RSS     — sampled each second (start, end, max; and VmHWM).
// Verdict (exit 1 when it fails): no event rejected, no sync failed, every event in the
// kernel at the end; the backlog does not grow — the last third's max backlog is at most
// 1.5 x the first third's plus a quarter second's events; memory is bounded — RSS at the end
// is at most 64 MiB above RSS at the end of the first third.
//
// The script is made up front from --seed (replayable) so that making events costs nothing
// during the run, and so that eBPF can get a veth for every pod that will ever run on node-0.
//
// Root (a network namespace of its own, "npagentbench-<pid>-<n>"). Not in CI (~70 s+).
//   bazel build -c opt //bench:agent_churn
//   sudo bazel-bin/bench/agent_churn --backend=nft --shape=large [--rate=200] [--seconds=60]
//        [--seed=1] [--min_interval_ms=20] [--per_second]
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/agent_workload.h"
#include "bench/cluster_generator.h"

namespace np::bench {
namespace {

struct Flags {
  std::string backend = "nft";
  NodeShape shape = NodeShape::kLarge;
  double rate = 200;
  double seconds = 60;
  uint64_t seed = 1;
  int min_interval_ms = 20;
  bool per_second = false;
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    auto value = [&](absl::string_view name, std::string* out) {
      if (!absl::StartsWith(a, absl::StrCat("--", name, "="))) return false;
      *out = std::string(a.substr(name.size() + 3));
      return true;
    };
    std::string v;
    if (value("backend", &v)) {
      f->backend = v;
    } else if (value("shape", &v)) {
      if (v != "small" && v != "large") return false;
      f->shape = v == "small" ? NodeShape::kSmall : NodeShape::kLarge;
    } else if (value("rate", &v)) {
      if (!absl::SimpleAtod(v, &f->rate) || f->rate <= 0) return false;
    } else if (value("seconds", &v)) {
      if (!absl::SimpleAtod(v, &f->seconds) || f->seconds <= 0) return false;
    } else if (value("seed", &v)) {
      if (!absl::SimpleAtoi(v, &f->seed)) return false;
    } else if (value("min_interval_ms", &v)) {
      if (!absl::SimpleAtoi(v, &f->min_interval_ms) || f->min_interval_ms < 0) return false;
    } else if (a == "--per_second") {
      f->per_second = true;
    } else {
      return false;
    }
  }
  return true;
}

struct Script {
  std::vector<std::string> events;
  std::vector<std::string> local_pods;  // every "ns/name" that runs on node-0 at some point
  int adds = 0, deletes = 0, relabels = 0, policy_upserts = 0, policy_deletes = 0;
};

// The churn: pods added on random nodes (clones of the cluster's application pods, so they
// join existing identities), deleted, relabelled into another deployment of their namespace;
// 5% policy edits over 20 policy names. At most 300 churn pods live at once.
Script MakeScript(const ClusterObjects& objects, const SyntheticOptions& options, int count,
                  uint64_t seed) {
  Script script;
  std::mt19937_64 rng(seed);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  std::vector<k8s::Pod> app_pods;  // the cluster's, with their current labels
  std::map<std::string, std::vector<size_t>> by_namespace;
  for (const Sourced<k8s::Pod>& p : objects.pods) {
    if (p.object.metadata().labels().count("tier") == 0) continue;  // application pods
    by_namespace[p.object.metadata().namespace_()].push_back(app_pods.size());
    app_pods.push_back(p.object);
  }
  std::vector<k8s::Pod> churn;  // live churn pods
  int serial = 0;
  std::map<int, std::pair<std::string, std::string>> policies;  // slot -> (namespace, app)
  auto relabel = [&](k8s::Pod& pod) {
    const std::vector<size_t>& same = by_namespace[pod.metadata().namespace_()];
    const k8s::Pod& other = app_pods[same[pick(same.size())]];
    *pod.mutable_metadata()->mutable_labels() = other.metadata().labels();
    script.events.push_back(PodEvent("MODIFIED", pod));
    ++script.relabels;
  };
  for (int k = 0; k < count; ++k) {
    const double r = std::uniform_real_distribution<double>(0, 1)(rng);
    const bool add = (r < 0.35 && churn.size() < 300) || (r < 0.70 && churn.empty());
    if (add) {
      const k8s::Pod& t = app_pods[pick(app_pods.size())];
      const std::string node = absl::StrCat("node-", pick(static_cast<size_t>(options.nodes)));
      k8s::Pod pod = ClonePod(t, absl::StrCat("churn-", serial), node, serial);
      ++serial;
      if (node == kNode) script.local_pods.push_back(PodKey(pod));
      script.events.push_back(PodEvent("ADDED", pod));
      churn.push_back(std::move(pod));
      ++script.adds;
    } else if (r < 0.70) {
      const size_t i = pick(churn.size());
      script.events.push_back(
          PodDeleteEvent(churn[i].metadata().namespace_(), churn[i].metadata().name()));
      churn[i] = std::move(churn.back());
      churn.pop_back();
      ++script.deletes;
    } else if (r < 0.95) {
      if (!churn.empty() && pick(2) == 0) {
        relabel(churn[pick(churn.size())]);
      } else {
        relabel(app_pods[pick(app_pods.size())]);
      }
    } else {
      const int slot = static_cast<int>(pick(20));
      const std::string name = absl::StrCat("churn-policy-", slot);
      auto it = policies.find(slot);
      if (it != policies.end() && pick(2) == 0) {
        script.events.push_back(PolicyDeleteEvent(it->second.first, name));
        policies.erase(it);
        ++script.policy_deletes;
      } else {
        std::pair<std::string, std::string> where;
        if (it != policies.end()) {
          where = it->second;  // an edit: same policy, another port
        } else {
          const k8s::Pod& t = app_pods[pick(app_pods.size())];
          where = {t.metadata().namespace_(), t.metadata().labels().at("app")};
        }
        script.events.push_back(PolicyEvent(it != policies.end() ? "MODIFIED" : "ADDED",
                                            where.first, name, where.second,
                                            1024 + static_cast<int>(pick(30000))));
        policies[slot] = where;
        ++script.policy_upserts;
      }
    }
  }
  return script;
}

struct Second {
  int events = 0, syncs = 0, max_backlog = 0, max_pending = 0;
  double max_lag_s = 0;
  int64_t rss = 0;
};

double Mib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

int Run(const Flags& flags) {
  const SyntheticOptions options = OptionsFor(flags.shape);
  const ClusterObjects objects = GenerateCluster(options);
  const int count = static_cast<int>(flags.rate * flags.seconds);
  const Script script = MakeScript(objects, options, count, flags.seed);
  AgentNodeOptions node_options;
  node_options.extra_local_pods = script.local_pods;
  node_options.min_interval = absl::Milliseconds(flags.min_interval_ms);
  absl::StatusOr<std::unique_ptr<AgentNode>> made =
      AgentNode::Create(flags.backend, flags.shape, node_options);
  if (!made.ok()) {
    fprintf(stderr, "setup: %s\n", std::string(made.status().message()).c_str());
    return 2;
  }
  AgentNode& node = **made;
  agent::Agent& agent = node.agent();
  printf("churn: backend %s, node %s (%d local pods), %d events at %.0f/s (%d pod adds, %d "
         "deletes, %d relabels, %d policy upserts, %d policy deletes; %zu pods ever on node-0), "
         "min_interval %d ms, seed %llu; engine build %.0f ms, first install %.0f ms\n",
         flags.backend.c_str(), ShapeName(flags.shape), node.local_pods(), count, flags.rate,
         script.adds, script.deletes, script.relabels, script.policy_upserts,
         script.policy_deletes, script.local_pods.size(), flags.min_interval_ms,
         static_cast<unsigned long long>(flags.seed), node.build_s() * 1e3,
         node.reconcile_s() * 1e3);
  fflush(stdout);

  const int64_t rss_start = RssBytes();
  const absl::Time start = absl::Now() + absl::Milliseconds(10);
  auto due = [&](int k) { return start + absl::Seconds(k / flags.rate); };
  std::vector<int> pending;  // events read, not yet in the kernel (in order)
  std::vector<absl::Time> done_at;  // when each event reached the kernel, in event order
  done_at.reserve(count);
  std::vector<double> latencies;
  latencies.reserve(count);
  const size_t max_seconds = static_cast<size_t>(flags.seconds) + 120;
  std::vector<int> max_pending(max_seconds, 0);   // the agent's pending_events, sampled
  std::vector<int64_t> rss(max_seconds, -1);      // sampled once per second
  // `unchanged`: events the agent applied that change nothing the engine reads (a relabel
  // by a label no selector reads, a policy upsert equal to the last): nothing waits for the
  // kernel (Agent::HandleEvent), so they are not pending — and not rejected either.
  int next = 0, rejected = 0, unchanged = 0, failures = 0, syncs = 0;
  std::vector<double> sync_s, backend_s;  // each sync's wall time, and its backend call's
  double handle_s = 0;                    // all HandleEvent calls (parse + engine apply)
  int64_t rss_max = rss_start;
  int next_sample = 1;
  const absl::Time give_up = start + absl::Seconds(flags.seconds + 120);
  auto second_of = [&](absl::Time t) {
    return std::min(max_seconds - 1,
                    static_cast<size_t>(std::max(0.0, absl::ToDoubleSeconds(t - start))));
  };
  while (next < count || !pending.empty()) {
    absl::Time now = absl::Now();
    if (now > give_up) break;
    for (; next < count && due(next) <= now; ++next) {
      const int before = agent.pending_events();
      const uint64_t rejected_before = node.metrics().rejected_events();
      const absl::Time h0 = absl::Now();
      agent.HandleEvent(script.events[next], due(next));
      handle_s += absl::ToDoubleSeconds(absl::Now() - h0);
      if (agent.pending_events() == before + 1) {
        pending.push_back(next);
      } else {
        ++(node.metrics().rejected_events() > rejected_before ? rejected : unchanged);
        done_at.push_back(due(next));  // nothing to wait for
      }
    }
    int& m = max_pending[second_of(now)];
    m = std::max(m, agent.pending_events());
    now = absl::Now();
    if (agent.SyncDue(now)) {
      const absl::Time s0 = absl::Now();
      const bool synced = agent.Sync().ok();
      sync_s.push_back(absl::ToDoubleSeconds(absl::Now() - s0));
      backend_s.push_back(node.backend().last_call_s());
      if (synced) {
        const absl::Time done = node.backend().last_done();
        for (int k : pending) {
          latencies.push_back(absl::ToDoubleSeconds(done - due(k)));
          done_at.push_back(done);
        }
        pending.clear();
        ++syncs;
      } else {
        ++failures;
      }
      now = absl::Now();
    }
    if (now >= start + absl::Seconds(next_sample)) {
      const int64_t r = RssBytes();
      rss_max = std::max(rss_max, r);
      rss[second_of(now)] = r;
      next_sample = static_cast<int>(second_of(now)) + 1;
    }
    absl::Time wake = start + absl::Seconds(next_sample);
    if (next < count) wake = std::min(wake, due(next));
    if (agent.pending_events() > 0) wake = std::min(wake, now + agent.UntilSyncDue(now));
    if (wake > now) absl::SleepFor(wake - now);
  }
  const absl::Time end = absl::Now();
  const int64_t rss_end = RssBytes();
  rss_max = std::max(rss_max, rss_end);
  const int used = static_cast<int>(second_of(end)) + 1;

  // Backlog and lag, exactly, from when each event fell due and reached the kernel: both
  // grow between syncs and drop at each, so a second's max is just before one of its syncs
  // or at its end. Events reach the kernel in order, so the oldest waiting is the first not
  // in it.
  std::vector<absl::Time> sorted_done = done_at;
  std::sort(sorted_done.begin(), sorted_done.end());
  std::vector<Second> seconds(static_cast<size_t>(used));
  auto at = [&](absl::Time t, Second& s) {  // just before t
    const int due_n = t <= start ? 0
                                 : std::min<int>(count, static_cast<int>(std::ceil(
                                                            absl::ToDoubleSeconds(t - start) *
                                                            flags.rate)));
    const int in_kernel = static_cast<int>(
        std::lower_bound(sorted_done.begin(), sorted_done.end(), t) - sorted_done.begin());
    s.max_backlog = std::max(s.max_backlog, due_n - in_kernel);
    if (in_kernel < due_n) s.max_lag_s = std::max(s.max_lag_s, absl::ToDoubleSeconds(t - due(in_kernel)));
  };
  for (absl::Time t : sorted_done) {
    const size_t i = second_of(t);
    if (i < seconds.size()) at(t, seconds[i]);
  }
  int64_t last_rss = rss_start;
  for (int i = 0; i < used; ++i) {
    Second& s = seconds[i];
    at(start + absl::Seconds(i + 1), s);
    s.max_pending = max_pending[i];
    if (rss[i] > 0) last_rss = rss[i];
    s.rss = last_rss;  // a second spent in one long sync keeps the last sample
  }
  for (size_t k = 0; k < static_cast<size_t>(count) && k < static_cast<size_t>(next); ++k) {
    const size_t i = second_of(due(static_cast<int>(k)));
    if (i < seconds.size()) ++seconds[i].events;
  }
  {
    absl::Time previous = absl::InfinitePast();
    for (absl::Time t : sorted_done) {
      if (t != previous && t >= start) {
        const size_t i = second_of(t);
        if (i < seconds.size()) ++seconds[i].syncs;
      }
      previous = t;
    }
  }

  if (flags.per_second) {
    printf("| second | events due | syncs done | max backlog | max pending | max lag ms | RSS MiB |\n"
           "|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < used; ++i) {
      const Second& s = seconds[i];
      printf("| %d | %d | %d | %d | %d | %.0f | %.1f |\n", i, s.events, s.syncs, s.max_backlog,
             s.max_pending, s.max_lag_s * 1e3, Mib(s.rss));
    }
  }
  // The load phase only (events falling due), in thirds.
  const int load_seconds = static_cast<int>(flags.seconds);
  const int third = std::max(1, load_seconds / 3);
  auto max_backlog = [&](int from, int to) {
    int m = 0;
    for (int i = from; i < to && i < used; ++i) m = std::max(m, seconds[i].max_backlog);
    return m;
  };
  int max_pending_all = 0, max_backlog_all = 0;
  double max_lag = 0;
  for (int i = 0; i < used; ++i) {
    max_pending_all = std::max(max_pending_all, seconds[i].max_pending);
    max_backlog_all = std::max(max_backlog_all, seconds[i].max_backlog);
    max_lag = std::max(max_lag, seconds[i].max_lag_s);
  }
  const int first_third = max_backlog(0, third);
  const int last_third = max_backlog(load_seconds - third, load_seconds);
  const int64_t rss_third = third - 1 < used ? seconds[third - 1].rss : rss_start;
  const bool drained = next == count && pending.empty();
  const bool backlog_ok = last_third <= 1.5 * first_third + flags.rate / 4;
  const bool memory_ok = rss_end <= rss_third + (int64_t{64} << 20);
  const bool ok = drained && backlog_ok && memory_ok && rejected == 0 && failures == 0;
  printf("events %d in %.1f s (%d rejected, %d changing nothing the engine reads), %d syncs (%.1f events each, %lld via Update, %lld "
         "via Apply), %d failed\n",
         next, absl::ToDoubleSeconds(end - start), rejected, unchanged, syncs,
         syncs > 0 ? static_cast<double>(latencies.size()) / syncs : 0.0,
         static_cast<long long>(node.backend().updates()),
         static_cast<long long>(node.backend().applies()), failures);
  printf("where the time went: HandleEvent (parse + engine apply) %.1f s in all, %.2f ms per "
         "event; Sync p50 %.0f ms, max %.0f ms, of which the backend p50 %.0f ms, max %.0f ms "
         "(the rest: LowerToIr, Capacity)\n",
         handle_s, next > 0 ? handle_s * 1e3 / next : 0.0, Quantile(sync_s, 0.5) * 1e3,
         Quantile(sync_s, 1) * 1e3, Quantile(backend_s, 0.5) * 1e3, Quantile(backend_s, 1) * 1e3);
  printf("latency due -> kernel: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
         Quantile(latencies, 0.5) * 1e3, Quantile(latencies, 0.99) * 1e3,
         Quantile(latencies, 1) * 1e3);
  printf("backlog: max %d events (first third %d, last third %d), max pending_events %d, max "
         "lag %.0f ms\n",
         max_backlog_all, first_third, last_third, max_pending_all, max_lag * 1e3);
  printf("RSS: start %.1f MiB, after the first third %.1f MiB, end %.1f MiB, max sampled %.1f "
         "MiB, VmHWM %.1f MiB\n",
         Mib(rss_start), Mib(rss_third), Mib(rss_end), Mib(rss_max), Mib(PeakRssBytes()));
  printf("verdict: %s (drained %s, backlog bounded %s, memory bounded %s)\n",
         ok ? "PASS" : "FAIL", drained ? "yes" : "no", backlog_ok ? "yes" : "no",
         memory_ok ? "yes" : "no");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace np::bench

int main(int argc, char** argv) {
  np::bench::Flags flags;
  if (!np::bench::ParseFlags(argc, argv, &flags)) {
    fprintf(stderr,
            "usage: agent_churn [--backend=nft|iptables|ebpf] [--shape=small|large] [--rate=N] "
            "[--seconds=N] [--seed=N] [--min_interval_ms=N] [--per_second]\n");
    return 2;
  }
  if (geteuid() != 0) {
    fprintf(stderr, "agent_churn needs root (network namespaces, kernel programs)\n");
    return 2;
  }
  return np::bench::Run(flags);
}

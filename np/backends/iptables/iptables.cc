#include "np/backends/iptables/iptables.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/membarrier.h>
#include <linux/netfilter/ipset/ip_set.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "np/backends/util.h"
#include "np/types.h"

namespace np::backends {
namespace iptables {
namespace {

constexpr int kFamilies = 2;  // 0 = IPv4 (iptables, family inet), 1 = IPv6 (ip6tables, inet6)
constexpr int kIngress = 0;
constexpr int kEgress = 1;

// Every process this backend starts goes through SpawnAll, which counts it (for
// IptablesProcessesSpawned: tests check that the in-place paths start none). Each child
// enters the node's network namespace itself (RunCommands: setns, no `ip netns exec`
// process), and the commands of one call run side by side.
std::atomic<int64_t> spawned{0};

std::vector<absl::StatusOr<std::string>> SpawnAll(const std::vector<Command>& commands,
                                                  const std::string& netns) {
  spawned.fetch_add(static_cast<int64_t>(commands.size()), std::memory_order_relaxed);
  return RunCommands(commands, netns);
}

absl::StatusOr<std::string> Spawn(const std::vector<std::string>& argv, absl::string_view input,
                                  const std::string& netns) {
  return std::move(SpawnAll({Command{argv, std::string(input)}}, netns)[0]);
}

const char* SaveTool(int f) { return f == 0 ? "iptables-save" : "ip6tables-save"; }
const char* RestoreTool(int f) { return f == 0 ? "iptables-restore" : "ip6tables-restore"; }

// NP-FORWARD's first rule: replies and established flows pass.
constexpr absl::string_view kEstablished = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT";

std::string TableChainName(uint32_t table, int direction) {
  return absl::StrCat(kChainPrefix, "T", table, direction == kIngress ? "-IN" : "-EG");
}

// The dispatch chain of the tables t with t / kDispatchChainTables == `bucket` (iptables.h).
std::string DispatchChainName(uint32_t bucket) {
  return absl::StrCat(kChainPrefix, "D", bucket);
}
uint32_t DispatchBucket(uint32_t table) { return table / kDispatchChainTables; }

// NP-FORWARD and the dispatch chains: the chains whose rules an in-place update edits by
// position (a kept rule is never rewritten there), never declared again.
bool IsDispatchChain(absl::string_view chain) {
  return chain == kTopChain || absl::StartsWith(chain, absl::StrCat(kChainPrefix, "D"));
}

// Where a rule of a table chain comes from: Explain walks the rules the kernel walks.
struct RuleSource {
  enum Kind { kDispatch, kTier, kPolicy, kGotoStage, kDrop };
  Kind kind = kDispatch;
  const char* tier = "";                   // kTier: "admin" or "baseline"
  const ir::TierRule* tier_rule = nullptr;  // kTier
  const ir::PortRule* port_rule = nullptr;  // kPolicy
  int index = -1;   // kTier, kPolicy: the rule's position in its IR list
  int prefix = -1;  // kTier, kPolicy: the inline prefix of the peers (Family::entries); -1
                    // when the rule matches any peer or names a set
};

// An NP chain: its rules (the text after "-A <chain> ") and where each comes from.
struct Chain {
  std::string name;
  std::vector<std::string> rules;
  std::vector<RuleSource> sources;  // empty for NP-FORWARD
  void Add(std::string rule, RuleSource source) {
    rules.push_back(std::move(rule));
    sources.push_back(source);
  }
};

// Where a (table, direction) landed in one family's chains.
struct TableChain {
  int chain = -1;  // index in Family::chains; -1: no chain in this family
  int stage = -1;  // the NetworkPolicy stage's chain when admin rules can Pass; else -1
};

struct Dispatch {
  std::string address;  // canonical text
  int endpoint;
  int direction;
  int chain;            // the dispatch chain (index in Family::chains) and its rule
  int rule;             // whose set holds the address
};

// The set of a table's local addresses in a family, which NP-FORWARD dispatches through
// (egress: source in it, ingress: destination in it): host prefixes in address order.
struct DispatchSet {
  uint32_t table;
  std::string name;
  std::vector<std::string> entries;
};

struct Family {
  std::vector<Chain> chains;  // [0] is NP-FORWARD; the dispatch chains come last
  std::vector<Dispatch> dispatch;
  std::vector<DispatchSet> dispatch_sets;  // in table order
  // Per peer set: its addresses in this family as prefixes (none for `all`). A peer set with
  // more than kMaxInlinePrefixes of them, or that names a pod, gets an ipset (has_set); the
  // others are written into the rules.
  std::vector<std::vector<std::string>> entries;
  std::vector<bool> has_set;
  std::vector<std::string> set_names;  // per peer set with has_set: its set's name (Naming)
};

// The whole ruleset as data: the restore texts and Explain both read it.
struct Model {
  uint32_t generation = 0;
  Family family[kFamilies];
  // [table][direction][family]
  std::vector<std::array<std::array<TableChain, kFamilies>, 2>> tables;
};

using U128 = unsigned __int128;

U128 ToU128(absl::string_view bytes) {
  U128 v = 0;
  for (char c : bytes) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

std::string FromU128(U128 v, int f) {
  const int n = f == 0 ? 4 : 16;
  std::string out(n, '\0');
  for (int i = 0; i < n; ++i) {
    out[n - 1 - i] = static_cast<char>(static_cast<uint8_t>(v >> (8 * i)));
  }
  return out;
}

// [first, last] as the fewest prefixes of length >= 1: hash:net refuses a /0, so the whole
// space comes out as its two /1 halves.
void AppendPrefixes(U128 first, U128 last, int f, std::vector<std::string>& out) {
  const int width = f == 0 ? 32 : 128;
  while (true) {
    int host = 0;  // the largest aligned block at `first` that stays within `last`
    while (host < width - 1) {
      const U128 mask = (U128{1} << (host + 1)) - 1;
      if ((first & mask) != 0 || (first | mask) > last) break;
      ++host;
    }
    out.push_back(absl::StrCat(AddressText(FromU128(first, f)), "/", width - host));
    const U128 end = first | ((U128{1} << host) - 1);
    if (end >= last) return;
    first = end + 1;
  }
}

// The protocol and port match of a rule; empty for PROTOCOL_UNSPECIFIED (every IP protocol,
// ICMP included: a tier rule without ports).
std::string PortMatch(ir::Protocol protocol, uint32_t first_port, uint32_t last_port) {
  if (protocol == ir::PROTOCOL_UNSPECIFIED) return "";
  std::string proto = ProtocolLower(protocol);
  std::string out = absl::StrCat("-p ", proto);
  if (first_port == 0 && last_port == 65535) return out;
  absl::StrAppend(&out, " -m ", proto, " --dport ", first_port);
  if (last_port != first_port) absl::StrAppend(&out, ":", last_port);
  return out;
}

// A byte CommentText writes as itself and that needs no doubling: printable ASCII but `"`
// and `\` (the only printable ASCII it escapes).
bool PlainCommentByte(char c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; }

}  // namespace

std::string CommentMatch(absl::string_view text) {
  static constexpr absl::string_view kHead = "-m comment --comment \"";
  std::string out;
  // Fast path (every comment np writes from plain names): each byte is one piece of
  // CommentText, so the text stands as it is, or is cut to max - 3 bytes and "...". The
  // general path splits into pieces and joins them: ~22 % of BuildModel's CPU at 1,000
  // tables when every comment took it (h82). A text longer than the limit is cut whatever
  // its tail holds (escaping never shortens), so only the bytes kept need to be plain.
  const bool cut = text.size() > kIptablesCommentMax;
  const absl::string_view kept = cut ? text.substr(0, kIptablesCommentMax - 3) : text;
  if (std::all_of(kept.begin(), kept.end(), PlainCommentByte)) {
    absl::StrAppend(&out, kHead, kept, cut ? "...\"" : "\"");  // one allocation
    return out;
  }
  absl::StrAppend(&out, kHead,
                  absl::StrReplaceAll(CommentText(text, kIptablesCommentMax), {{"\\", "\\\\"}}),
                  "\"");
  return out;
}

namespace {

// The chains of a restricted (table, direction) in family f, in the order of
// proto/compiled.proto's "Policy tiers":
//   NP-T<t>-IN|EG: the admin rules in order: Allow `-j RETURN` (this side allows; the
//     other side's chain, if any, decides next), Deny `-j DROP`, Pass `-g` the
//     NetworkPolicy stage; then the NetworkPolicy stage — in NP-T<t>-IN|EG-NP when an admin
//     rule can Pass (the main chain ends with `-g` to it), else in the main chain:
//       isolated: NetworkPolicy's rules `-j RETURN`, then `-j DROP` (commented with the
//       table's policies);
//       not isolated: the baseline rules (Allow and Pass `-j RETURN`, Deny `-j DROP`), then
//       the chain's end (back to NP-FORWARD: allowed).
// Peers are matched by address (inline prefixes or an ipset of this generation), so there
// is no identity lookup that could miss; a rule whose peers have no address of the family
// is left out (it matches nothing there).
// What a table's chains need of each peer set in one family: BuildModel reads it from the
// whole model; UpdateDelta from what it installed and the delta (PlanRulesFromDelta).
class PeerForms {
 public:
  virtual ~PeerForms() = default;
  virtual bool All(uint32_t s) const = 0;
  virtual bool HasSet(uint32_t s) const = 0;
  // The peer set's prefixes in the family (its set's entries, or what the rules write inline).
  virtual const std::vector<std::string>& Entries(uint32_t s) const = 0;
  virtual const std::string& SetName(uint32_t s) const = 0;  // with HasSet
};

void AddTableChains(const ir::Table& table, uint32_t t, int d, const PeerForms& forms,
                    TableChain& tc, std::vector<Chain>& chains) {
  const ir::DirectionPolicy& dp = d == kIngress ? table.ingress() : table.egress();
  const std::string stage = absl::StrCat(TableChainName(t, d), "-NP");
  // Per peer match: "" (any peer), a set match, or one match per inline prefix.
  auto peer_matches = [&](uint32_t peer_set) {
    std::vector<std::string> out;
    if (forms.All(peer_set)) {
      out.push_back("");
    } else if (forms.HasSet(peer_set)) {
      out.push_back(absl::StrCat("-m set --match-set ", forms.SetName(peer_set), " ",
                                 d == kIngress ? "src" : "dst"));
    } else {
      for (const std::string& prefix : forms.Entries(peer_set)) {
        out.push_back(absl::StrCat(d == kIngress ? "-s " : "-d ", prefix));
      }
    }
    return out;
  };
  auto joined = [](std::initializer_list<absl::string_view> parts) {
    std::string out;
    for (absl::string_view part : parts) {
      if (!part.empty()) absl::StrAppend(&out, out.empty() ? "" : " ", part);
    }
    return out;
  };
  bool admin_pass = false;
  for (const ir::TierRule& rule : dp.admin()) {
    const uint32_t s = rule.peer_set();
    if (rule.action() == ir::TIER_PASS &&
        (forms.All(s) || forms.HasSet(s) || !forms.Entries(s).empty())) {
      admin_pass = true;
    }
  }
  auto add_tier_rules = [&](Chain& into, const char* tier,
                            const google::protobuf::RepeatedPtrField<ir::TierRule>& rules) {
    for (int i = 0; i < rules.size(); ++i) {
      const ir::TierRule& rule = rules[i];
      const std::string target = rule.action() == ir::TIER_DENY ? "-j DROP"
                                 : rule.action() == ir::TIER_PASS && tier[0] == 'a'
                                     ? absl::StrCat("-g ", stage)
                                     : "-j RETURN";
      const std::string comment = CommentMatch(absl::StrCat(tier, "[", i, "] ", rule.origin()));
      const std::string ports = PortMatch(rule.protocol(), rule.first_port(), rule.last_port());
      const std::vector<std::string> peers = peer_matches(rule.peer_set());
      for (size_t p = 0; p < peers.size(); ++p) {
        RuleSource source{RuleSource::kTier, tier, &rule, nullptr, i,
                          forms.HasSet(rule.peer_set()) || peers[p].empty() ? -1
                                                                           : static_cast<int>(p)};
        into.Add(joined({ports, peers[p], comment, target}), source);
      }
    }
  };
  tc.chain = static_cast<int>(chains.size());
  chains.push_back(Chain{TableChainName(t, d), {}, {}});
  add_tier_rules(chains.back(), "admin", dp.admin());
  if (admin_pass) {
    chains.back().Add(absl::StrCat("-g ", stage), RuleSource{RuleSource::kGotoStage});
    tc.stage = static_cast<int>(chains.size());
    chains.push_back(Chain{stage, {}, {}});
  }
  Chain& np_stage = chains.back();
  if (!dp.isolated()) {
    add_tier_rules(np_stage, "baseline", dp.baseline());
    return;
  }
  for (int i = 0; i < dp.rules_size(); ++i) {
    const ir::PortRule& rule = dp.rules(i);
    const std::vector<std::string> peers = peer_matches(rule.peer_set());
    for (size_t p = 0; p < peers.size(); ++p) {
      RuleSource source{RuleSource::kPolicy, "", nullptr, &rule, i,
                        forms.HasSet(rule.peer_set()) || peers[p].empty() ? -1
                                                                         : static_cast<int>(p)};
      np_stage.Add(
          joined({PortMatch(rule.protocol(), rule.first_port(), rule.last_port()), peers[p],
                  "-j RETURN"}),
          source);
    }
  }
  // The table's policies, for people reading iptables-save (on the DROP rule, which a
  // packet reaches only when it is denied: the comment match costs allowed flows nothing).
  np_stage.Add(
      absl::StrCat(CommentMatch(absl::StrCat("policies: ", absl::StrJoin(table.policies(), ","))),
                   " -j DROP"),
      RuleSource{RuleSource::kDrop});
}

// ---- What is installed, and how its sets are named --------------------------------------

// What one Apply or Update put in the kernel, as the backend remembers it (so that an
// Update spawns nothing but its one `ipset restore`).
struct Installed {
  std::string netns;
  // Newer than (or as new as) the generation of every set name below: a set made in place
  // takes generation + 1.
  uint32_t generation = 0;
  // Set name -> its entries (in address order, as BuildModel makes them), and the maxelem
  // it was created with.
  std::map<std::string, std::vector<std::string>> sets;
  std::map<std::string, size_t> maxelem;
  // Per family, the name of each peer set's set (by peer set id; "" for none) and of each
  // table's dispatch set (by table id): sets keep their names across in-place updates while
  // their contents stay, so one program may hold names of several generations.
  std::vector<std::string> set_name[kFamilies];
  std::map<uint32_t, std::string> dispatch_name[kFamilies];
  // Per family, every NP chain's rules (the text after "-A <chain> "), by chain name: the
  // in-place rules path rewrites only the chains that differ; an element-only update needs
  // them all equal.
  std::map<std::string, std::vector<std::string>> chains[kFamilies];
  // Sets of earlier programs the kernel would not destroy yet (busy): tried again by the
  // next in-place rules update (Apply destroys every set of another generation anyway).
  std::vector<std::string> leftover;
  // Rules, chains, sets and entries per family (the texts left empty), for capacity checks.
  Ruleset sizes;
};

// How BuildModel names its sets. By default every set is np-g<generation>-...; with `carry`
// (what is installed), the set of a peer set or table keeps the name of the installed set of
// the same id and family — always (`keep_changed`: the element-only planner edits a set's
// members under its name), or only while its entries are the same (the in-place rules path:
// a set whose contents change is a NEW set, filled before any rule names it) — and every
// other set is named with `generation`, which must be newer than every carried name's.
struct Naming {
  const Installed* carry = nullptr;
  bool keep_changed = true;

  std::string PeerSet(uint32_t generation, int f, uint32_t s,
                      const std::vector<std::string>& entries) const {
    if (carry != nullptr && s < carry->set_name[f].size() && !carry->set_name[f][s].empty()) {
      const std::string& name = carry->set_name[f][s];
      if (keep_changed || carry->sets.at(name) == entries) return name;
    }
    return SetName(generation, f, s);
  }
  std::string Dispatch(uint32_t generation, int f, uint32_t t,
                       const std::vector<std::string>& entries) const {
    if (carry != nullptr) {
      auto it = carry->dispatch_name[f].find(t);
      if (it != carry->dispatch_name[f].end() &&
          (keep_changed || carry->sets.at(it->second) == entries)) {
        return it->second;
      }
    }
    return DispatchSetName(generation, f, t);
  }
};

// Calls fn(peer set) for each rule of `table` that BuildModel renders (baseline rules only
// where NetworkPolicy does not isolate), so once per rule naming it.
template <typename Fn>
void ForEachRenderedPeerSet(const ir::Table& table, Fn fn) {
  for (const ir::DirectionPolicy* dp : {&table.ingress(), &table.egress()}) {
    if (dp->isolated()) {
      for (const ir::PortRule& r : dp->rules()) fn(r.peer_set());
    }
    for (const ir::TierRule& r : dp->admin()) fn(r.peer_set());
    if (!dp->isolated()) {
      for (const ir::TierRule& r : dp->baseline()) fn(r.peer_set());
    }
  }
}

// The peer sets some rule renders.
std::vector<bool> UsedPeerSets(const ir::CompiledPolicy& ir) {
  std::vector<bool> used(ir.peer_sets_size(), false);
  for (const ir::Table& t : ir.tables()) {
    ForEachRenderedPeerSet(t, [&](uint32_t s) { used[s] = true; });
  }
  return used;
}

// The peer forms of a whole model's family.
class ModelForms : public PeerForms {
 public:
  ModelForms(const ir::CompiledPolicy& ir, const Family& fam) : ir_(ir), fam_(fam) {}
  bool All(uint32_t s) const override { return ir_.peer_sets(static_cast<int>(s)).all(); }
  bool HasSet(uint32_t s) const override { return fam_.has_set[s]; }
  const std::vector<std::string>& Entries(uint32_t s) const override { return fam_.entries[s]; }
  const std::string& SetName(uint32_t s) const override { return fam_.set_names[s]; }

 private:
  const ir::CompiledPolicy& ir_;
  const Family& fam_;
};

// The dispatch chain's rule that sends a (table, direction) through its chain: the address
// (source for egress, destination for ingress) looked up in the table's dispatch set.
std::string DispatchRule(const std::string& dispatch_set, int d, uint32_t t) {
  return absl::StrCat("-m set --match-set ", dispatch_set, d == kEgress ? " src" : " dst",
                      " -j ", TableChainName(t, d));
}

absl::StatusOr<Model> BuildModel(const ir::CompiledPolicy& ir, uint32_t generation,
                                 const Naming& naming = {}) {
  if (absl::Status s = CheckIr(ir); !s.ok()) return s;
  Model m;
  m.generation = generation;
  m.tables.resize(ir.tables_size());

  // Identity -> its ranges, per family.
  std::vector<std::vector<int>> ranges_of[kFamilies];
  for (int f = 0; f < kFamilies; ++f) {
    ranges_of[f].resize(ir.identities_size());
    const auto& ranges = f == 0 ? ir.ipv4() : ir.ipv6();
    for (int r = 0; r < ranges.size(); ++r) ranges_of[f][ranges[r].identity()].push_back(r);
  }

  // Sets: only for the peer sets some rule uses.
  const std::vector<bool> used = UsedPeerSets(ir);
  std::vector<bool> names_pods(ir.peer_sets_size(), false);
  for (int s = 0; s < ir.peer_sets_size(); ++s) {
    for (uint32_t identity : ir.peer_sets(s).identities()) {
      if (ir.identities(identity).pods_size() > 0) names_pods[s] = true;
    }
  }
  for (int f = 0; f < kFamilies; ++f) {
    Family& fam = m.family[f];
    fam.entries.resize(ir.peer_sets_size());
    fam.has_set.assign(ir.peer_sets_size(), false);
    const auto& ranges = f == 0 ? ir.ipv4() : ir.ipv6();
    for (int s = 0; s < ir.peer_sets_size(); ++s) {
      const ir::PeerSet& set = ir.peer_sets(s);
      if (!used[s] || set.all()) continue;
      // The member identities' ranges, in address order, with neighbours merged: the set
      // holds the fewest prefixes that cover exactly the union (the ranges' own CIDRs would
      // do too, but e.g. an ipBlock whose pods are all in the set collapses to one block).
      std::vector<int> members;
      for (uint32_t identity : set.identities()) {
        members.insert(members.end(), ranges_of[f][identity].begin(),
                       ranges_of[f][identity].end());
      }
      std::sort(members.begin(), members.end());
      std::vector<std::string>& entries = fam.entries[s];
      for (size_t i = 0; i < members.size();) {
        const U128 first = ToU128(ranges[members[i]].first());
        U128 last = ToU128(ranges[members[i]].last());
        size_t j = i + 1;
        while (j < members.size() && members[j] == members[j - 1] + 1) {
          last = ToU128(ranges[members[j]].last());  // ranges are contiguous: r+1 starts at last+1
          ++j;
        }
        AppendPrefixes(first, last, f, entries);
        i = j;
      }
      // A peer set that names pods always gets a set, even a small or empty one: pods come
      // and go, and in a set that is an element change (Update), not a rule change.
      fam.has_set[s] = names_pods[s] || entries.size() > static_cast<size_t>(kMaxInlinePrefixes);
    }
    // ... unless that makes more than kMaxPodSets sets in the family: each set slows every
    // other (see iptables.h), so past that only the large peer sets get one (pod churn in
    // the small ones then changes rules: Update's full path).
    if (std::count(fam.has_set.begin(), fam.has_set.end(), true) > kMaxPodSets) {
      for (int s = 0; s < ir.peer_sets_size(); ++s) {
        fam.has_set[s] = fam.entries[s].size() > static_cast<size_t>(kMaxInlinePrefixes);
      }
    }
    fam.set_names.assign(ir.peer_sets_size(), "");
    for (int s = 0; s < ir.peer_sets_size(); ++s) {
      if (fam.has_set[s]) {
        fam.set_names[s] = naming.PeerSet(generation, f, static_cast<uint32_t>(s), fam.entries[s]);
      }
    }
  }

  // Which tables each family needs: those of endpoints with an address of that family.
  // The first endpoint holding an address dispatches it (as the IR interpreter reads it).
  struct Address {
    std::string text;
    std::string bytes;
    int endpoint;
  };
  std::vector<Address> addresses[kFamilies];
  std::vector<bool> needed[kFamilies];
  for (int f = 0; f < kFamilies; ++f) needed[f].assign(ir.tables_size(), false);
  for (int e = 0; e < ir.endpoints_size(); ++e) {
    const ir::Endpoint& ep = ir.endpoints(e);
    if (!ep.selected()) continue;
    for (const std::string& ip : ep.ips()) {
      std::string bytes = *AddressBytes(ip);  // CheckIr: an address, of one endpoint only
      int f = bytes.size() == 4 ? 0 : 1;
      addresses[f].push_back(Address{AddressText(bytes), bytes, e});
      needed[f][ep.table()] = true;
    }
  }

  for (int f = 0; f < kFamilies; ++f) {
    Family& fam = m.family[f];
    fam.chains.push_back(Chain{std::string(kTopChain), {}, {}});
    fam.chains[0].rules.push_back(std::string(kEstablished));
    // Table chains (see TablePlan).
    for (int t = 0; t < ir.tables_size(); ++t) {
      if (!needed[f][t]) continue;
      for (int d = 0; d < 2; ++d) {
        const ir::Table& table = ir.tables(t);
        if (!Restricted(d == kIngress ? table.ingress() : table.egress())) continue;
        AddTableChains(table, static_cast<uint32_t>(t), d, ModelForms(ir, fam),
                       m.tables[t][d][f], fam.chains);
      }
    }
    // Dispatch: egress first (at the source), then ingress (at the destination); one rule
    // per (table, direction) chain, looking the address up in the set of the table's local
    // addresses (one set per table and family serves both directions). A table has chains
    // only while it has such an address (needed, above), so no set is empty. CheckIr gives
    // each address one endpoint, so the sets are disjoint and the order among tables does
    // not matter; the dispatch walk is one rule per table chain, not per pod address, and a
    // node pod coming or going is a set member edit.
    const char* host = f == 0 ? "/32" : "/128";
    std::vector<const Address*> by_address;
    for (const Address& a : addresses[f]) by_address.push_back(&a);
    std::sort(by_address.begin(), by_address.end(),
              [](const Address* x, const Address* y) { return x->bytes < y->bytes; });
    std::vector<std::vector<const Address*>> of_table(ir.tables_size());  // in address order
    for (const Address* a : by_address) of_table[ir.endpoints(a->endpoint).table()].push_back(a);
    std::vector<int> set_of(ir.tables_size(), -1);  // table -> index in dispatch_sets
    for (int t = 0; t < ir.tables_size(); ++t) {
      if (m.tables[t][kEgress][f].chain < 0 && m.tables[t][kIngress][f].chain < 0) continue;
      set_of[t] = static_cast<int>(fam.dispatch_sets.size());
      DispatchSet& set =
          fam.dispatch_sets.emplace_back(DispatchSet{static_cast<uint32_t>(t), "", {}});
      for (const Address* a : of_table[t]) set.entries.push_back(absl::StrCat(a->text, host));
      set.name = naming.Dispatch(generation, f, set.table, set.entries);
    }
    // The rules go to the dispatch chains NP-D<k>, kDispatchChainTables tables each (egress
    // rules first in each), which NP-FORWARD jumps to in order (iptables.h says why).
    const uint32_t tables = static_cast<uint32_t>(ir.tables_size());
    for (uint32_t first = 0; first < tables; first += kDispatchChainTables) {
      Chain chain{DispatchChainName(DispatchBucket(first)), {}, {}};
      const int index = static_cast<int>(fam.chains.size());
      for (int d : {kEgress, kIngress}) {
        for (uint32_t t = first; t < std::min(tables, first + kDispatchChainTables); ++t) {
          const TableChain& tc = m.tables[t][d][f];
          if (tc.chain < 0) continue;  // not restricted, or no local address of the family
          const int rule = static_cast<int>(chain.rules.size());
          for (const Address* a : of_table[t]) {
            fam.dispatch.push_back(Dispatch{a->text, a->endpoint, d, index, rule});
          }
          chain.rules.push_back(DispatchRule(fam.dispatch_sets[set_of[t]].name, d, t));
        }
      }
      if (chain.rules.empty()) continue;
      fam.chains[0].rules.push_back(absl::StrCat("-j ", chain.name));
      fam.chains.push_back(std::move(chain));
    }
  }
  return m;
}

// Calls fn(name, type, entries) for every set of family f of `m`: the peer sets' (hash:net)
// and the dispatch sets (hash:ip: host addresses only). M: Model or const Model.
template <typename M, typename Fn>
void ForEachSet(M& m, int f, Fn fn) {
  auto& fam = m.family[f];
  for (size_t s = 0; s < fam.entries.size(); ++s) {
    if (fam.has_set[s]) {
      fn(fam.set_names[s], "hash:net", fam.entries[s]);
    }
  }
  for (auto& d : fam.dispatch_sets) fn(d.name, "hash:ip", d.entries);
}

// The maxelem a set of n entries is created with (room for growth by in-place edits).
size_t MaxElem(size_t n) { return std::max<size_t>(65536, n); }
// Its initial hash size: a power of two from 64, at least n (up to 2^20).
size_t HashSize(size_t n) {
  size_t hashsize = 64;
  while (hashsize < n && hashsize < (size_t{1} << 20)) hashsize <<= 1;
  return hashsize;
}

std::string IpsetText(const Model& m, Ruleset& sizes) {
  std::string out;
  for (int f = 0; f < kFamilies; ++f) {
    ForEachSet(m, f, [&](const std::string& name, const char* type,
                         const std::vector<std::string>& entries) {
      size_t n = entries.size();
      absl::StrAppend(&out, "create ", name, " ", type, " family ", f == 0 ? "inet" : "inet6",
                      " hashsize ", HashSize(n), " maxelem ", MaxElem(n), "\n");
      for (const std::string& e : entries) absl::StrAppend(&out, "add ", name, " ", e, "\n");
      ++sizes.sets[f];
      sizes.set_entries[f] += static_cast<int64_t>(n);
    });
  }
  return out;
}

std::string RestoreText(const Model& m, int f, const RenderOptions& options, Ruleset& sizes) {
  const Family& fam = m.family[f];
  std::string out = "*filter\n";
  for (const Chain& c : fam.chains) absl::StrAppend(&out, ":", c.name, " - [0:0]\n");
  // Stale chains: declared (so flushed) first, deleted once nothing jumps to them.
  for (const std::string& c : options.stale_chains[f]) absl::StrAppend(&out, ":", c, " - [0:0]\n");
  for (const Chain& c : fam.chains) {
    for (const std::string& r : c.rules) absl::StrAppend(&out, "-A ", c.name, " ", r, "\n");
    sizes.rules[f] += static_cast<int>(c.rules.size());
  }
  for (const std::string& c : options.stale_chains[f]) absl::StrAppend(&out, "-X ", c, "\n");
  if (options.hook) absl::StrAppend(&out, "-I FORWARD 1 -j ", kTopChain, "\n");
  absl::StrAppend(&out, "COMMIT\n");
  sizes.chains[f] = static_cast<int>(fam.chains.size());
  for (const Chain& c : fam.chains) {
    for (const RuleSource& source : c.sources) {
      sizes.port_rules[f] += source.kind == RuleSource::kPolicy;
      sizes.tier_rules[f] += source.kind == RuleSource::kTier;
    }
  }
  return out;
}

absl::StatusOr<Ruleset> RenderModel(const Model& m, const RenderOptions& options) {
  Ruleset out;
  out.ipset = IpsetText(m, out);
  out.ip4 = RestoreText(m, 0, options, out);
  out.ip6 = RestoreText(m, 1, options, out);
  return out;
}

// ---- Kernel state -------------------------------------------------------------------

struct SavedTable {
  std::vector<std::string> chains;  // NP chains present
  bool hooked = false;              // FORWARD jumps to NP-FORWARD
};

absl::StatusOr<SavedTable> ReadTable(int f, const std::string& netns) {
  absl::StatusOr<std::string> text = Spawn({SaveTool(f), "-t", "filter"}, "", netns);
  if (!text.ok()) return text.status();
  SavedTable out;
  const std::string hook = absl::StrCat("-A FORWARD -j ", kTopChain);
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (absl::ConsumePrefix(&line, ":") && absl::StartsWith(line, kChainPrefix)) {
      out.chains.emplace_back(line.substr(0, line.find(' ')));
    } else if (line == hook) {
      out.hooked = true;
    }
  }
  return out;
}

struct SetName_ {
  std::string name;
  uint32_t generation;
  int family;
};

// The sets of a network namespace: np's, by name, and how many there are in all (the
// kernel's limit counts everyone's).
struct InstalledSets {
  std::vector<SetName_> ours;
  uint64_t all = 0;
};

absl::StatusOr<InstalledSets> ReadSets(const std::string& netns) {
  absl::StatusOr<std::string> text = Spawn({"ipset", "list", "-n"}, "", netns);
  if (!text.ok()) return text.status();
  InstalledSets out;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    ++out.all;
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, kSetPrefix)) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(rest, '-');
    uint32_t generation;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &generation)) continue;
    if (parts[1] != "v4" && parts[1] != "v6") continue;
    out.ours.push_back(SetName_{std::string(line), generation, parts[1] == "v4" ? 0 : 1});
  }
  return out;
}

// Limits and budgets (bench/RESULTS.md has the measurements).
// ip_set_core.c: set ids are 16 bits (65535 = invalid); the per-namespace list of sets
// starts at CONFIG_IP_SET_MAX (256 here) and grows by 64 while the new size stays below
// 65535, so the last size it reaches is 65,472.
constexpr uint64_t kMaxIpsets = 65472;
constexpr uint64_t kIpsetBudget = 4096;
constexpr uint64_t kIpsetEntryBudget = 1000000;
constexpr uint64_t kRuleBudget = 100000;  // per family

ir::BackendCapacity RulesetCapacity(const Ruleset& r) {
  ir::BackendCapacity report;
  report.set_backend("iptables");
  for (int f = 0; f < kFamilies; ++f) {
    AddCapacityItem(report, f == 0 ? "ipv4_rules" : "ipv6_rules", static_cast<uint64_t>(r.rules[f]),
                    0, "nf_tables (iptables-nft): none, memory aside", kRuleBudget,
                    "about 2.5 s of iptables-restore on the reference VM at 24 us a rule");
  }
  AddCapacityItem(report, "chains", static_cast<uint64_t>(r.chains[0] + r.chains[1]), 0,
                  "nf_tables: none, memory aside");
  AddCapacityItem(report, "ipsets", static_cast<uint64_t>(r.sets[0] + r.sets[1]), kMaxIpsets,
                  "ip_set_core.c: 16-bit set ids; the list of sets grows from 256 in steps of "
                  "64 and stops below 65,535; shared with every other set of the namespace",
                  kIpsetBudget,
                  "the kernel finds a set by name with a linear scan, so load time grows with "
                  "their square: 8,000 sets took 3.6 s to apply and 11 s to replace");
  AddCapacityItem(report, "ipset_entries",
                  static_cast<uint64_t>(r.set_entries[0] + r.set_entries[1]), 0,
                  "hash:net maxelem is made as large as each set", kIpsetEntryBudget,
                  "about 5 s of ipset restore on the reference VM at 5.4 us an entry");
  report.add_notes(absl::StrCat(
      "comments are cut to ", kIptablesCommentMax,
      " bytes (xt_comment XT_MAX_COMMENT_LEN 256, with its NUL)"));
  report.add_notes("a replace builds the new sets beside the old ones: Apply checks that "
                   "both fit under the namespace's limit with everyone else's sets");
  return report;
}

// Destroys the named sets: one `ipset restore` batch, then one by one if the batch failed
// (a set still referenced by a rule cannot be destroyed: the kernel refuses, which keeps
// a live rule from ever losing its set).
absl::Status DestroySets(const std::vector<std::string>& names, const std::string& netns) {
  if (names.empty()) return absl::OkStatus();
  std::string batch;
  for (const std::string& n : names) absl::StrAppend(&batch, "destroy ", n, "\n");
  if (Spawn({"ipset", "-exist", "restore"}, batch, netns).ok()) return absl::OkStatus();
  std::vector<std::string> errors;
  for (const std::string& n : names) {
    absl::StatusOr<std::string> r = Spawn({"ipset", "destroy", n}, "", netns);
    if (!r.ok() && !absl::StrContains(r.status().message(), "does not exist")) {
      errors.push_back(std::string(r.status().message()));
    }
  }
  if (errors.empty()) return absl::OkStatus();
  return absl::InternalError(absl::StrJoin(errors, "; "));
}

// What `m` installs; moves the set entries out of `m`. A set `carry` holds under the same
// name keeps the maxelem it was created with.
Installed InstalledOf(Model& m, const std::string& netns, const Installed* carry = nullptr) {
  Installed out;
  out.netns = netns;
  out.generation = m.generation;
  if (carry != nullptr) {
    out.generation = std::max(out.generation, carry->generation);
    out.leftover = carry->leftover;
  }
  RenderOptions options;
  options.generation = m.generation;
  options.hook = false;
  for (int f = 0; f < kFamilies; ++f) {
    (void)RestoreText(m, f, options, out.sizes);  // (for the sizes)
    for (const Chain& c : m.family[f].chains) out.chains[f][c.name] = c.rules;
    out.set_name[f] = m.family[f].set_names;
    for (const DispatchSet& d : m.family[f].dispatch_sets) out.dispatch_name[f][d.table] = d.name;
    ForEachSet(m, f, [&](const std::string& name, const char*,
                         std::vector<std::string>& entries) {
      size_t maxelem = MaxElem(entries.size());  // as IpsetText
      if (carry != nullptr) {
        auto kept = carry->maxelem.find(name);
        if (kept != carry->maxelem.end()) maxelem = kept->second;
      }
      out.maxelem[name] = maxelem;
      ++out.sizes.sets[f];
      out.sizes.set_entries[f] += static_cast<int64_t>(entries.size());
      out.sets[name] = std::move(entries);
    });
  }
  return out;
}

// A prefix "a.b.c.d/n" or "x::/n" as its first and last address; false when it is not one.
bool PrefixRange(absl::string_view text, int& family, U128& first, U128& last) {
  std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(text, '/');
  absl::StatusOr<std::string> bytes = AddressBytes(parts.first);
  int length;
  if (!bytes.ok() || !absl::SimpleAtoi(parts.second, &length)) return false;
  family = bytes->size() == 4 ? 0 : 1;
  const int width = family == 0 ? 32 : 128;
  if (length < 0 || length > width) return false;
  first = ToU128(*bytes);
  const U128 host = length == width ? U128{0} : ((U128{1} << (width - length)) - 1);
  if ((first & host) != 0) return false;
  last = first | host;
  return true;
}

// The set name a rule looks up ("-m set --match-set NAME src|dst"), or "".
absl::string_view RuleSet(absl::string_view rule) {
  constexpr absl::string_view kMatch = "--match-set ";
  size_t at = rule.find(kMatch);
  if (at == absl::string_view::npos) return "";
  absl::string_view rest = rule.substr(at + kMatch.size());
  return rest.substr(0, rest.find(' '));
}

// Runs of addresses [first, last], sorted, disjoint.
using Runs = std::vector<std::pair<U128, U128>>;

// Appends [first, last] to `runs`, merged with the last run when they touch.
void AddRun(Runs& runs, U128 first, U128 last) {
  if (!runs.empty() && runs.back().second + 1 == first) {
    runs.back().second = last;
  } else {
    runs.emplace_back(first, last);
  }
}

// The addresses of `a` that are not in `b`.
Runs Subtract(const Runs& a, const Runs& b) {
  Runs out;
  size_t j = 0;
  for (const auto& [first, last] : a) {
    while (j < b.size() && b[j].second < first) ++j;  // b's runs that end before this one
    U128 cursor = first;
    bool covered = false;
    for (size_t k = j; k < b.size() && b[k].first <= last; ++k) {
      if (b[k].first > cursor) out.emplace_back(cursor, b[k].first - 1);
      if (b[k].second >= last) {
        covered = true;
        break;
      }
      cursor = b[k].second + 1;
    }
    if (!covered) out.emplace_back(cursor, last);
  }
  return out;
}

bool Overlaps(const Runs& a, const Runs& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i].second < b[j].first) {
      ++i;
    } else if (b[j].second < a[i].first) {
      ++j;
    } else {
      return true;
    }
  }
  return false;
}

// Where an element-only edit changes a set's membership: the addresses it gains and loses
// (an address in both the old and the new entries keeps its membership throughout: adds go
// first). Re-cut prefixes around them change no lookup's answer.
struct Membership {
  Runs gained, lost;
};

Membership MembershipChange(const Runs& before, const Runs& after) {
  return Membership{Subtract(after, before), Subtract(before, after)};
}

// Whether two lookups of one chain group (one side of a packet: all look up the same
// address), of rules ending in `a_returns` / `b_returns`, may both see their answer change
// during one element-only edit in a way that could give a packet neither program's verdict
// (IptablesBackend::Update has the argument): not when no address changes in both, nor when
// both rules RETURN (whichever way each changes: every add goes in before any delete).
bool LookupsConflict(const Membership& a, bool a_returns, const Membership& b, bool b_returns) {
  if (a_returns && b_returns) return false;
  return Overlaps(a.gained, b.gained) || Overlaps(a.lost, b.lost) ||
         Overlaps(a.gained, b.lost) || Overlaps(a.lost, b.gained);
}

// Whether a rule's verdict, when it matches, is RETURN (this side allows).
bool Returns(absl::string_view rule) { return absl::EndsWith(rule, " -j RETURN"); }

// The runs a set's entries (prefixes, in address order) cover; false when one is unreadable.
bool RunsOf(const std::vector<std::string>& entries, Runs& runs) {
  std::vector<std::pair<U128, U128>> ranges;
  ranges.reserve(entries.size());
  for (const std::string& e : entries) {
    int family;
    U128 first, last;
    if (!PrefixRange(e, family, first, last)) return false;
    ranges.emplace_back(first, last);
  }
  std::sort(ranges.begin(), ranges.end());
  for (const auto& [first, last] : ranges) {
    if (!runs.empty() && runs.back().second >= last) continue;  // inside the run before
    if (!runs.empty() && runs.back().second + 1 >= first) {
      runs.back().second = last;
    } else {
      runs.emplace_back(first, last);
    }
  }
  return true;
}

// The element-only way from `from` to `next` (see IptablesBackend::Update for why it is
// safe), or why there is none.
// `to` is InstalledOf(next).
UpdatePlan PlanFrom(const Installed& from, const Model& next, const Installed& to) {
  UpdatePlan plan;
  for (int f = 0; f < kFamilies; ++f) {
    if (from.chains[f] != to.chains[f]) {
      plan.fallback = absl::StrCat(f == 0 ? "IPv4" : "IPv6", " rules differ");
      return plan;
    }
  }
  if (from.sets.size() != to.sets.size()) {
    plan.fallback = "the sets differ";
    return plan;
  }
  // Per changed set: its added and deleted prefixes, and their ranges (a superset of the
  // addresses whose membership changes: a merged prefix also covers neighbours that stay).
  struct Change {
    std::vector<std::string> adds, dels;
    std::vector<std::pair<U128, U128>> ranges;
    Membership membership;
  };
  std::map<std::string, Change> changes;
  std::set<std::string> dispatch_sets;
  for (const Family& fam : next.family) {
    for (const DispatchSet& d : fam.dispatch_sets) dispatch_sets.insert(d.name);
  }
  for (const auto& [name, entries] : to.sets) {
    auto old = from.sets.find(name);
    if (old == from.sets.end()) {
      plan.fallback = absl::StrCat("set ", name, " is new");
      return plan;
    }
    if (old->second == entries) continue;  // most sets: compared without sorting
    // A node endpoint came or went in a table that stays. Its dispatch must go in before
    // its addresses join any set (out after they leave), with a grace period between:
    // UpdateDelta plans that order; here, the full path.
    if (dispatch_sets.count(name) > 0) {
      plan.fallback = absl::StrCat("dispatch set ", name, " changes (a node endpoint)");
      return plan;
    }
    if (entries.size() > from.maxelem.at(name)) {
      plan.fallback = absl::StrCat("set ", name, " would pass its maxelem");
      return plan;
    }
    Change& c = changes[name];
    const std::set<std::string> now(entries.begin(), entries.end());
    const std::set<std::string> was(old->second.begin(), old->second.end());
    std::set_difference(now.begin(), now.end(), was.begin(), was.end(),
                        std::back_inserter(c.adds));
    std::set_difference(was.begin(), was.end(), now.begin(), now.end(),
                        std::back_inserter(c.dels));
    for (const std::vector<std::string>* list : {&c.adds, &c.dels}) {
      for (const std::string& e : *list) {
        int family;
        U128 first, last;
        if (!PrefixRange(e, family, first, last)) {
          plan.fallback = absl::StrCat("set ", name, ": unreadable entry ", e);
          return plan;
        }
        c.ranges.emplace_back(first, last);
      }
    }
    Runs before, after;
    if (!RunsOf(old->second, before) || !RunsOf(entries, after)) {
      plan.fallback = absl::StrCat("set ", name, ": unreadable entries");
      return plan;
    }
    c.membership = MembershipChange(before, after);
  }
  if (changes.empty()) return plan;  // nothing to do
  for (int f = 0; f < kFamilies; ++f) {
    const Family& fam = next.family[f];
    // A changed address must not be dispatched: then a packet meets changed lookups in one
    // chain at most (the one of its other end, which is not a changed address).
    for (const Dispatch& d : fam.dispatch) {
      absl::StatusOr<std::string> bytes = AddressBytes(d.address);
      if (!bytes.ok()) {
        plan.fallback = absl::StrCat("unreadable endpoint address ", d.address);
        return plan;
      }
      const U128 a = ToU128(*bytes);
      for (const auto& [name, c] : changes) {
        if ((name.find("-v4-") != std::string::npos) != (f == 0)) continue;
        for (const auto& [first, last] : c.ranges) {
          if (first <= a && a <= last) {
            plan.fallback = absl::StrCat("set ", name, " changes at the endpoint address ",
                                         d.address, " of this node");
            return plan;
          }
        }
      }
    }
    // In each table chain with its NetworkPolicy stage (what one side of a packet walks),
    // at most one rule may see a changed answer for an address, unless all that do RETURN
    // and see it change the same way (LookupsConflict).
    for (const auto& per_direction : next.tables) {
      for (const auto& per_family : per_direction) {
        const TableChain& tc = per_family[f];
        if (tc.chain < 0) continue;
        struct Lookup {
          const std::string* chain;
          const Change* change;
          bool returns;
        };
        std::vector<Lookup> lookups;
        for (int chain : {tc.chain, tc.stage}) {
          if (chain < 0) continue;
          for (const std::string& rule : fam.chains[chain].rules) {
            auto c = changes.find(std::string(RuleSet(rule)));
            if (c != changes.end()) {
              lookups.push_back(Lookup{&fam.chains[chain].name, &c->second, Returns(rule)});
            }
          }
        }
        for (size_t i = 0; i < lookups.size(); ++i) {
          for (size_t j = i + 1; j < lookups.size(); ++j) {
            if (LookupsConflict(lookups[i].change->membership, lookups[i].returns,
                                lookups[j].change->membership, lookups[j].returns)) {
              plan.fallback = absl::StrCat("two rules of ", *lookups[i].chain,
                                           " look up a changed address");
              return plan;
            }
          }
        }
      }
    }
  }
  // Every add before any delete: an address that stays in a set is covered throughout (by
  // its old prefix until the new one is in).
  for (const auto& [name, c] : changes) {
    for (const std::string& e : c.adds) absl::StrAppend(&plan.ipset, "add ", name, " ", e, "\n");
    plan.adds += static_cast<int>(c.adds.size());
  }
  for (const auto& [name, c] : changes) {
    for (const std::string& e : c.dels) absl::StrAppend(&plan.ipset, "del ", name, " ", e, "\n");
    plan.dels += static_cast<int>(c.dels.size());
  }
  return plan;
}

// Where a rule of a dispatch chain sorts (BuildModel's order): in NP-FORWARD the established
// rule, then the jumps to the dispatch chains in order; in a dispatch chain the egress rules by
// table, then the ingress ones.
std::pair<int, uint32_t> TopRuleKey(absl::string_view rule) {
  uint32_t t = 0;
  if (absl::ConsumePrefix(&rule, absl::StrCat("-j ", kChainPrefix, "D"))) {
    return {1, absl::SimpleAtoi(rule, &t) ? t : 0};
  }
  const std::string jump = absl::StrCat(" -j ", kChainPrefix, "T");
  const size_t at = rule.rfind(jump);
  if (at == absl::string_view::npos) return {0, 0};
  absl::string_view rest = rule.substr(at + jump.size());
  const size_t dash = rest.find('-');
  if (dash == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(0, dash), &t)) return {0, 0};
  return {rest.substr(dash) == "-EG" ? 1 : 2, t};
}

// Walks a dispatch chain from `before` to `after` (both in TopRuleKey order, one rule per key):
// fn(i, j) for each rule, in order, with i = its index in `before` (or -1: only in `after`)
// and j = its index in `after` (or -1: only in `before`); a key in both comes once.
template <typename Fn>
void WalkTopChain(const std::vector<std::string>& before, const std::vector<std::string>& after,
                  Fn fn) {
  size_t i = 0, j = 0;
  while (i < before.size() || j < after.size()) {
    if (j == after.size() ||
        (i < before.size() && TopRuleKey(before[i]) < TopRuleKey(after[j]))) {
      fn(static_cast<int>(i++), -1);
    } else if (i == before.size() || TopRuleKey(after[j]) < TopRuleKey(before[i])) {
      fn(-1, static_cast<int>(j++));
    } else {
      fn(static_cast<int>(i++), static_cast<int>(j++));
    }
  }
}

// Dispatch chain `top` from `before` to `after` as positional edits, applied one after the
// other in one restore: a rule only in `before` deleted, one only in `after` inserted where it
// sorts, one whose set was renamed replaced; the rules that stay are not touched.
std::vector<std::string> TopChainEdits(const std::string& top,
                                       const std::vector<std::string>& before,
                                       const std::vector<std::string>& after) {
  std::vector<std::string> out;
  size_t position = 1;
  WalkTopChain(before, after, [&](int i, int j) {
    if (j < 0) {
      out.push_back(absl::StrCat("-D ", top, " ", position));
    } else if (i < 0) {
      out.push_back(absl::StrCat("-I ", top, " ", position++, " ", after[j]));
    } else {
      if (before[i] != after[j]) {
        out.push_back(absl::StrCat("-R ", top, " ", position, " ", after[j]));
      }
      ++position;
    }
  });
  return out;
}

// The chain a rule jumps or goes to ("... -j|-g NAME" at its end), or "".
// One backward scan for the last " -j " or " -g " (the target is at the end, so it stops
// within a few bytes; two rfinds would scan a whole rule for the one it lacks).
absl::string_view RuleTarget(absl::string_view rule) {
  for (size_t at = rule.size() >= 4 ? rule.size() - 4 : 0; rule.size() >= 4; --at) {
    if (rule[at] == ' ' && rule[at + 1] == '-' && (rule[at + 2] == 'j' || rule[at + 2] == 'g') &&
        rule[at + 3] == ' ') {
      return rule.substr(at + 4);
    }
    if (at == 0) break;
  }
  // A rule of nothing but its target ("-g NP-T3-IN-NP").
  if (absl::StartsWith(rule, "-j ") || absl::StartsWith(rule, "-g ")) return rule.substr(3);
  return absl::string_view();
}

// One family's chains that an in-place rules update changes, and its restore texts.
//  - `restore` (RulesPlan::restore): one transaction — the chains whose rules differ or that
//    are new, declared (so flushed) and refilled, the dispatch chains (NP-FORWARD, NP-D<k>)
//    edited by position (TopChainEdits: re-adding their rules is most of a restore's time at
//    many tables, bench/RESULTS.md), the gone chains flushed and deleted.
//  - `switch_restore` then `cleanup` (what the backend runs): the same edit as two
//    transactions, the first of which deletes nothing — an nf_tables commit that frees a rule
//    or chain waits out an RCU grace period (~14 ms, bench/RESULTS.md), one that only adds
//    does not. The switch makes every changed chain's new rules as `<chain>-NEW` and puts a
//    first rule in the chain: `-g <chain>-NEW` (a trampoline: the new rules' verdict, or their
//    end, is the chain's), or, for a chain that an old dispatch rule going away jumps to (a
//    renamed dispatch set, a gone table), `-j RETURN` (inert; the new dispatch rule jumps
//    to `<chain>-NEW`, and a kept chain that jumps to it is rewritten too), and inserts
//    the dispatch chains' new rules beside the old ones (in `after`'s order); a gone chain
//    (a table's, or a dispatch chain with no table left) is made inert. Why that is the new
//    program at once: np's chains only RETURN or DROP (no ACCEPT, no marks), so a packet's
//    verdict is the AND of the chains the dispatch chains send it through, in any order;
//    each old dispatch rule the new program lacks jumps to an inert chain (which allows
//    everything: the identity of AND; a chain whose old rule is dropped is made inert even
//    when its rules stay: an address leaving a renamed dispatch set must stop reaching it),
//    and every chain the new rules reach answers with the new program's rules (new,
//    trampolined, -NEW or kept). A dispatch chain is only touched where its rules change: an
//    insert there makes iptables-restore read the whole chain (kDispatchChainTables keeps
//    that to 64 rules; NP-FORWARD, one per dispatch chain). The cleanup, deferred off the
//    event's path, deletes the old dispatch rules by spec, the inert chains, renames their
//    -NEW chains to their names (`-E`: jumps follow a rename), refills each trampolined
//    chain with its rules and deletes its -NEW chain, in one transaction between two equal
//    programs; afterwards the kernel holds exactly what `restore` leaves.
struct ChainRewrite {
  static constexpr absl::string_view kPending = "-NEW";

  const std::map<std::string, std::vector<std::string>>* installed = nullptr;  // the family's
  std::map<std::string, const std::vector<std::string>*> written;  // chain -> its new rules
  std::vector<std::string> deleted;                                 // in name order
  // The installed dispatch chains (NP-FORWARD, NP-D<k>) whose rules change -> their new
  // rules: edited by position, never declared again (a new dispatch chain is `written`).
  std::map<std::string, const std::vector<std::string>*> tops;

  void Into(RulesPlan& plan, int f) const {
    // The one-transaction form.
    {
      std::string declare, rules, remove;
      for (const auto& [chain, list] : written) {
        absl::StrAppend(&declare, ":", chain, " - [0:0]\n");
        for (const std::string& r : *list) absl::StrAppend(&rules, "-A ", chain, " ", r, "\n");
      }
      // After the new chains are filled (the edits jump to them), before the gone ones are
      // deleted (the edits remove the last jumps to them).
      for (const auto& [chain, after] : tops) {
        for (const std::string& line : TopChainEdits(chain, installed->at(chain), *after)) {
          absl::StrAppend(&rules, line, "\n");
        }
      }
      for (const std::string& chain : deleted) {
        absl::StrAppend(&declare, ":", chain, " - [0:0]\n");
        absl::StrAppend(&remove, "-X ", chain, "\n");
      }
      plan.chains_written[f] = static_cast<int>(written.size() + tops.size());
      plan.chains_deleted[f] = static_cast<int>(deleted.size());
      plan.restore[f] = declare.empty() && tops.empty()
                            ? ""
                            : absl::StrCat("*filter\n", declare, rules, remove, "COMMIT\n");
    }
    // The two-transaction form. `renamed`: the installed chains an old dispatch rule that
    // goes away jumps to; `rewritten`: those, the installed chains whose rules change and
    // the kept ones that jump to a renamed one, each with its rules in the new program.
    const std::set<std::string> gone(deleted.begin(), deleted.end());
    auto existing = [&](const std::string& chain) {
      return !chain.empty() && !IsDispatchChain(chain) && gone.count(chain) == 0 &&
             installed->count(chain) > 0;
    };
    std::set<std::string, std::less<>> renamed;
    for (const auto& [chain, after] : tops) {
      const std::vector<std::string>& before = installed->at(chain);
      WalkTopChain(before, *after, [&](int i, int j) {
        if (i < 0 || (j >= 0 && before[i] == (*after)[j])) return;
        if (std::string target(RuleTarget(before[i])); existing(target)) renamed.insert(target);
      });
    }
    auto target_renamed = [&](absl::string_view rule) {
      return !renamed.empty() && renamed.count(RuleTarget(rule)) > 0;
    };
    std::map<std::string, const std::vector<std::string>*> rewritten;
    for (const auto& [chain, list] : written) {
      if (existing(chain)) rewritten[chain] = list;
    }
    // Only a renamed chain or one that jumps to one joins here: with none renamed (no old
    // dispatch rule to a kept chain goes away, most events) none does, and the walk over
    // every installed rule — ~1 ms of the event's planning at 1,000 tables (h96) — is skipped.
    for (auto it = renamed.empty() ? installed->end() : installed->begin();
         it != installed->end(); ++it) {
      const auto& [chain, list] = *it;
      if (renamed.count(chain) == 0 && std::none_of(list.begin(), list.end(), target_renamed)) {
        continue;
      }
      if (existing(chain) && rewritten.count(chain) == 0) rewritten[chain] = &list;
    }
    auto map_rule = [&](const std::string& rule) {
      return target_renamed(rule) ? absl::StrCat(rule, kPending) : rule;
    };
    // The switch: new chains under their names, rewritten ones as <chain>-NEW; the dispatch
    // chains' new rules inserted; a renamed or gone chain made inert, any other rewritten
    // chain a trampoline to its new rules (`-g`: their verdict, or their end, is the chain's).
    std::string declare, rules, inert;
    // The cleanup: the dispatch chains' old rules deleted, the old chains flushed and deleted,
    // the renamed ones' new chains renamed, the trampolines refilled with their rules (which
    // name chains by their final names: after the renames) and their -NEW chains deleted.
    std::string drop, flush, remove, rename, refill, unpend;
    for (const auto& [chain, list] : written) {
      if (rewritten.count(chain) > 0) continue;
      absl::StrAppend(&declare, ":", chain, " - [0:0]\n");
      for (const std::string& r : *list) {
        absl::StrAppend(&rules, "-A ", chain, " ", map_rule(r), "\n");
      }
    }
    for (const auto& [chain, list] : rewritten) {
      absl::StrAppend(&declare, ":", chain, kPending, " - [0:0]\n");
      for (const std::string& r : *list) {
        absl::StrAppend(&rules, "-A ", chain, kPending, " ", map_rule(r), "\n");
      }
      absl::StrAppend(&flush, ":", chain, " - [0:0]\n");
      if (renamed.count(chain) > 0) {
        absl::StrAppend(&inert, "-I ", chain, " 1 -j RETURN\n");
        absl::StrAppend(&remove, "-X ", chain, "\n");
        absl::StrAppend(&rename, "-E ", chain, kPending, " ", chain, "\n");
      } else {
        absl::StrAppend(&inert, "-I ", chain, " 1 -g ", chain, kPending, "\n");
        absl::StrAppend(&flush, ":", chain, kPending, " - [0:0]\n");
        for (const std::string& r : *list) absl::StrAppend(&refill, "-A ", chain, " ", r, "\n");
        absl::StrAppend(&unpend, "-X ", chain, kPending, "\n");
      }
    }
    for (const std::string& chain : deleted) {
      absl::StrAppend(&inert, "-I ", chain, " 1 -j RETURN\n");
      absl::StrAppend(&flush, ":", chain, " - [0:0]\n");
      absl::StrAppend(&remove, "-X ", chain, "\n");
    }
    // A new rule goes in where it sorts: a dispatch chain holds at most two rules per table of
    // its kDispatchChainTables (NP-FORWARD one per dispatch chain), so the tool's fetch of the
    // chain a positional insert needs is short.
    for (const auto& [chain, after] : tops) {
      const std::vector<std::string>& before = installed->at(chain);
      size_t position = 1;
      WalkTopChain(before, *after, [&](int i, int j) {
        const bool stays =
            i >= 0 && j >= 0 && before[i] == (*after)[j] && !target_renamed((*after)[j]);
        if (stays) {
          ++position;
          return;
        }
        if (j >= 0) {
          absl::StrAppend(&rules, "-I ", chain, " ", position++, " ", map_rule((*after)[j]),
                          "\n");
        }
        if (i >= 0) {
          ++position;
          absl::StrAppend(&drop, "-D ", chain, " ", before[i], "\n");
        }
      });
    }
    plan.switch_restore[f] = declare.empty() && rules.empty() && inert.empty()
                                 ? ""
                                 : absl::StrCat("*filter\n", declare, rules, inert, "COMMIT\n");
    // Old rules first (a rule to a renamed chain is matched by its old target's name, which
    // the renames give to the new rule), then the chains (flushed, so nothing of theirs
    // jumps), the renames, the refills, and the trampolines' targets (nothing jumps there).
    plan.cleanup[f] = drop.empty() && flush.empty()
                          ? ""
                          : absl::StrCat("*filter\n", drop, flush, remove, rename, refill,
                                         unpend, "COMMIT\n");
  }
};

// The in-place rules way from `from` to `to` (IptablesBackend::Update has the order and
// why it is safe): `to` was made with Naming{&from, keep_changed = false}, so a set name in
// both holds the same entries in both, and every set whose contents change has a new name.
// Fills all of RulesPlan but its `ipset` text.
RulesPlan PlanRulesFrom(const Installed& from, const Installed& to) {
  RulesPlan plan;
  for (const auto& [name, entries] : to.sets) {
    auto old = from.sets.find(name);
    if (old == from.sets.end()) {
      plan.created.push_back(name);
    } else if (old->second != entries) {  // (Naming makes this impossible: kept as a guard)
      plan.fallback = absl::StrCat("set ", name, " would change under its name");
      return plan;
    }
  }
  for (const auto& [name, entries] : from.sets) {
    if (to.sets.count(name) == 0) plan.destroyed.push_back(name);
  }
  for (int f = 0; f < kFamilies; ++f) {
    ChainRewrite rewrite;
    rewrite.installed = &from.chains[f];
    for (const auto& [chain, list] : to.chains[f]) {
      auto old = from.chains[f].find(chain);
      if (old != from.chains[f].end() && old->second == list) continue;
      if (IsDispatchChain(chain) && old != from.chains[f].end()) {
        rewrite.tops[chain] = &list;
      } else {
        rewrite.written[chain] = &list;
      }
    }
    for (const auto& [chain, list] : from.chains[f]) {
      if (to.chains[f].count(chain) == 0) rewrite.deleted.push_back(chain);
    }
    rewrite.Into(plan, f);
  }
  return plan;
}

// ---- ipset edits over netlink ------------------------------------------------------------
//
// An element-only Update sends its adds and deletes to the kernel's ipset netlink interface
// itself (nfnetlink subsystem IPSET, the messages `ipset restore` sends): a process spawn
// costs more than the whole edit (about 8 ms on the reference VM, against tens of us). The
// messages go in order in one buffer per chunk; the kernel handles each on its own, as
// `ipset restore` has it do, and acks each. Without NLM_F_EXCL an add of a member already
// there and a delete of one not there succeed (as `ipset -exist`).

// One set member to add or delete: the set's name, the prefix "a.b.c.d/n".
struct SetEdit {
  bool add;
  std::string set;
  std::string prefix;
};

void PutAttr(std::string& buf, uint16_t type, const void* data, size_t size) {
  nlattr a{};
  a.nla_len = static_cast<uint16_t>(NLA_HDRLEN + size);
  a.nla_type = type;
  buf.append(reinterpret_cast<const char*>(&a), sizeof(a));
  buf.append(static_cast<const char*>(data), size);
  buf.append(NLA_ALIGN(size) - size, '\0');
}
// Opens a nested attribute; returns its offset for EndNest.
size_t BeginNest(std::string& buf, uint16_t type) {
  const size_t at = buf.size();
  nlattr a{};
  a.nla_type = type | NLA_F_NESTED;
  buf.append(reinterpret_cast<const char*>(&a), sizeof(a));
  return at;
}
void EndNest(std::string& buf, size_t at) {
  const uint16_t len = static_cast<uint16_t>(buf.size() - at);
  std::memcpy(&buf[at], &len, sizeof(len));
}

// A netlink socket of family NETLINK_NETFILTER in network namespace `netns` (the calling
// thread enters it just to create the socket, which stays bound to it, and comes back).
absl::StatusOr<int> NetfilterSocket(const std::string& netns) {
  int back = -1, there = -1;
  if (!netns.empty()) {
    back = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    there = open(absl::StrCat("/run/netns/", netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (back < 0 || there < 0 || setns(there, CLONE_NEWNET) != 0) {
      const int e = errno;
      if (back >= 0) close(back);
      if (there >= 0) close(there);
      return absl::InternalError(absl::StrCat("entering netns ", netns, ": ", strerror(e)));
    }
    close(there);
  }
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  const int socket_errno = errno;
  if (back >= 0) {
    // Coming back cannot fail short of the kernel refusing our own namespace; if it did,
    // this thread would run in the wrong one: stop rather than go on there.
    if (setns(back, CLONE_NEWNET) != 0) abort();
    close(back);
  }
  if (fd < 0) return absl::InternalError(absl::StrCat("netlink socket: ", strerror(socket_errno)));
  return fd;
}

// `iptables-restore --noflush` and `ip6tables-restore --noflush` of texts[f], side by side
// (the two families' tables are independent: a packet meets one of them); a family with no
// text is not run (OK). Each family's restore is its own transaction, whatever the other's
// outcome.
std::array<absl::Status, kFamilies> SpawnRestores(const std::string (&texts)[kFamilies],
                                                  const std::string& netns) {
  std::vector<Command> commands;
  std::vector<int> families;
  for (int f = 0; f < kFamilies; ++f) {
    if (texts[f].empty()) continue;
    commands.push_back(Command{{RestoreTool(f), "--noflush", "--wait=10"}, texts[f]});
    families.push_back(f);
  }
  std::vector<absl::StatusOr<std::string>> results = SpawnAll(commands, netns);
  std::array<absl::Status, kFamilies> out;
  for (size_t i = 0; i < families.size(); ++i) out[families[i]] = results[i].status();
  return out;
}

// A long-lived `iptables-restore --noflush` (or ip6tables-) in one network namespace, fed one
// text per restore instead of a process per restore. Why: at the agent bench's 1,000 tables a
// spawned restore of one small chain costs 15–22 ms, the same text written to a running
// process 1–5 ms (bench/RESULTS.md, h78): the spawn, the extensions' dlopen and the first
// cache fetch are paid once (in Apply, which starts the tools and sends each a warm-up block:
// WarmUpText). iptables-nft-restore commits each `COMMIT` block when it reads
// it but says nothing on success, so success is read from the kernel: every nf_tables
// transaction announces its new generation (NFT_MSG_NEWGEN, with the committing process's
// pid) to the NFNLGRP_NFTABLES group, which a netlink socket in the namespace joins before the
// text is written. A failing line or commit makes the process print "line N failed" and exit
// (nothing of that block is committed: the batch is one transaction), which its stderr's end
// shows; a process that neither acks nor exits in kRestoreTimeout is killed and the restore
// reported failed (the caller then goes to Apply, which reads the kernel: fail closed).
// Only iptables-nft has generations: with the legacy tool, or a block that might change
// nothing (no generation then, so no ack to wait for), the restore is spawned as before.
constexpr int kRestoreTimeoutMs = 10000;

class PersistentRestore {
 public:
  PersistentRestore() = default;
  PersistentRestore(const PersistentRestore&) = delete;
  PersistentRestore& operator=(const PersistentRestore&) = delete;
  ~PersistentRestore() { Stop(); }

  // Whether every block of `text` surely makes a transaction (so announces a generation): it
  // names an action that changes the table when it succeeds. A `:CHAIN` line alone may not
  // (flushing an empty chain commits nothing). Sets `blocks` to the number of COMMITs.
  static bool Acked(absl::string_view text, int& blocks) {
    blocks = 0;
    bool acted = false;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (line == "COMMIT") {
        if (!acted) return false;
        ++blocks;
        acted = false;
      } else if (line.size() > 3 && line[0] == '-' && line[2] == ' ' &&
                 absl::string_view("AIRDEXN").find(line[1]) != absl::string_view::npos) {
        acted = true;
      }
    }
    return blocks > 0;
  }

  // Whether the family's restore tool is the nf_tables variant (checked once).
  static bool Nft(int f) {
    static const std::array<bool, kFamilies> nft = [] {
      std::array<bool, kFamilies> out{};
      for (int g = 0; g < kFamilies; ++g) {
        absl::StatusOr<std::string> path = ToolPath(RestoreTool(g));
        char real[PATH_MAX];
        out[g] = path.ok() && realpath(path->c_str(), real) != nullptr &&
                 absl::StrContains(real, "nft");
      }
      return out;
    }();
    return nft[f];
  }

  // Starts the tool in `netns` unless it runs there already (StartProcess: no fork of this
  // process, whose pages would all turn copy-on-write: a fault on each one the agent writes next).
  absl::Status Ensure(int f, const std::string& netns) {
    if (pid_ > 0 && netns_ == netns && waitpid(pid_, nullptr, WNOHANG) == 0) return absl::OkStatus();
    Stop();
    absl::StatusOr<std::string> path = ToolPath(RestoreTool(f));
    if (!path.ok()) return path.status();
    spawned.fetch_add(1, std::memory_order_relaxed);
    absl::StatusOr<RunningProcess> p = StartProcess({*path, "--noflush"}, netns);
    if (!p.ok()) return p.status();
    pid_ = p->pid;
    in_ = p->in;
    err_ = p->err;
    netns_ = netns;
    return absl::OkStatus();
  }

  // Closes its stdin (it exits at the end of its input) and reaps it; a stuck one is killed.
  void Stop() {
    if (pid_ <= 0) return;
    close(in_);
    close(err_);
    int status = 0;
    for (int i = 0; i < 100 && waitpid(pid_, &status, WNOHANG) == 0; ++i) usleep(1000);
    if (waitpid(pid_, &status, WNOHANG) == 0) {
      kill(pid_, SIGKILL);
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    pid_ = -1;
    in_ = err_ = -1;
  }

  pid_t pid() const { return pid_; }
  int err() const { return err_; }

  absl::Status Write(absl::string_view text) {
    signal(SIGPIPE, SIG_IGN);  // a tool that exits early must not kill this process
    while (!text.empty()) {
      const ssize_t w = write(in_, text.data(), text.size());
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return absl::InternalError(absl::StrCat("writing: ", std::strerror(errno)));
      text.remove_prefix(static_cast<size_t>(w));
    }
    return absl::OkStatus();
  }

 private:
  static absl::StatusOr<std::string> ToolPath(absl::string_view tool) {
    for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
      const std::string path = absl::StrCat(dir, tool);
      if (access(path.c_str(), X_OK) == 0) return path;
    }
    return absl::NotFoundError(absl::StrCat(tool, " not found"));
  }

  pid_t pid_ = -1;
  int in_ = -1, err_ = -1;
  std::string netns_;
};

using Restorers = std::array<PersistentRestore, kFamilies>;

// A block for a running restore tool that changes nothing and uses every extension np's
// rules do (conntrack, tcp, udp, sctp, comment, and set when `set` names one of the family:
// libxt_set looks the name up), so that its first real block is not the one that loads them.
std::string WarmUpText(const std::string& set) {
  const std::string chain = absl::StrCat(kChainPrefix, "WARM");
  return absl::StrCat(
      "*filter\n:", chain, " - [0:0]\n",  //
      "-A ", chain, " -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n",  //
      "-A ", chain, " -p tcp -m tcp --dport 1",
      set.empty() ? "" : absl::StrCat(" -m set --match-set ", set, " src"), " -j RETURN\n",
      "-A ", chain, " -p udp -m udp --dport 1:2 -j RETURN\n",  //
      "-A ", chain, " -p sctp -m sctp --dport 1 -j RETURN\n",  //
      "-A ", chain, " ", CommentMatch("np: warm-up"), " -j DROP\n",  //
      "-F ", chain, "\n-X ", chain, "\nCOMMIT\n");
}

// The pid in an NFT_MSG_NEWGEN announcement (0: not one).
uint32_t NewGenerationPid(const nlmsghdr& m) {
  if (m.nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN)) return 0;
  const size_t skip = NLMSG_LENGTH(NLMSG_ALIGN(sizeof(nfgenmsg)));
  if (m.nlmsg_len < skip) return 0;
  const char* p = reinterpret_cast<const char*>(&m) + skip;
  size_t left = m.nlmsg_len - skip;
  while (left >= sizeof(nlattr)) {
    const nlattr* a = reinterpret_cast<const nlattr*>(p);
    if (a->nla_len < sizeof(nlattr) || a->nla_len > left) return 0;
    if ((a->nla_type & NLA_TYPE_MASK) == NFTA_GEN_PROC_PID && a->nla_len >= NLA_HDRLEN + 4) {
      uint32_t pid;
      std::memcpy(&pid, p + NLA_HDRLEN, sizeof(pid));
      return ntohl(pid);
    }
    const size_t step = NLA_ALIGN(a->nla_len);
    if (step >= left) break;
    p += step;
    left -= step;
  }
  return 0;
}

// A socket in `netns` that hears every nf_tables generation announced there.
absl::StatusOr<int> GenerationSocket(const std::string& netns) {
  absl::StatusOr<int> fd = NetfilterSocket(netns);
  if (!fd.ok()) return fd;
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  local.nl_groups = 1u << (NFNLGRP_NFTABLES - 1);
  // A transaction announces each of its objects too: room for a large one's.
  const int buffer = 32 << 20;
  (void)setsockopt(*fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof(buffer));
  if (bind(*fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    const int e = errno;
    close(*fd);
    return absl::InternalError(absl::StrCat("netlink bind (nf_tables events): ", strerror(e)));
  }
  return fd;
}

// RestoreFamilies through the running tools: both texts written, then both commits awaited.
// `acked_ms` (optional): per family, when its last commit was announced, in ms after the
// texts were written (0: not fed to a running tool).
std::array<absl::Status, kFamilies> RestoreFamilies(const std::string (&texts)[kFamilies],
                                                    const std::string& netns,
                                                    Restorers* tools,
                                                    double* acked_ms = nullptr) {
  const auto written = std::chrono::steady_clock::now();
  if (acked_ms != nullptr) acked_ms[0] = acked_ms[1] = 0;
  std::string spawn[kFamilies];
  int blocks[kFamilies] = {0, 0};
  bool fed = false;
  for (int f = 0; f < kFamilies; ++f) {
    const bool fit = tools != nullptr && !texts[f].empty() &&
                     PersistentRestore::Acked(texts[f], blocks[f]) && PersistentRestore::Nft(f);
    if (!fit) {
      spawn[f] = texts[f];
      blocks[f] = 0;
    }
    fed = fed || fit;
  }
  std::array<absl::Status, kFamilies> out;
  if (fed) {
    absl::StatusOr<int> sock = GenerationSocket(netns);
    for (int f = 0; f < kFamilies && sock.ok(); ++f) {
      if (blocks[f] == 0) continue;
      PersistentRestore& tool = (*tools)[f];
      out[f] = tool.Ensure(f, netns);
      if (out[f].ok()) out[f] = tool.Write(texts[f]);
      if (!out[f].ok()) {
        tool.Stop();
        blocks[f] = 0;
      }
    }
    if (!sock.ok()) {
      for (int f = 0; f < kFamilies; ++f) if (blocks[f] > 0) out[f] = sock.status();
    } else {
      std::string errors[kFamilies];
      std::vector<char> buffer(1 << 16);
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(kRestoreTimeoutMs);
      auto fail = [&](int f, absl::string_view why) {
        out[f] = absl::InternalError(absl::StrCat(
            RestoreTool(f), " --noflush (running) failed: ", why,
            errors[f].empty() ? "" : ": ",
            absl::StripAsciiWhitespace(errors[f])));
        (*tools)[f].Stop();
        blocks[f] = 0;
      };
      while (blocks[0] > 0 || blocks[1] > 0) {
        std::vector<pollfd> fds = {{*sock, POLLIN, 0}};
        for (int f = 0; f < kFamilies; ++f) {
          if (blocks[f] > 0) fds.push_back({(*tools)[f].err(), POLLIN, 0});
        }
        const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              deadline - std::chrono::steady_clock::now())
                                              .count());
        const int ready = left > 0 ? poll(fds.data(), fds.size(), left) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) {
          for (int f = 0; f < kFamilies; ++f) if (blocks[f] > 0) fail(f, "no commit in time");
          break;
        }
        for (int f = 0; f < kFamilies; ++f) {
          if (blocks[f] == 0) continue;
          const ssize_t r = read((*tools)[f].err(), buffer.data(), buffer.size());
          if (r > 0) errors[f].append(buffer.data(), static_cast<size_t>(r));
          if (r == 0) fail(f, "it exited");  // its stderr ended: it is gone
        }
        if ((fds[0].revents & POLLIN) == 0) continue;
        const ssize_t n = recv(*sock, buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n < 0) {
          if (errno == EAGAIN || errno == EINTR) continue;
          // ENOBUFS: announcements were lost, ours maybe: whether it committed is unknown.
          const std::string why = absl::StrCat("nf_tables events: ", strerror(errno));
          for (int f = 0; f < kFamilies; ++f) if (blocks[f] > 0) fail(f, why);
          break;
        }
        int len = static_cast<int>(n);
        for (const nlmsghdr* m = reinterpret_cast<const nlmsghdr*>(buffer.data());
             NLMSG_OK(m, len); m = NLMSG_NEXT(m, len)) {
          const uint32_t pid = NewGenerationPid(*m);
          for (int f = 0; f < kFamilies && pid != 0; ++f) {
            if (blocks[f] > 0 && static_cast<uint32_t>((*tools)[f].pid()) == pid &&
                --blocks[f] == 0 && acked_ms != nullptr) {
              acked_ms[f] = std::chrono::duration<double, std::milli>(
                                std::chrono::steady_clock::now() - written)
                                .count();
            }
          }
        }
      }
      close(*sock);
    }
  }
  const std::array<absl::Status, kFamilies> spawned_out = SpawnRestores(spawn, netns);
  for (int f = 0; f < kFamilies; ++f) if (!spawn[f].empty()) out[f] = spawned_out[f];
  return out;
}

// Waits until every packet that was walking the rules when it was called is done: an RCU
// grace period (membarrier(MEMBARRIER_CMD_GLOBAL) is synchronize_rcu(), as nft.cc notes).
absl::Status RcuGracePeriod() {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0) {
    return absl::UnavailableError(absl::StrCat("membarrier: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Starts an ipset request (header, nfgenmsg, protocol attribute) at the end of `buf`;
// returns its offset for EndRequest. Every request asks for an ack.
size_t BeginRequest(std::string& buf, int cmd, uint16_t flags, uint32_t seq, int family) {
  const size_t at = buf.size();
  nlmsghdr h{};
  h.nlmsg_type = static_cast<uint16_t>((NFNL_SUBSYS_IPSET << 8) | cmd);
  h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
  h.nlmsg_seq = seq;
  buf.append(reinterpret_cast<const char*>(&h), sizeof(h));
  nfgenmsg g{};
  g.nfgen_family = family == 0 ? AF_INET : AF_INET6;
  g.version = NFNETLINK_V0;
  buf.append(reinterpret_cast<const char*>(&g), sizeof(g));
  buf.append(NLMSG_ALIGN(sizeof(g)) - sizeof(g), '\0');
  const uint8_t protocol = IPSET_PROTOCOL_MIN;
  PutAttr(buf, IPSET_ATTR_PROTOCOL, &protocol, 1);
  return at;
}
void EndRequest(std::string& buf, size_t at) {
  const uint32_t len = static_cast<uint32_t>(buf.size() - at);
  std::memcpy(&buf[at], &len, sizeof(len));
}

// Sends `count` requests (sequence numbers first_seq...) in one buffer and reads until each
// is acked. `reply` sees every other message (a query's answer); `failed(seq, errno)` is
// told of each refused request. Fails only when the socket does.
absl::Status Exchange(int fd, const std::string& buf, size_t count,
                      const std::function<void(const nlmsghdr&)>& reply,
                      const std::function<void(uint32_t, int)>& failed) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof(kernel)) != static_cast<ssize_t>(buf.size())) {
    return absl::InternalError(absl::StrCat("netlink send: ", strerror(errno)));
  }
  std::vector<char> in(1 << 16);
  size_t acked = 0;
  while (acked < count) {
    const ssize_t n = recv(fd, in.data(), in.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("netlink receive: ", strerror(errno)));
    }
    int left = static_cast<int>(n);
    for (const nlmsghdr* m = reinterpret_cast<const nlmsghdr*>(in.data()); NLMSG_OK(m, left);
         m = NLMSG_NEXT(m, left)) {
      if (m->nlmsg_type != NLMSG_ERROR) {
        if (reply) reply(*m);
        continue;
      }
      ++acked;
      const nlmsgerr* err = static_cast<const nlmsgerr*>(NLMSG_DATA(m));
      if (err->error != 0) failed(m->nlmsg_seq, -err->error);
    }
  }
  return absl::OkStatus();
}

std::string IpsetError(int error) {
  return absl::StrCat("error ", error,
                      error < 4096 ? absl::StrCat(" (", strerror(error), ")") : "");
}

// Sends the edits in order and waits for every ack. An error names the first refused edit;
// the edits before it (and possibly after it) are in.
absl::Status EditSets(const std::vector<SetEdit>& edits, const std::string& netns) {
  if (edits.empty()) return absl::OkStatus();
  absl::StatusOr<int> fd = NetfilterSocket(netns);
  if (!fd.ok()) return fd.status();
  absl::Status status = absl::OkStatus();
  constexpr size_t kChunk = 256;  // acks per read stay well inside the receive buffer
  for (size_t begin = 0; begin < edits.size() && status.ok(); begin += kChunk) {
    const size_t end = std::min(edits.size(), begin + kChunk);
    std::string buf;
    for (size_t i = begin; i < end; ++i) {
      const SetEdit& e = edits[i];
      int family;
      U128 first, last;
      if (!PrefixRange(e.prefix, family, first, last)) {
        status = absl::InternalError(absl::StrCat("unreadable prefix ", e.prefix));
        break;
      }
      const size_t at = BeginRequest(buf, e.add ? IPSET_CMD_ADD : IPSET_CMD_DEL, 0,
                                     static_cast<uint32_t>(i + 1), family);
      PutAttr(buf, IPSET_ATTR_SETNAME, e.set.c_str(), e.set.size() + 1);
      const size_t data = BeginNest(buf, IPSET_ATTR_DATA);
      const size_t ip = BeginNest(buf, IPSET_ATTR_IP);
      const std::string bytes = FromU128(first, family);
      PutAttr(buf,
              (family == 0 ? IPSET_ATTR_IPADDR_IPV4 : IPSET_ATTR_IPADDR_IPV6) |
                  NLA_F_NET_BYTEORDER,
              bytes.data(), bytes.size());
      EndNest(buf, ip);
      const std::pair<absl::string_view, absl::string_view> parts =
          absl::StrSplit(e.prefix, '/');
      int length = 0;
      (void)absl::SimpleAtoi(parts.second, &length);  // PrefixRange read it
      const uint8_t cidr = static_cast<uint8_t>(length);
      PutAttr(buf, IPSET_ATTR_CIDR, &cidr, 1);
      EndNest(buf, data);
      EndRequest(buf, at);
    }
    if (!status.ok()) break;
    absl::Status sent = Exchange(*fd, buf, end - begin, nullptr, [&](uint32_t seq, int error) {
      const size_t i = seq - 1;
      if (!status.ok() || i >= edits.size()) return;
      status = absl::InternalError(absl::StrCat("ipset ", edits[i].add ? "add " : "del ",
                                                edits[i].set, " ", edits[i].prefix, ": ",
                                                IpsetError(error)));
    });
    if (!sent.ok()) status = sent;
  }
  close(*fd);
  return status;
}

// A set to make in place: its name, family, type and size.
struct NewSet {
  std::string name;
  int family;
  bool dispatch;  // hash:ip (a dispatch set), else hash:net
  size_t hashsize, maxelem;
};

// Whether a set name of this backend is a dispatch set's (np-g<G>-v4-t<T>).
bool IsDispatchSet(absl::string_view name) {
  return absl::StrContains(name, "-v4-t") || absl::StrContains(name, "-v6-t");
}
int FamilyOfSet(absl::string_view name) { return absl::StrContains(name, "-v6-") ? 1 : 0; }

// Creates the sets, empty, over netlink (what `ipset create` sends), each with the newest
// revision of its type the kernel has (asked with IPSET_CMD_TYPE, as the ipset tool does).
// NLM_F_EXCL: a set of the name that exists already is an error, never reused.
absl::Status CreateSets(const std::vector<NewSet>& sets, const std::string& netns) {
  if (sets.empty()) return absl::OkStatus();
  absl::StatusOr<int> fd = NetfilterSocket(netns);
  if (!fd.ok()) return fd.status();
  absl::Status status = absl::OkStatus();
  // Revisions, by [dispatch][family]; -1: not asked.
  int revision[2][kFamilies] = {{-1, -1}, {-1, -1}};
  auto type_name = [](bool dispatch) { return dispatch ? "hash:ip" : "hash:net"; };
  for (const NewSet& n : sets) {
    int& r = revision[n.dispatch][n.family];
    if (r >= 0 || !status.ok()) continue;
    std::string buf;
    const size_t at = BeginRequest(buf, IPSET_CMD_TYPE, 0, 1, n.family);
    const std::string type = type_name(n.dispatch);
    PutAttr(buf, IPSET_ATTR_TYPENAME, type.c_str(), type.size() + 1);
    const uint8_t family = n.family == 0 ? AF_INET : AF_INET6;
    PutAttr(buf, IPSET_ATTR_FAMILY, &family, 1);
    EndRequest(buf, at);
    absl::Status sent = Exchange(
        *fd, buf, 1,
        [&](const nlmsghdr& m) {
          const size_t header = NLMSG_ALIGN(sizeof(nfgenmsg));
          if (m.nlmsg_len < NLMSG_LENGTH(header)) return;
          const char* p = static_cast<const char*>(NLMSG_DATA(&m)) + header;
          int left = static_cast<int>(m.nlmsg_len - NLMSG_LENGTH(header));
          for (const nlattr* a = reinterpret_cast<const nlattr*>(p);
               left >= static_cast<int>(sizeof(nlattr)) && a->nla_len >= sizeof(nlattr) &&
               a->nla_len <= left;
               left -= NLA_ALIGN(a->nla_len),
                          a = reinterpret_cast<const nlattr*>(reinterpret_cast<const char*>(a) +
                                                              NLA_ALIGN(a->nla_len))) {
            if ((a->nla_type & NLA_TYPE_MASK) == IPSET_ATTR_REVISION && a->nla_len > NLA_HDRLEN) {
              r = *(reinterpret_cast<const uint8_t*>(a) + NLA_HDRLEN);
            }
          }
        },
        [&](uint32_t, int error) {
          status = absl::InternalError(absl::StrCat("ipset type ", type, ": ", IpsetError(error)));
        });
    if (!sent.ok()) status = sent;
    if (status.ok() && r < 0) {
      status = absl::InternalError(absl::StrCat("ipset type ", type, ": no revision"));
    }
  }
  if (status.ok()) {
    std::string buf;
    for (size_t i = 0; i < sets.size(); ++i) {
      const NewSet& n = sets[i];
      const size_t at =
          BeginRequest(buf, IPSET_CMD_CREATE, NLM_F_EXCL, static_cast<uint32_t>(i + 1), n.family);
      PutAttr(buf, IPSET_ATTR_SETNAME, n.name.c_str(), n.name.size() + 1);
      const std::string type = type_name(n.dispatch);
      PutAttr(buf, IPSET_ATTR_TYPENAME, type.c_str(), type.size() + 1);
      const uint8_t revision_u8 = static_cast<uint8_t>(revision[n.dispatch][n.family]);
      PutAttr(buf, IPSET_ATTR_REVISION, &revision_u8, 1);
      const uint8_t family = n.family == 0 ? AF_INET : AF_INET6;
      PutAttr(buf, IPSET_ATTR_FAMILY, &family, 1);
      const size_t data = BeginNest(buf, IPSET_ATTR_DATA);
      const uint32_t hashsize = htonl(static_cast<uint32_t>(n.hashsize));
      const uint32_t maxelem = htonl(static_cast<uint32_t>(n.maxelem));
      PutAttr(buf, IPSET_ATTR_HASHSIZE | NLA_F_NET_BYTEORDER, &hashsize, 4);
      PutAttr(buf, IPSET_ATTR_MAXELEM | NLA_F_NET_BYTEORDER, &maxelem, 4);
      EndNest(buf, data);
      EndRequest(buf, at);
    }
    absl::Status sent = Exchange(*fd, buf, sets.size(), nullptr, [&](uint32_t seq, int error) {
      if (status.ok() && seq >= 1 && seq <= sets.size()) {
        status = absl::InternalError(
            absl::StrCat("ipset create ", sets[seq - 1].name, ": ", IpsetError(error)));
      }
    });
    if (!sent.ok()) status = sent;
  }
  close(*fd);
  return status;
}

// Destroys the named sets over netlink; returns the names the kernel would not destroy yet.
// A set still named by a rule is busy (the kernel refuses: a live rule never loses its set);
// with iptables-nft, the rules a restore replaced let go of their sets a little after the
// restore returns (nf_tables releases them from a work queue after a grace period), so busy
// sets are tried again (`attempts` in all), for up to about a quarter of a second.
std::vector<std::string> DestroySetsInPlace(std::vector<std::string> names,
                                            const std::string& netns, int attempts = 9) {
  if (names.empty()) return names;
  absl::StatusOr<int> fd = NetfilterSocket(netns);
  if (!fd.ok()) return names;
  for (int attempt = 0; attempt < attempts && !names.empty(); ++attempt) {
    if (attempt > 0) {
      (void)RcuGracePeriod();
      usleep(static_cast<useconds_t>(1000) << (attempt - 1));  // 1, 2, ... 128 ms
    }
    std::string buf;
    for (size_t i = 0; i < names.size(); ++i) {
      // Always with a name: a destroy without one destroys every set of the namespace.
      const size_t at = BeginRequest(buf, IPSET_CMD_DESTROY, 0, static_cast<uint32_t>(i + 1),
                                     FamilyOfSet(names[i]));
      PutAttr(buf, IPSET_ATTR_SETNAME, names[i].c_str(), names[i].size() + 1);
      EndRequest(buf, at);
    }
    std::vector<std::string> busy;
    absl::Status sent = Exchange(*fd, buf, names.size(), nullptr, [&](uint32_t seq, int error) {
      // ENOENT: gone already (what was wanted).
      if (seq >= 1 && seq <= names.size() && error != ENOENT) busy.push_back(names[seq - 1]);
    });
    if (!sent.ok()) break;
    names = std::move(busy);
  }
  close(*fd);
  return names;
}

// ---- Explain ------------------------------------------------------------------------

int EndpointOf(const ir::CompiledPolicy& ir, absl::string_view bytes) {
  for (int e = 0; e < ir.endpoints_size(); ++e) {
    for (const std::string& ip : ir.endpoints(e).ips()) {
      absl::StatusOr<std::string> b = AddressBytes(ip);
      if (b.ok() && *b == bytes) return e;
    }
  }
  return -1;
}

std::string EndpointName(const ir::CompiledPolicy& ir, int e) {
  return EscapeText(absl::StrCat(ir.endpoints(e).namespace_(), "/", ir.endpoints(e).name()));
}

std::string IdentityText(const ir::CompiledPolicy& ir, uint32_t id) {
  const ir::Identity& i = ir.identities(id);
  std::string out = absl::StrCat("identity ", id);
  std::vector<std::string> what;
  if (!i.pods().empty()) {
    std::vector<std::string> pods(i.pods().begin(), i.pods().begin() + std::min(3, i.pods_size()));
    std::string p = EscapeText(absl::StrJoin(pods, ", "));
    if (i.pods_size() > 3) absl::StrAppend(&p, ", ... (", i.pods_size(), " pods)");
    what.push_back(absl::StrCat("pods ", p));
  }
  if (i.external()) what.push_back("external addresses");
  if (!what.empty()) absl::StrAppend(&out, " (", absl::StrJoin(what, "; "), ")");
  return out;
}

// The index of the prefix among `entries` that holds the address, or -1.
int EntryIndex(const std::vector<std::string>& entries, absl::string_view bytes) {
  absl::StatusOr<IpAddress> address = IpAddress::Parse(AddressText(bytes));
  if (!address.ok()) return -1;
  for (size_t i = 0; i < entries.size(); ++i) {
    absl::StatusOr<IpPrefix> p = IpPrefix::Parse(entries[i]);
    if (p.ok() && p->family() == address->family() && p->Contains(*address)) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

// ---- Updates from a delta ------------------------------------------------------------------
//
// UpdateDelta makes the element-only edit that Update would make, from the delta alone: a
// delta changes no rule input but the endpoints (checked: unchanged) and which identities
// name pods (checked: no used peer set gains its first or loses its last pod), so the rules
// stay word for word exactly when no peer set matched inline in the rules changes members
// and no set becomes inline. Each range edit replaces the addresses [first, last] of the
// ranges it replaces; a set's members change only there, and its entries (the merged
// runs of member addresses as prefixes) only in the runs that touch that window.

// An address as a dispatch set holds it ("a.b.c.d/32", "x::y/128"), and the address.
std::string HostEntry(const std::string& bytes) {
  return absl::StrCat(AddressText(bytes), bytes.size() == 4 ? "/32" : "/128");
}

// Where `address` goes among host entries in address order (a binary search).
std::vector<std::string>::iterator EntryAt(std::vector<std::string>& entries, U128 address) {
  return std::lower_bound(entries.begin(), entries.end(), address,
                          [](const std::string& e, U128 a) {
                            int family;
                            U128 first, last;
                            return PrefixRange(e, family, first, last) && first < a;
                          });
}

// Endpoint e's addresses of family f into (out of) `entries`, host entries in address order.
void AddTableEntries(const ir::Endpoint& e, int f, std::vector<std::string>& entries) {
  for (const std::string& ip : e.ips()) {
    absl::StatusOr<std::string> bytes = AddressBytes(ip);
    if (!bytes.ok() || (bytes->size() == 4) != (f == 0)) continue;
    entries.insert(EntryAt(entries, ToU128(*bytes)), HostEntry(*bytes));
  }
}
void RemoveTableEntries(const ir::Endpoint& e, int f, std::vector<std::string>& entries) {
  for (const std::string& ip : e.ips()) {
    absl::StatusOr<std::string> bytes = AddressBytes(ip);
    if (!bytes.ok() || (bytes->size() == 4) != (f == 0)) continue;
    auto at = EntryAt(entries, ToU128(*bytes));
    if (at != entries.end() && *at == HostEntry(*bytes)) entries.erase(at);
  }
}

// What UpdateDelta needs beside Installed, made from the IR and model installed (O(program),
// with each Apply and full-IR Update) and kept in step by UpdateDelta.
struct DeltaIndex {
  // By identity: the peer sets that some rule renders, not `all`, holding it.
  std::vector<std::vector<uint32_t>> peer_sets_of;
  // By peer set: how many of its identities have pods (BuildModel's names_pods: > 0).
  std::vector<int> pod_identities;
  // Per family, by peer set: whether it has a set (else its prefixes are in the rules).
  std::vector<bool> has_set[kFamilies];
  // Some pod-naming peer set is inline (past kMaxPodSets): then a set's size decides its
  // form, which is not followed here.
  bool sets_capped = false;
  // Set name -> the (table, direction) chain group of each rule that looks it up, and
  // whether that rule RETURNs.
  std::map<std::string, std::vector<std::pair<int, bool>>> lookups;
  std::vector<U128> dispatched[kFamilies];  // the dispatched endpoint addresses, sorted
  // Per table and direction, per family: whether it has a chain (restricted, and some
  // endpoint of the table has an address of the family); per table and family: its selected
  // endpoints' addresses as host prefixes in address order (its dispatch set's entries while
  // it has a chain there; the chains exist while there is one).
  std::vector<std::array<std::array<bool, kFamilies>, 2>> chain;
  std::vector<std::array<std::vector<std::string>, kFamilies>> table_entries;
  // For the rules path from a delta (PlanRulesFromDelta), which renders only the tables a
  // delta changes: by peer set, the table of each rule that renders it (ForEachRenderedPeerSet;
  // "used" is this being non-empty); per family, by identity, its ranges (first -> last);
  // per family, how many peer sets have a set (kMaxPodSets).
  std::vector<std::vector<uint32_t>> tables_of;
  std::vector<std::map<U128, U128>> ranges_of[kFamilies];
  int sets[kFamilies] = {0, 0};
  // Sizes of the IR installed: ipv4, ipv6, identities, endpoints, peer sets, tables.
  std::array<int, 6> shape{};
};

std::array<int, 6> ShapeOf(const ir::CompiledPolicy& ir) {
  return {ir.ipv4_size(), ir.ipv6_size(), ir.identities_size(), ir.endpoints_size(),
          ir.peer_sets_size(), ir.tables_size()};
}

DeltaIndex IndexOf(const ir::CompiledPolicy& ir, const Model& m) {
  DeltaIndex x;
  const std::vector<bool> used = UsedPeerSets(ir);
  x.peer_sets_of.resize(ir.identities_size());
  x.pod_identities.assign(ir.peer_sets_size(), 0);
  for (int s = 0; s < ir.peer_sets_size(); ++s) {
    const ir::PeerSet& set = ir.peer_sets(s);
    for (uint32_t identity : set.identities()) {
      if (ir.identities(identity).pods_size() > 0) ++x.pod_identities[s];
      if (used[s] && !set.all()) x.peer_sets_of[identity].push_back(static_cast<uint32_t>(s));
    }
  }
  for (int f = 0; f < kFamilies; ++f) {
    const Family& fam = m.family[f];
    x.has_set[f] = fam.has_set;
    for (int s = 0; s < ir.peer_sets_size(); ++s) {
      if (used[s] && !ir.peer_sets(s).all() && x.pod_identities[s] > 0 && !fam.has_set[s]) {
        x.sets_capped = true;
      }
    }
    for (const Dispatch& d : fam.dispatch) {
      absl::StatusOr<std::string> bytes = AddressBytes(d.address);
      if (bytes.ok()) x.dispatched[f].push_back(ToU128(*bytes));
    }
    std::sort(x.dispatched[f].begin(), x.dispatched[f].end());
    x.dispatched[f].erase(std::unique(x.dispatched[f].begin(), x.dispatched[f].end()),
                          x.dispatched[f].end());  // (an address dispatches both ways)
    for (size_t t = 0; t < m.tables.size(); ++t) {
      for (int d = 0; d < 2; ++d) {
        const TableChain& tc = m.tables[t][d][f];
        for (int chain : {tc.chain, tc.stage}) {
          if (chain < 0) continue;
          for (const std::string& rule : fam.chains[chain].rules) {
            absl::string_view name = RuleSet(rule);
            if (!name.empty()) {
              x.lookups[std::string(name)].emplace_back(static_cast<int>(t) * 2 + d,
                                                        Returns(rule));
            }
          }
        }
      }
    }
  }
  x.chain.resize(ir.tables_size());
  x.table_entries.resize(ir.tables_size());
  for (size_t t = 0; t < m.tables.size() && t < x.chain.size(); ++t) {
    for (int d = 0; d < 2; ++d) {
      for (int f = 0; f < kFamilies; ++f) x.chain[t][d][f] = m.tables[t][d][f].chain >= 0;
    }
  }
  for (const ir::Endpoint& e : ir.endpoints()) {
    if (!e.selected() || e.table() >= x.chain.size()) continue;
    for (int f = 0; f < kFamilies; ++f) AddTableEntries(e, f, x.table_entries[e.table()][f]);
  }
  x.tables_of.resize(ir.peer_sets_size());
  for (int t = 0; t < ir.tables_size(); ++t) {
    ForEachRenderedPeerSet(ir.tables(t),
                           [&](uint32_t s) { x.tables_of[s].push_back(static_cast<uint32_t>(t)); });
  }
  for (int f = 0; f < kFamilies; ++f) {
    x.ranges_of[f].resize(ir.identities_size());
    for (const ir::AddressRange& r : f == 0 ? ir.ipv4() : ir.ipv6()) {
      x.ranges_of[f][r.identity()].emplace(ToU128(r.first()), ToU128(r.last()));
    }
    x.sets[f] = static_cast<int>(std::count(x.has_set[f].begin(), x.has_set[f].end(), true));
  }
  x.shape = ShapeOf(ir);
  return x;
}

// A delta's element-only edit, or why there is none.
struct DeltaPlan {
  std::string fallback;      // non-empty: not element-only
  std::vector<SetEdit> adds, dels;
  // The remembered entries to replace: set name, [begin, end) of its entries, the new ones.
  struct Splice {
    std::string set;
    size_t begin = 0, end = 0;
    std::vector<std::string> with;
  };
  std::vector<Splice> splices;
  int64_t entries_delta[kFamilies] = {0, 0};
  std::map<uint32_t, int> pod_identities;  // peer set -> its new count, where it changes
  // One endpoint added (or removed) by the delta; if selected, its addresses added to
  // (deleted from) its table's dispatch sets, before its addresses join any other set
  // (after they leave: UpdateDelta).
  int endpoints_delta = 0;
  const ir::Endpoint* moved = nullptr;  // (in `previous` or the delta)
  bool dispatch_add = false;
  struct DispatchEdit {
    int family;
    U128 address;
    uint32_t table;
    SetEdit edit;  // of the dispatch set of (table, a direction, family)
  };
  std::vector<DispatchEdit> dispatch;
  int dispatch_addresses[kFamilies] = {0, 0};  // its addresses that dispatch, per family
  // Its dispatch (somewhere) is the rules path's (MemberScope): a restore, not a set edit.
  bool rules_dispatch = false;
  bool chains_come_or_go = false;  // the fallback: its table's chains come or go
  // The peer sets the delta rewrites by id (a relabel: the sets that admit a new or reused
  // identity gain it, a retired one's drop it), in the delta.
  std::vector<const ir::PeerSet*> rewritten;
};

// What PlanFromDelta leaves to the rules path when a delta also edits tables or peer sets
// (PlanRulesFromDelta): the peer sets made anew there (new sets filled with the next
// program's members: not spliced, and their forms not checked here), and per family the
// tables whose dispatch sets it writes (chains that come or go, a table replaced): the
// moved endpoint's dispatch there goes in (out) with the restore, not as a set element.
struct MemberScope {
  std::set<uint32_t> remade;
  std::set<uint32_t> dispatch[kFamilies];
};

absl::Status InvalidDelta(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("IR delta: ", what));
}

// The checks ApplyDelta makes of a delta's range, identity pod and endpoint edits (not of
// its peer sets and tables: CheckDeltaItems), in time proportional to the edits.
absl::Status CheckDeltaEdits(const ir::CompiledPolicy& previous,
                             const ir::CompiledPolicyDelta& delta) {
  // Ranges and pod edits may name the identities the delta appends.
  const uint32_t identities =
      static_cast<uint32_t>(previous.identities_size() + delta.identities_size());
  for (int i = 0; i < delta.identities_size(); ++i) {
    const ir::Identity& identity = delta.identities(i);
    if (identity.id() != static_cast<uint32_t>(previous.identities_size() + i) ||
        identity.external()) {
      return InvalidDelta(absl::StrCat("identities[", i, "]: id ", identity.id(),
                                       " is not the next id, or is external"));
    }
  }
  for (int f = 0; f < kFamilies; ++f) {
    const auto& edits = f == 0 ? delta.ipv4() : delta.ipv6();
    const auto& ranges = f == 0 ? previous.ipv4() : previous.ipv6();
    const size_t width = f == 0 ? 4 : 16;
    uint32_t previous_end = 0;
    for (int e = 0; e < edits.size(); ++e) {
      const ir::RangeSliceEdit& edit = edits[e];
      const std::string where = absl::StrCat(f == 0 ? "ipv4" : "ipv6", "[", e, "]");
      if (edit.begin() >= edit.end() || edit.end() > static_cast<uint32_t>(ranges.size()) ||
          (e > 0 && edit.begin() < previous_end) || edit.ranges().empty()) {
        return InvalidDelta(absl::StrCat(where, ": slice [", edit.begin(), ", ", edit.end(),
                                         ") empty, out of bounds, out of order or without ranges"));
      }
      previous_end = edit.end();
      U128 expected = ToU128(ranges[static_cast<int>(edit.begin())].first());
      bool ended = false;
      for (int r = 0; r < edit.ranges_size(); ++r) {
        const ir::AddressRange& range = edit.ranges(r);
        if (ended || range.first().size() != width || range.last().size() != width ||
            ToU128(range.first()) != expected || range.last() < range.first() ||
            range.identity() >= identities) {
          return InvalidDelta(absl::StrCat(where, ".ranges[", r, "]: not a range of the family, "
                                           "of an identity, where the ranges before it end"));
        }
        const U128 last = ToU128(range.last());
        ended = last == (f == 0 ? U128{0xffffffffu} : ~U128{0});
        expected = last + 1;
      }
      if (edit.ranges(edit.ranges_size() - 1).last() !=
          ranges[static_cast<int>(edit.end()) - 1].last()) {
        return InvalidDelta(absl::StrCat(where, ": covers other addresses than it replaces"));
      }
    }
  }
  // Names too: the plans count an edit's pods (PodsAfterEdit).
  if (absl::Status s = CheckIdentityPodsEdits(previous, delta); !s.ok()) {
    return InvalidDelta(s.message());
  }
  uint32_t endpoints_end = 0;
  for (int e = 0; e < delta.endpoints_size(); ++e) {
    const ir::EndpointSliceEdit& edit = delta.endpoints(e);
    if (edit.begin() > edit.end() || edit.end() > static_cast<uint32_t>(previous.endpoints_size()) ||
        (e > 0 && edit.begin() < endpoints_end)) {
      return InvalidDelta(absl::StrCat("endpoints[", e, "]: slice out of bounds or out of order"));
    }
    endpoints_end = edit.end();
  }
  return absl::OkStatus();
}

// The addresses of family f that the identities of peer set `set` carry, as runs: before
// the delta (the index's ranges) or after it (`after`: with the delta's range edits, whose
// ranges may carry identities it appends). O(the identities' ranges + the edits' ranges).
// Both delta planners read it: PlanFromDelta for a rewritten set, the rules path for a remade one.
Runs MemberRuns(const DeltaIndex& index, const ir::CompiledPolicy& previous,
                const ir::CompiledPolicyDelta& delta, const ir::PeerSet& set, int f, bool after) {
  const auto& edits = f == 0 ? delta.ipv4() : delta.ipv6();
  const auto& ranges = f == 0 ? previous.ipv4() : previous.ipv6();
  // The addresses the edits replace, [low, high] each, in order (the edits are sorted).
  std::vector<std::pair<U128, U128>> windows;
  if (after) {
    for (const ir::RangeSliceEdit& edit : edits) {
      windows.emplace_back(ToU128(ranges[static_cast<int>(edit.begin())].first()),
                           ToU128(ranges[static_cast<int>(edit.end()) - 1].last()));
    }
  }
  auto replaced = [&](U128 address) {
    auto it = std::upper_bound(windows.begin(), windows.end(), std::make_pair(address, ~U128{0}));
    return it != windows.begin() && std::prev(it)->second >= address;
  };
  auto member = [&](uint32_t identity) {
    return std::binary_search(set.identities().begin(), set.identities().end(), identity);
  };
  std::vector<std::pair<U128, U128>> pieces;
  for (uint32_t identity : set.identities()) {
    if (identity >= index.ranges_of[f].size()) continue;  // appended: in the edits only
    for (const auto& [first, last] : index.ranges_of[f][identity]) {
      if (!replaced(first)) pieces.emplace_back(first, last);
    }
  }
  for (int e = 0; after && e < edits.size(); ++e) {
    for (const ir::AddressRange& r : edits[e].ranges()) {
      if (member(r.identity())) pieces.emplace_back(ToU128(r.first()), ToU128(r.last()));
    }
  }
  std::sort(pieces.begin(), pieces.end());
  Runs runs;
  for (const auto& [first, last] : pieces) AddRun(runs, first, last);
  return runs;
}

// The plan for `delta` of `previous` (the IR installed as `installed` and `index`).
// InvalidArgument when the delta is malformed (as ApplyDelta checks it); the costs are the
// delta's windows and the entries of the sets that change there (a binary search each).
// `scope` (a delta with tables or peer sets): what the rules path does instead; without
// one such a delta is refused.
absl::StatusOr<DeltaPlan> PlanFromDelta(const Installed& installed, const DeltaIndex& index,
                                        const ir::CompiledPolicy& previous,
                                        const ir::CompiledPolicyDelta& delta,
                                        const MemberScope* scope = nullptr) {
  DeltaPlan plan;
  if (absl::Status s = CheckDeltaEdits(previous, delta); !s.ok()) return s;
  if (scope == nullptr && !delta.tables().empty()) {
    // Update's in-place path rewrites changed chains; this plan edits set elements only.
    plan.fallback = "the delta edits tables";
    return plan;
  }
  // The peer sets the delta rewrites: remade as new sets by the rules path (`scope`), else
  // their members edited here (below, after the range edits), whole.
  std::set<uint32_t> rewritten;
  if (scope == nullptr) {
    for (const ir::PeerSet& set : delta.peer_sets()) {
      rewritten.insert(set.id());
      plan.rewritten.push_back(&set);
    }
  }
  auto remade = [&](uint32_t s) {
    return scope != nullptr ? scope->remade.count(s) > 0 : rewritten.count(s) > 0;
  };
  bool endpoints_change = false;
  const ir::Endpoint* moved = nullptr;  // the one endpoint added or removed
  int moves = 0;
  for (int e = 0; e < delta.endpoints_size(); ++e) {
    const ir::EndpointSliceEdit& edit = delta.endpoints(e);
    const uint32_t replaced = edit.end() - edit.begin();
    if (replaced == 0 && edit.endpoints_size() == 1) {
      moved = &edit.endpoints(0);
      plan.dispatch_add = true;
      ++moves;
      continue;
    }
    if (replaced == 1 && edit.endpoints_size() == 0) {
      moved = &previous.endpoints(static_cast<int>(edit.begin()));
      plan.dispatch_add = false;
      ++moves;
      continue;
    }
    if (replaced != static_cast<uint32_t>(edit.endpoints_size())) {
      endpoints_change = true;
      continue;
    }
    for (int i = 0; i < edit.endpoints_size(); ++i) {
      if (edit.endpoints(i).SerializeAsString() !=
          previous.endpoints(static_cast<int>(edit.begin()) + i).SerializeAsString()) {
        endpoints_change = true;
      }
    }
  }
  if (endpoints_change || moves > 1) {
    plan.fallback = "the node's endpoints differ (dispatch rules)";
    return plan;
  }
  // The moved endpoint's addresses, and its dispatch rules when it is selected: into (out
  // of) chains of its table that exist before and after.
  std::vector<U128> own[kFamilies];
  if (moved != nullptr) {
    plan.moved = moved;
    plan.endpoints_delta = plan.dispatch_add ? 1 : -1;
    for (int i = 0; i < moved->ips_size(); ++i) {
      absl::StatusOr<std::string> bytes = AddressBytes(moved->ips(i));
      if (!bytes.ok()) {
        plan.fallback = absl::StrCat("unreadable endpoint address ", moved->ips(i));
        return plan;
      }
      const int f = bytes->size() == 4 ? 0 : 1;
      own[f].push_back(ToU128(*bytes));
      if (!moved->selected()) continue;
      const uint32_t t = moved->table();
      ++plan.dispatch_addresses[f];
      if (scope != nullptr && scope->dispatch[f].count(t) > 0) {
        plan.rules_dispatch = true;
        continue;
      }
      if (t >= index.chain.size()) return InvalidDelta("endpoints: a table that does not exist");
      if (index.chain[t][kEgress][f] || index.chain[t][kIngress][f]) {
        auto named = installed.dispatch_name[f].find(t);
        const std::string name = named == installed.dispatch_name[f].end() ? "" : named->second;
        auto set = installed.sets.find(name);
        if (set == installed.sets.end()) {
          plan.fallback = absl::StrCat("dispatch set ", name, " is not installed");
          return plan;
        }
        if (plan.dispatch_add && set->second.size() + 1 > installed.maxelem.at(name)) {
          plan.fallback = absl::StrCat("set ", name, " would pass its maxelem");
          return plan;
        }
        plan.dispatch.push_back(DeltaPlan::DispatchEdit{
            f, ToU128(*bytes), t,
            SetEdit{plan.dispatch_add, name,
                    absl::StrCat(AddressText(*bytes), f == 0 ? "/32" : "/128")}});
      }
    }
    if (moved->selected()) {
      for (int f = 0; f < kFamilies; ++f) {
        if (plan.dispatch_addresses[f] == 0) continue;
        if (scope != nullptr && scope->dispatch[f].count(moved->table()) > 0) continue;
        const int before = static_cast<int>(index.table_entries[moved->table()][f].size());
        if (plan.dispatch_add ? before == 0 : before - plan.dispatch_addresses[f] <= 0) {
          plan.chains_come_or_go = true;
          plan.fallback = absl::StrCat("table ", moved->table(), "'s chains come or go");
          return plan;
        }
      }
      if (plan.dispatch_add) {  // (a second endpoint with the address: CheckIr refuses it)
        for (const DeltaPlan::DispatchEdit& r : plan.dispatch) {
          const std::vector<U128>& dispatched = index.dispatched[r.family];
          if (std::binary_search(dispatched.begin(), dispatched.end(), r.address)) {
            plan.fallback = "an added endpoint's address is dispatched already";
            return plan;
          }
        }
      }
    }
  }
  if (index.sets_capped) {
    plan.fallback = "past kMaxPodSets sets: a set's size decides whether it is one";
    return plan;
  }
  // Which peer sets name pods afterwards: a used one that gains its first or loses its last
  // may change between a set and inline prefixes (a rule change).
  const uint32_t identities_before = static_cast<uint32_t>(previous.identities_size());
  std::map<uint32_t, int> pods_edited;  // identity -> its pods after the delta, where edited
  for (const ir::IdentityPodsEdit& edit : delta.identity_pods()) {
    pods_edited[edit.identity()] = PodsAfterEdit(previous, delta, edit);
  }
  auto pods_before = [&](uint32_t identity) {
    return identity < identities_before
               ? previous.identities(static_cast<int>(identity)).pods_size()
               : delta.identities(static_cast<int>(identity - identities_before)).pods_size();
  };
  for (const ir::IdentityPodsEdit& edit : delta.identity_pods()) {
    const bool was = pods_before(edit.identity()) > 0;
    const bool now = pods_edited[edit.identity()] > 0;
    // (An appended identity is in no installed peer set: only in those the delta rewrites.)
    if (was == now || edit.identity() >= index.peer_sets_of.size()) continue;
    for (uint32_t s : index.peer_sets_of[edit.identity()]) {
      if (remade(s)) continue;
      auto [it, fresh] = plan.pod_identities.try_emplace(s, index.pod_identities[s]);
      it->second += now ? 1 : -1;
    }
  }
  auto used = [&](uint32_t s) { return s < index.tables_of.size() && !index.tables_of[s].empty(); };
  for (const ir::PeerSet* set : plan.rewritten) {
    int count = 0;
    for (uint32_t identity : set->identities()) {
      auto edited = pods_edited.find(identity);
      count += (edited != pods_edited.end() ? edited->second : pods_before(identity)) > 0;
    }
    plan.pod_identities[set->id()] = count;
  }
  for (const auto& [s, count] : plan.pod_identities) {
    // (A rewritten set no rule renders, or `every peer`: no set, whatever its pods.)
    if (!used(s) || previous.peer_sets(static_cast<int>(s)).all()) continue;
    // Gaining its first pod changes no rule when it is a set in both families already (for
    // its many prefixes): naming pods keeps it one, and the number of sets stays.
    if (count > 0 && index.pod_identities[s] == 0 && index.has_set[0][s] && index.has_set[1][s]) {
      continue;
    }
    if ((count > 0) != (index.pod_identities[s] > 0)) {
      plan.fallback = absl::StrCat("peer set ", s, (count > 0) ? " gains its first pod"
                                                              : " loses its last pod");
      return plan;
    }
  }
  auto pod_identities = [&](uint32_t s) {
    auto it = plan.pod_identities.find(s);
    return it == plan.pod_identities.end() ? index.pod_identities[s] : it->second;
  };

  struct Change {
    int family;
    std::vector<std::pair<U128, U128>> ranges;  // of the prefixes added and deleted
    Membership membership;
  };
  std::map<std::string, Change> changes;
  // The edit of set `name` (peer set s, family f) whose entries [begin, end) become the
  // prefixes of `runs`, its membership changing by `membership` (only there): its adds and
  // deletes, the splice of what is remembered, and the Change the checks below read. False
  // (plan.fallback says why) when the set would pass its maxelem or become inline prefixes.
  auto edit_set = [&](const std::string& name, uint32_t s, int f, size_t begin, size_t end,
                      const Runs& runs, Membership membership) {
    const std::vector<std::string>& entries = installed.sets.at(name);
    DeltaPlan::Splice splice{name, begin, end, {}};
    for (const auto& [first, last] : runs) AppendPrefixes(first, last, f, splice.with);
    const size_t size = entries.size() - (end - begin) + splice.with.size();
    if (size > installed.maxelem.at(name)) {
      plan.fallback = absl::StrCat("set ", name, " would pass its maxelem");
      return false;
    }
    if (pod_identities(s) == 0 && size <= static_cast<size_t>(kMaxInlinePrefixes)) {
      plan.fallback = absl::StrCat("set ", name, " would become inline prefixes");
      return false;
    }
    const std::set<std::string> was(entries.begin() + static_cast<long>(begin),
                                    entries.begin() + static_cast<long>(end));
    const std::set<std::string> now(splice.with.begin(), splice.with.end());
    Change& change = changes[name];
    change.family = f;
    change.membership = std::move(membership);
    for (const std::string& e : now) {
      if (was.count(e) > 0) continue;
      plan.adds.push_back(SetEdit{true, name, e});
    }
    for (const std::string& e : was) {
      if (now.count(e) > 0) continue;
      plan.dels.push_back(SetEdit{false, name, e});
    }
    for (const std::vector<SetEdit>* list : {&plan.adds, &plan.dels}) {
      for (const SetEdit& e : *list) {
        if (e.set != name) continue;
        int family;
        U128 first, last;
        if (PrefixRange(e.prefix, family, first, last)) change.ranges.emplace_back(first, last);
      }
    }
    plan.entries_delta[f] +=
        static_cast<int64_t>(splice.with.size()) - static_cast<int64_t>(end - begin);
    plan.splices.push_back(std::move(splice));
    return true;
  };
  for (int f = 0; f < kFamilies; ++f) {
    const auto& edits = f == 0 ? delta.ipv4() : delta.ipv6();
    const auto& ranges = f == 0 ? previous.ipv4() : previous.ipv6();
    const U128 max = f == 0 ? U128{0xffffffffu} : ~U128{0};
    for (const ir::RangeSliceEdit& edit : edits) {
      const U128 low = ToU128(ranges[static_cast<int>(edit.begin())].first());
      const U128 high = ToU128(ranges[static_cast<int>(edit.end()) - 1].last());
      // The peer sets whose members may change here: those of an identity on either side.
      std::vector<uint32_t> candidates;
      auto note = [&](uint32_t identity) {
        if (identity >= index.peer_sets_of.size()) return;  // appended: see `rewritten`
        for (uint32_t s : index.peer_sets_of[identity]) {
          if (!remade(s)) candidates.push_back(s);
        }
      };
      for (uint32_t i = edit.begin(); i < edit.end(); ++i) note(ranges[static_cast<int>(i)].identity());
      for (const ir::AddressRange& r : edit.ranges()) note(r.identity());
      std::sort(candidates.begin(), candidates.end());
      candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
      for (uint32_t s : candidates) {
        const auto& members = previous.peer_sets(static_cast<int>(s)).identities();
        auto member = [&](uint32_t identity) {
          return std::binary_search(members.begin(), members.end(), identity);
        };
        Runs before, after;
        for (uint32_t i = edit.begin(); i < edit.end(); ++i) {
          const ir::AddressRange& r = ranges[static_cast<int>(i)];
          if (member(r.identity())) AddRun(before, ToU128(r.first()), ToU128(r.last()));
        }
        for (const ir::AddressRange& r : edit.ranges()) {
          if (member(r.identity())) AddRun(after, ToU128(r.first()), ToU128(r.last()));
        }
        if (before == after) continue;
        if (!index.has_set[f][s]) {
          plan.fallback = absl::StrCat("peer set ", s, " is matched inline in the rules");
          return plan;
        }
        const std::string name =
            s < installed.set_name[f].size() ? installed.set_name[f][s] : std::string();
        if (changes.count(name) > 0) {
          plan.fallback = absl::StrCat("set ", name, " changes in two edits");
          return plan;
        }
        auto set = installed.sets.find(name);
        if (set == installed.sets.end()) {
          plan.fallback = absl::StrCat("set ", name, " is not installed");
          return plan;
        }
        const std::vector<std::string>& entries = set->second;
        auto range_of = [&](size_t i, U128& first, U128& last) {
          int family;
          return PrefixRange(entries[i], family, first, last);
        };
        // The entries of the runs that meet or touch [low, high].
        const U128 touch_low = low == 0 ? 0 : low - 1;
        const U128 touch_high = high == max ? max : high + 1;
        size_t lo = 0, hi = entries.size();
        while (lo < hi) {  // the first entry ending at or after touch_low
          const size_t mid = (lo + hi) / 2;
          U128 first, last;
          if (!range_of(mid, first, last)) {
            plan.fallback = absl::StrCat("set ", name, ": unreadable entry ", entries[mid]);
            return plan;
          }
          if (last < touch_low) lo = mid + 1; else hi = mid;
        }
        size_t begin = lo, end = lo;
        Runs old_runs;
        {
          U128 first, last, pf, pl;
          if (begin < entries.size() && range_of(begin, first, last) && first <= touch_high) {
            while (begin > 0 && range_of(begin - 1, pf, pl) && pl + 1 == first) {
              --begin;
              first = pf;
            }
          }
          end = begin;
          bool in_run = false;
          while (end < entries.size() && range_of(end, first, last)) {
            const bool continues = in_run && old_runs.back().second + 1 == first;
            if (!continues && first > touch_high) break;
            AddRun(old_runs, first, last);
            in_run = true;
            ++end;
          }
        }
        // The new runs there: the old ones outside [low, high], the new members inside.
        Runs pieces;
        for (const auto& [first, last] : old_runs) {
          if (first < low) pieces.emplace_back(first, std::min(last, low - 1));
          if (last > high) pieces.emplace_back(std::max(first, high + 1), last);
        }
        pieces.insert(pieces.end(), after.begin(), after.end());
        std::sort(pieces.begin(), pieces.end());
        Runs new_runs;
        for (const auto& [first, last] : pieces) AddRun(new_runs, first, last);
        if (!edit_set(name, s, f, begin, end, new_runs, MembershipChange(before, after))) {
          return plan;
        }
      }
    }
  }
  // The peer sets the delta rewrites, where a rule renders them with a set: its entries
  // become the prefixes of its new members' addresses after the range edits (O(set)). Their
  // form must stay: `all` or not, inline prefixes unchanged (else a rule change), naming
  // pods or not (checked above), not inline for few prefixes (edit_set).
  for (const ir::PeerSet* set : plan.rewritten) {
    const uint32_t s = set->id();
    // (Appended ones: no rule renders them, the delta has no tables.)
    if (!used(s)) continue;
    const ir::PeerSet& old = previous.peer_sets(static_cast<int>(s));
    if (old.all() != set->all()) {
      plan.fallback = absl::StrCat("peer set ", s, " becomes or stops being every peer");
      return plan;
    }
    if (set->all()) continue;
    for (int f = 0; f < kFamilies; ++f) {
      const Runs after = MemberRuns(index, previous, delta, *set, f, true);
      if (!index.has_set[f][s]) {
        if (after != MemberRuns(index, previous, delta, old, f, false)) {
          plan.fallback = absl::StrCat("peer set ", s, " is matched inline in the rules");
          return plan;
        }
        continue;
      }
      const std::string name =
          s < installed.set_name[f].size() ? installed.set_name[f][s] : std::string();
      auto installed_set = installed.sets.find(name);
      Runs before;
      if (installed_set == installed.sets.end() || !RunsOf(installed_set->second, before)) {
        plan.fallback = absl::StrCat("set ", name, " is not installed or unreadable");
        return plan;
      }
      if (before == after) continue;
      if (!edit_set(name, s, f, 0, installed_set->second.size(), after,
                    MembershipChange(before, after))) {
        return plan;
      }
    }
  }
  // Update's two conditions (IptablesBackend::Update has the argument): no changed address
  // is dispatched, and no chain group has two lookups whose changes conflict there
  // (LookupsConflict).
  // With a dispatched endpoint added or removed, its own addresses may change (its dispatch
  // goes in first, or out last: UpdateDelta has the argument), and nothing else may.
  const bool own_dispatch = !plan.dispatch.empty() || plan.rules_dispatch;
  auto is_own = [&](int f, U128 address) {
    return own_dispatch && std::find(own[f].begin(), own[f].end(), address) != own[f].end();
  };
  std::map<int, std::vector<std::pair<const Change*, bool>>> by_group[kFamilies];
  for (const auto& [name, change] : changes) {
    const std::vector<U128>& dispatched = index.dispatched[change.family];
    for (const auto& [first, last] : change.ranges) {
      for (auto it = std::lower_bound(dispatched.begin(), dispatched.end(), first);
           it != dispatched.end() && *it <= last; ++it) {
        if (is_own(change.family, *it)) continue;
        plan.fallback = absl::StrCat("set ", name, " changes at an endpoint address of this node");
        return plan;
      }
    }
    if (own_dispatch) {
      for (const Runs* runs : {&change.membership.gained, &change.membership.lost}) {
        for (const auto& [first, last] : *runs) {
          if (first != last || !is_own(change.family, first)) {
            plan.fallback = absl::StrCat("set ", name, " changes beside the endpoint added or "
                                         "removed");
            return plan;
          }
        }
      }
    }
    auto lookups = index.lookups.find(name);
    if (lookups == index.lookups.end()) continue;
    for (const auto& [group, returns] : lookups->second) {
      by_group[change.family][group].emplace_back(&change, returns);
    }
  }
  for (int f = 0; f < kFamilies; ++f) {
    for (const auto& [group, list] : by_group[f]) {
      for (size_t i = 0; i < list.size(); ++i) {
        for (size_t j = i + 1; j < list.size(); ++j) {
          if (LookupsConflict(list[i].first->membership, list[i].second,
                              list[j].first->membership, list[j].second)) {
            plan.fallback = absl::StrCat("two rules of table ", group / 2,
                                         group % 2 == 0 ? " ingress" : " egress",
                                         " look up a changed address");
            return plan;
          }
        }
      }
    }
  }
  return plan;
}

// ---- The rules path from a delta ----------------------------------------------------------
//
// A delta that edits tables or peer sets (a policy event; a pod of this node bringing its
// table or taking the last one away) changes rules. UpdateRules would build the whole next
// model to find what differs; PlanRulesFromDelta renders only what the delta can change — the
// tables it replaces or adds, the tables whose endpoints change or that name a peer set it
// remakes, their dispatch chains when a dispatch rule changes — from the delta, the installed chains and
// sets, and the index, and plans the same edit UpdateRules would (the same chains, the same
// new sets under the same names: a set whose contents change is a new set), plus, for a pod
// delta, PlanFromDelta's element edits of the sets that keep their names.

// A delta's rules edit, or why there is none.
struct RulesDelta {
  std::string fallback;
  uint32_t generation = 0;  // of the sets it makes: the installed generation + 1
  // A pod delta (ranges, identity pods, an endpoint added or removed): PlanFromDelta's
  // element edits beside the rules (EditMembers orders them by `members.dispatch_add`).
  bool pod = false;
  DeltaPlan members;
  // A pod delta planned as one switch (PlanRulesFromDelta's `whole`): every set whose members
  // change is a new set the restores switch to, `members` has no edits (nothing is edited
  // in place, no RCU grace period): UpdateRules' order and argument.
  bool whole = false;
  std::string not_ordered;  // `whole`: why the ordered way was refused
  // The chains written (name -> rules) and deleted, per family; the restores are in `plan`.
  std::map<std::string, std::vector<std::string>> chains[kFamilies];
  std::set<std::string> deleted[kFamilies];
  std::map<std::string, std::vector<std::string>> created;  // new set -> its entries
  std::set<std::string> destroyed;
  RulesPlan plan;  // created, destroyed, restores (no `ipset` text)
  // What the installed program and the index become, where they change.
  std::map<uint32_t, std::string> set_name[kFamilies];       // peer set -> its set ("": none)
  std::map<uint32_t, std::string> dispatch_name[kFamilies];  // table -> its set ("": none)
  std::map<uint32_t, std::array<std::vector<std::string>, kFamilies>> table_entries;
  std::set<uint32_t> tables;     // rendered: their `chain` flags may change
  std::set<uint32_t> remade;     // peer sets whose forms were made anew
  std::map<uint32_t, int> refs;  // peer set -> change of its rendering rules' count
  std::map<uint32_t, std::array<std::array<bool, kFamilies>, 2>> chain;  // of `tables`
  std::map<uint32_t, int> pod_identities;  // remade peer set -> its identities with pods
  uint32_t peer_sets_after = 0, tables_after = 0;
  int endpoints_delta = 0;
  int sets_after[kFamilies] = {0, 0};
  Ruleset sizes;  // the installed sizes afterwards (the element edits' entries not counted)
};

// The peer forms of one family after a delta: those of the peer sets it remakes, computed;
// the others', what is installed (an inline one's prefixes computed when first asked).
class DeltaForms : public PeerForms {
 public:
  struct Form {
    bool all = false, has_set = false;
    std::vector<std::string> entries;
    std::string name;
  };
  DeltaForms(const Installed& installed, const DeltaIndex& index, int f,
             std::function<const ir::PeerSet&(uint32_t)> set_at,
             std::function<std::vector<std::string>(const ir::PeerSet&)> entries_of)
      : installed_(installed), index_(index), f_(f), set_at_(std::move(set_at)),
        entries_of_(std::move(entries_of)) {}
  void Put(uint32_t s, Form form) { forms_[s] = std::move(form); }
  bool All(uint32_t s) const override { return Get(s).all; }
  bool HasSet(uint32_t s) const override { return Get(s).has_set; }
  const std::vector<std::string>& Entries(uint32_t s) const override { return Get(s).entries; }
  const std::string& SetName(uint32_t s) const override { return Get(s).name; }

 private:
  const Form& Get(uint32_t s) const {
    auto it = forms_.find(s);
    if (it != forms_.end()) return it->second;
    Form form;  // installed: a used peer set not remade keeps its form
    form.all = set_at_(s).all();
    form.has_set = s < index_.has_set[f_].size() && index_.has_set[f_][s];
    if (form.has_set) {
      form.name = installed_.set_name[f_][s];  // (Entries is asked only without a set)
    } else if (!form.all) {
      form.entries = entries_of_(set_at_(s));
    }
    return forms_.emplace(s, std::move(form)).first->second;
  }
  const Installed& installed_;
  const DeltaIndex& index_;
  const int f_;
  std::function<const ir::PeerSet&(uint32_t)> set_at_;
  std::function<std::vector<std::string>(const ir::PeerSet&)> entries_of_;
  mutable std::map<uint32_t, Form> forms_;
};

// Items of a delta checked as ApplyDelta checks them: ids in order, each replacing an item or
// appending the next; peer sets of existing identities; rules of existing peer sets;
// endpoints of existing tables.
absl::Status CheckDeltaItems(const ir::CompiledPolicy& previous,
                             const ir::CompiledPolicyDelta& delta, uint32_t& peer_sets_after,
                             uint32_t& tables_after) {
  peer_sets_after = static_cast<uint32_t>(previous.peer_sets_size());
  tables_after = static_cast<uint32_t>(previous.tables_size());
  for (int e = 0; e < delta.peer_sets_size(); ++e) {
    const uint32_t id = delta.peer_sets(e).id();
    if ((e > 0 && id <= delta.peer_sets(e - 1).id()) || id > peer_sets_after) {
      return InvalidDelta(absl::StrCat("peer_sets[", e, "]: id ", id, " out of order or past ",
                                       peer_sets_after));
    }
    if (id == peer_sets_after) ++peer_sets_after;
    // (It may name the identities the delta appends.)
    if (absl::Status s = CheckPeerSet(
            delta.peer_sets(e), id,
            static_cast<uint32_t>(previous.identities_size() + delta.identities_size()));
        !s.ok()) {
      return InvalidDelta(absl::StrCat("peer_sets[", e, "]: ", s.message()));
    }
  }
  for (int e = 0; e < delta.tables_size(); ++e) {
    const uint32_t id = delta.tables(e).id();
    if ((e > 0 && id <= delta.tables(e - 1).id()) || id > tables_after) {
      return InvalidDelta(absl::StrCat("tables[", e, "]: id ", id, " out of order or past ",
                                       tables_after));
    }
    if (id == tables_after) ++tables_after;
    if (absl::Status s = CheckTable(delta.tables(e), id, peer_sets_after); !s.ok()) {
      return InvalidDelta(absl::StrCat("tables[", e, "]: ", s.message()));
    }
  }
  for (const ir::EndpointSliceEdit& edit : delta.endpoints()) {
    for (const ir::Endpoint& e : edit.endpoints()) {
      if (e.selected() && e.table() >= tables_after) {
        return InvalidDelta(absl::StrCat("endpoints: table ", e.table(), " does not exist"));
      }
    }
  }
  return absl::OkStatus();
}

// The rules edit of `delta` of `previous` (installed as `installed` and `index`), or why
// UpdateDelta hands it to the whole-model path. InvalidArgument for a malformed delta. The
// cost: the delta, the tables it renders, their peer sets (a remade one's member ranges), and
// the dispatch chains (at most 64 rules each) whose rules change.
// A pod delta (ranges, identity pods or endpoints edited) goes one of two ways:
//  - ordered (`whole` false): the sets that keep their names get PlanFromDelta's element
//    edits around the restores, in EditMembers' order — only when its endpoint's dispatch
//    is what the restores switch (a pod of this node bringing its table or taking it away)
//    and no other live chain is rewritten;
//  - `whole`: every used peer set whose members or form may change (those of an identity
//    whose ranges the delta edits or whose pods come or go, and those the delta rewrites) is
//    remade, so a set whose entries change is a new set, as is every dispatch set whose
//    entries change; the restores switch all of it at once and nothing live is edited —
//    exactly the plan of the whole-model path (PlanRulesUpdate), with its argument
//    (IptablesBackend::UpdateRules): each family's table switches in one transaction from
//    the old rules with the old sets to the new rules with the new sets, so every packet,
//    also one between two endpoints of this node, meets one program whole. For what the
//    ordered way cannot order: a node pod relabelled (its table replaced in place, its
//    identity new or reused), moved between tables, a policy that splits an identity.
// Appended identities (CompiledPolicyDelta.identities) are named only by the peer sets the
// delta rewrites (remade) and by its ranges (MemberRuns reads them from the edits).
absl::StatusOr<RulesDelta> PlanRulesFromDeltaAs(const Installed& installed,
                                                const DeltaIndex& index,
                                                const ir::CompiledPolicy& previous,
                                                const ir::CompiledPolicyDelta& delta, bool whole) {
  RulesDelta out;
  out.whole = whole;
  if (absl::Status s = CheckDeltaEdits(previous, delta); !s.ok()) return s;
  if (absl::Status s = CheckDeltaItems(previous, delta, out.peer_sets_after, out.tables_after);
      !s.ok()) {
    return s;
  }
  if (index.sets_capped) {
    out.fallback = "past kMaxPodSets sets: a set's size decides whether it is one";
    return out;
  }
  if (installed.generation == std::numeric_limits<uint32_t>::max()) {
    out.fallback = "set generations used up";  // (the whole-model path then runs Apply)
    return out;
  }
  out.generation = installed.generation + 1;
  std::map<uint32_t, const ir::PeerSet*> delta_sets;
  std::map<uint32_t, const ir::Table*> delta_tables;
  for (const ir::PeerSet& set : delta.peer_sets()) delta_sets[set.id()] = &set;
  for (const ir::Table& table : delta.tables()) delta_tables[table.id()] = &table;
  auto set_at = [&](uint32_t s) -> const ir::PeerSet& {
    auto it = delta_sets.find(s);
    return it != delta_sets.end() ? *it->second : previous.peer_sets(static_cast<int>(s));
  };
  auto table_at = [&](uint32_t t) -> const ir::Table& {
    auto it = delta_tables.find(t);
    return it != delta_tables.end() ? *it->second : previous.tables(static_cast<int>(t));
  };
  std::map<uint32_t, bool> pods_after;  // identity -> has pods, where the delta says
  for (const ir::IdentityPodsEdit& edit : delta.identity_pods()) {
    pods_after[edit.identity()] = PodsAfterEdit(previous, delta, edit) > 0;
  }
  const uint32_t identities_before = static_cast<uint32_t>(previous.identities_size());
  auto had_pods = [&](uint32_t i) {  // (an appended identity: as the delta appends it)
    return i < identities_before
               ? previous.identities(static_cast<int>(i)).pods_size() > 0
               : delta.identities(static_cast<int>(i - identities_before)).pods_size() > 0;
  };
  auto has_pods = [&](uint32_t i) {
    auto it = pods_after.find(i);
    return it != pods_after.end() ? it->second : had_pods(i);
  };
  int endpoints_delta = 0;
  for (const ir::EndpointSliceEdit& edit : delta.endpoints()) {
    endpoints_delta += edit.endpoints_size() - static_cast<int>(edit.end() - edit.begin());
  }
  out.pod = !delta.ipv4().empty() || !delta.ipv6().empty() || !delta.identity_pods().empty() ||
            endpoints_delta != 0;
  out.endpoints_delta = endpoints_delta;

  // 1. The tables whose endpoints change, with their entries afterwards.
  const std::array<std::vector<std::string>, kFamilies> none;
  auto entries_of = [&](uint32_t t) -> std::array<std::vector<std::string>, kFamilies>& {
    auto [it, fresh] = out.table_entries.try_emplace(t);
    if (fresh && t < index.table_entries.size()) it->second = index.table_entries[t];
    return it->second;
  };
  for (const ir::EndpointSliceEdit& edit : delta.endpoints()) {
    for (uint32_t i = edit.begin(); i < edit.end(); ++i) {
      const ir::Endpoint& e = previous.endpoints(static_cast<int>(i));
      if (!e.selected() || e.table() >= index.table_entries.size()) continue;
      for (int f = 0; f < kFamilies; ++f) RemoveTableEntries(e, f, entries_of(e.table())[f]);
    }
    for (const ir::Endpoint& e : edit.endpoints()) {
      if (!e.selected()) continue;
      for (int f = 0; f < kFamilies; ++f) AddTableEntries(e, f, entries_of(e.table())[f]);
    }
  }
  for (auto it = out.table_entries.begin(); it != out.table_entries.end();) {
    if (it->first < index.table_entries.size() && it->second == index.table_entries[it->first]) {
      it = out.table_entries.erase(it);  // its endpoints moved within it, or not at all
    } else {
      out.tables.insert(it->first);
      ++it;
    }
  }
  for (const auto& [t, table] : delta_tables) out.tables.insert(t);
  auto entries_after = [&](uint32_t t, int f) -> const std::vector<std::string>& {
    auto it = out.table_entries.find(t);
    if (it != out.table_entries.end()) return it->second[f];
    return t < index.table_entries.size() ? index.table_entries[t][f] : none[f];
  };
  auto chain_before = [&](uint32_t t, int d, int f) {
    return t < index.chain.size() && index.chain[t][d][f];
  };
  auto chain_after = [&](uint32_t t, int d, int f) {
    if (out.tables.count(t) == 0) return chain_before(t, d, f);
    const ir::Table& table = table_at(t);
    return Restricted(d == kIngress ? table.ingress() : table.egress()) &&
           !entries_after(t, f).empty();
  };

  // 2. Peer sets: the ones the delta replaces or adds, and those some rule starts or stops
  // rendering, are remade.
  for (const auto& [t, table] : delta_tables) {
    if (t < static_cast<uint32_t>(previous.tables_size())) {
      ForEachRenderedPeerSet(previous.tables(static_cast<int>(t)),
                             [&](uint32_t s) { --out.refs[s]; });
    }
    ForEachRenderedPeerSet(*table, [&](uint32_t s) { ++out.refs[s]; });
  }
  auto refs_before = [&](uint32_t s) {
    return s < index.tables_of.size() ? static_cast<int>(index.tables_of[s].size()) : 0;
  };
  for (const auto& [s, change] : out.refs) {
    if ((refs_before(s) > 0) != (refs_before(s) + change > 0)) out.remade.insert(s);
  }
  for (const auto& [s, set] : delta_sets) out.remade.insert(s);

  // 3. A pod delta's element edits, for the sets that keep their names (and the dispatch
  // sets of tables whose chains stay); or (`whole`) no element edit: the peer sets whose
  // members may change remade (a set whose entries stay keeps its name below).
  if (out.pod && whole) {
    auto remake_sets_of = [&](uint32_t identity) {
      if (identity >= index.peer_sets_of.size()) return;  // appended: in rewritten sets only
      out.remade.insert(index.peer_sets_of[identity].begin(), index.peer_sets_of[identity].end());
    };
    for (int f = 0; f < kFamilies; ++f) {
      const auto& ranges = f == 0 ? previous.ipv4() : previous.ipv6();
      for (const ir::RangeSliceEdit& edit : f == 0 ? delta.ipv4() : delta.ipv6()) {
        for (uint32_t i = edit.begin(); i < edit.end(); ++i) {
          remake_sets_of(ranges[static_cast<int>(i)].identity());
        }
        for (const ir::AddressRange& r : edit.ranges()) remake_sets_of(r.identity());
      }
    }
    for (const ir::IdentityPodsEdit& edit : delta.identity_pods()) {
      if (had_pods(edit.identity()) != has_pods(edit.identity())) remake_sets_of(edit.identity());
    }
  } else if (out.pod) {
    MemberScope scope;
    scope.remade = out.remade;
    for (uint32_t t : out.tables) {
      for (int f = 0; f < kFamilies; ++f) {
        bool flips = delta_tables.count(t) > 0;
        for (int d = 0; d < 2; ++d) flips = flips || chain_before(t, d, f) != chain_after(t, d, f);
        if (flips) scope.dispatch[f].insert(t);
      }
    }
    absl::StatusOr<DeltaPlan> members = PlanFromDelta(installed, index, previous, delta, &scope);
    if (!members.ok()) return members.status();
    out.members = *std::move(members);
    if (!out.members.fallback.empty()) {
      out.fallback = out.members.fallback;
      return out;
    }
    if (out.members.endpoints_delta == 0 && !out.tables.empty()) {
      // Rules and member edits with no endpoint whose dispatch orders them.
      out.fallback = "the delta changes rules and pods, but no endpoint of this node";
      return out;
    }
  }

  // The members of a peer set afterwards in family f: its identities' ranges (the delta's
  // range edits applied), neighbours merged, as the fewest prefixes (as BuildModel makes them).
  auto members_of = [&](int f) {
    return [&, f](const ir::PeerSet& set) {
      std::vector<std::string> entries;
      for (const auto& [first, last] : MemberRuns(index, previous, delta, set, f, true)) {
        AppendPrefixes(first, last, f, entries);
      }
      return entries;
    };
  };
  std::vector<std::unique_ptr<DeltaForms>> forms;
  for (int f = 0; f < kFamilies; ++f) {
    forms.push_back(std::make_unique<DeltaForms>(installed, index, f, set_at, members_of(f)));
    out.sets_after[f] = index.sets[f];
  }

  // 4. The remade peer sets' forms: a set whose entries differ from its installed set's is a
  // new set (BuildModel's rule with Naming{&installed, keep_changed = false}); the tables
  // that name one are rendered again.
  for (uint32_t s : out.remade) {
    const ir::PeerSet& set = set_at(s);
    const bool used = refs_before(s) + (out.refs.count(s) ? out.refs.at(s) : 0) > 0;
    int& pod_identities = out.pod_identities[s];
    for (uint32_t i : set.identities()) pod_identities += has_pods(i) ? 1 : 0;
    const bool names_pods = pod_identities > 0;
    for (int f = 0; f < kFamilies; ++f) {
      DeltaForms::Form form;
      form.all = set.all();
      if (used && !set.all()) {
        form.entries = members_of(f)(set);
        form.has_set =
            names_pods || form.entries.size() > static_cast<size_t>(kMaxInlinePrefixes);
      }
      const std::string old =
          s < installed.set_name[f].size() ? installed.set_name[f][s] : std::string();
      if (form.has_set) {
        form.name = !old.empty() && installed.sets.at(old) == form.entries
                        ? old
                        : SetName(out.generation, f, s);
        if (form.name != old) out.created[form.name] = form.entries;
      }
      if (!old.empty() && form.name != old) out.destroyed.insert(old);
      out.sets_after[f] += (form.has_set ? 1 : 0) - (old.empty() ? 0 : 1);
      out.set_name[f][s] = form.name;
      forms[f]->Put(s, std::move(form));
    }
    if (s < index.tables_of.size()) {
      out.tables.insert(index.tables_of[s].begin(), index.tables_of[s].end());
    }
  }
  for (int f = 0; f < kFamilies; ++f) {
    if (out.sets_after[f] > kMaxPodSets) {
      out.fallback = "past kMaxPodSets sets: a set's size decides whether it is one";
      return out;
    }
  }

  // 5. The rendered tables' chains, against the installed ones; their dispatch sets.
  std::set<uint32_t> buckets[kFamilies];  // the dispatch chains whose rules may change
  for (uint32_t t : out.tables) {
    for (int f = 0; f < kFamilies; ++f) {
      std::vector<Chain> chains;
      for (int d = 0; d < 2; ++d) {
        if (chain_before(t, d, f) != chain_after(t, d, f)) buckets[f].insert(DispatchBucket(t));
        if (chain_after(t, d, f)) {
          TableChain tc;
          AddTableChains(table_at(t), t, d, *forms[f], tc, chains);
        }
      }
      std::set<std::string> now;
      for (Chain& c : chains) {
        now.insert(c.name);
        auto old = installed.chains[f].find(c.name);
        if (old == installed.chains[f].end() || old->second != c.rules) {
          out.chains[f][c.name] = std::move(c.rules);
        }
      }
      for (int d = 0; d < 2; ++d) {
        for (const std::string name : {TableChainName(t, d), TableChainName(t, d) + "-NP"}) {
          if (now.count(name) == 0 && installed.chains[f].count(name) > 0) {
            out.deleted[f].insert(name);
          }
        }
      }
      const bool before = chain_before(t, kIngress, f) || chain_before(t, kEgress, f);
      const bool after = chain_after(t, kIngress, f) || chain_after(t, kEgress, f);
      auto installed_name = installed.dispatch_name[f].find(t);
      const std::string old =
          installed_name == installed.dispatch_name[f].end() ? "" : installed_name->second;
      std::string name;
      if (after) {
        const std::vector<std::string>& entries = entries_after(t, f);
        bool in_place = false;  // the element edits change it under its name
        for (const DeltaPlan::DispatchEdit& e : out.members.dispatch) {
          in_place = in_place || e.edit.set == old;
        }
        name = before && (in_place || installed.sets.at(old) == entries)
                   ? old
                   : DispatchSetName(out.generation, f, t);
        if (name != old) out.created[name] = entries;
      }
      if (before && name != old) out.destroyed.insert(old);
      if (after && name != old) buckets[f].insert(DispatchBucket(t));
      if (name != old) out.dispatch_name[f][t] = name;
    }
  }

  for (uint32_t t : out.tables) {
    auto& flags = out.chain[t];
    for (int d = 0; d < 2; ++d) {
      for (int f = 0; f < kFamilies; ++f) flags[d][f] = chain_after(t, d, f);
    }
  }

  // 6. The dispatch chains of the tables whose dispatch rules change (at most two rules for
  // each of their kDispatchChainTables tables), and NP-FORWARD when one comes or goes.
  for (int f = 0; f < kFamilies; ++f) {
    bool jumps_change = false;
    for (uint32_t k : buckets[f]) {
      std::vector<std::string> rules;
      const uint32_t first = k * kDispatchChainTables;
      const uint32_t end = std::min(out.tables_after, first + kDispatchChainTables);
      for (int d : {kEgress, kIngress}) {
        for (uint32_t t = first; t < end; ++t) {
          if (!chain_after(t, d, f)) continue;
          auto renamed = out.dispatch_name[f].find(t);
          rules.push_back(DispatchRule(renamed != out.dispatch_name[f].end()
                                           ? renamed->second
                                           : installed.dispatch_name[f].at(t),
                                       d, t));
        }
      }
      const std::string name = DispatchChainName(k);
      auto old = installed.chains[f].find(name);
      const bool before = old != installed.chains[f].end();
      if (rules.empty()) {
        if (before) out.deleted[f].insert(name);
        jumps_change = jumps_change || before;
      } else {
        jumps_change = jumps_change || !before;
        if (!before || old->second != rules) out.chains[f][name] = std::move(rules);
      }
    }
    if (!jumps_change) continue;
    std::vector<std::string> top = {std::string(kEstablished)};
    for (uint32_t k = 0; k * kDispatchChainTables < out.tables_after; ++k) {
      const std::string name = DispatchChainName(k);
      if (out.deleted[f].count(name) == 0 &&
          (out.chains[f].count(name) > 0 || installed.chains[f].count(name) > 0)) {
        top.push_back(absl::StrCat("-j ", name));
      }
    }
    const std::string top_name(kTopChain);
    if (installed.chains[f].at(top_name) != top) out.chains[f][top_name] = std::move(top);
  }

  // A pod delta's restore switches only its endpoint's dispatch (a table's chains coming or
  // going with it): its element edits then keep UpdateDelta's order (dispatch first on the
  // way in, last on the way out), which no rewritten live chain would.
  if (out.pod && !whole) {
    for (int f = 0; f < kFamilies; ++f) {
      for (const auto& [name, rules] : out.chains[f]) {
        if (!IsDispatchChain(name) && installed.chains[f].count(name) > 0) {
          out.fallback = absl::StrCat("chain ", name, " changes beside pod edits");
          return out;
        }
      }
    }
  }

  // The plan as PlanRulesFrom makes it, and the sizes afterwards.
  out.sizes = installed.sizes;
  for (int f = 0; f < kFamilies; ++f) {
    ChainRewrite rewrite;
    rewrite.installed = &installed.chains[f];
    for (const auto& [name, rules] : out.chains[f]) {
      auto old = installed.chains[f].find(name);
      if (IsDispatchChain(name) && old != installed.chains[f].end()) {
        rewrite.tops[name] = &rules;
      } else {
        rewrite.written[name] = &rules;
      }
      out.sizes.rules[f] += static_cast<int>(rules.size());
      if (old != installed.chains[f].end()) {
        out.sizes.rules[f] -= static_cast<int>(old->second.size());
      } else {
        ++out.sizes.chains[f];
      }
    }
    for (const std::string& name : out.deleted[f]) {
      rewrite.deleted.push_back(name);
      out.sizes.rules[f] -= static_cast<int>(installed.chains[f].at(name).size());
      --out.sizes.chains[f];
    }
    rewrite.Into(out.plan, f);
  }
  for (const auto& [name, entries] : out.created) {
    out.plan.created.push_back(name);
    ++out.sizes.sets[FamilyOfSet(name)];
    out.sizes.set_entries[FamilyOfSet(name)] += static_cast<int64_t>(entries.size());
  }
  for (const std::string& name : out.destroyed) {
    out.plan.destroyed.push_back(name);
    --out.sizes.sets[FamilyOfSet(name)];
    out.sizes.set_entries[FamilyOfSet(name)] -=
        static_cast<int64_t>(installed.sets.at(name).size());
  }
  return out;
}

// A pod delta the ordered way cannot order goes as one switch (PlanRulesFromDeltaAs).
absl::StatusOr<RulesDelta> PlanRulesFromDelta(const Installed& installed, const DeltaIndex& index,
                                              const ir::CompiledPolicy& previous,
                                              const ir::CompiledPolicyDelta& delta) {
  // Appended identities: one switch only (the ordered way's element edits are tested on
  // deltas of the installed identities; the switch is the whole-model path's plan).
  std::string not_ordered = "the delta appends identities";
  if (delta.identities().empty()) {
    absl::StatusOr<RulesDelta> ordered =
        PlanRulesFromDeltaAs(installed, index, previous, delta, /*whole=*/false);
    if (!ordered.ok() || ordered->fallback.empty() || !ordered->pod) return ordered;
    not_ordered = ordered->fallback;
  }
  absl::StatusOr<RulesDelta> whole =
      PlanRulesFromDeltaAs(installed, index, previous, delta, /*whole=*/true);
  if (whole.ok() && !whole->fallback.empty()) {
    whole->fallback = absl::StrCat(not_ordered, "; as one switch: ", whole->fallback);
  }
  if (whole.ok()) whole->not_ordered = not_ordered;
  return whole;
}

class IptablesBackend : public Backend {
 public:
  explicit IptablesBackend(BackendOptions options) : options_(std::move(options)) {}
  std::string name() const override { return "iptables"; }

  absl::StatusOr<ir::BackendCapacity> Capacity(const ir::CompiledPolicy& ir) const override {
    absl::StatusOr<Ruleset> r = RenderRuleset(ir);
    if (!r.ok()) return r.status();
    return Measure(*r);
  }

  absl::StatusOr<std::string> Render(const ir::CompiledPolicy& ir) const override {
    absl::StatusOr<Ruleset> r = RenderRuleset(ir);
    if (!r.ok()) return r.status();
    absl::StatusOr<ir::BackendCapacity> capacity = Measure(*r);
    if (!capacity.ok()) return capacity.status();
    if (absl::Status s = CheckCapacity(*capacity); !s.ok()) return s;
    return absl::StrCat(
        "# np iptables backend. Three inputs, applied in this order:\n",
        "# ==== ipset restore ====\n", r->ipset,
        "# ==== iptables-restore --noflush (IPv4, table filter) ====\n", r->ip4,
        "# ==== ip6tables-restore --noflush (IPv6, table filter) ====\n", r->ip6);
  }

  // Atomic replace, failing closed. The order:
  //  1. Read what is installed: the NP chains of each family's filter table, whether
  //     FORWARD already jumps to NP-FORWARD, and the np-g<G>-* sets.
  //  2. Create the new ruleset's sets under a generation G no existing set uses
  //     (`ipset restore`). Nothing references them yet, so this changes no verdict. On
  //     failure the half-made generation is destroyed and the old ruleset stays in force.
  //     (Why not `ipset swap` into the old names: peer set numbers are not stable between
  //     two IRs, so swapping contents under the old rules would, for an instant, run old
  //     rules against new sets — a mix that can allow what both rulesets deny.)
  //  3. iptables-restore --noflush: one transaction that flushes and refills every NP
  //     chain, deletes the NP chains the new ruleset no longer has, and (first time only)
  //     hooks NP-FORWARD into FORWARD. The kernel swaps the table in one step: packets see
  //     either the old rules with the old sets or the new rules with the new sets. On
  //     failure nothing changed in IPv4; the new sets are destroyed.
  //  4. ip6tables-restore --noflush, the same for IPv6 (a separate table: IPv6 packets
  //     never meet IPv4 rules, so each family switches atomically on its own). On failure
  //     IPv4 runs the new ruleset and IPv6 the old one, each whole; the error says so.
  //  5. Destroy every np set of another generation: no rule references them any more (the
  //     kernel refuses to destroy a referenced set, so this step cannot open anything).
  absl::Status Apply(const ir::CompiledPolicy& ir, const Attachment& attachment) override {
    Settle();
    const std::string& netns = attachment.netns;
    installed_.reset();  // set again below once the new ruleset is in force
    index_.reset();
    // 1.
    SavedTable saved[kFamilies];
    for (int f = 0; f < kFamilies; ++f) {
      absl::StatusOr<SavedTable> t = ReadTable(f, netns);
      if (!t.ok()) return t.status();
      saved[f] = *std::move(t);
    }
    absl::StatusOr<InstalledSets> installed = ReadSets(netns);
    if (!installed.ok()) return installed.status();
    const std::vector<SetName_>* sets = &installed->ours;
    std::set<uint32_t> generations;
    for (const SetName_& s : *sets) generations.insert(s.generation);
    uint32_t generation = 0;
    while (generations.count(generation) > 0) ++generation;

    absl::StatusOr<Model> model = BuildModel(ir, generation);
    if (!model.ok()) return model.status();
    RenderOptions options;
    options.generation = generation;
    for (int f = 0; f < kFamilies; ++f) {
      std::set<std::string> keep;
      for (const Chain& c : model->family[f].chains) keep.insert(c.name);
      for (const std::string& c : saved[f].chains) {
        if (keep.count(c) == 0) options.stale_chains[f].push_back(c);
      }
    }
    // The hook is written when either family lacks it (the texts are rendered once; a
    // family that has it gets the line removed below).
    absl::StatusOr<Ruleset> rs = RenderModel(*model, options);
    if (!rs.ok()) return rs.status();
    absl::StatusOr<ir::BackendCapacity> capacity = Measure(*rs);
    if (!capacity.ok()) return capacity.status();
    if (absl::Status s = CheckCapacity(*capacity); !s.ok()) return s;
    // The new generation's sets are made beside every set already there (the old
    // generation's, other programs'): all must fit under the kernel's limit together.
    const uint64_t sets_made = static_cast<uint64_t>(rs->sets[0] + rs->sets[1]);
    if (installed->all + sets_made > kMaxIpsets) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "iptables: ipsets ", installed->all, " in the namespace + ", sets_made,
          " new > limit ", kMaxIpsets, " (ip_set_core.c: 16-bit set ids); the old ruleset "
          "stays in force"));
    }
    std::string text[kFamilies] = {rs->ip4, rs->ip6};
    const std::string hook_line = absl::StrCat("-I FORWARD 1 -j ", kTopChain, "\n");
    for (int f = 0; f < kFamilies; ++f) {
      if (saved[f].hooked) {
        size_t at = text[f].find(hook_line);
        if (at != std::string::npos) text[f].erase(at, hook_line.size());
      }
    }
    auto new_sets = [&](int family) {  // family -1: both
      std::vector<std::string> names;
      for (int f = 0; f < kFamilies; ++f) {
        if (family >= 0 && f != family) continue;
        ForEachSet(*model, f, [&](const std::string& name, const char*,
                                  const std::vector<std::string>&) { names.push_back(name); });
      }
      return names;
    };
    // 2.
    if (absl::StatusOr<std::string> r = Spawn({"ipset", "restore"}, rs->ipset, netns);
        !r.ok()) {
      (void)DestroySets(new_sets(-1), netns);
      return absl::InternalError(
          absl::StrCat("ipset restore failed; the old ruleset stays in force: ",
                       r.status().message()));
    }
    // 3. and 4. (one after the other, not side by side: an IPv4 failure then leaves IPv6
    // untouched too, so the whole old ruleset stays in force)
    for (int f = 0; f < kFamilies; ++f) {
      absl::StatusOr<std::string> r =
          Spawn({RestoreTool(f), "--noflush", "--wait=10"}, text[f], netns);
      if (r.ok()) continue;
      if (f == 0) {
        (void)DestroySets(new_sets(-1), netns);
        return absl::InternalError(absl::StrCat(
            "iptables-restore failed; the old ruleset stays in force: ", r.status().message()));
      }
      std::vector<std::string> drop = new_sets(1);
      for (const SetName_& s : *sets) {
        if (s.family == 0) drop.push_back(s.name);
      }
      (void)DestroySets(drop, netns);
      return absl::InternalError(
          absl::StrCat("ip6tables-restore failed: IPv4 runs the new ruleset, IPv6 the old one: ",
                       r.status().message()));
    }
    // The running restore tools of the in-place rules path, started and warmed here rather
    // than by the first event that needs them: a start (fork of this process, exec, the
    // extensions' dlopen on the first block) cost that event ~30 ms at 1,000 tables, and a
    // start left running beside the next event slowed that one (bench/RESULTS.md, h96).
    // Each gets a block that loads the extensions np's rules use and leaves the table as it
    // was (a chain made, filled, flushed and deleted in one transaction: its commit is the
    // ack awaited). A failure here changes nothing (that block commits nothing, or nothing
    // that stays; a leftover NP- chain would be stale to the next Apply): the tool is stopped
    // and the first event starts it again.
    {
      std::string warm[kFamilies];
      for (int f = 0; f < kFamilies; ++f) {
        if (!PersistentRestore::Nft(f)) continue;
        const std::vector<std::string> names = new_sets(f);
        warm[f] = WarmUpText(names.empty() ? "" : names.front());
      }
      (void)RestoreFamilies(warm, netns, &restorers_);
    }
    // 5.
    index_ = std::make_unique<DeltaIndex>(IndexOf(ir, *model));
    installed_ = std::make_unique<Installed>(InstalledOf(*model, netns));
    std::vector<std::string> old;
    for (const SetName_& s : *sets) old.push_back(s.name);
    if (absl::Status s = DestroySets(old, netns); !s.ok()) {
      // Old sets left over: the next Apply reads the kernel again (their generations).
      installed_.reset();
      index_.reset();
      return absl::InternalError(absl::StrCat(
          "the new ruleset is in force, but old sets could not be destroyed: ", s.message()));
    }
    return absl::OkStatus();
  }

  // Element-only when it is safe, else the in-place rules path (UpdateRules), else
  // Apply(next). The fast path: `next` is rendered with the installed sets' names (by peer
  // set and table id; Naming); when its iptables rules (both families) are the installed ones
  // word for word and the same sets exist, only set members differ: the new members are
  // added, then the old ones deleted, over ipset's netlink interface (EditSets: no process
  // spawned). Nothing is read from the kernel: the instance remembers what its last Apply
  // or Update installed (any error forgets it, and the next call re-reads through Apply).
  //
  // Why this is safe. Rules are fixed during the edit; only set lookups can change their
  // answer, and each set element changes in one step. With every add before any delete,
  // an address's membership of a set changes at most once during the edit (an address in
  // both the old and the new set stays covered: by its old prefix until the new one is in),
  // so each lookup answers as the old or as the new ruleset would. A packet's verdict is
  // then the old or the new one when at most ONE of its lookups can see a changed answer.
  // A packet walks the chain of its source's egress (looking up the destination's address)
  // and the chain of its destination's ingress (looking up the source's), each only when
  // that end is a dispatched endpoint address. So the fast path requires:
  //  - no address whose membership changes (any address of an added or deleted prefix) is
  //    a dispatched endpoint address: then at most one of the two chains a packet walks
  //    looks up a changed address (the other end's chain looks up an unchanged one);
  //  - in each table chain together with its NetworkPolicy stage chain, no two rules look
  //    up sets whose membership changes at the same address (a set with changes named by
  //    two rules counts): then that one chain does at most one changed lookup per packet —
  //    unless every rule that does RETURNs (whichever way each lookup changes). That is safe
  //    too: the chain's answer is the first matching rule's, and only RETURN rules' lookups
  //    change. While the adds go in, each lookup answers "hit" where the old program's
  //    does (a hit only ever comes, a miss only goes): if the first matching rule midway is
  //    a RETURN rule that hits in the old program, every rule before it missed midway, so
  //    missed in the old program too (its changed ones hit only more midway; the others
  //    are fixed): the old answer is that RETURN; if it hits only in the new program, the
  //    new program meets it or an earlier RETURN rule (the rules before it that are not
  //    RETURN rules are fixed and missed): RETURN, the new answer; if the first match is a
  //    fixed rule, every changed RETURN rule before it missed midway, so in the old program
  //    too, whose answer is the same rule's. While the deletes go out, the same with the
  //    old and new programs exchanged. This is the common case of a pod of another node
  //    coming, going or being relabelled: its address joins (leaves) every set of the
  //    peers it matches (a relabel: leaves some, joins others), and a chain allows it by
  //    several rules (ports, or both of its classes).
  // Otherwise (rules differ: a policy changed, a local endpoint came or went, a peer set's
  // numbering or its need of a set changed; a set would pass its maxelem; a check above
  // fails) UpdateRules changes in place what differs, with new sets and one restore per
  // family; Apply runs only when that fails. Example: a pod of another node joins an existing label
  // class: its /32 (and /128) are added to the sets of the peer sets that name it, each
  // looked up by one rule of a chain: one add per set.
  absl::Status Update(const ir::CompiledPolicy& previous, const ir::CompiledPolicy& next,
                      const Attachment& attachment) override {
    (void)previous;  // installed_ is what the kernel holds, the same when the caller is right
    Settle();
    if (std::optional<absl::Status> full = FullInstead(next, attachment)) return *full;
    absl::StatusOr<Model> model =
        BuildModel(next, installed_->generation + 1, Naming{installed_.get(), true});
    if (!model.ok()) return model.status();
    DeltaIndex index = IndexOf(next, *model);
    // The entries move out of model.
    Installed to = InstalledOf(*model, attachment.netns, installed_.get());
    UpdatePlan plan = PlanFrom(*installed_, *model, to);
    if (!plan.fallback.empty()) return UpdateRules(next, attachment, plan.fallback);
    if (plan.ipset.empty()) {  // the same program
      last_update_ = "in place: nothing to change";
      index_ = std::make_unique<DeltaIndex>(std::move(index));
      return absl::OkStatus();
    }
    // The budgets Apply checks (a peer set of many pods can grow past ipset_entries).
    {
      absl::StatusOr<ir::BackendCapacity> capacity = Measure(to.sizes);
      if (!capacity.ok()) return capacity.status();
      if (absl::Status s = CheckCapacity(*capacity); !s.ok()) return s;
    }
    std::vector<SetEdit> edits;
    for (absl::string_view line : absl::StrSplit(plan.ipset, '\n', absl::SkipEmpty())) {
      std::vector<std::string> t = absl::StrSplit(line, ' ');  // "add|del SET PREFIX"
      edits.push_back(SetEdit{t[0] == "add", t[1], t[2]});
    }
    if (absl::Status s = EditSets(edits, attachment.netns); !s.ok()) {
      // Part of the edit may be in: each step was safe, and Apply replaces it all.
      installed_.reset();
      index_.reset();
      last_update_ = absl::StrCat("full: set edit failed: ", s.message());
      return Apply(next, attachment);
    }
    installed_ = std::make_unique<Installed>(std::move(to));
    index_ = std::make_unique<DeltaIndex>(std::move(index));
    last_update_ = absl::StrCat("in place: ", plan.adds, " adds, ", plan.dels, " deletes");
    return absl::OkStatus();
  }

  // What every in-place update checks first: with nothing installed by this instance in the
  // namespace, or no set generation left, it is Apply(next) (its status returned); else
  // the sets an earlier update could not destroy yet get one more try, and nullopt.
  std::optional<absl::Status> FullInstead(const ir::CompiledPolicy& next,
                                          const Attachment& attachment) {
    if (installed_ == nullptr || installed_->netns != attachment.netns) {
      last_update_ = "full: nothing installed by this instance in this namespace";
      return Apply(next, attachment);
    }
    if (!installed_->leftover.empty()) {
      installed_->leftover =
          DestroySetsInPlace(std::move(installed_->leftover), attachment.netns, /*attempts=*/1);
    }
    if (installed_->generation == std::numeric_limits<uint32_t>::max()) {
      last_update_ = "full: set generations used up";
      return Apply(next, attachment);
    }
    return std::nullopt;
  }

  // The in-place rules path of Update (when the element-only edit is refused: `why`): the
  // chains whose rules differ and the sets whose contents differ, compared by id (table,
  // peer set) with what this instance installed; the rest stays in the kernel untouched.
  // The order:
  //  1. The new sets — every peer set or dispatch set whose entries differ from its
  //     installed set's, or that has none — are created under fresh names (generation + 1)
  //     and filled, over netlink. No rule names them yet: no verdict changes. An installed
  //     set is never edited here (a set that keeps its name keeps its entries).
  //  2. Per family, ONE `iptables-restore --noflush` transaction declares (flushes) and
  //     refills exactly the chains whose rules differ — a dispatch chain too when its
  //     rules differ (a table's chains come or go, or a dispatch set was renamed because an
  //     endpoint joined, left or moved between tables) — creates new chains and deletes gone
  //     ones. The rules of unchanged chains, and the sets they name, are not touched.
  //  3. The sets no rule names any more are destroyed (the kernel refuses a set a rule
  //     still names; busy ones are retried, then left for the next update or Apply).
  // Why this is safe: each family's filter table switches in one step (iptables-nft commits
  // the restore as one nf_tables transaction, and a packet walks every chain of one
  // generation: nft_do_chain reads the generation once for the whole walk, jumps included;
  // iptables-legacy swaps the whole table blob). A packet — also a flow whose two ends are
  // both endpoints of this node, which walks the source's egress chain and the
  // destination's ingress chain in that one walk — meets either every old rule or every new
  // one. Every set an old rule names is unchanged from before step 1 until step 3 (the
  // installed sets are not edited), and every set a new rule names is complete before step 2
  // (made in step 1, or an installed set with the new program's entries). So each packet
  // gets the old program's verdict or the new one's, never a mix: a flow both allow is never
  // dropped, one both deny never passes. An endpoint moving between tables moves with its
  // dispatch sets' renaming, in the same transaction: at every instant it is judged by its
  // old table or its new one, each complete. IPv4 and IPv6 switch separately, but a packet
  // is of one family; established flows are accepted first in both (conntrack), as before.
  // Any failure falls back to Apply (fail closed): before step 2 nothing was in force but
  // the old program (the new sets are destroyed); after IPv4's step 2, IPv4 runs the new
  // program and IPv6 the old one, each whole, until Apply replaces both.
  // Cost: at most one process per family whose rules change, none for the sets.
  absl::Status UpdateRules(const ir::CompiledPolicy& next, const Attachment& attachment,
                           const std::string& why) {
    const std::string& netns = attachment.netns;
    // Where the time goes (for last_update_: the restores are most of it, bench/RESULTS.md).
    std::chrono::steady_clock::time_point phase = std::chrono::steady_clock::now();
    auto lap = [&phase] {
      const std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now();
      const double ms = std::chrono::duration<double, std::milli>(now - phase).count();
      phase = now;
      return static_cast<double>(static_cast<int64_t>(ms * 10 + 0.5)) / 10;
    };
    absl::StatusOr<Model> model =
        BuildModel(next, installed_->generation + 1, Naming{installed_.get(), false});
    if (!model.ok()) return model.status();
    DeltaIndex index = IndexOf(next, *model);
    Installed to = InstalledOf(*model, netns, installed_.get());
    RulesPlan plan = PlanRulesFrom(*installed_, to);
    auto full = [&](absl::string_view reason) {
      installed_.reset();
      index_.reset();
      last_update_ = absl::StrCat("full: ", reason, " (element-only refused: ", why, ")");
      return Apply(next, attachment);
    };
    if (!plan.fallback.empty()) return full(plan.fallback);
    {
      absl::StatusOr<ir::BackendCapacity> capacity = Measure(to.sizes);
      if (!capacity.ok()) return capacity.status();
      if (absl::Status s = CheckCapacity(*capacity); !s.ok()) return s;
    }
    const double plan_ms = lap();
    // 1.
    std::vector<NewSet> made;
    std::vector<SetEdit> fill;
    for (const std::string& name : plan.created) {
      const std::vector<std::string>& entries = to.sets.at(name);
      made.push_back(NewSet{name, FamilyOfSet(name), IsDispatchSet(name),
                            HashSize(entries.size()), to.maxelem.at(name)});
      for (const std::string& e : entries) fill.push_back(SetEdit{true, name, e});
    }
    absl::Status s = CreateSets(made, netns);
    if (s.ok()) s = EditSets(fill, netns);
    if (!s.ok()) {
      (void)DestroySetsInPlace(plan.created, netns);
      return full(absl::StrCat("making the new sets failed: ", s.message()));
    }
    const double sets_ms = lap();
    // 2. (both families side by side: each is its own transaction either way)
    const std::array<absl::Status, kFamilies> restored =
        RestoreFamilies(plan.switch_restore, netns, &restorers_);
    for (int f = 0; f < kFamilies; ++f) {
      if (restored[f].ok()) continue;
      const int other = 1 - f;
      // The new sets are named by no live rule unless the other family's restore went in.
      if (plan.switch_restore[other].empty() || !restored[other].ok()) {
        (void)DestroySetsInPlace(plan.created, netns);
      }
      return full(absl::StrCat(RestoreTool(f), " failed: ", restored[f].message()));
    }
    const double restore_ms = lap();
    // 3. (and the cleanup of 2., deferred)
    std::vector<std::string> destroy = plan.destroyed;
    destroy.insert(destroy.end(), installed_->leftover.begin(), installed_->leftover.end());
    Defer(plan, std::move(destroy), netns, std::move(installed_), std::move(index_));
    to.leftover.clear();  // in `destroy`: the cleanup's busy ones come back through Settle
    installed_ = std::make_unique<Installed>(std::move(to));
    index_ = std::make_unique<DeltaIndex>(std::move(index));
    last_update_ = absl::StrCat(
        "in place, rules: ", plan.chains_written[0], "+", plan.chains_written[1],
        " chains written, ", plan.chains_deleted[0], "+", plan.chains_deleted[1],
        " deleted (IPv4+IPv6), ", plan.created.size(), " sets made, ",
        plan.destroyed.size(), " destroyed",
        installed_->leftover.empty()
            ? ""
            : absl::StrCat(", ", installed_->leftover.size(), " left busy"),
        " (element-only refused: ", why, "); ms: plan ", plan_ms, ", sets ", sets_ms,
        ", restore ", restore_ms, ", the rest ", lap(), cleanup_ != nullptr ? ", cleanup deferred" : "");
    return absl::OkStatus();
  }

  // Update from a delta: the element-only edit planned from the delta alone (PlanFromDelta),
  // with the same safety argument as Update's, in time proportional to the delta and the
  // entries of the sets it changes; the remembered sets are spliced, not rebuilt. A delta
  // with tables, or whose node pod's table chains come or go, takes the rules path planned
  // from the delta (PlanRulesFromDelta, UpdateRulesDelta). Whatever neither can plan goes
  // to Update with the next program built (copy + ApplyDelta), which may still edit in
  // place (it checks the rules word for word) or runs Apply.
  absl::Status UpdateDelta(const ir::CompiledPolicy& previous,
                           const ir::CompiledPolicyDelta& delta,
                           const Attachment& attachment) override {
    Settle();
    delta_call_start_ = std::chrono::steady_clock::now();
    std::string why;
    if (installed_ == nullptr || index_ == nullptr || installed_->netns != attachment.netns) {
      why = "nothing installed by this instance in this namespace";
    } else if (ShapeOf(previous) != index_->shape) {
      why = "`previous` is not what this instance installed";
    }
    const bool indexed = why.empty();
    DeltaPlan plan;
    if (why.empty() && delta.tables().empty()) {
      absl::StatusOr<DeltaPlan> planned = PlanFromDelta(*installed_, *index_, previous, delta);
      if (!planned.ok()) return planned.status();  // malformed: nothing touched
      plan = std::move(*planned);
      why = plan.fallback;
    }
    // A delta that replaces or adds tables (a policy, namespace or tier event; a pod of this
    // node bringing its table or taking the last one away) or whose endpoint's table chains
    // come or go changes rules: the rules path from the delta. So does a pod delta whose
    // element-only edit is refused (a node pod moved between tables or relabelled, a peer
    // set gaining its first pod, ...): the rules path plans it as one switch when it cannot
    // order it (PlanRulesFromDeltaAs). (Peer sets alone, a selector's members, may still be
    // element-only: Update tries that first.)
    const bool pod_delta = !delta.ipv4().empty() || !delta.ipv6().empty() ||
                           !delta.identity_pods().empty() || !delta.endpoints().empty();
    if (indexed && (!delta.tables().empty() || (!why.empty() && pod_delta))) {
      absl::StatusOr<RulesDelta> rules = PlanRulesFromDelta(*installed_, *index_, previous, delta);
      if (!rules.ok()) return rules.status();  // malformed: nothing touched
      if (rules->fallback.empty()) return UpdateRulesDelta(*rules, previous, delta, attachment);
      why = absl::StrCat("rules by delta: ", rules->fallback);
    }
    if (!why.empty()) {
      ir::CompiledPolicy next = previous;
      if (absl::Status s = ApplyDelta(delta, &next); !s.ok()) return s;
      // A delta with tables changes rules, or no element-only edit could follow it anyway:
      // straight to the in-place rules path, without first building the next model for
      // Update's element-only comparison (one model of the next program instead of two).
      if (!delta.tables().empty() && installed_ != nullptr) {
        if (std::optional<absl::Status> full = FullInstead(next, attachment)) {
          last_update_ = absl::StrCat("by Update (", why, "): ", last_update_);
          return *full;
        }
        return UpdateRules(next, attachment, absl::StrCat("by delta: ", why));
      }
      absl::Status s = Update(previous, next, attachment);
      last_update_ = absl::StrCat("by Update (", why, "): ", last_update_);
      return s;
    }
    const size_t adds = plan.adds.size(), dels = plan.dels.size();
    Ruleset sizes = installed_->sizes;
    AddMemberSizes(plan, sizes);
    if (!plan.adds.empty() || !plan.dels.empty() || !plan.dispatch.empty()) {
      // The budgets Apply checks (a peer set of many pods can grow past ipset_entries).
      absl::StatusOr<ir::BackendCapacity> capacity = Measure(sizes);
      if (!capacity.ok()) return capacity.status();
      if (absl::Status s = CheckCapacity(*capacity); !s.ok()) return s;
      std::vector<SetEdit> dispatch;
      for (const DeltaPlan::DispatchEdit& r : plan.dispatch) dispatch.push_back(r.edit);
      absl::Status s = EditMembers(
          plan, !plan.dispatch.empty(), [&] { return EditSets(dispatch, attachment.netns); },
          attachment.netns);
      if (!s.ok()) return FullAfterDelta(previous, delta, attachment, s);
    }
    CommitMembers(plan, previous, delta, /*endpoints=*/true);
    installed_->sizes = sizes;
    last_update_ = absl::StrCat("in place by delta: ", adds, " adds, ", dels, " deletes",
                                plan.dispatch.empty() ? ""
                                : absl::StrCat(", ", plan.dispatch.size(),
                                               plan.dispatch_add ? " dispatch set adds"
                                                                 : " dispatch set deletes"));
    return absl::OkStatus();
  }

  // A pod delta's element edits (adds before deletes) in UpdateDelta's order: with its
  // endpoint's dispatch (`has_dispatch`; `dispatch` makes it: dispatch set edits, and on the
  // rules path the restores that bring or take its table's chains) — on the way in, the
  // dispatch first, an RCU grace period, then the edits; on the way out the reverse. Why this
  // order is safe:
  //  - While its dispatch goes in (one set element per family: both directions at once; or
  //    one restore per family, which switches the family's table in one step), a packet of
  //    it meets its dispatch or none, with its old membership. A flow both programs allow
  //    passes: the other end's chain looks up the old membership, as the old program did, and
  //    its own chains look up the other end (unchanged: PlanFromDelta lets no other address
  //    change) as the new program does. A flow both deny is dropped: the old program had no
  //    dispatch for it, so decided the flow in the other end's chain alone, which still
  //    runs, with the old membership.
  //  - The grace period: no packet that passed NP-FORWARD before its dispatch was in is
  //    still walking the rules (one that then met the new membership in the other end's
  //    chain, without its own chain, could get neither program's verdict).
  //  - With the full dispatch, the membership edit is Update's element-only edit: its own
  //    chains look up the other end, not a changed address; the other end's chain does
  //    one changed lookup, or all one way (PlanFromDelta checks LookupsConflict).
  // On the way out the same with the old and new programs exchanged. Without a membership
  // edit there is one step and no grace period.
  absl::Status EditMembers(DeltaPlan& plan, bool has_dispatch,
                           const std::function<absl::Status()>& dispatch,
                           const std::string& netns) {
    std::vector<SetEdit> edits = std::move(plan.adds);
    edits.insert(edits.end(), plan.dels.begin(), plan.dels.end());
    absl::Status s;
    if (!has_dispatch) return EditSets(edits, netns);
    if (plan.dispatch_add) {
      s = dispatch();
      if (s.ok() && !edits.empty()) s = RcuGracePeriod();
      if (s.ok()) s = EditSets(edits, netns);
    } else {
      s = EditSets(edits, netns);
      if (s.ok() && !edits.empty()) s = RcuGracePeriod();
      if (s.ok()) s = dispatch();
    }
    return s;
  }

  // After a failed in-place edit from a delta (part of it may be in: each step was safe):
  // Apply replaces it all.
  absl::Status FullAfterDelta(const ir::CompiledPolicy& previous,
                              const ir::CompiledPolicyDelta& delta, const Attachment& attachment,
                              const absl::Status& why) {
    installed_.reset();
    index_.reset();
    ir::CompiledPolicy next = previous;
    if (absl::Status a = ApplyDelta(delta, &next); !a.ok()) return a;
    last_update_ = absl::StrCat("full: in-place edit failed: ", why.message());
    return Apply(next, attachment);
  }

  // The set entries a pod delta's element edits add and remove, into `sizes`.
  static void AddMemberSizes(const DeltaPlan& plan, Ruleset& sizes) {
    for (int f = 0; f < kFamilies; ++f) sizes.set_entries[f] += plan.entries_delta[f];
    for (const DeltaPlan::DispatchEdit& r : plan.dispatch) {
      sizes.set_entries[r.family] += plan.dispatch_add ? 1 : -1;
    }
  }

  // Keeps what is remembered in step with a pod delta's element edits, made: the sets'
  // entries spliced, which peer sets name pods, the dispatch sets' entries, each identity's
  // ranges and their count; with `endpoints`, also the moved endpoint's table entries, the
  // dispatched addresses and the endpoint count (else the rules path keeps those).
  void CommitMembers(DeltaPlan& plan, const ir::CompiledPolicy& previous,
                     const ir::CompiledPolicyDelta& delta, bool endpoints) {
    // The identities the delta appends, and the peer sets it rewrites: which identities a
    // rendered one holds (an appended one no rule renders yet).
    DeltaIndex& x = *index_;
    if (!delta.identities().empty()) {
      const size_t identities = x.peer_sets_of.size() + delta.identities_size();
      x.peer_sets_of.resize(identities);
      for (int f = 0; f < kFamilies; ++f) x.ranges_of[f].resize(identities);
      x.shape[2] = static_cast<int>(identities);
    }
    for (const ir::PeerSet* set : plan.rewritten) {
      const uint32_t s = set->id();
      if (s >= x.tables_of.size()) {
        x.tables_of.resize(s + 1);
        x.pod_identities.resize(s + 1, 0);
        for (int f = 0; f < kFamilies; ++f) x.has_set[f].resize(s + 1, false);
        x.shape[4] = static_cast<int>(s + 1);
        continue;
      }
      if (x.tables_of[s].empty() || set->all()) continue;  // (`all` before too: PlanFromDelta)
      for (uint32_t i : previous.peer_sets(static_cast<int>(s)).identities()) {
        std::vector<uint32_t>& list = x.peer_sets_of[i];
        auto it = std::find(list.begin(), list.end(), s);
        if (it != list.end()) list.erase(it);
      }
      for (uint32_t i : set->identities()) x.peer_sets_of[i].push_back(s);
    }
    for (DeltaPlan::Splice& splice : plan.splices) {
      std::vector<std::string>& entries = installed_->sets[splice.set];
      const size_t old_length = splice.end - splice.begin;
      const size_t common = std::min(old_length, splice.with.size());
      for (size_t i = 0; i < common; ++i) entries[splice.begin + i] = std::move(splice.with[i]);
      if (splice.with.size() < old_length) {
        entries.erase(entries.begin() + static_cast<long>(splice.begin + common),
                      entries.begin() + static_cast<long>(splice.end));
      } else {
        entries.insert(entries.begin() + static_cast<long>(splice.end),
                       std::make_move_iterator(splice.with.begin() + static_cast<long>(common)),
                       std::make_move_iterator(splice.with.end()));
      }
    }
    for (const auto& [s, count] : plan.pod_identities) index_->pod_identities[s] = count;
    // The dispatch sets' entries (in address order, as BuildModel makes them) and the
    // dispatched addresses.
    for (const DeltaPlan::DispatchEdit& r : plan.dispatch) {
      std::vector<std::string>& entries = installed_->sets[r.edit.set];
      auto at = EntryAt(entries, r.address);
      if (plan.dispatch_add) {
        entries.insert(at, r.edit.prefix);
      } else if (at != entries.end() && *at == r.edit.prefix) {
        entries.erase(at);
      }
      if (!endpoints) continue;
      std::vector<U128>& dispatched = index_->dispatched[r.family];
      auto address = std::lower_bound(dispatched.begin(), dispatched.end(), r.address);
      if (plan.dispatch_add) {
        dispatched.insert(address, r.address);
      } else if (address != dispatched.end() && *address == r.address) {
        dispatched.erase(address);
      }
    }
    if (endpoints && plan.moved != nullptr && plan.moved->selected()) {
      for (int f = 0; f < kFamilies; ++f) {
        std::vector<std::string>& entries = index_->table_entries[plan.moved->table()][f];
        if (plan.dispatch_add) {
          AddTableEntries(*plan.moved, f, entries);
        } else {
          RemoveTableEntries(*plan.moved, f, entries);
        }
      }
    }
    if (endpoints) index_->shape[3] += plan.endpoints_delta;
    for (int f = 0; f < kFamilies; ++f) {
      const auto& ranges = f == 0 ? previous.ipv4() : previous.ipv6();
      for (const ir::RangeSliceEdit& e : f == 0 ? delta.ipv4() : delta.ipv6()) {
        for (uint32_t i = e.begin(); i < e.end(); ++i) {
          const ir::AddressRange& r = ranges[static_cast<int>(i)];
          index_->ranges_of[f][r.identity()].erase(ToU128(r.first()));
        }
        for (const ir::AddressRange& r : e.ranges()) {
          index_->ranges_of[f][r.identity()][ToU128(r.first())] = ToU128(r.last());
        }
        index_->shape[f] += e.ranges_size() - static_cast<int>(e.end() - e.begin());
      }
    }
  }

  // The rules path from a delta (PlanRulesFromDelta), in UpdateRules' order and with its
  // argument: 1. the new sets made and filled (no rule names them yet); 2. one
  // `iptables-restore --noflush` per family whose chains change (each switches its family
  // in one step: every packet meets the old rules with the old sets or the new rules with the
  // new sets); 3. the sets no rule names any more destroyed. A pod delta's element edits go
  // around step 2 in EditMembers' order (the restore brings or takes its endpoint's table's
  // chains: its dispatch). Any failure: Apply (fail closed).
  absl::Status UpdateRulesDelta(RulesDelta& plan, const ir::CompiledPolicy& previous,
                                const ir::CompiledPolicyDelta& delta,
                                const Attachment& attachment) {
    const std::string& netns = attachment.netns;
    // From the call's start (UpdateDelta): "plan" is the delta's planning and the capacity check.
    const std::chrono::steady_clock::time_point start = delta_call_start_;
    auto ms = [&start] {
      const double d = std::chrono::duration<double, std::milli>(
                           std::chrono::steady_clock::now() - start)
                           .count();
      return static_cast<double>(static_cast<int64_t>(d * 10 + 0.5)) / 10;
    };
    Ruleset sizes = plan.sizes;
    AddMemberSizes(plan.members, sizes);
    {
      absl::StatusOr<ir::BackendCapacity> capacity = Measure(sizes);
      if (!capacity.ok()) return capacity.status();
      if (absl::Status s = CheckCapacity(*capacity); !s.ok()) return s;
    }
    const double plan_ms = ms();
    // 1.
    std::vector<NewSet> made;
    std::vector<SetEdit> fill;
    for (const auto& [name, entries] : plan.created) {
      made.push_back(NewSet{name, FamilyOfSet(name), IsDispatchSet(name),
                            HashSize(entries.size()), MaxElem(entries.size())});
      for (const std::string& e : entries) fill.push_back(SetEdit{true, name, e});
    }
    absl::Status s = CreateSets(made, netns);
    if (s.ok()) s = EditSets(fill, netns);
    if (!s.ok()) {
      (void)DestroySetsInPlace(plan.plan.created, netns);
      return FullAfterDelta(previous, delta, attachment, s);
    }
    const double sets_ms = ms() - plan_ms;
    // 2. (Apply destroys, on failure, every set of another generation than its own.)
    std::vector<SetEdit> dispatch;
    for (const DeltaPlan::DispatchEdit& r : plan.members.dispatch) dispatch.push_back(r.edit);
    const size_t adds = plan.members.adds.size(), dels = plan.members.dels.size();
    double restore_ms = 0;
    double acked_ms[kFamilies] = {0, 0};
    auto switch_rules = [&]() -> absl::Status {
      if (absl::Status e = EditSets(dispatch, netns); !e.ok()) return e;
      const double before = ms();
      const std::array<absl::Status, kFamilies> restored =
          RestoreFamilies(plan.plan.switch_restore, netns, &restorers_, acked_ms);
      restore_ms = ms() - before;
      for (int f = 0; f < kFamilies; ++f) {
        if (!restored[f].ok()) {
          return absl::InternalError(absl::StrCat(RestoreTool(f), ": ", restored[f].message()));
        }
      }
      return absl::OkStatus();
    };
    s = plan.pod && !plan.whole ? EditMembers(plan.members, true, switch_rules, netns)
                                : switch_rules();
    if (!s.ok()) return FullAfterDelta(previous, delta, attachment, s);
    // 3. (and the cleanup of 2., deferred)
    std::vector<std::string> destroy = plan.plan.destroyed;
    destroy.insert(destroy.end(), installed_->leftover.begin(), installed_->leftover.end());
    installed_->leftover.clear();
    Defer(plan.plan, std::move(destroy), netns);
    if (plan.pod) CommitMembers(plan.members, previous, delta, /*endpoints=*/false);
    CommitRules(plan, previous, delta);
    installed_->sizes = sizes;
    last_update_ = absl::StrCat(
        "in place by delta, rules: ", plan.plan.chains_written[0], "+",
        plan.plan.chains_written[1], " chains written, ", plan.plan.chains_deleted[0], "+",
        plan.plan.chains_deleted[1], " deleted (IPv4+IPv6), ", plan.plan.created.size(),
        " sets made, ", plan.plan.destroyed.size(), " destroyed",
        installed_->leftover.empty()
            ? ""
            : absl::StrCat(", ", installed_->leftover.size(), " left busy"),
        !plan.pod    ? ""
        : plan.whole ? absl::StrCat(", the pod edits as new sets (one switch; not ordered: ",
                                    plan.not_ordered, ")")
                     : absl::StrCat(", ", adds, " adds, ", dels, " deletes, ", dispatch.size(),
                                    " dispatch set edits"),
        "; ms: plan ", plan_ms, ", sets ", static_cast<int64_t>(sets_ms * 10 + 0.5) / 10.0,
        ", restore ", restore_ms, " (committed: IPv4 ",
        static_cast<int64_t>(acked_ms[0] * 10 + 0.5) / 10.0, ", IPv6 ",
        static_cast<int64_t>(acked_ms[1] * 10 + 0.5) / 10.0, "), all ", ms(),
        cleanup_ != nullptr ? ", cleanup deferred" : "");
    return absl::OkStatus();
  }

  // Keeps the installed program and the index in step with a rules delta, made.
  void CommitRules(const RulesDelta& plan, const ir::CompiledPolicy& previous,
                   const ir::CompiledPolicyDelta& delta) {
    Installed& in = *installed_;
    DeltaIndex& x = *index_;
    // The chains, and which sets their rules look up (by chain group: table * 2 + direction).
    auto lookups = [&](const std::vector<std::string>& rules, int group, int change) {
      for (const std::string& rule : rules) {
        const std::string name(RuleSet(rule));
        if (name.empty()) continue;
        std::vector<std::pair<int, bool>>& list = x.lookups[name];
        if (change > 0) {
          list.emplace_back(group, Returns(rule));
          continue;
        }
        auto it = std::find(list.begin(), list.end(), std::make_pair(group, Returns(rule)));
        if (it != list.end()) list.erase(it);
        if (list.empty()) x.lookups.erase(name);
      }
    };
    for (int f = 0; f < kFamilies; ++f) {
      for (uint32_t t : plan.tables) {
        for (int d = 0; d < 2; ++d) {
          for (const std::string name : {TableChainName(t, d), TableChainName(t, d) + "-NP"}) {
            auto written = plan.chains[f].find(name);
            if (written == plan.chains[f].end() && plan.deleted[f].count(name) == 0) continue;
            auto old = in.chains[f].find(name);
            const int group = static_cast<int>(t) * 2 + d;
            if (old != in.chains[f].end()) {
              lookups(old->second, group, -1);
              in.chains[f].erase(old);
            }
            if (written != plan.chains[f].end()) {
              lookups(written->second, group, +1);
              in.chains[f][name] = written->second;
            }
          }
        }
      }
      // The dispatch chains (written or gone).
      for (const auto& [name, rules] : plan.chains[f]) {
        if (IsDispatchChain(name)) in.chains[f][name] = rules;
      }
      for (const std::string& name : plan.deleted[f]) {
        if (IsDispatchChain(name)) in.chains[f].erase(name);
      }
    }
    // The sets and their names.
    for (const std::string& name : plan.destroyed) {
      in.sets.erase(name);
      in.maxelem.erase(name);
    }
    for (const auto& [name, entries] : plan.created) {
      in.sets[name] = entries;
      in.maxelem[name] = MaxElem(entries.size());
    }
    in.generation = std::max(in.generation, plan.generation);
    for (int f = 0; f < kFamilies; ++f) {
      if (in.set_name[f].size() < plan.peer_sets_after) in.set_name[f].resize(plan.peer_sets_after);
      for (const auto& [s, name] : plan.set_name[f]) in.set_name[f][s] = name;
      for (const auto& [t, name] : plan.dispatch_name[f]) {
        if (name.empty()) {
          in.dispatch_name[f].erase(t);
        } else {
          in.dispatch_name[f][t] = name;
        }
      }
    }
    // The index: tables' chains, endpoints and dispatched addresses.
    x.chain.resize(plan.tables_after);
    x.table_entries.resize(plan.tables_after);
    auto any = [](const std::array<std::array<bool, kFamilies>, 2>& flags, int f) {
      return flags[0][f] || flags[1][f];
    };
    for (const auto& [t, after] : plan.chain) {
      auto entries = plan.table_entries.find(t);
      for (int f = 0; f < kFamilies; ++f) {
        std::vector<U128>& dispatched = x.dispatched[f];
        auto addresses = [&](const std::vector<std::string>& list, bool add) {
          for (const std::string& e : list) {
            int family;
            U128 first, last;
            if (!PrefixRange(e, family, first, last)) continue;
            auto at = std::lower_bound(dispatched.begin(), dispatched.end(), first);
            if (add && (at == dispatched.end() || *at != first)) dispatched.insert(at, first);
            if (!add && at != dispatched.end() && *at == first) dispatched.erase(at);
          }
        };
        if (any(x.chain[t], f)) addresses(x.table_entries[t][f], false);
        if (entries != plan.table_entries.end()) x.table_entries[t][f] = entries->second[f];
        if (any(after, f)) addresses(x.table_entries[t][f], true);
      }
      x.chain[t] = after;
    }
    x.shape[3] += plan.endpoints_delta;
    x.shape[4] = static_cast<int>(plan.peer_sets_after);
    x.shape[5] = static_cast<int>(plan.tables_after);
    // Peer sets: which tables' rules render them, what they hold, their forms.
    x.tables_of.resize(plan.peer_sets_after);
    x.pod_identities.resize(plan.peer_sets_after, 0);
    for (int f = 0; f < kFamilies; ++f) {
      x.has_set[f].resize(plan.peer_sets_after, false);
      x.sets[f] = plan.sets_after[f];
    }
    std::map<uint32_t, bool> used_before;
    for (uint32_t s : plan.remade) {
      used_before[s] = s < x.tables_of.size() && !x.tables_of[s].empty();
    }
    for (const ir::Table& table : delta.tables()) {
      const uint32_t t = table.id();
      if (t < static_cast<uint32_t>(previous.tables_size())) {
        ForEachRenderedPeerSet(previous.tables(static_cast<int>(t)), [&](uint32_t s) {
          auto it = std::find(x.tables_of[s].begin(), x.tables_of[s].end(), t);
          if (it != x.tables_of[s].end()) x.tables_of[s].erase(it);
        });
      }
      ForEachRenderedPeerSet(table, [&](uint32_t s) { x.tables_of[s].push_back(t); });
    }
    std::map<uint32_t, const ir::PeerSet*> delta_sets;
    for (const ir::PeerSet& set : delta.peer_sets()) delta_sets[set.id()] = &set;
    for (uint32_t s : plan.remade) {
      if (used_before[s] && s < static_cast<uint32_t>(previous.peer_sets_size()) &&
          !previous.peer_sets(static_cast<int>(s)).all()) {
        for (uint32_t i : previous.peer_sets(static_cast<int>(s)).identities()) {
          std::vector<uint32_t>& list = x.peer_sets_of[i];
          auto it = std::find(list.begin(), list.end(), s);
          if (it != list.end()) list.erase(it);
        }
      }
      auto in_delta = delta_sets.find(s);
      const ir::PeerSet& set = in_delta != delta_sets.end()
                                   ? *in_delta->second
                                   : previous.peer_sets(static_cast<int>(s));
      if (!x.tables_of[s].empty() && !set.all()) {
        for (uint32_t i : set.identities()) x.peer_sets_of[i].push_back(s);
      }
      x.pod_identities[s] = plan.pod_identities.at(s);
      for (int f = 0; f < kFamilies; ++f) x.has_set[f][s] = !plan.set_name[f].at(s).empty();
    }
  }

  std::string last_update() const { return last_update_ + settled_; }

  absl::Status Remove(const Attachment& attachment) override {
    Settle();
    // The running restore tools hold the namespace open: nothing of np stays behind.
    for (PersistentRestore& tool : restorers_) tool.Stop();
    installed_.reset();
    index_.reset();
    const std::string& netns = attachment.netns;
    for (int f = 0; f < kFamilies; ++f) {
      absl::StatusOr<SavedTable> t = ReadTable(f, netns);
      if (!t.ok()) return t.status();
      if (t->chains.empty() && !t->hooked) continue;
      std::string text = "*filter\n";
      for (const std::string& c : t->chains) absl::StrAppend(&text, ":", c, " - [0:0]\n");
      if (t->hooked) absl::StrAppend(&text, "-D FORWARD -j ", kTopChain, "\n");
      for (const std::string& c : t->chains) absl::StrAppend(&text, "-X ", c, "\n");
      absl::StrAppend(&text, "COMMIT\n");
      absl::StatusOr<std::string> r =
          Spawn({RestoreTool(f), "--noflush", "--wait=10"}, text, netns);
      if (!r.ok()) return r.status();
    }
    absl::StatusOr<InstalledSets> sets = ReadSets(netns);
    if (!sets.ok()) return sets.status();
    std::vector<std::string> names;
    for (const SetName_& s : sets->ours) names.push_back(s.name);
    return DestroySets(names, netns);
  }

  absl::StatusOr<std::string> Explain(const ir::CompiledPolicy& ir,
                                      const FlowQuery& flow) const override {
    absl::StatusOr<Model> model = BuildModel(ir, 0);
    if (!model.ok()) return model.status();
    absl::StatusOr<FlowAddresses> ends = ParseFlowAddresses(flow);
    if (!ends.ok()) return ends.status();
    const std::string* src = &ends->source;
    const std::string* dst = &ends->destination;
    // Any IP protocol: tier rules without ports match every protocol (ICMP included).
    const ir::Protocol protocol = static_cast<ir::Protocol>(flow.protocol);
    const std::string protocol_text =
        protocol == ir::TCP || protocol == ir::UDP || protocol == ir::SCTP
            ? ProtocolLower(protocol)
            : absl::StrCat("protocol ", flow.protocol);
    const int f = src->size() == 4 ? 0 : 1;
    const Family& fam = model->family[f];
    absl::StatusOr<uint32_t> src_id = IdentityOf(ir, *src);
    if (!src_id.ok()) return src_id.status();
    absl::StatusOr<uint32_t> dst_id = IdentityOf(ir, *dst);
    if (!dst_id.ok()) return dst_id.status();
    const int src_ep = EndpointOf(ir, *src);
    const int dst_ep = EndpointOf(ir, *dst);

    std::string out = absl::StrCat(AddressText(*src), " -> ", AddressText(*dst), " ",
                                   protocol_text, "/", flow.port, " (",
                                   f == 0 ? "iptables" : "ip6tables", ", table filter)\n");
    auto side = [&](int ep, uint32_t id) {
      std::string s = IdentityText(ir, id);
      if (ep >= 0) absl::StrAppend(&s, ", endpoint ", EndpointName(ir, ep), " of this node");
      return s;
    };
    absl::StrAppend(&out, "  source:      ", side(src_ep, *src_id), "\n");
    absl::StrAppend(&out, "  destination: ", side(dst_ep, *dst_id), "\n");
    if (src_ep >= 0 && src_ep == dst_ep) {
      absl::StrAppend(&out,
                      "  a pod's traffic to itself stays in its own network namespace and never "
                      "reaches FORWARD: no rule sees it.\nverdict: ACCEPT\n");
      return out;
    }
    absl::StrAppend(&out, "  FORWARD -j ", kTopChain, "; ", kTopChain,
                    " rule 1: -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT (replies and "
                    "established flows stop here; a new flow continues)\n");

    bool dropped = false;
    bool dispatched = false;
    for (int d : {kEgress, kIngress}) {
      const std::string& me = d == kEgress ? *src : *dst;
      const std::string& peer = d == kEgress ? *dst : *src;
      const uint32_t peer_id = d == kEgress ? *dst_id : *src_id;
      const std::string me_text = AddressText(me);
      const Dispatch* hit = nullptr;
      for (const Dispatch& x : fam.dispatch) {
        if (x.direction == d && x.address == me_text) {
          hit = &x;
          break;
        }
      }
      if (hit == nullptr) continue;
      dispatched = true;
      const Chain& dispatch = fam.chains[hit->chain];
      const ir::Endpoint& ep = ir.endpoints(hit->endpoint);
      const TableChain& tc = model->tables[ep.table()][d][f];
      absl::StrAppend(&out, "  ", d == kEgress ? "egress of " : "ingress of ",
                      EndpointName(ir, hit->endpoint), " (table ", ep.table(), "; policies ",
                      EscapeText(absl::StrJoin(ir.tables(ep.table()).policies(), ", ")), "):\n    ",
                      kTopChain, ": -j ", dispatch.name, "; ", dispatch.name, " rule ",
                      hit->rule + 1, ": ", dispatch.rules[hit->rule], "\n",
                      "      matches: set ",
                      DispatchSetName(0, f, ep.table()), " holds ", me_text,
                      f == 0 ? "/32" : "/128", "\n");
      // The chain's rules as the kernel walks them (a Pass or the end of the admin rules
      // goes on in the stage chain).
      const Chain* chain = &fam.chains[tc.chain];
      bool decided = false;
      for (size_t r = 0; r < chain->rules.size() && !decided; ++r) {
        const RuleSource& source = chain->sources[r];
        const std::string rule =
            absl::StrCat("    ", chain->name, " rule ", r + 1, ": ", chain->rules[r], "\n");
        if (source.kind == RuleSource::kGotoStage) {
          absl::StrAppend(&out, rule, "      no admin rule decides -> the NetworkPolicy stage\n");
          chain = &fam.chains[tc.stage];
          r = static_cast<size_t>(-1);
          continue;
        }
        if (source.kind == RuleSource::kDrop) {
          absl::StrAppend(&out, rule, "      no earlier rule allows ", protocol_text, "/",
                          flow.port, " with ", IdentityText(ir, peer_id), " -> DROP\n");
          dropped = decided = true;
          break;
        }
        const bool tier = source.kind == RuleSource::kTier;
        const ir::Protocol rule_protocol =
            tier ? source.tier_rule->protocol() : source.port_rule->protocol();
        const uint32_t first = tier ? source.tier_rule->first_port() : source.port_rule->first_port();
        const uint32_t last = tier ? source.tier_rule->last_port() : source.port_rule->last_port();
        const uint32_t peer_set = tier ? source.tier_rule->peer_set() : source.port_rule->peer_set();
        if (rule_protocol != ir::PROTOCOL_UNSPECIFIED &&
            (static_cast<int>(rule_protocol) != flow.protocol || flow.port < first ||
             flow.port > last)) {
          continue;
        }
        const ir::PeerSet& peers = ir.peer_sets(peer_set);
        std::string member;
        if (peers.all()) {
          member = "any peer";
        } else {
          if (!std::binary_search(peers.identities().begin(), peers.identities().end(),
                                  peer_id)) {
            continue;
          }
          const std::vector<std::string>& entries = fam.entries[peer_set];
          const int entry = EntryIndex(entries, peer);
          if (source.prefix >= 0 && source.prefix != entry) continue;  // another prefix's rule
          const std::string prefix = entry < 0 ? "?" : entries[entry];
          member = fam.has_set[peer_set]
                       ? absl::StrCat("set ", SetName(0, f, peer_set), " holds ", prefix)
                       : absl::StrCat("the peer is in ", prefix);
          absl::StrAppend(&member, " (", IdentityText(ir, peer_id), ")");
        }
        if (!tier) {
          absl::StrAppend(&out, rule, "      matches: ", member, " -> RETURN (allowed)\n");
          decided = true;
          break;
        }
        const ir::TierRule& t = *source.tier_rule;
        absl::StrAppend(&out, rule, "      matches: ", member, "; ", source.tier, "[",
                        source.index, "] ", EscapeText(t.origin()), " -> ");
        if (t.action() == ir::TIER_PASS && source.tier[0] == 'a') {
          absl::StrAppend(&out, "pass: on to the NetworkPolicy stage\n");
          chain = &fam.chains[tc.stage];
          r = static_cast<size_t>(-1);
          continue;
        }
        decided = true;
        if (t.action() == ir::TIER_DENY) {
          absl::StrAppend(&out, "DROP (denied)\n");
          dropped = true;
        } else {
          absl::StrAppend(&out, t.action() == ir::TIER_PASS
                                    ? "RETURN (pass: on to the default, allowed)\n"
                                    : "RETURN (allowed)\n");
        }
      }
      if (dropped) break;
      if (!decided) {
        absl::StrAppend(&out, "    end of ", chain->name, ": no rule decides ", protocol_text,
                        "/", flow.port, " with ", IdentityText(ir, peer_id),
                        " -> RETURN (allowed by default)\n");
      }
    }
    if (!dispatched) {
      absl::StrAppend(&out, "  no endpoint of this node with a restricted direction is on "
                            "either side: no NP rule applies\n");
    }
    if (!dropped) {
      absl::StrAppend(&out, "  end of ", kTopChain,
                      ": RETURN to FORWARD (np allows; FORWARD's own rules and policy "
                      "follow)\nverdict: ACCEPT\n");
    } else {
      absl::StrAppend(&out, "verdict: DROP\n");
    }
    absl::StrAppend(&out, "  (set names as Render writes them, generation 0; Apply uses the "
                          "next free generation np-g<N>-...)\n");
    return out;
  }

 private:
  absl::StatusOr<ir::BackendCapacity> Measure(const Ruleset& r) const {
    ir::BackendCapacity report = RulesetCapacity(r);
    if (absl::Status s = FinishCapacity(report, options_); !s.ok()) return s;
    return report;
  }

  // The cleanup an in-place rules update leaves behind (RulesPlan::cleanup, then the sets
  // no rule names any more), run on a thread of its own so that the event's path ends with
  // the switch: its deletes wait out an RCU grace period (~14 ms per family). The kernel
  // holds the new program's verdicts throughout (ChainRewrite); every call that touches the
  // kernel waits for it first (Settle), so no two of this instance's restores overlap.
  struct Cleanup {
    std::string texts[kFamilies];
    std::vector<std::string> destroy;
    std::string netns;
    absl::Status status;               // set by the thread
    std::vector<std::string> leftover;  // sets still busy, set by the thread
    double restore_ms = 0, destroy_ms = 0;  // set by the thread (IptablesLastUpdate shows them)
    // What a whole-model update replaced, freed by the thread: at 1,000 tables its maps of
    // chains and sets took ~7 % of UpdateRules' samples to free on the event's path (h86).
    std::unique_ptr<Installed> old_installed;
    std::unique_ptr<DeltaIndex> old_index;
    std::thread thread;
  };

  // Starts the cleanup of a rules update whose switch went in (nothing to do: no thread).
  // `old_installed` and `old_index` (may be null) are freed on the thread, or here when there
  // is none.
  void Defer(const RulesPlan& plan, std::vector<std::string> destroy, const std::string& netns,
             std::unique_ptr<Installed> old_installed = nullptr,
             std::unique_ptr<DeltaIndex> old_index = nullptr) {
    if (plan.cleanup[0].empty() && plan.cleanup[1].empty() && destroy.empty()) return;
    cleanup_ = std::make_unique<Cleanup>();
    Cleanup* c = cleanup_.get();
    c->old_installed = std::move(old_installed);
    c->old_index = std::move(old_index);
    for (int f = 0; f < kFamilies; ++f) c->texts[f] = plan.cleanup[f];
    c->destroy = std::move(destroy);
    c->netns = netns;
    c->thread = std::thread([c, tools = &restorers_] {
      const auto start = std::chrono::steady_clock::now();
      auto ms_since = [](std::chrono::steady_clock::time_point t) {
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t)
            .count();
      };
      const std::array<absl::Status, kFamilies> done = RestoreFamilies(c->texts, c->netns, tools);
      c->restore_ms = ms_since(start);
      for (int f = 0; f < kFamilies; ++f) {
        if (!done[f].ok() && c->status.ok()) {
          c->status = absl::InternalError(absl::StrCat(
              "iptables: the deferred cleanup (", RestoreTool(f), ") failed: ",
              done[f].message()));
        }
      }
      // The old rules still name the old sets when the cleanup failed: Apply destroys them.
      if (c->status.ok()) c->leftover = DestroySetsInPlace(std::move(c->destroy), c->netns);
      c->destroy_ms = ms_since(start) - c->restore_ms;
      c->old_installed.reset();
      c->old_index.reset();
    });
  }

 public:
  ~IptablesBackend() override { Settle(); }

  // Waits for the deferred cleanup, if any. When it failed, what is installed is forgotten:
  // the next update is Apply, which reads the kernel and replaces every NP chain (the inert
  // and pending ones too). The kernel enforced the new program either way.
  void Settle() {
    settled_.clear();
    if (cleanup_ == nullptr) return;
    const auto start = std::chrono::steady_clock::now();
    cleanup_->thread.join();
    auto round = [](double ms) { return static_cast<double>(static_cast<int64_t>(ms * 10 + 0.5)) / 10; };
    settled_ = absl::StrCat(
        "; waited ", round(std::chrono::duration<double, std::milli>(
                                 std::chrono::steady_clock::now() - start)
                                 .count()),
        " ms for the last cleanup (restore ", round(cleanup_->restore_ms), ", destroy ",
        round(cleanup_->destroy_ms), ")");
    if (!cleanup_->status.ok()) {
      installed_.reset();
      index_.reset();
      last_update_ = absl::StrCat(last_update_, "; ", cleanup_->status.message());
    } else if (installed_ != nullptr) {
      installed_->leftover.insert(installed_->leftover.end(), cleanup_->leftover.begin(),
                                  cleanup_->leftover.end());
    }
    cleanup_.reset();
  }

 private:
  std::unique_ptr<Cleanup> cleanup_;
  // The running restore tools of the rules path (its switches and cleanups; Apply spawns).
  // Used by one thread at a time: the cleanup's, which every call joins first (Settle).
  Restorers restorers_;
  std::string settled_;  // how the last Settle went, for last_update()
  // When the running UpdateDelta started (after Settle): its timings in last_update().
  std::chrono::steady_clock::time_point delta_call_start_;
  BackendOptions options_;
  std::unique_ptr<Installed> installed_;  // null: unknown, Apply reads the kernel
  std::unique_ptr<DeltaIndex> index_;     // with installed_: what UpdateDelta plans from
  std::string last_update_;
};

}  // namespace

std::string SetName(uint32_t generation, int family, uint32_t peer_set) {
  return absl::StrCat(kSetPrefix, generation, family == 0 ? "-v4-p" : "-v6-p", peer_set);
}

std::string DispatchSetName(uint32_t generation, int family, uint32_t table) {
  return absl::StrCat(kSetPrefix, generation, family == 0 ? "-v4-t" : "-v6-t", table);
}

namespace {
// For the planners below: `previous` as Apply installs it with `generation`, and `next` as
// Update models it against that (its sets named by Naming, new names with generation + 1).
struct Step {
  Installed from;
  Model next;  // (its set entries moved into `to`)
  Installed to;
};
absl::StatusOr<std::unique_ptr<Step>> StepOf(const ir::CompiledPolicy& previous,
                                             const ir::CompiledPolicy& next,
                                             uint32_t generation, bool keep_changed) {
  absl::StatusOr<Model> from = BuildModel(previous, generation);
  if (!from.ok()) return from.status();
  auto step = std::make_unique<Step>();
  step->from = InstalledOf(*from, "");
  absl::StatusOr<Model> to = BuildModel(next, generation + 1, Naming{&step->from, keep_changed});
  if (!to.ok()) return to.status();
  step->next = *std::move(to);
  step->to = InstalledOf(step->next, "", &step->from);
  return step;
}
}  // namespace

absl::StatusOr<UpdatePlan> PlanUpdate(const ir::CompiledPolicy& previous,
                                      const ir::CompiledPolicy& next, uint32_t generation) {
  absl::StatusOr<std::unique_ptr<Step>> step = StepOf(previous, next, generation, true);
  if (!step.ok()) return step.status();
  return PlanFrom((*step)->from, (*step)->next, (*step)->to);
}

// A new set as `ipset restore` reads it: "create ..." and its "add ..." lines.
void AppendCreated(const std::string& name, const std::vector<std::string>& entries,
                   size_t maxelem, std::string& out) {
  absl::StrAppend(&out, "create ", name, IsDispatchSet(name) ? " hash:ip" : " hash:net",
                  " family ", FamilyOfSet(name) == 0 ? "inet" : "inet6", " hashsize ",
                  HashSize(entries.size()), " maxelem ", maxelem, "\n");
  for (const std::string& e : entries) absl::StrAppend(&out, "add ", name, " ", e, "\n");
}

absl::StatusOr<RulesPlan> PlanRulesUpdate(const ir::CompiledPolicy& previous,
                                          const ir::CompiledPolicy& next, uint32_t generation) {
  absl::StatusOr<std::unique_ptr<Step>> step = StepOf(previous, next, generation, false);
  if (!step.ok()) return step.status();
  const Installed& to_installed = (*step)->to;
  RulesPlan plan = PlanRulesFrom((*step)->from, to_installed);
  for (const std::string& name : plan.created) {
    AppendCreated(name, to_installed.sets.at(name), to_installed.maxelem.at(name), plan.ipset);
  }
  return plan;
}

// A pod delta's element edits as UpdatePlan shows them.
UpdatePlan MembersPlan(const DeltaPlan& plan) {
  UpdatePlan out;
  out.fallback = plan.fallback;
  if (!out.fallback.empty()) return out;
  for (const SetEdit& e : plan.adds) {
    absl::StrAppend(&out.ipset, "add ", e.set, " ", e.prefix, "\n");
  }
  for (const SetEdit& e : plan.dels) {
    absl::StrAppend(&out.ipset, "del ", e.set, " ", e.prefix, "\n");
  }
  out.adds = static_cast<int>(plan.adds.size());
  out.dels = static_cast<int>(plan.dels.size());
  for (const DeltaPlan::DispatchEdit& r : plan.dispatch) {
    absl::StrAppend(&out.dispatch, r.edit.add ? "add " : "del ", r.edit.set, " ", r.edit.prefix,
                    "\n");
  }
  out.dispatch_first = plan.dispatch_add;
  return out;
}

// `previous` as Apply installs it with `generation`: the installed program and the index.
struct InstalledStep {
  Installed installed;
  DeltaIndex index;
};
absl::StatusOr<std::unique_ptr<InstalledStep>> InstalledStepOf(const ir::CompiledPolicy& previous,
                                                               uint32_t generation) {
  absl::StatusOr<Model> from = BuildModel(previous, generation);
  if (!from.ok()) return from.status();
  auto step = std::make_unique<InstalledStep>();
  step->index = IndexOf(previous, *from);
  step->installed = InstalledOf(*from, "");
  return step;
}

absl::StatusOr<UpdatePlan> PlanUpdateDelta(const ir::CompiledPolicy& previous,
                                           const ir::CompiledPolicyDelta& delta,
                                           uint32_t generation) {
  absl::StatusOr<std::unique_ptr<InstalledStep>> from = InstalledStepOf(previous, generation);
  if (!from.ok()) return from.status();
  absl::StatusOr<DeltaPlan> plan =
      PlanFromDelta((*from)->installed, (*from)->index, previous, delta);
  if (!plan.ok()) return plan.status();
  return MembersPlan(*plan);
}

absl::StatusOr<DeltaRulesPlan> PlanRulesUpdateDelta(const ir::CompiledPolicy& previous,
                                                    const ir::CompiledPolicyDelta& delta,
                                                    uint32_t generation) {
  absl::StatusOr<std::unique_ptr<InstalledStep>> from = InstalledStepOf(previous, generation);
  if (!from.ok()) return from.status();
  absl::StatusOr<RulesDelta> plan =
      PlanRulesFromDelta((*from)->installed, (*from)->index, previous, delta);
  if (!plan.ok()) return plan.status();
  DeltaRulesPlan out;
  out.fallback = plan->fallback;
  if (!out.fallback.empty()) return out;
  out.rules = plan->plan;
  for (const auto& [name, entries] : plan->created) {
    AppendCreated(name, entries, MaxElem(entries.size()), out.rules.ipset);
  }
  out.pod = plan->pod;
  out.whole = plan->whole;
  if (out.pod) out.members = MembersPlan(plan->members);
  return out;
}

absl::StatusOr<Ruleset> RenderRuleset(const ir::CompiledPolicy& ir,
                                      const RenderOptions& options) {
  absl::StatusOr<Model> model = BuildModel(ir, options.generation);
  if (!model.ok()) return model.status();
  return RenderModel(*model, options);
}

}  // namespace iptables

std::unique_ptr<Backend> MakeIptablesBackend(const BackendOptions& options) {
  return std::make_unique<iptables::IptablesBackend>(options);
}

int64_t IptablesProcessesSpawned() {
  return iptables::spawned.load(std::memory_order_relaxed);
}

void IptablesSettle(Backend& backend) {
  if (auto* b = dynamic_cast<iptables::IptablesBackend*>(&backend)) b->Settle();
}

std::string IptablesLastUpdate(const Backend& backend) {
  const auto* b = dynamic_cast<const iptables::IptablesBackend*>(&backend);
  return b == nullptr ? std::string() : b->last_update();
}

}  // namespace np::backends

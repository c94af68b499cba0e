#include "np/backends/nft/nft.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <thread>
#include <type_traits>
#include <cctype>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "np/backends/util.h"

namespace np::backends {
namespace nft {
namespace {

// The identity half of the mark (bits 16-31) holds an identity (< kMaxIdentities) or one of:
constexpr uint32_t kMissIdentity = 0xffff;   // the lookup found no element (fail closed)
constexpr uint32_t kOtherIdentity = 0xfffe;  // identities no rule names

enum Dir { kIngress = 0, kEgress = 1 };
const char* DirName(int d) { return d == kIngress ? "ingress" : "egress"; }

std::string ChainOf(uint32_t table, int d) { return absl::StrCat("t", table, "_", DirName(d)); }
std::string IdentityChain(uint32_t identity, bool referenced) {
  return referenced ? absl::StrCat("id_", identity) : "id_other";
}

// [first, last] as one address, one prefix, or a range.
std::string RangeText(const std::string& first, const std::string& last) {
  if (first == last) return AddressText(first);
  const int bits = static_cast<int>(first.size()) * 8;
  // The longest run of trailing bits where first has 0 and last has 1.
  int host = 0;
  while (host < bits) {
    int byte = static_cast<int>(first.size()) - 1 - host / 8;
    int bit = host % 8;
    bool f = (static_cast<uint8_t>(first[byte]) >> bit) & 1;
    bool l = (static_cast<uint8_t>(last[byte]) >> bit) & 1;
    if (f || !l) break;
    ++host;
  }
  // A prefix when every higher bit agrees.
  bool prefix = true;
  for (int b = host; b < bits && prefix; ++b) {
    int byte = static_cast<int>(first.size()) - 1 - b / 8;
    int bit = b % 8;
    if (((static_cast<uint8_t>(first[byte]) >> bit) & 1) !=
        ((static_cast<uint8_t>(last[byte]) >> bit) & 1)) {
      prefix = false;
    }
  }
  if (prefix) return absl::StrCat(AddressText(first), "/", bits - host);
  return absl::StrCat(AddressText(first), "-", AddressText(last));
}

// The protocol and port match of a rule; empty for PROTOCOL_UNSPECIFIED (every IP protocol,
// ICMP included: a tier rule without ports).
std::string PortMatch(ir::Protocol protocol, uint32_t first_port, uint32_t last_port) {
  if (protocol == ir::PROTOCOL_UNSPECIFIED) return "";
  std::string out = absl::StrCat("meta l4proto ", ProtocolLower(protocol));
  if (first_port == 0 && last_port == 65535) return out;
  if (first_port == last_port) return absl::StrCat(out, " th dport ", first_port);
  return absl::StrCat(out, " th dport ", first_port, "-", last_port);
}

struct MergedRange {
  std::string first, last;  // bytes
  uint32_t identity;        // of the first range (all share the target)
  std::string target;       // chain
  std::string text;         // the map element
};

struct MarkInterval {
  uint32_t first_identity, last_identity;
  std::string text;
};

// What Build and Explain share: which tables, peer sets and identities the program uses.
struct Layout {
  std::set<std::pair<uint32_t, int>> chains;  // (table, direction) that get a chain
  std::set<uint32_t> peer_sets;               // referenced by a rule of such a chain
  std::set<uint32_t> identities;              // members of those peer sets
  std::vector<MergedRange> ranges[2];         // identity4, identity6
  std::map<uint32_t, std::vector<MarkInterval>> marks;  // per peer set
  // A peer set of more than kMaxInlineMarkRuns mark intervals is a named set (peers_<n>);
  // the others are written into the rules.
  bool NamedSet(uint32_t peer_set) const { return marks.at(peer_set).size() > kMaxInlineMarkRuns; }
};

const ir::DirectionPolicy& DirectionOf(const ir::Table& t, int d) {
  return d == kIngress ? t.ingress() : t.egress();
}

bool Usable(const ir::PeerSet& s) { return s.all() || s.identities_size() > 0; }

// The mark holds identities 0..65533; 0xfffe and 0xffff are taken (kOtherIdentity,
// kMissIdentity).
constexpr uint64_t kMaxIdentities = 65534;

// Calls fn(peer set index) for every rule of a direction that its chains render: the admin
// rules, then NetworkPolicy's when isolated, else the baseline rules (which an isolated
// direction never reaches).
template <typename Fn>
void ForEachRenderedPeerSet(const ir::DirectionPolicy& policy, Fn fn) {
  for (const ir::TierRule& rule : policy.admin()) fn(rule.peer_set());
  if (policy.isolated()) {
    for (const ir::PortRule& rule : policy.rules()) fn(rule.peer_set());
  } else {
    for (const ir::TierRule& rule : policy.baseline()) fn(rule.peer_set());
  }
}

absl::Status CheckIdentities(const ir::CompiledPolicy& ir) {
  if (static_cast<uint64_t>(ir.identities_size()) <= kMaxIdentities) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "the nft backend supports at most 65534 identities; this IR has ", ir.identities_size()));
}

// A peer set's identities as mark intervals (consecutive identities merged).
std::vector<MarkInterval> MarksOf(const ir::PeerSet& set) {
  std::vector<MarkInterval> out;
  for (uint32_t identity : set.identities()) {
    if (!out.empty() && out.back().last_identity + 1 == identity) {
      out.back().last_identity = identity;
    } else {
      out.push_back(MarkInterval{identity, identity, ""});
    }
  }
  for (MarkInterval& m : out) {
    m.text = absl::StrFormat("0x%08x-0x%08x", m.first_identity << 16,
                             (m.last_identity << 16) | 0xffff);
  }
  return out;
}

// Finds a peer set by id: the IR's, or (UpdateDelta) a delta's over the IR's.
using PeerSetOf = std::function<const ir::PeerSet&(uint32_t)>;
PeerSetOf IrPeerSets(const ir::CompiledPolicy& ir) {
  return [&ir](uint32_t id) -> const ir::PeerSet& { return ir.peer_sets(id); };
}

// The layout of a well-formed IR (CheckIr); the identity limit is the caller's to check
// (Capacity reports it as an item, Build refuses).
absl::StatusOr<Layout> MakeLayout(const ir::CompiledPolicy& ir) {
  if (absl::Status s = CheckIr(ir); !s.ok()) return s;
  Layout layout;
  for (const ir::Endpoint& e : ir.endpoints()) {
    if (!e.selected()) continue;
    const ir::Table& t = ir.tables(e.table());
    for (int d : {kIngress, kEgress}) {
      if (Restricted(DirectionOf(t, d))) layout.chains.insert({e.table(), d});
    }
  }
  for (const auto& [table, d] : layout.chains) {
    ForEachRenderedPeerSet(DirectionOf(ir.tables(table), d), [&](uint32_t peer_set) {
      const ir::PeerSet& set = ir.peer_sets(peer_set);
      if (set.all() || set.identities_size() == 0) return;
      layout.peer_sets.insert(set.id());
      for (uint32_t id : set.identities()) layout.identities.insert(id);
    });
  }
  for (int f = 0; f < 2; ++f) {
    const auto& ranges = f == 0 ? ir.ipv4() : ir.ipv6();
    std::vector<MergedRange>& merged = layout.ranges[f];
    for (const ir::AddressRange& r : ranges) {
      bool referenced = layout.identities.count(r.identity()) > 0;
      std::string target = IdentityChain(r.identity(), referenced);
      if (!merged.empty() && merged.back().target == target) {
        merged.back().last = r.last();
      } else {
        merged.push_back(MergedRange{r.first(), r.last(), r.identity(), target, ""});
      }
    }
    for (MergedRange& m : merged) {
      m.text = absl::StrCat(RangeText(m.first, m.last), " : jump ", m.target);
    }
  }
  for (uint32_t id : layout.peer_sets) layout.marks[id] = MarksOf(ir.peer_sets(id));
  return layout;
}

std::string IdentityComment(const ir::Identity& identity) {
  std::string text;
  if (identity.pods_size() > 0) {
    text = absl::StrJoin(identity.pods().begin(),
                         identity.pods().begin() + std::min(identity.pods_size(), 4), ",");
    if (identity.pods_size() > 4) absl::StrAppend(&text, ",+", identity.pods_size() - 4);
  }
  if (identity.external()) absl::StrAppend(&text, text.empty() ? "" : " ", "(external)");
  return text;
}

// Where a rule of a table chain comes from: Explain walks the rules the kernel walks.
struct RuleSource {
  enum Kind { kLookup, kMissDrop, kTier, kPolicy, kGotoStage, kDrop };
  Kind kind = kLookup;
  const char* tier = "";                   // kTier: "admin" or "baseline"
  const ir::TierRule* tier_rule = nullptr;  // kTier
  const ir::PortRule* port_rule = nullptr;  // kPolicy
  int index = -1;     // kTier, kPolicy: the rule's position in its IR list
  int mark_run = -1;  // kTier, kPolicy: the mark interval written into the rule; -1 when the
                      // rule matches any peer or names a set
};

struct PlannedChain {
  Chain chain;
  std::vector<RuleSource> sources;  // one per rule of `chain`
  void Add(std::string rule, RuleSource source) {
    chain.rules.push_back(std::move(rule));
    sources.push_back(source);
  }
};

// A tier chain's first rule: drop a peer the lookup missed (PlanDirection says why).
std::string MissDrop() {
  return absl::StrFormat("meta mark 0x%08x-0xffffffff drop", kMissIdentity << 16);
}

// The NetworkPolicy stage of a direction whose admin rules can Pass (TIER_PASS: `goto`).
std::string StageChainOf(uint32_t table, int d) { return ChainOf(table, d) + "_np"; }

// The non-empty parts, joined by spaces.
std::string Joined(std::initializer_list<absl::string_view> parts) {
  std::string out;
  for (absl::string_view part : parts) {
    if (part.empty()) continue;
    absl::StrAppend(&out, out.empty() ? "" : " ", part);
  }
  return out;
}

// The peer matches of a rule: one empty match when any peer will do, one naming the set when
// the peers are a named set, else one per mark interval. None for an empty peer set (such a
// rule matches nothing and is left out).
std::vector<std::string> PeerMatches(const ir::PeerSet& set, const Layout& layout) {
  if (set.all()) return {""};
  if (set.identities_size() == 0) return {};
  if (layout.NamedSet(set.id())) return {absl::StrCat("meta mark @peers_", set.id())};
  std::vector<std::string> out;
  for (const MarkInterval& m : layout.marks.at(set.id())) {
    out.push_back(absl::StrCat("meta mark ", m.text));
  }
  return out;
}

// The chains of a restricted (table, direction), in the order of proto/compiled.proto's
// "Policy tiers":
//   [reset the peer identity to "miss", look it up; with tier rules: drop on a miss]
//   admin rules in order: Allow `return` (this side allows), Deny `drop`, Pass `goto` the
//     NetworkPolicy stage
//   the NetworkPolicy stage — in `t<n>_<dir>_np` when an admin rule can Pass, else here:
//     isolated: NetworkPolicy's rules `return`, then `drop`;
//     not isolated: the baseline rules (Allow and Pass `return`, Deny `drop`), then the
//     chain's end (return: allowed).
// Why the miss drop: a peer that the lookup missed (a transient of the kernel's interval
// sets, see BuildProgram) matches no peer set, so it would slip past a Deny and reach an
// Allow of every peer or the default allow further down. Without tier rules the final
// `drop` catches it already.
// `t` and its peer sets (`peer_set_of`) are the IR's, or a policy delta's over the IR's.
std::vector<PlannedChain> PlanDirection(const ir::Table& t, const PeerSetOf& peer_set_of,
                                        const Layout& layout, int d) {
  const uint32_t table = t.id();
  const ir::DirectionPolicy& policy = DirectionOf(t, d);
  const std::string policies = absl::StrCat("policies: ", absl::StrJoin(t.policies(), ","));
  bool lookup = false;
  ForEachRenderedPeerSet(policy, [&](uint32_t peer_set) {
    const ir::PeerSet& set = peer_set_of(peer_set);
    if (!set.all() && set.identities_size() > 0) lookup = true;
  });
  bool admin_pass = false;
  for (const ir::TierRule& rule : policy.admin()) {
    if (rule.action() == ir::TIER_PASS && Usable(peer_set_of(rule.peer_set()))) {
      admin_pass = true;
    }
  }
  const bool tiers = policy.admin_size() > 0 || (!policy.isolated() && policy.baseline_size() > 0);
  const std::string stage = StageChainOf(table, d);

  std::vector<PlannedChain> out(1);
  out[0].chain.name = ChainOf(table, d);
  out[0].chain.comment = policies;
  // The peer's identity is in the mark already: the forward chain looked it up (see
  // BuildProgram) before dispatching here. With tier rules, a miss is dropped first.
  if (lookup && tiers) {
    RuleSource miss;
    miss.kind = RuleSource::kMissDrop;
    out[0].Add(MissDrop(), miss);
  }
  auto add_tier_rules = [&](PlannedChain& into, const char* tier,
                            const google::protobuf::RepeatedPtrField<ir::TierRule>& rules) {
    for (int i = 0; i < rules.size(); ++i) {
      const ir::TierRule& rule = rules[i];
      const ir::PeerSet& set = peer_set_of(rule.peer_set());
      const std::string verdict = rule.action() == ir::TIER_DENY ? "drop"
                                  : rule.action() == ir::TIER_PASS && tier[0] == 'a'
                                      ? absl::StrCat("goto ", stage)
                                      : "return";
      const std::string comment = absl::StrCat(
          "comment \"",
          CommentText(absl::StrCat(tier, "[", i, "] ", rule.origin()), kNftCommentMax), "\"");
      const std::string ports = PortMatch(rule.protocol(), rule.first_port(), rule.last_port());
      const std::vector<std::string> peers = PeerMatches(set, layout);
      const bool inline_runs = !set.all() && peers.size() > 0 && !layout.NamedSet(set.id());
      for (size_t m = 0; m < peers.size(); ++m) {
        RuleSource source;
        source.kind = RuleSource::kTier;
        source.tier = tier;
        source.tier_rule = &rule;
        source.index = i;
        source.mark_run = inline_runs ? static_cast<int>(m) : -1;
        into.Add(Joined({ports, peers[m], verdict, comment}), source);
      }
    }
  };
  add_tier_rules(out[0], "admin", policy.admin());
  if (admin_pass) {
    RuleSource go;
    go.kind = RuleSource::kGotoStage;
    out[0].Add(absl::StrCat("goto ", stage), go);
    out.emplace_back();
    out[1].chain.name = stage;
    out[1].chain.comment = absl::StrCat("NetworkPolicy stage (after an admin Pass), ", policies);
  }
  PlannedChain& np_stage = out.back();
  if (!policy.isolated()) {
    add_tier_rules(np_stage, "baseline", policy.baseline());
    return out;
  }
  for (int i = 0; i < policy.rules_size(); ++i) {
    const ir::PortRule& rule = policy.rules(i);
    const ir::PeerSet& set = peer_set_of(rule.peer_set());
    const std::string ports = PortMatch(rule.protocol(), rule.first_port(), rule.last_port());
    const std::vector<std::string> peers = PeerMatches(set, layout);
    const bool inline_runs = !set.all() && peers.size() > 0 && !layout.NamedSet(set.id());
    for (size_t m = 0; m < peers.size(); ++m) {
      RuleSource source;
      source.kind = RuleSource::kPolicy;
      source.port_rule = &rule;
      source.index = i;
      source.mark_run = inline_runs ? static_cast<int>(m) : -1;
      np_stage.Add(Joined({ports, peers[m], "return"}), source);
    }
  }
  RuleSource drop;
  drop.kind = RuleSource::kDrop;
  np_stage.Add("drop", drop);
  return out;
}

}  // namespace

size_t Program::rule_count() const {
  size_t n = 0;
  for (const Chain& c : chains) n += c.rules.size();
  return n;
}

size_t Program::element_count() const {
  size_t n = 0;
  for (const Set& s : sets) n += s.elements.size();
  return n;
}

namespace {

// The declarations BuildProgram writes (UpdateDelta writes the same ones for the objects a
// delta touches, so that they compare equal to the installed program's).
Set IdentityMapDecl(int f) {
  Set s;
  s.name = f == 0 ? "identity4" : "identity6";
  s.type = f == 0 ? "ipv4_addr : verdict" : "ipv6_addr : verdict";
  s.map = true;
  s.interval = true;
  s.comment = "address -> identity (every address of the family)";
  return s;
}
Set DispatchMapDecl(int d, int f) {
  Set s;
  s.name = absl::StrCat(DirName(d), f == 0 ? "4" : "6");
  s.type = f == 0 ? "ipv4_addr : verdict" : "ipv6_addr : verdict";
  s.map = true;
  s.comment = absl::StrCat("endpoints restricted for ", DirName(d), " -> their table");
  return s;
}
Set PeerSetDecl(uint32_t id, const std::vector<MarkInterval>& marks) {
  Set s;
  s.name = absl::StrCat("peers_", id);
  s.type = "mark";
  s.interval = true;
  s.comment = absl::StrCat("peer set ", id, ": identities << 16");
  for (const MarkInterval& m : marks) s.elements.push_back(m.text);
  return s;
}
// An identity chain's one rule: identity `id` (or kOtherIdentity) into the mark's high half.
std::string MarkRule(uint32_t id) {
  return absl::StrFormat("meta mark set meta mark and 0x0000ffff or 0x%08x", id << 16);
}
Chain IdentityChainDecl(const ir::Identity& identity, uint32_t id) {
  Chain c;
  c.name = absl::StrCat("id_", id);
  c.comment = IdentityComment(identity);
  c.rules.push_back(MarkRule(id));
  return c;
}
Chain IdentityChainDecl(const ir::CompiledPolicy& ir, uint32_t id) {
  return IdentityChainDecl(ir.identities(static_cast<int>(id)), id);
}

Program BuildProgram(const ir::CompiledPolicy& ir, const Layout* layout) {
  Program program;
  for (int f = 0; f < 2; ++f) {
    Set s = IdentityMapDecl(f);
    for (const MergedRange& m : layout->ranges[f]) s.elements.push_back(m.text);
    program.sets.push_back(std::move(s));
  }
  for (uint32_t id : layout->peer_sets) {
    if (layout->NamedSet(id)) program.sets.push_back(PeerSetDecl(id, layout->marks.at(id)));
  }
  for (int d : {kEgress, kIngress}) {
    for (int f = 0; f < 2; ++f) {
      Set s = DispatchMapDecl(d, f);
      for (const ir::Endpoint& e : ir.endpoints()) {
        if (!e.selected() || layout->chains.count({e.table(), d}) == 0) continue;
        for (const std::string& ip : e.ips()) {
          absl::StatusOr<std::string> bytes = AddressBytes(ip);  // checked by CheckIr
          if ((bytes->size() == 4) != (f == 0)) continue;
          s.elements.push_back(
              absl::StrCat(AddressText(*bytes), " : jump ", ChainOf(e.table(), d)));
        }
      }
      program.sets.push_back(std::move(s));
    }
  }
  {
    Chain c;
    c.name = "id_other";
    c.comment = "identities no rule names";
    c.rules.push_back(MarkRule(kOtherIdentity));
    program.chains.push_back(std::move(c));
  }
  for (uint32_t id : layout->identities) program.chains.push_back(IdentityChainDecl(ir, id));
  for (const auto& [table, d] : layout->chains) {
    for (PlannedChain& planned : PlanDirection(ir.tables(table), IrPeerSets(ir), *layout, d)) {
      program.chains.push_back(std::move(planned.chain));
    }
  }
  {
    Chain c;
    c.name = "forward";
    c.hook = "type filter hook forward priority filter; policy accept;";
    c.comment = ir.node().empty() ? "NetworkPolicy" : absl::StrCat("NetworkPolicy, node ", ir.node());
    // The peer lookups live here, once per side, rather than in each table chain: a commit
    // that adds a `jump` element makes the kernel check the table for loops by walking every
    // chain from the base chain, a vmap's every element each time a chain that applies it is
    // reached (nf_tables_validate) — with the lookups in the table chains that was
    // (table chains x identity elements), 0.3 s at 1,000 endpoints, on every pod event.
    // Fail closed: the peer's identity starts as "miss", which no peer set holds, so a
    // lookup that finds nothing denies (the unset mark would read as identity 0). Such misses
    // happen: the kernel makes a new ruleset's chains live before it installs a new interval
    // set's lookup structure, and CI's update test once saw a both-denied IPv6 flow connect
    // in that window.
    const std::string miss =
        absl::StrFormat("meta mark set meta mark and 0x0000ffff or 0x%08x", kMissIdentity << 16);
    c.rules = {"ct state established,related accept",
               miss,
               "ip daddr vmap @identity4",
               "ip6 daddr vmap @identity6",
               "ip saddr vmap @egress4",
               "ip6 saddr vmap @egress6",
               miss,
               "ip saddr vmap @identity4",
               "ip6 saddr vmap @identity6",
               "ip daddr vmap @ingress4",
               "ip6 daddr vmap @ingress6"};
    program.chains.push_back(std::move(c));
  }
  return program;
}

// Where the limits and budgets come from (bench/RESULTS.md has the measurements).
constexpr uint64_t kRuleBudget = 150000;
constexpr uint64_t kSetBudget = 4096;
constexpr uint64_t kElementBudget = 250000;

ir::BackendCapacity ProgramCapacity(const ir::CompiledPolicy& ir, const Program& program) {
  ir::BackendCapacity report;
  report.set_backend("nft");
  AddCapacityItem(report, "identities", static_cast<uint64_t>(ir.identities_size()),
                  kMaxIdentities,
                  "np's layout: an identity is the high 16 bits of the packet mark, 0xffff "
                  "meaning 'no rule names it'");
  AddCapacityItem(report, "rules", program.rule_count(), 0, "nf_tables: none, memory aside",
                  kRuleBudget,
                  "about 10 s of nft -f on the reference VM at 57 us a rule with its chain");
  AddCapacityItem(report, "chains", program.chains.size(), 0, "nf_tables: none, memory aside");
  AddCapacityItem(report, "sets", program.sets.size(), 0, "nf_tables: none, memory aside",
                  kSetBudget,
                  "the kernel finds a set by name with a linear walk of the table's sets, "
                  "so load time grows with their square: 8,000 sets took 4 s");
  AddCapacityItem(report, "set_elements", program.element_count(), 0,
                  "nf_tables: none unless a set declares a size", kElementBudget,
                  "about 10 s of nft -f on the reference VM at 35 us an element");
  report.add_notes(absl::StrCat("comments are cut to ", kNftCommentMax,
                                " bytes (libnftnl NFTNL_UDATA_COMMENT_MAXLEN)"));
  return report;
}

}  // namespace

absl::StatusOr<Program> Build(const ir::CompiledPolicy& ir) {
  if (absl::Status s = CheckIdentities(ir); !s.ok()) return s;
  absl::StatusOr<Layout> layout = MakeLayout(ir);
  if (!layout.ok()) return layout.status();
  return BuildProgram(ir, &*layout);
}

std::string Text(const Program& program) {
  std::string out = absl::StrCat(
      "# NetworkPolicy for nftables, generated by np from the compiled IR. One transaction:\n"
      "# the old table goes and the new one comes in the same commit.\n"
      "table inet ", kTableName, " {}\ndelete table inet ", kTableName, "\ntable inet ",
      kTableName, " {\n");
  for (const Set& s : program.sets) {
    absl::StrAppend(&out, "  ", s.map ? "map " : "set ", s.name, " {\n    type ", s.type, "\n");
    if (s.interval) absl::StrAppend(&out, "    flags interval\n");
    if (!s.comment.empty()) absl::StrAppend(&out, "    comment \"", CommentText(s.comment, kNftCommentMax), "\"\n");
    if (!s.elements.empty()) {
      absl::StrAppend(&out, "    elements = {\n");
      for (size_t i = 0; i < s.elements.size(); ++i) {
        absl::StrAppend(&out, "      ", s.elements[i], i + 1 < s.elements.size() ? ",\n" : "\n");
      }
      absl::StrAppend(&out, "    }\n");
    }
    absl::StrAppend(&out, "  }\n");
  }
  for (const Chain& c : program.chains) {
    absl::StrAppend(&out, "  chain ", c.name, " {\n");
    if (!c.hook.empty()) absl::StrAppend(&out, "    ", c.hook, "\n");
    if (!c.comment.empty()) absl::StrAppend(&out, "    comment \"", CommentText(c.comment, kNftCommentMax), "\"\n");
    for (const std::string& r : c.rules) absl::StrAppend(&out, "    ", r, "\n");
    absl::StrAppend(&out, "  }\n");
  }
  absl::StrAppend(&out, "}\n");
  return out;
}

namespace {

// Explains one side (egress at the source, or ingress at the destination).
// Returns whether that side lets the flow through.
bool ExplainSide(const ir::CompiledPolicy& ir, const Layout& layout, int d,
                 const std::string& self_bytes, const std::string& peer_bytes,
                 const FlowQuery& flow, std::string* out) {
  const int f = self_bytes.size() == 4 ? 0 : 1;
  const std::string map = absl::StrCat(DirName(d), f == 0 ? "4" : "6");
  const ir::Endpoint* endpoint = nullptr;
  for (const ir::Endpoint& e : ir.endpoints()) {
    for (const std::string& ip : e.ips()) {
      absl::StatusOr<std::string> b = AddressBytes(ip);
      if (b.ok() && *b == self_bytes) endpoint = &e;
    }
  }
  const std::string self = AddressText(self_bytes);
  if (endpoint == nullptr) {
    absl::StrAppend(out, DirName(d), ": ", self,
                    " is not an endpoint of this node; no element in @", map, " (no ",
                    DirName(d), " check here)\n");
    return true;
  }
  const std::string who =
      EscapeText(absl::StrCat(endpoint->namespace_(), "/", endpoint->name()));
  if (!endpoint->selected() || layout.chains.count({endpoint->table(), d}) == 0) {
    absl::StrAppend(out, DirName(d), " of ", who, " (", self, "): not restricted for ", DirName(d),
                    "; no element in @", map, " -> no restriction\n");
    return true;
  }
  const std::string chain = ChainOf(endpoint->table(), d);
  absl::StrAppend(out, DirName(d), " of ", who, " (", self, "): @", map, " element \"", self,
                  " : jump ", chain, "\"\n");
  // The peer's identity, as the chain's vmap finds it.
  absl::StatusOr<uint32_t> identity = IdentityOf(ir, peer_bytes);
  const std::vector<MergedRange>& ranges = layout.ranges[f];
  const MergedRange* element = nullptr;
  for (const MergedRange& m : ranges) {
    if (m.first <= peer_bytes && peer_bytes <= m.last) element = &m;
  }
  uint32_t mark_identity = kMissIdentity;
  if (identity.ok()) {
    const ir::Identity& id = ir.identities(*identity);
    bool referenced = layout.identities.count(*identity) > 0;
    mark_identity = referenced ? *identity : kOtherIdentity;
    absl::StrAppend(out, "  peer ", AddressText(peer_bytes), " is identity ", *identity,
                    id.pods_size() > 0 ? absl::StrCat(" (", EscapeText(IdentityComment(id)), ")") : "",
                    id.pods_size() == 0 && id.external() ? " (external)" : "", ": @identity",
                    f == 0 ? "4" : "6", " element \"", element ? element->text : "?",
                    "\" -> mark ", absl::StrFormat("0x%08x", mark_identity << 16),
                    referenced ? "" : " (no rule names this identity)", "\n");
  }
  const std::vector<PlannedChain> chains = PlanDirection(ir.tables(endpoint->table()), IrPeerSets(ir), layout, d);
  const std::string protocol_text = flow.protocol == 6 ? "tcp" : flow.protocol == 17 ? "udp"
                                    : flow.protocol == 132 ? "sctp" : "this protocol";
  size_t c = 0;
  for (size_t r = 0; r < chains[c].chain.rules.size(); ++r) {
    const RuleSource& source = chains[c].sources[r];
    const std::string& name = chains[c].chain.name;
    const std::string rule = absl::StrCat("  chain ", name, " rule ", r + 1, " \"",
                                          chains[c].chain.rules[r], "\"");
    switch (source.kind) {
      case RuleSource::kLookup:
        continue;
      case RuleSource::kMissDrop:
        if (mark_identity != kMissIdentity) continue;
        absl::StrAppend(out, rule, ": the peer's address has no identity -> dropped (fail "
                        "closed)\n");
        return false;
      case RuleSource::kGotoStage:
        absl::StrAppend(out, rule, ": no admin rule decides -> the NetworkPolicy stage\n");
        c = 1;
        r = static_cast<size_t>(-1);
        continue;
      case RuleSource::kDrop:
        absl::StrAppend(out, "  no rule of chain ", name, " matches ", protocol_text, " port ",
                        flow.port, " from this peer -> the chain's last rule \"drop\"\n");
        return false;
      case RuleSource::kTier:
      case RuleSource::kPolicy:
        break;
    }
    const bool tier = source.kind == RuleSource::kTier;
    const ir::Protocol protocol = tier ? source.tier_rule->protocol() : source.port_rule->protocol();
    const uint32_t first = tier ? source.tier_rule->first_port() : source.port_rule->first_port();
    const uint32_t last = tier ? source.tier_rule->last_port() : source.port_rule->last_port();
    const ir::PeerSet& set =
        ir.peer_sets(tier ? source.tier_rule->peer_set() : source.port_rule->peer_set());
    if (protocol != ir::PROTOCOL_UNSPECIFIED &&
        (static_cast<int>(protocol) != flow.protocol || flow.port < first || flow.port > last)) {
      continue;
    }
    // Which peer match decides: every address, an inline mark interval, or a set element.
    std::string peer;
    if (set.all()) {
      peer = absl::StrCat("peer set ", set.id(), ": every address");
    } else {
      const std::vector<MarkInterval>& marks = layout.marks.at(set.id());
      for (size_t m = 0; m < marks.size() && peer.empty(); ++m) {
        if (source.mark_run >= 0 && static_cast<size_t>(source.mark_run) != m) continue;
        if (mark_identity < marks[m].first_identity || mark_identity > marks[m].last_identity) {
          continue;
        }
        peer = layout.NamedSet(set.id())
                   ? absl::StrCat("@peers_", set.id(), " element \"", marks[m].text, "\"")
                   : absl::StrCat("peer set ", set.id());
      }
      if (peer.empty()) continue;
    }
    if (!tier) {
      absl::StrAppend(out, rule, absl::StartsWith(peer, "@") ? " with " : " (", peer,
                      absl::StartsWith(peer, "@") ? "" : ")", " -> allowed\n");
      return true;
    }
    const ir::TierRule& decided = *source.tier_rule;
    const std::string why = absl::StrCat(rule, " (", source.tier, "[", source.index, "] ",
                                         EscapeText(decided.origin()), "; ", peer, ") -> ");
    if (decided.action() == ir::TIER_PASS && source.tier[0] == 'a') {
      absl::StrAppend(out, why, "pass: on to the NetworkPolicy stage\n");
      c = 1;
      r = static_cast<size_t>(-1);
      continue;
    }
    const bool allowed = decided.action() != ir::TIER_DENY;
    absl::StrAppend(out, why,
                    decided.action() == ir::TIER_PASS ? "pass: on to the default, allowed"
                    : allowed                         ? "allowed"
                                                      : "denied",
                    "\n");
    return allowed;
  }
  absl::StrAppend(out, "  no rule of chain ", chains[c].chain.name, " decides ", protocol_text,
                  " port ", flow.port, " from this peer -> the chain's end: return (allowed by "
                  "default)\n");
  return true;
}


bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// `text` with the set and chain names it refers to (`@name`, `jump name`, `goto name`)
// replaced by their entries in `names`.
std::string WithNames(const std::string& text,
                      const absl::flat_hash_map<std::string, std::string>& names) {
  std::string out;
  out.reserve(text.size() + 8);
  size_t i = 0;
  while (i < text.size()) {
    // Copy up to the next place a reference can start (most of a rule: Update renames every
    // rule and element of the program, so this runs some 10^4 times per update).
    const size_t next = text.find_first_of("@jg", i);
    if (next == std::string::npos) {
      out.append(text, i, std::string::npos);
      break;
    }
    out.append(text, i, next - i);
    i = next;
    size_t prefix = 0;
    if (text[i] == '@') {
      prefix = 1;
    } else if ((i == 0 || !IsNameChar(text[i - 1])) &&
               (text.compare(i, 5, "jump ") == 0 || text.compare(i, 5, "goto ") == 0)) {
      prefix = 5;
    }
    if (prefix == 0) {
      out.push_back(text[i++]);
      continue;
    }
    size_t end = i + prefix;
    while (end < text.size() && IsNameChar(text[end])) ++end;
    std::string name = text.substr(i + prefix, end - i - prefix);
    auto renamed = names.find(name);
    absl::StrAppend(&out, text.substr(i, prefix), renamed == names.end() ? name : renamed->second);
    i = end;
  }
  return out;
}

}  // namespace

Installed ParseInstalled(const std::string& terse_listing) {
  Installed installed;
  for (absl::string_view raw : absl::StrSplit(terse_listing, '\n')) {
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    bool opened = false;
    for (absl::string_view kind : {"set", "map", "chain"}) {
      std::string prefix = absl::StrCat(kind, " ");
      if (!absl::StartsWith(line, prefix) || !absl::EndsWith(line, " {")) continue;
      std::string name(line.substr(prefix.size(), line.size() - prefix.size() - 2));
      size_t g = name.rfind("_g");
      uint64_t generation = 0;
      if (g != std::string::npos && absl::SimpleAtoi(name.substr(g + 2), &generation)) {
        installed.last_generation = std::max(installed.last_generation, generation);
      }
      installed.objects.push_back({std::string(kind), std::move(name), ""});
      opened = true;
    }
    if (opened || installed.objects.empty()) continue;
    Installed::Object& current = installed.objects.back();
    if (current.kind == "chain" && absl::StartsWith(line, "type ") &&
        absl::StrContains(line, " hook ")) {
      current.hook = std::string(line);
    }
  }
  return installed;
}

Program WithGeneration(const Program& program, uint64_t generation) {
  const std::string suffix = absl::StrCat("_g", generation);
  absl::flat_hash_map<std::string, std::string> names;
  for (const Set& s : program.sets) names[s.name] = s.name + suffix;
  for (const Chain& c : program.chains) {
    if (c.hook.empty()) names[c.name] = c.name + suffix;
  }
  Program out = program;
  for (Set& s : out.sets) {
    s.name = names[s.name];
    for (std::string& e : s.elements) e = WithNames(e, names);
  }
  for (Chain& c : out.chains) {
    if (c.hook.empty()) c.name = names[c.name];
    for (std::string& r : c.rules) r = WithNames(r, names);
  }
  return out;
}

bool CanSwitch(const Installed& installed, const Program& next) {
  for (const Chain& c : next.chains) {
    if (c.hook.empty()) continue;
    for (const Installed::Object& o : installed.objects) {
      if (o.name == c.name && (o.kind != "chain" || o.hook != c.hook)) return false;
    }
  }
  return true;
}

std::string SwitchText(const Program& next, SwitchPart part) {
  Program declared;
  std::vector<const Chain*> base;
  if (part == SwitchPart::kObjects) declared.sets = next.sets;
  for (const Chain& c : next.chains) {
    if (c.hook.empty()) {
      if (part == SwitchPart::kObjects) declared.chains.push_back(c);
    } else if (part == SwitchPart::kBaseChains) {
      base.push_back(&c);
      declared.chains.push_back(Chain{c.name, c.hook, c.comment, {}});
    }
  }
  // Text opens with the whole-replace preamble; the switch keeps what is installed.
  std::string table = Text(declared);
  table.erase(0, table.find(absl::StrCat("table inet ", kTableName, " {\n")));
  std::string out = absl::StrCat(
      part == SwitchPart::kObjects
          ? "# NetworkPolicy for nftables, generated by np: a new generation beside the "
            "installed\n# one (the next commit switches the base chains to it).\n"
          : "# NetworkPolicy for nftables, generated by np: the base chains switched to the\n"
            "# generation the previous commit added.\n",
      table);
  if (base.empty()) return out;
  for (const Chain* c : base) absl::StrAppend(&out, "flush chain inet ", kTableName, " ", c->name, "\n");
  absl::StrAppend(&out, "table inet ", kTableName, " {\n");
  for (const Chain* c : base) {
    absl::StrAppend(&out, "  chain ", c->name, " {\n");
    for (const std::string& r : c->rules) absl::StrAppend(&out, "    ", r, "\n");
    absl::StrAppend(&out, "  }\n");
  }
  absl::StrAppend(&out, "}\n");
  return out;
}

namespace {

// What RetireText and RetireBatch delete: every set and chain installed that `next` lacks.
std::vector<Installed::Object> Retired(const Installed& installed, const Program& next) {
  std::set<std::pair<std::string, std::string>> keep;
  for (const Set& s : next.sets) keep.insert({s.map ? "map" : "set", s.name});
  for (const Chain& c : next.chains) keep.insert({"chain", c.name});
  std::vector<Installed::Object> out;
  for (const Installed::Object& o : installed.objects) {
    if (keep.count({o.kind, o.name}) == 0) out.push_back(o);
  }
  return out;
}

}  // namespace

std::string RetireText(const Installed& installed, const Program& next) {
  std::string flushes, sets, chains;
  for (const Installed::Object& o : Retired(installed, next)) {
    if (o.kind == "chain") {
      absl::StrAppend(&flushes, "flush chain inet ", kTableName, " ", o.name, "\n");
      absl::StrAppend(&chains, "delete chain inet ", kTableName, " ", o.name, "\n");
    } else {
      absl::StrAppend(&sets, "delete ", o.kind, " inet ", kTableName, " ", o.name, "\n");
    }
  }
  return absl::StrCat(flushes, sets, chains);
}

Installed InstalledOf(const Program& program) {
  Installed installed;
  for (const Set& s : program.sets) installed.objects.push_back({s.map ? "map" : "set", s.name, ""});
  for (const Chain& c : program.chains) installed.objects.push_back({"chain", c.name, c.hook});
  for (const Installed::Object& o : installed.objects) {
    size_t g = o.name.rfind("_g");
    uint64_t generation = 0;
    if (g != std::string::npos && absl::SimpleAtoi(o.name.substr(g + 2), &generation)) {
      installed.last_generation = std::max(installed.last_generation, generation);
    }
  }
  return installed;
}

namespace {

// The name without its `_g<N>` suffix.
absl::string_view BaseName(absl::string_view name) {
  size_t g = name.rfind("_g");
  uint64_t generation;
  if (g != absl::string_view::npos && absl::SimpleAtoi(name.substr(g + 2), &generation)) {
    return name.substr(0, g);
  }
  return name;
}

// One map element read back: its key as an address interval (network-order bytes), its value.
struct Element {
  std::string first, last;
  std::string key;     // the text before " : "
  std::string target;  // the text after it
};

// `bytes` + 1 (wrapping to zeros after all ones; callers never step past the family's end).
std::string Successor(std::string bytes) {
  for (size_t i = bytes.size(); i-- > 0;) {
    if (++reinterpret_cast<unsigned char&>(bytes[i]) != 0) break;
  }
  return bytes;
}

// "10.0.0.1 : jump x", "10.0.0.0/8 : ...", "10.0.0.1-10.0.0.9 : ..." as RangeText writes them.
absl::StatusOr<Element> ParseElement(absl::string_view text) {
  Element e;
  size_t colon = text.find(" : ");
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("not a map element: ", text));
  }
  e.key = std::string(text.substr(0, colon));
  e.target = std::string(text.substr(colon + 3));
  absl::string_view key = e.key;
  if (size_t dash = key.find('-'); dash != absl::string_view::npos) {
    absl::StatusOr<std::string> first = AddressBytes(key.substr(0, dash));
    absl::StatusOr<std::string> last = AddressBytes(key.substr(dash + 1));
    if (!first.ok()) return first.status();
    if (!last.ok()) return last.status();
    e.first = *first;
    e.last = *last;
    return e;
  }
  int length = -1;
  if (size_t slash = key.find('/'); slash != absl::string_view::npos) {
    if (!absl::SimpleAtoi(key.substr(slash + 1), &length)) {
      return absl::InvalidArgumentError(absl::StrCat("bad prefix length: ", text));
    }
    key = key.substr(0, slash);
  }
  absl::StatusOr<std::string> first = AddressBytes(key);
  if (!first.ok()) return first.status();
  e.first = e.last = *first;
  if (length >= 0) {
    const int bits = static_cast<int>(e.first.size()) * 8;
    if (length > bits) return absl::InvalidArgumentError(absl::StrCat("bad prefix: ", text));
    for (int b = length; b < bits; ++b) {
      e.first[b / 8] = static_cast<char>(e.first[b / 8] & ~(0x80 >> (b % 8)));
      e.last[b / 8] = static_cast<char>(e.last[b / 8] | (0x80 >> (b % 8)));
    }
  }
  return e;
}

absl::StatusOr<std::vector<Element>> ParseElements(const std::vector<std::string>& texts) {
  std::vector<Element> out;
  for (const std::string& t : texts) {
    absl::StatusOr<Element> e = ParseElement(t);
    if (!e.ok()) return e.status();
    out.push_back(*std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const Element& a, const Element& b) {
    return std::make_pair(a.first.size(), a.first) < std::make_pair(b.first.size(), b.first);
  });
  return out;
}

// Adjacent intervals joined: the addresses a list of elements covers.
std::vector<std::pair<std::string, std::string>> Blocks(const std::vector<Element>& elements) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Element& e : elements) {
    if (!out.empty() && out.back().second.size() == e.first.size() &&
        out.back().second < e.first && Successor(out.back().second) == e.first) {
      out.back().second = e.last;
    } else {
      out.push_back({e.first, e.last});
    }
  }
  return out;
}

// The elements only `a` has, in `a`'s order.
std::vector<std::string> Without(const std::vector<std::string>& a,
                                 const std::vector<std::string>& b) {
  absl::flat_hash_set<absl::string_view> in_b(b.begin(), b.end());
  std::vector<std::string> out;
  for (const std::string& e : a) {
    if (!in_b.contains(e)) out.push_back(e);
  }
  return out;
}

bool SameDeclaration(const Set& a, const Set& b) {
  return a.name == b.name && a.type == b.type && a.map == b.map && a.interval == b.interval &&
         a.comment == b.comment;
}

// The transactions of an in-place edit, in the order nft.h's rule gives: one transaction when
// only identity elements or only dispatch elements change; otherwise two with an RCU grace
// period between, dispatch first when a selected pod comes (its identity must not be seen
// before its dispatch entry), identity first when one goes. Returns why not, when dispatch
// entries are both added and deleted while identities change (no order is safe).
std::optional<std::string> OrderTransactions(std::string identity_text, std::string dispatch_text,
                                             bool dispatch_added, bool dispatch_deleted,
                                             ElementPlan* plan) {
  if (identity_text.empty() || dispatch_text.empty()) {
    std::string text = identity_text + dispatch_text;
    if (!text.empty()) plan->transactions.push_back(std::move(text));
    return std::nullopt;
  }
  if (dispatch_added == dispatch_deleted) {
    return "dispatch entries both added and deleted while identities change";
  }
  plan->grace_period = true;
  if (dispatch_added) {
    plan->transactions = {std::move(dispatch_text), std::move(identity_text)};
  } else {
    plan->transactions = {std::move(identity_text), std::move(dispatch_text)};
  }
  return std::nullopt;
}

// The overlaps of two element lists that cover the same addresses (both sorted, as
// ParseElements leaves them), in address order: fn(first, last, removed, added) each.
template <typename Fn>
void ForEachOverlap(const std::vector<Element>& removed, const std::vector<Element>& added,
                    Fn fn) {
  size_t r = 0, n = 0;
  while (r < removed.size() && n < added.size()) {
    const Element& x = removed[r];
    const Element& y = added[n];
    const std::string& lo = std::max(x.first, y.first);
    const std::string& hi = std::min(x.last, y.last);
    if (lo <= hi) fn(lo, hi, x, y);
    if (x.last < y.last) {
      ++r;
    } else if (y.last < x.last) {
      ++n;
    } else {
      ++r;
      ++n;
    }
  }
}

// The addresses whose target changes: fn(first, last, old, new) per overlap with different
// targets, until fn returns why not.
template <typename Fn>
std::optional<std::string> ForEachRetarget(const std::vector<Element>& removed,
                                           const std::vector<Element>& added, Fn fn) {
  std::optional<std::string> why;
  ForEachOverlap(removed, added, [&](const std::string& lo, const std::string& hi,
                                     const Element& x, const Element& y) {
    if (!why.has_value() && x.target != y.target) why = fn(lo, hi, x, y);
  });
  return why;
}

}  // namespace

ElementPlan PlanElementUpdate(const Program& installed, const Program& next) {
  ElementPlan plan;
  auto fallback = [&](std::string why) {
    plan.transactions.clear();
    plan.grace_period = false;
    plan.fallback = std::move(why);
    return plan;
  };
  // The rules: equal, comments of identity chains aside (they name pods, see nft.h).
  if (installed.chains.size() != next.chains.size()) return fallback("the chains differ");
  for (size_t i = 0; i < next.chains.size(); ++i) {
    const Chain& a = installed.chains[i];
    const Chain& b = next.chains[i];
    const bool identity_chain = absl::StartsWith(BaseName(a.name), "id_");
    if (a.name != b.name || a.hook != b.hook || a.rules != b.rules ||
        (!identity_chain && a.comment != b.comment)) {
      return fallback(absl::StrCat("chain ", b.name, " differs"));
    }
  }
  if (installed.sets.size() != next.sets.size()) return fallback("the sets differ");
  // Per family (4- or 16-byte key), the one address whose answer changes.
  std::map<size_t, std::string> changed_address;
  auto note_change = [&](const std::string& address) {
    auto [it, inserted] = changed_address.emplace(address.size(), address);
    return inserted || it->second == address;
  };
  std::string identity_text, dispatch_text;
  bool dispatch_added = false, dispatch_deleted = false;
  for (size_t i = 0; i < next.sets.size(); ++i) {
    const Set& a = installed.sets[i];
    const Set& b = next.sets[i];
    if (!SameDeclaration(a, b)) return fallback(absl::StrCat("set ", b.name, " is declared otherwise"));
    if (a.elements == b.elements) continue;
    const absl::string_view base = BaseName(b.name);
    const bool identity = base == "identity4" || base == "identity6";
    const bool dispatch = base == "egress4" || base == "egress6" || base == "ingress4" ||
                          base == "ingress6";
    if (!identity && !dispatch) return fallback(absl::StrCat("the elements of ", b.name, " differ"));
    if (identity != (a.map && a.interval) || dispatch != (a.map && !a.interval)) {
      return fallback(absl::StrCat(b.name, " is not the map np writes under that name"));
    }
    const std::vector<std::string> removed_text = Without(a.elements, b.elements);
    const std::vector<std::string> added_text = Without(b.elements, a.elements);
    absl::StatusOr<std::vector<Element>> removed = ParseElements(removed_text);
    absl::StatusOr<std::vector<Element>> added = ParseElements(added_text);
    if (!removed.ok() || !added.ok()) return fallback("an element np cannot read");
    if (identity) {
      // Both maps cover the family: the removed and the added elements cover the same
      // addresses; within them, which addresses change their target.
      if (Blocks(*removed) != Blocks(*added)) return fallback(absl::StrCat(b.name, ": coverage differs"));
      std::optional<std::string> why = ForEachRetarget(
          *removed, *added,
          [&](const std::string& lo, const std::string& hi, const Element&,
              const Element&) -> std::optional<std::string> {
            if (lo != hi) return absl::StrCat(b.name, ": a range of addresses changes identity");
            if (!note_change(lo)) return "more than one address of a family changes";
            return std::nullopt;
          });
      if (why.has_value()) return fallback(*why);
    } else {
      std::map<std::string, std::pair<const Element*, const Element*>> keys;
      for (const Element& e : *removed) {
        if (e.first != e.last) return fallback(absl::StrCat(b.name, ": an interval key"));
        keys[e.first].first = &e;
      }
      for (const Element& e : *added) {
        if (e.first != e.last) return fallback(absl::StrCat(b.name, ": an interval key"));
        keys[e.first].second = &e;
      }
      for (const auto& [address, change] : keys) {
        if (!note_change(address)) return fallback("more than one address of a family changes");
        if (change.first == nullptr) {
          dispatch_added = true;
        } else if (change.second == nullptr) {
          dispatch_deleted = true;
        } else {
          dispatch_added = dispatch_deleted = true;  // a different table: both at once
        }
      }
    }
    // Deletions first: the kernel refuses an interval that overlaps one still there.
    std::string& text = identity ? identity_text : dispatch_text;
    if (!removed->empty()) {
      std::vector<std::string> keys;
      for (const Element& e : *removed) keys.push_back(e.key);
      absl::StrAppend(&text, "delete element inet ", kTableName, " ", b.name, " { ",
                      absl::StrJoin(keys, ", "), " }\n");
    }
    if (!added_text.empty()) {
      absl::StrAppend(&text, "add element inet ", kTableName, " ", b.name, " { ",
                      absl::StrJoin(added_text, ", "), " }\n");
    }
  }
  if (std::optional<std::string> why =
          OrderTransactions(std::move(identity_text), std::move(dispatch_text), dispatch_added,
                            dispatch_deleted, &plan)) {
    return fallback(*why);
  }
  return plan;
}


namespace {

// The chain a map element jumps to ("10.0.0.1 : jump t0_ingress_g2" -> "t0_ingress_g2").
std::string JumpTarget(const std::string& element) {
  const size_t at = element.rfind(" : jump ");
  return at == std::string::npos ? "" : element.substr(at + 8);
}

// Whether `rule` names `name` as a set (`@name`) or a chain (`jump name`, `goto name`).
bool Names(const std::string& rule, const std::string& name, const char* how) {
  const std::string word = absl::StrCat(how, name);
  for (size_t at = rule.find(word); at != std::string::npos; at = rule.find(word, at + 1)) {
    const size_t end = at + word.size();
    if (end == rule.size() || !IsNameChar(rule[end])) return true;
  }
  return false;
}

// `elements` as netlink edits of the map `set` (ParseElement's forms; jump data kept on adds).
absl::StatusOr<SetElementEdit> MapEdit(const std::string& set, bool interval, bool add,
                                       const std::vector<std::string>& elements) {
  SetElementEdit edit;
  edit.set = set;
  edit.add = add;
  edit.interval = interval;
  for (const std::string& text : elements) {
    absl::StatusOr<Element> e = ParseElement(text);
    if (!e.ok()) return e.status();
    absl::string_view target = e->target;
    if (!absl::ConsumePrefix(&target, "jump ")) {
      return absl::InvalidArgumentError(absl::StrCat("not a jump: ", text));
    }
    edit.elements.push_back({e->first, e->last, add ? std::string(target) : ""});
  }
  return edit;
}

// "0x00010000-0x0001ffff" (Layout's mark intervals) as an element: keys in network order,
// as nft compares marks and keys `type mark` sets.
absl::StatusOr<SetElementEdit::Element> MarkElement(absl::string_view text) {
  std::vector<absl::string_view> ends = absl::StrSplit(text, '-');
  uint32_t v[2];
  if (ends.size() != 2 || !absl::ConsumePrefix(&ends[0], "0x") ||
      !absl::ConsumePrefix(&ends[1], "0x") || !absl::SimpleHexAtoi(ends[0], &v[0]) ||
      !absl::SimpleHexAtoi(ends[1], &v[1])) {
    return absl::InvalidArgumentError(absl::StrCat("not a mark interval: `", text, "`"));
  }
  SetElementEdit::Element x;
  for (int k = 0; k < 2; ++k) {
    const uint32_t be = htonl(v[k]);
    (k == 0 ? x.first : x.last).assign(reinterpret_cast<const char*>(&be), 4);
  }
  return x;
}

// Interval elements sorted by their start: the kernel keeps them in order whatever the
// batch's; nft sends them sorted, and so does np (the zero end nft puts before a first
// interval depends on it).
void SortByStart(std::vector<SetElementEdit::Element>* elements) {
  std::sort(elements->begin(), elements->end(),
            [](const SetElementEdit::Element& a, const SetElementEdit::Element& b) {
              return a.first < b.first;
            });
}

// `elements` (mark intervals) as netlink edits of the interval set of marks `set`.
absl::StatusOr<SetElementEdit> MarkSetEdit(const std::string& set, bool add,
                                           const std::vector<std::string>& elements) {
  SetElementEdit edit;
  edit.set = set;
  edit.add = add;
  edit.interval = true;
  for (const std::string& text : elements) {
    absl::StatusOr<SetElementEdit::Element> x = MarkElement(text);
    if (!x.ok()) return x.status();
    edit.elements.push_back(*std::move(x));
  }
  SortByStart(&edit.elements);
  return edit;
}

}  // namespace

namespace {
// The planners' refusal: the plan emptied (no half-planned part must reach the caller) with
// the reason as its fallback.
template <typename Plan>
Plan Refused(Plan* plan, std::string why) {
  *plan = Plan();
  plan->fallback = std::move(why);
  return *plan;
}
}  // namespace

InPlacePlan PlanInPlaceUpdate(const Program& installed, const Program& next, size_t whole) {
  InPlacePlan plan;
  auto refuse = [&](std::string why) { return Refused(&plan, std::move(why)); };
  std::map<std::string, const Chain*> old_chains, new_chains;
  std::map<std::string, const Set*> old_sets, new_sets;
  for (const Chain& c : installed.chains) old_chains[c.name] = &c;
  for (const Chain& c : next.chains) new_chains[c.name] = &c;
  for (const Set& s : installed.sets) old_sets[s.name] = &s;
  for (const Set& s : next.sets) new_sets[s.name] = &s;
  if (old_chains.size() != installed.chains.size() || new_chains.size() != next.chains.size() ||
      old_sets.size() != installed.sets.size() || new_sets.size() != next.sets.size()) {
    return refuse("a name used twice");
  }
  // Base chains: the same hooks and rules (they name the maps, which stay).
  for (const auto* chains : {&old_chains, &new_chains}) {
    for (const auto& [name, c] : *chains) {
      if (c->hook.empty()) continue;
      auto a = old_chains.find(name), b = new_chains.find(name);
      if (a == old_chains.end() || b == new_chains.end() || a->second->hook != b->second->hook ||
          a->second->rules != b->second->rules || a->second->comment != b->second->comment) {
        return refuse(absl::StrCat("base chain ", name, " changes"));
      }
    }
  }
  const auto is_chain_of = [](const std::map<std::string, const Chain*>& chains,
                              const std::string& name) { return chains.count(name) > 0; };
  // The tier chains' miss drop makes "miss" differ from "other" to the old rules (nft.h).
  bool old_miss_drop = false;
  const std::string miss_drop = MissDrop();
  for (const Chain& c : installed.chains) {
    for (const std::string& r : c.rules) old_miss_drop = old_miss_drop || r == miss_drop;
  }
  // Sets: the maps keep their declarations; peer sets come, go or are declared again.
  std::vector<const Set*> declare;          // peer sets, with their elements
  std::vector<std::string> delete_sets;     // peer sets gone or declared again
  std::set<std::string> renewed_sets;       // names whose set object changes
  // Map element edits of the main transaction and of the cleanup after it.
  struct Batch {
    std::vector<SetElementEdit> deletes, adds;
    std::string text_deletes, text_adds;
  } main, cleanup;
  size_t writes = 0;
  std::string dispatch_deleted;  // a dispatch map with an entry deleted
  std::set<std::string> names;
  for (const auto& [name, s] : old_sets) names.insert(name);
  for (const auto& [name, s] : new_sets) names.insert(name);
  for (const std::string& name : names) {
    const Set* a = old_sets.count(name) > 0 ? old_sets[name] : nullptr;
    const Set* b = new_sets.count(name) > 0 ? new_sets[name] : nullptr;
    const absl::string_view base = BaseName(name);
    const bool identity = base == "identity4" || base == "identity6";
    const bool dispatch = base == "egress4" || base == "egress6" || base == "ingress4" ||
                          base == "ingress6";
    if (!identity && !dispatch) {
      if (!absl::StartsWith(base, "peers_") || (a != nullptr && (a->map || a->type != "mark")) ||
          (b != nullptr && (b->map || b->type != "mark"))) {
        return refuse(absl::StrCat("set ", name, " is not a peer set np writes"));
      }
      if (a != nullptr && b != nullptr && SameDeclaration(*a, *b)) {
        // A live set's elements change: edited in the transaction, flipped with its rules
        // (declared again under its name, its lookups would miss until the commit ends: nft.h).
        if (a->elements == b->elements) continue;
        const std::vector<std::string> gone = Without(a->elements, b->elements);
        const std::vector<std::string> come = Without(b->elements, a->elements);
        absl::StatusOr<SetElementEdit> out = MarkSetEdit(name, false, gone);
        absl::StatusOr<SetElementEdit> in = MarkSetEdit(name, true, come);
        if (!out.ok() || !in.ok()) return refuse("a peer set element np cannot read");
        if (!gone.empty()) {
          main.deletes.push_back(*std::move(out));
          absl::StrAppend(&main.text_deletes, "delete element inet ", kTableName, " ", name,
                          " { ", absl::StrJoin(gone, ", "), " }\n");
        }
        if (!come.empty()) {
          main.adds.push_back(*std::move(in));
          absl::StrAppend(&main.text_adds, "add element inet ", kTableName, " ", name, " { ",
                          absl::StrJoin(come, ", "), " }\n");
        }
        writes += gone.size() + come.size();
        continue;
      }
      if (a != nullptr && b != nullptr) {
        return refuse(absl::StrCat("set ", name, " would be declared again under its name"));
      }
      if (a != nullptr) {
        delete_sets.push_back(name);
        renewed_sets.insert(name);
      }
      if (b != nullptr) {
        declare.push_back(b);
        writes += b->elements.size();
      }
      continue;
    }
    if (a == nullptr || b == nullptr || !SameDeclaration(*a, *b) ||
        identity != (a->map && a->interval) || dispatch != (a->map && !a->interval)) {
      return refuse(absl::StrCat("map ", name, " is declared otherwise"));
    }
    if (a->elements == b->elements) continue;
    const std::vector<std::string> removed_text = Without(a->elements, b->elements);
    const std::vector<std::string> added_text = Without(b->elements, a->elements);
    absl::StatusOr<std::vector<Element>> removed = ParseElements(removed_text);
    absl::StatusOr<std::vector<Element>> added = ParseElements(added_text);
    if (!removed.ok() || !added.ok()) return refuse("an element np cannot read");
    // The edits from `from` to `to` (element texts of map `name`), into one of the batches.
    auto edit = [&](const std::vector<std::string>& from, const std::vector<std::string>& to,
                    Batch& into) -> bool {
      const std::vector<std::string> gone = Without(from, to), come = Without(to, from);
      if (!gone.empty()) {
        absl::StatusOr<SetElementEdit> e = MapEdit(name, identity, false, gone);
        if (!e.ok()) return false;
        into.deletes.push_back(*std::move(e));
        std::vector<std::string> keys;
        for (const std::string& t : gone) keys.push_back(t.substr(0, t.find(" : ")));
        absl::StrAppend(&into.text_deletes, "delete element inet ", kTableName, " ", name,
                        " { ", absl::StrJoin(keys, ", "), " }\n");
      }
      if (!come.empty()) {
        absl::StatusOr<SetElementEdit> e = MapEdit(name, identity, true, come);
        if (!e.ok()) return false;
        into.adds.push_back(*std::move(e));
        absl::StrAppend(&into.text_adds, "add element inet ", kTableName, " ", name, " { ",
                        absl::StrJoin(come, ", "), " }\n");
      }
      writes += gone.size() + come.size();
      return true;
    };
    if (dispatch) {
      // Additions, to chains this transaction creates (empty to an old packet); deletions
      // only in a transaction that deletes and writes nothing (checked below).
      if (!removed->empty()) dispatch_deleted = name;
      for (const Element& e : *added) {
        if (is_chain_of(old_chains, e.target.substr(5)) || !absl::StartsWith(e.target, "jump ")) {
          return refuse(absl::StrCat(name, ": an endpoint added to existing chain ", e.target));
        }
      }
      if (!edit(removed_text, added_text, main)) return refuse("an element np cannot read");
      continue;
    }
    if (Blocks(*removed) != Blocks(*added)) return refuse(absl::StrCat(name, ": coverage differs"));
    // Where the target changes, it goes from id_other to an identity chain that is new (the
    // main batch), or from an identity chain next drops to id_other (the cleanup, after a
    // grace period: until then the new rules read that identity as they read id_other).
    auto chain_of = [](const std::string& target) {
      return absl::StartsWith(target, "jump ") ? target.substr(5) : std::string();
    };
    auto deferred = [&](const Element& x, const Element& y) {
      const std::string from = chain_of(x.target);
      return BaseName(chain_of(y.target)) == "id_other" && absl::StartsWith(from, "id_") &&
             !is_chain_of(new_chains, from);
    };
    bool any_deferred = false;
    std::optional<std::string> why = ForEachRetarget(
        *removed, *added,
        [&](const std::string& lo, const std::string&, const Element& x,
            const Element& y) -> std::optional<std::string> {
          if (deferred(x, y)) {
            any_deferred = true;
            return std::nullopt;
          }
          const std::string to = chain_of(y.target);
          if (BaseName(chain_of(x.target)) != "id_other" || to.empty() ||
              is_chain_of(old_chains, to)) {
            return absl::StrCat(name, ": ", AddressText(lo), " goes from ", x.target, " to ",
                                y.target, ", which the old or the new rules tell apart");
          }
          if (old_miss_drop) {
            return absl::StrCat(name, ": an identity is named anew while a tier chain drops "
                                      "a lookup miss");
          }
          return std::nullopt;
        });
    if (why.has_value()) return refuse(*why);
    if (!any_deferred) {
      if (!edit(removed_text, added_text, main)) return refuse("an element np cannot read");
      continue;
    }
    // The elements between the two commits: next's, but the deferred addresses keep their
    // old target (adjacent pieces of one target merged).
    std::vector<Element> between;
    ForEachOverlap(*removed, *added, [&](const std::string& lo, const std::string& hi,
                                         const Element& x, const Element& y) {
      const std::string& target = x.target != y.target && deferred(x, y) ? x.target : y.target;
      if (!between.empty() && between.back().target == target &&
          Successor(between.back().last) == lo) {
        between.back().last = hi;
      } else {
        between.push_back(Element{lo, hi, "", target});
      }
    });
    std::vector<std::string> between_text;
    for (const Element& e : between) {
      between_text.push_back(absl::StrCat(RangeText(e.first, e.last), " : ", e.target));
    }
    if (!edit(removed_text, between_text, main) || !edit(between_text, added_text, cleanup)) {
      return refuse("an element np cannot read");
    }
  }
  // Regular chains: written (new, or flushed and written again: their rules differ or look
  // up a set declared again), deleted, or left.
  std::vector<const Chain*> write;
  std::set<std::string> flushed, deleted;
  for (const Chain& b : next.chains) {
    if (!b.hook.empty()) continue;
    auto a = old_chains.find(b.name);
    bool renews = false;
    if (a != old_chains.end()) {
      for (const std::string& r : a->second->rules) {
        for (const std::string& s : renewed_sets) renews = renews || Names(r, s, "@");
      }
      if (a->second->rules == b.rules && !renews) continue;
      flushed.insert(b.name);
    }
    write.push_back(&b);
    writes += b.rules.size();
  }
  for (const Chain& a : installed.chains) {
    if (a.hook.empty() && new_chains.count(a.name) == 0) deleted.insert(a.name);
  }
  // A chain goes only when nothing left jumps to it: no element that stays, no rule kept.
  for (const std::string& gone : deleted) {
    for (const Set& s : installed.sets) {
      if (!s.map) continue;
      const Set* b = new_sets[s.name];
      const std::set<std::string> kept(b->elements.begin(), b->elements.end());
      for (const std::string& e : s.elements) {
        if (JumpTarget(e) == gone && kept.count(e) > 0) {
          return refuse(absl::StrCat("chain ", gone, " goes while ", s.name, " jumps to it"));
        }
      }
    }
    for (const Chain& c : installed.chains) {
      if (flushed.count(c.name) > 0 || deleted.count(c.name) > 0) continue;
      for (const std::string& r : c.rules) {
        if (Names(r, gone, "jump ") || Names(r, gone, "goto ")) {
          return refuse(absl::StrCat("chain ", gone, " goes while ", c.name, " jumps to it"));
        }
      }
    }
  }
  // A dispatch entry deleted: an old packet may read "no entry" (its endpoint's side allows,
  // as the new program's does for an address it does not restrict) beside old answers
  // elsewhere; that is the new program's verdict only when nothing else it reads changes —
  // no rule written, no set declared, no element added (identity edits add too): the
  // transaction only deletes (entries, chains no kept element or rule jumps to, their sets).
  if (!dispatch_deleted.empty() && (!write.empty() || !declare.empty() || !main.adds.empty())) {
    return refuse(absl::StrCat(dispatch_deleted, ": a dispatch entry is deleted while the "
                               "transaction writes rules or elements"));
  }
  // A set goes (or is declared again) only after every rule naming it is flushed or gone:
  // the chains of such rules were put in `flushed` above, or are deleted.
  if (whole == 0) whole = next.rule_count() + next.element_count();
  if (writes >= whole) {
    return refuse(absl::StrCat("the edit writes ", writes, " rules and elements; the whole "
                               "program has ", whole));
  }
  // Identity chains next drops go in the cleanup when there is one (its elements may still
  // jump to them until then); nothing else does.
  std::set<std::string> deleted_later;
  if (!cleanup.deletes.empty() || !cleanup.adds.empty()) {
    for (const std::string& name : deleted) {
      if (absl::StartsWith(name, "id_")) deleted_later.insert(name);
    }
    for (const std::string& name : deleted_later) deleted.erase(name);
    WholeBatch& later = plan.cleanup;
    later.first_flush.assign(deleted_later.begin(), deleted_later.end());
    later.first_element_deletes = std::move(cleanup.deletes);
    later.first_delete_chains = later.first_flush;
    later.last_element_adds = std::move(cleanup.adds);
    for (const std::string& name : later.first_flush) {
      absl::StrAppend(&plan.cleanup_text, "flush chain inet ", kTableName, " ", name, "\n");
    }
    absl::StrAppend(&plan.cleanup_text, cleanup.text_deletes);
    for (const std::string& name : later.first_delete_chains) {
      absl::StrAppend(&plan.cleanup_text, "delete chain inet ", kTableName, " ", name, "\n");
    }
    absl::StrAppend(&plan.cleanup_text, cleanup.text_adds);
  }
  plan.writes = writes;
  if (write.empty() && declare.empty() && delete_sets.empty() && deleted.empty() &&
      main.deletes.empty() && main.adds.empty()) {
    return plan;  // nothing to do (but perhaps the cleanup)
  }
  // The batch.
  WholeBatch& batch = plan.batch;
  batch.first_flush.assign(flushed.begin(), flushed.end());
  for (const std::string& name : deleted) batch.first_flush.push_back(name);
  batch.first_element_deletes = std::move(main.deletes);
  batch.first_delete_sets = delete_sets;
  batch.first_delete_chains.assign(deleted.begin(), deleted.end());
  Program beside;  // for the text: what is declared
  for (const Chain* c : write) {
    WholeChain w;
    w.name = c->name;
    w.comment = c->comment.empty() ? "" : CommentText(c->comment, kNftCommentMax);
    w.rules = c->rules;
    batch.chains.push_back(std::move(w));
    beside.chains.push_back(*c);
  }
  // New peer sets go one commit ahead of the rules that look them up (nft.h).
  Program declared;
  for (const Set* s : declare) declared.sets.push_back(*s);
  if (!declared.sets.empty()) {
    absl::StatusOr<WholeBatch> sets = SwitchBatch(declared, SwitchPart::kObjects);
    if (!sets.ok()) return refuse(std::string(sets.status().message()));
    plan.sets_first.sets = std::move(sets->sets);
    plan.sets_first_text = Text(declared);
    plan.sets_first_text.erase(
        0, plan.sets_first_text.find(absl::StrCat("table inet ", kTableName, " {\n")));
  }
  batch.last_element_adds = std::move(main.adds);
  // The text: the same steps in the same order, one `nft -f` transaction.
  std::string& text = plan.text;
  for (const std::string& name : batch.first_flush) {
    absl::StrAppend(&text, "flush chain inet ", kTableName, " ", name, "\n");
  }
  absl::StrAppend(&text, main.text_deletes);
  for (const std::string& name : delete_sets) {
    absl::StrAppend(&text, "delete set inet ", kTableName, " ", name, "\n");
  }
  for (const std::string& name : deleted) {
    absl::StrAppend(&text, "delete chain inet ", kTableName, " ", name, "\n");
  }
  if (!beside.chains.empty()) {
    std::string table = Text(beside);
    table.erase(0, table.find(absl::StrCat("table inet ", kTableName, " {\n")));
    absl::StrAppend(&text, table);
  }
  absl::StrAppend(&text, main.text_adds);
  return plan;
}

namespace {

// `bytes` - 1 (callers never step below the family's first address).
std::string Predecessor(std::string bytes) {
  for (size_t i = bytes.size(); i-- > 0;) {
    if (reinterpret_cast<unsigned char&>(bytes[i])-- != 0) break;
  }
  return bytes;
}

DeltaIndex IndexOf(const ir::CompiledPolicy& ir, const Layout& layout, const Program& program,
                   uint64_t element_budget, uint64_t generation) {
  DeltaIndex x;
  for (const auto& [table, d] : layout.chains) {
    ForEachRenderedPeerSet(DirectionOf(ir.tables(table), d),
                           [&](uint32_t peer_set) { x.users[peer_set].insert({table, d}); });
  }
  for (uint32_t id : layout.peer_sets) {
    for (uint32_t identity : ir.peer_sets(id).identities()) ++x.identity_refs[identity];
  }
  const std::string miss_drop = MissDrop();
  for (const Chain& c : program.chains) {
    x.rules += c.rules.size();
    for (const std::string& r : c.rules) x.miss_drops += r == miss_drop ? 1 : 0;
  }
  const uint64_t elements = program.element_count();
  x.generation = generation;
  x.referenced = layout.identities;
  x.chains = layout.chains;
  x.selected.assign(static_cast<size_t>(ir.tables_size()), 0);
  for (int f = 0; f < 2; ++f) {
    for (const MergedRange& m : layout.ranges[f]) {
      x.identity[f].emplace_hint(x.identity[f].end(), m.first, DeltaIndex::Piece{m.last, m.target});
    }
  }
  for (const ir::Endpoint& e : ir.endpoints()) {
    if (!e.selected()) continue;
    ++x.selected[e.table()];
    for (int d : {kIngress, kEgress}) {
      if (layout.chains.count({e.table(), d}) == 0) continue;
      for (const std::string& ip : e.ips()) {
        absl::StatusOr<std::string> bytes = AddressBytes(ip);  // checked by CheckIr
        x.dispatch[d][bytes->size() == 4 ? 0 : 1][*bytes] = e.table();
      }
    }
  }
  x.elements = elements;
  x.element_budget = element_budget;
  return x;
}

// Whether the delta's endpoint slices lie within `previous`'s endpoints, in order, apart.
bool EndpointSlicesFit(const ir::CompiledPolicyDelta& delta, const ir::CompiledPolicy& previous) {
  uint32_t previous_end = 0;
  for (int e = 0; e < delta.endpoints_size(); ++e) {
    const ir::EndpointSliceEdit& x = delta.endpoints(e);
    if (x.begin() > x.end() || x.end() > static_cast<uint32_t>(previous.endpoints_size()) ||
        (e > 0 && x.begin() < previous_end)) {
      return false;
    }
    previous_end = x.end();
  }
  return true;
}

std::string IdentityElement(const std::string& first, const DeltaIndex::Piece& piece,
                            const std::string& suffix) {
  return absl::StrCat(RangeText(first, piece.last), " : jump ", piece.target, suffix);
}
std::string DispatchElement(const std::string& address, uint32_t table, int d,
                            const std::string& suffix) {
  return absl::StrCat(AddressText(address), " : jump ", ChainOf(table, d), suffix);
}
std::string MapName(const char* base, int f, const std::string& suffix) {
  return absl::StrCat(base, f == 0 ? "4" : "6", suffix);
}

}  // namespace

absl::StatusOr<DeltaIndex> MakeDeltaIndex(const ir::CompiledPolicy& ir, uint64_t generation) {
  if (absl::Status s = CheckIdentities(ir); !s.ok()) return s;
  absl::StatusOr<Layout> layout = MakeLayout(ir);
  if (!layout.ok()) return layout.status();
  const Program program = BuildProgram(ir, &*layout);
  return IndexOf(ir, *layout, program, kElementBudget, generation);
}

namespace {

// PlanDeltaUpdate's plan, with the index holding `tables` tables: `previous`'s own count, or
// more when a pod delta's table part appended tables to the index before (PlanPodTableDelta).
// `unordered` (PlanMoveDelta, which orders them itself): identity and dispatch edits in one
// transaction whatever they are, never refused for their order.
// `selected_planned` (PlanMoveDelta with a table part): the endpoints' table counts and the
// chains that come or go with them are the table part's (PlanTables) — this plan only points
// the endpoints' entries at the chains `index` holds, for tables up to `tables`.
ElementPlan PlanPodEdits(const DeltaIndex& index, const ir::CompiledPolicy& previous,
                         const ir::CompiledPolicyDelta& delta, size_t tables,
                         DeltaIndexEdit* edit, bool unordered = false,
                         bool selected_planned = false) {
  ElementPlan plan;
  *edit = DeltaIndexEdit();
  auto fallback = [&](std::string why) {
    plan.transactions.clear();
    plan.grace_period = false;
    plan.fallback = std::move(why);
    *edit = DeltaIndexEdit();
    return plan;
  };
  const std::string suffix = absl::StrCat("_g", index.generation);
  // Appended identities (compiled.proto) continue the ids; ranges may name them. An identity
  // no rule names yet maps to id_other, as Build maps it.
  const uint32_t identities =
      static_cast<uint32_t>(previous.identities_size() + delta.identities_size());
  for (int i = 0; i < delta.identities_size(); ++i) {
    if (delta.identities(i).id() != static_cast<uint32_t>(previous.identities_size() + i) ||
        delta.identities(i).external()) {
      return fallback("an invalid delta: an appended identity");
    }
  }
  if (index.selected.size() != tables) return fallback("the remembered program has other tables");
  if (!delta.peer_sets().empty() || !delta.tables().empty()) {
    return fallback("the delta edits peer sets or tables (Update's in-place path does)");
  }
  // Pod lists only name pods in identity chains' comments, which element edits leave (nft.h).
  if (!CheckIdentityPodsEdits(previous, delta).ok()) {
    return fallback("an invalid delta: identity_pods");
  }
  std::map<size_t, std::string> changed_address;
  auto note_change = [&](const std::string& address) {
    auto [it, inserted] = changed_address.emplace(address.size(), address);
    return inserted || it->second == address;
  };
  auto target_of = [&](uint32_t id) { return IdentityChain(id, index.referenced.count(id) > 0); };

  // ---- The identity maps: per family, the one edit (if any) that changes a target.
  std::string identity_text;
  for (int f = 0; f < 2; ++f) {
    const auto& edits = f == 0 ? delta.ipv4() : delta.ipv6();
    const auto& ranges = f == 0 ? previous.ipv4() : previous.ipv6();
    const size_t width = f == 0 ? 4 : 16;
    int active = -1;
    uint32_t previous_end = 0;
    for (int e = 0; e < edits.size(); ++e) {
      const ir::RangeSliceEdit& x = edits[e];
      if (x.begin() >= x.end() || x.end() > static_cast<uint32_t>(ranges.size()) ||
          (e > 0 && x.begin() < previous_end) || x.ranges().empty()) {
        return fallback("an invalid delta: a range slice");
      }
      previous_end = x.end();
      // The new ranges continue one another over exactly the replaced addresses.
      std::string expected = ranges[static_cast<int>(x.begin())].first();
      for (int r = 0; r < x.ranges_size(); ++r) {
        const ir::AddressRange& y = x.ranges(r);
        if (y.first().size() != width || y.last().size() != width || y.first() != expected ||
            y.last() < y.first() || y.identity() >= identities) {
          return fallback("an invalid delta: its ranges do not continue one another");
        }
        expected = Successor(y.last());
      }
      if (x.ranges(x.ranges_size() - 1).last() != ranges[static_cast<int>(x.end()) - 1].last()) {
        return fallback("an invalid delta: its ranges cover other addresses");
      }
      // Where the answer (the identity chain) changes: old and new side by side.
      bool changed = false;
      int i = static_cast<int>(x.begin()), j = 0;
      while (i < static_cast<int>(x.end()) && j < x.ranges_size()) {
        const ir::AddressRange& a = ranges[i];
        const ir::AddressRange& b = x.ranges(j);
        if (target_of(a.identity()) != target_of(b.identity())) {
          const std::string& lo = std::max(a.first(), b.first());
          const std::string& hi = std::min(a.last(), b.last());
          if (lo != hi) return fallback(absl::StrCat("identity", f == 0 ? "4" : "6", ": a range of addresses changes identity"));
          if (!note_change(lo)) return fallback("more than one address of a family changes");
          changed = true;
        }
        if (a.last() < b.last()) {
          ++i;
        } else if (b.last() < a.last()) {
          ++j;
        } else {
          ++i;
          ++j;
        }
      }
      if (changed) active = e;  // note_change allows one address a family: one edit
    }
    if (active < 0) continue;
    // The merged pieces over the edit's addresses and one neighbour on each side (a merge
    // may reach it; beyond it the old pieces stay maximal), rebuilt from the new ranges.
    const ir::RangeSliceEdit& x = edits[active];
    const std::string& lo = ranges[static_cast<int>(x.begin())].first();
    const std::string& hi = ranges[static_cast<int>(x.end()) - 1].last();
    const std::map<std::string, DeltaIndex::Piece>& pieces = index.identity[f];
    auto it = pieces.upper_bound(lo);
    if (it == pieces.begin()) return fallback("the remembered identity map does not cover the delta");
    --it;
    if (it != pieces.begin()) --it;
    struct Segment {
      std::string first;
      DeltaIndex::Piece piece;
    };
    std::vector<Segment> old_pieces, segments, after;
    for (; it != pieces.end(); ++it) {
      const std::string& first = it->first;
      const DeltaIndex::Piece& p = it->second;
      old_pieces.push_back({first, p});
      if (first > hi) {
        after.push_back({first, p});
        break;
      }
      if (first < lo) segments.push_back({first, {p.last < lo ? p.last : Predecessor(lo), p.target}});
      if (p.last > hi) after.push_back({Successor(hi), {p.last, p.target}});
    }
    for (const ir::AddressRange& r : x.ranges()) {
      segments.push_back({r.first(), {r.last(), target_of(r.identity())}});
    }
    for (Segment& s : after) segments.push_back(std::move(s));
    std::vector<Segment> merged;
    for (Segment& s : segments) {
      if (!merged.empty() && merged.back().piece.target == s.piece.target) {
        merged.back().piece.last = s.piece.last;
      } else {
        merged.push_back(std::move(s));
      }
    }
    auto same = [](const Segment& a, const Segment& b) {
      return a.first == b.first && a.piece.last == b.piece.last && a.piece.target == b.piece.target;
    };
    std::vector<std::string> removed, added;
    for (const Segment& o : old_pieces) {
      bool kept = std::any_of(merged.begin(), merged.end(), [&](const Segment& m) { return same(o, m); });
      if (kept) continue;
      removed.push_back(RangeText(o.first, o.piece.last));
      edit->identity_erase[f].push_back(o.first);
    }
    for (const Segment& m : merged) {
      bool kept = std::any_of(old_pieces.begin(), old_pieces.end(), [&](const Segment& o) { return same(o, m); });
      if (kept) continue;
      added.push_back(IdentityElement(m.first, m.piece, suffix));
      edit->identity_insert[f].push_back({m.first, m.piece});
    }
    edit->elements += static_cast<int64_t>(added.size()) - static_cast<int64_t>(removed.size());
    const std::string map = MapName("identity", f, suffix);
    // Deletions first: the kernel refuses an interval that overlaps one still there.
    if (!removed.empty()) {
      absl::StrAppend(&identity_text, "delete element inet ", kTableName, " ", map, " { ",
                      absl::StrJoin(removed, ", "), " }\n");
    }
    if (!added.empty()) {
      absl::StrAppend(&identity_text, "add element inet ", kTableName, " ", map, " { ",
                      absl::StrJoin(added, ", "), " }\n");
    }
  }

  // ---- The dispatch maps: the replaced endpoints' entries against the new ones'.
  struct Entry {
    int64_t old_table = -1, new_table = -1;
  };
  std::map<std::tuple<int, int, std::string>, Entry> entries;  // (direction, family, address)
  std::map<uint32_t, int64_t> selected_change;
  auto collect = [&](const ir::Endpoint& e, bool is_new) {
    if (!e.selected()) return true;
    if (e.table() >= (selected_planned ? tables : static_cast<size_t>(previous.tables_size()))) {
      return false;
    }
    selected_change[e.table()] += is_new ? 1 : -1;
    for (int d : {kIngress, kEgress}) {
      if (index.chains.count({e.table(), d}) == 0) continue;
      for (const std::string& ip : e.ips()) {
        absl::StatusOr<std::string> bytes = AddressBytes(ip);
        if (!bytes.ok()) return false;
        Entry& slot = entries[{d, bytes->size() == 4 ? 0 : 1, *bytes}];
        int64_t& table = is_new ? slot.new_table : slot.old_table;
        if (table >= 0) return false;  // one address listed twice
        table = e.table();
      }
    }
    return true;
  };
  if (!EndpointSlicesFit(delta, previous)) return fallback("an invalid delta: an endpoint slice");
  for (const ir::EndpointSliceEdit& x : delta.endpoints()) {
    for (uint32_t i = x.begin(); i < x.end(); ++i) {
      if (!collect(previous.endpoints(static_cast<int>(i)), false)) {
        return fallback("an endpoint the delta replaces is not what the index holds");
      }
    }
    for (const ir::Endpoint& n : x.endpoints()) {
      if (!collect(n, true)) return fallback("an invalid delta: an endpoint");
    }
  }
  for (const auto& [table, change] : selected_change) {
    if (change == 0 || selected_planned) continue;
    const int64_t before = index.selected[table], now = before + change;
    if (now < 0) return fallback("the remembered endpoints differ from the delta's");
    const ir::Table& t = previous.tables(static_cast<int>(table));
    if ((before > 0) != (now > 0) && (Restricted(t.ingress()) || Restricted(t.egress()))) {
      return fallback(absl::StrCat("the first or last selected endpoint of table ", table,
                                   ": its chains come or go"));
    }
    edit->selected.push_back({table, change});
  }
  bool dispatch_added = false, dispatch_deleted = false;
  std::vector<std::string> removed[2][2], added[2][2];
  for (const auto& [key, entry] : entries) {
    const auto& [d, f, address] = key;
    const std::map<std::string, uint32_t>& map = index.dispatch[d][f];
    auto found = map.find(address);
    if (entry.old_table >= 0 && (found == map.end() || found->second != entry.old_table)) {
      return fallback("the remembered dispatch map differs from the delta's endpoints");
    }
    if (entry.old_table < 0 && found != map.end()) {
      return fallback("an address that another endpoint has");
    }
    if (entry.old_table == entry.new_table) continue;
    if (!note_change(address)) return fallback("more than one address of a family changes");
    if (entry.old_table < 0) {
      dispatch_added = true;
    } else if (entry.new_table < 0) {
      dispatch_deleted = true;
    } else {
      dispatch_added = dispatch_deleted = true;  // a different table: both at once
    }
    if (entry.old_table >= 0) {
      removed[d][f].push_back(AddressText(address));
      edit->dispatch_erase[d][f].push_back(address);
      --edit->elements;
    }
    if (entry.new_table >= 0) {
      added[d][f].push_back(
          DispatchElement(address, static_cast<uint32_t>(entry.new_table), d, suffix));
      edit->dispatch_insert[d][f].push_back({address, static_cast<uint32_t>(entry.new_table)});
      ++edit->elements;
    }
  }
  std::string dispatch_text;
  for (int d : {kEgress, kIngress}) {
    for (int f = 0; f < 2; ++f) {
      const std::string map = MapName(DirName(d), f, suffix);
      if (!removed[d][f].empty()) {
        absl::StrAppend(&dispatch_text, "delete element inet ", kTableName, " ", map, " { ",
                        absl::StrJoin(removed[d][f], ", "), " }\n");
      }
      if (!added[d][f].empty()) {
        absl::StrAppend(&dispatch_text, "add element inet ", kTableName, " ", map, " { ",
                        absl::StrJoin(added[d][f], ", "), " }\n");
      }
    }
  }
  if (edit->elements > 0 && index.element_budget > 0 &&
      index.elements + static_cast<uint64_t>(edit->elements) > index.element_budget) {
    return fallback("past the set element budget");
  }
  if (unordered) {
    if (!identity_text.empty() || !dispatch_text.empty()) {
      plan.transactions.push_back(identity_text + dispatch_text);
    }
    return plan;
  }
  if (std::optional<std::string> why =
          OrderTransactions(std::move(identity_text), std::move(dispatch_text), dispatch_added,
                            dispatch_deleted, &plan)) {
    return fallback(*why);
  }
  return plan;
}

}  // namespace

ElementPlan PlanDeltaUpdate(const DeltaIndex& index, const ir::CompiledPolicy& previous,
                            const ir::CompiledPolicyDelta& delta, DeltaIndexEdit* edit) {
  return PlanPodEdits(index, previous, delta, static_cast<size_t>(previous.tables_size()), edit);
}

namespace {

// An identity map piece, in address order.
struct PieceAt {
  std::string first;
  DeltaIndex::Piece piece;
};

// The identity map pieces around `changes` (whole address ranges, sorted, each given its new
// target) before and after: the pieces holding a change and one neighbour on each side (a
// merge reaches no further: beyond a neighbour the old pieces stay maximal), and the same
// addresses split at the changes and merged again. Both cover the same addresses.
void RetargetPieces(const std::map<std::string, DeltaIndex::Piece>& pieces,
                    const std::vector<PieceAt>& changes, std::vector<PieceAt>* before,
                    std::vector<PieceAt>* after) {
  std::set<std::string> keys;
  for (const PieceAt& c : changes) {
    auto it = pieces.upper_bound(c.first);
    if (it == pieces.begin()) continue;  // never: the pieces cover every address
    --it;
    keys.insert(it->first);
    if (it != pieces.begin()) keys.insert(std::prev(it)->first);
    if (std::next(it) != pieces.end()) keys.insert(std::next(it)->first);
  }
  size_t c = 0;
  auto append = [&](PieceAt s) {
    if (!after->empty() && after->back().piece.target == s.piece.target &&
        after->back().piece.last < s.first && Successor(after->back().piece.last) == s.first) {
      after->back().piece.last = s.piece.last;
    } else {
      after->push_back(std::move(s));
    }
  };
  for (const std::string& key : keys) {
    const DeltaIndex::Piece& p = pieces.at(key);
    before->push_back({key, p});
    std::string cursor = key;
    bool done = false;
    while (c < changes.size() && changes[c].first < key) ++c;
    for (; c < changes.size() && changes[c].first <= p.last; ++c) {
      const PieceAt& x = changes[c];
      if (x.first > cursor) append({cursor, {Predecessor(x.first), p.target}});
      append(x);
      if (x.piece.last >= p.last) {
        done = true;
      } else {
        cursor = Successor(x.piece.last);
      }
    }
    if (!done) append({cursor, {p.last, p.target}});
  }
}

bool NonTrivial(const ir::PeerSet& s) { return !s.all() && s.identities_size() > 0; }

// Calls fn on each range of `ranges` with `edits`' slices in their place (what ApplyDelta
// makes of them), copying nothing. The slices must have been checked (PlanPodEdits).
template <typename Fn>
void ForEachRangeAfter(const google::protobuf::RepeatedPtrField<ir::AddressRange>& ranges,
                       const google::protobuf::RepeatedPtrField<ir::RangeSliceEdit>& edits,
                       Fn fn) {
  int i = 0;
  for (const ir::RangeSliceEdit& x : edits) {
    for (; i < static_cast<int>(x.begin()); ++i) fn(ranges[i]);
    for (const ir::AddressRange& r : x.ranges()) fn(r);
    i = static_cast<int>(x.end());
  }
  for (; i < ranges.size(); ++i) fn(ranges[i]);
}

// PlanPolicyDelta's plan for `delta`'s tables, peer sets and endpoints. With `pods` (a pod
// delta's table part, PlanPodTableDelta): endpoints may also come or go — a new one's
// dispatch entries go to chains this transaction creates, a leaving one's go with its
// table's chains when no endpoint is left there (PlanInPlaceUpdate decides what is safe).
// `applied`: a delta whose range slices are in the kernel already (this plan runs after
// them), so that the identity ranges are read with them in place; null: `previous`'s.
// `overlay` (PlanIdentityDelta's): identities the pod delta appends or gives pods, and peer
// sets as the kernel holds them where that is not `previous`'s.
struct Overlay {
  const ir::CompiledPolicyDelta* pods = nullptr;  // its `identities` and `identity_pods`
  const std::map<uint32_t, ir::PeerSet>* installed_sets = nullptr;
};
// The delta's pod edit of identity `id`, or null when it keeps its pods (the edits are
// sorted by identity: compiled.proto).
const ir::IdentityPodsEdit* PodsEditOf(const ir::CompiledPolicyDelta& delta, uint32_t id) {
  const auto& edits = delta.identity_pods();
  auto it = std::lower_bound(edits.begin(), edits.end(), id,
                             [](const ir::IdentityPodsEdit& e, uint32_t i) { return e.identity() < i; });
  return it != edits.end() && it->identity() == id ? &*it : nullptr;
}
// Identity `id` after `pods` (null: `previous`'s): an appended one, or one with its new pod
// list (only chain comments read the pods).
ir::Identity IdentityAfter(const ir::CompiledPolicy& previous, const ir::CompiledPolicyDelta* pods,
                           uint32_t id) {
  const uint32_t count = static_cast<uint32_t>(previous.identities_size());
  if (pods != nullptr && id >= count) return pods->identities(static_cast<int>(id - count));
  ir::Identity identity = previous.identities(static_cast<int>(id));
  const ir::IdentityPodsEdit* edit = pods != nullptr ? PodsEditOf(*pods, id) : nullptr;
  if (edit != nullptr) ApplyPodsEdit(*edit, identity.mutable_pods());
  return identity;
}
InPlacePlan PlanTables(const DeltaIndex& index, const ir::CompiledPolicy& previous,
                       const ir::CompiledPolicyDelta& delta, bool pods,
                       const ir::CompiledPolicyDelta* applied, DeltaIndexEdit* edit,
                       const Overlay& overlay = {}, bool moves_left_out = false) {
  *edit = DeltaIndexEdit();
  auto refuse = [&](std::string why) {
    InPlacePlan plan;
    plan.fallback = std::move(why);
    *edit = DeltaIndexEdit();
    return plan;
  };
  const uint32_t identities = static_cast<uint32_t>(
      previous.identities_size() + (overlay.pods != nullptr ? overlay.pods->identities_size() : 0));
  const uint32_t old_peer_sets = static_cast<uint32_t>(previous.peer_sets_size());
  const uint32_t old_tables = static_cast<uint32_t>(previous.tables_size());
  if (index.selected.size() != old_tables) return refuse("the remembered program has other tables");
  // The delta's items by id; appended ones continue the lists one by one (compiled.proto).
  std::map<uint32_t, const ir::PeerSet*> new_sets;
  std::map<uint32_t, const ir::Table*> new_tables;
  uint32_t peer_sets = old_peer_sets, tables = old_tables;
  for (const ir::PeerSet& s : delta.peer_sets()) {
    if (s.id() > peer_sets || (!new_sets.empty() && s.id() <= new_sets.rbegin()->first)) {
      return refuse(absl::StrCat("an invalid delta: peer set ", s.id(), " out of order"));
    }
    if (s.id() == peer_sets) ++peer_sets;
    new_sets[s.id()] = &s;
  }
  for (const ir::Table& t : delta.tables()) {
    if (t.id() > tables || (!new_tables.empty() && t.id() <= new_tables.rbegin()->first)) {
      return refuse(absl::StrCat("an invalid delta: table ", t.id(), " out of order"));
    }
    if (t.id() == tables) ++tables;
    new_tables[t.id()] = &t;
  }
  for (const auto& [id, s] : new_sets) {
    if (absl::Status st = CheckPeerSet(*s, id, identities); !st.ok()) {
      return refuse(absl::StrCat("an invalid delta: ", st.message()));
    }
  }
  for (const auto& [id, t] : new_tables) {
    if (absl::Status st = CheckTable(*t, id, peer_sets); !st.ok()) {
      return refuse(absl::StrCat("an invalid delta: ", st.message()));
    }
  }
  const PeerSetOf old_set = [&](uint32_t id) -> const ir::PeerSet& {
    if (overlay.installed_sets != nullptr) {
      auto it = overlay.installed_sets->find(id);
      if (it != overlay.installed_sets->end()) return it->second;
    }
    return previous.peer_sets(static_cast<int>(id));
  };
  const PeerSetOf new_set = [&](uint32_t id) -> const ir::PeerSet& {
    auto it = new_sets.find(id);
    return it != new_sets.end() ? *it->second : old_set(id);  // what the delta leaves is installed
  };
  auto new_table = [&](uint32_t id) -> const ir::Table& {
    auto it = new_tables.find(id);
    return it != new_tables.end() ? *it->second : previous.tables(static_cast<int>(id));
  };

  // ---- Endpoints: only `selected` and `table` may change (else a pod event: fall back).
  struct Moved {
    const ir::Endpoint* before;
    const ir::Endpoint* after;
  };
  // before (after) null: an endpoint that comes (goes) with a pod delta's table part.
  std::vector<Moved> moved;
  std::map<uint32_t, int64_t> selected_change, moved_out;
  if (!EndpointSlicesFit(delta, previous)) return refuse("an invalid delta: an endpoint slice");
  for (const ir::EndpointSliceEdit& x : delta.endpoints()) {
    // The slice's endpoints before and after, paired by pod (a slice holds a few).
    std::map<std::pair<std::string, std::string>, const ir::Endpoint*> gone;
    for (uint32_t i = x.begin(); i < x.end(); ++i) {
      const ir::Endpoint& a = previous.endpoints(static_cast<int>(i));
      gone[{a.namespace_(), a.name()}] = &a;
    }
    std::vector<Moved> pairs;
    for (const ir::Endpoint& b : x.endpoints()) {
      auto it = gone.find({b.namespace_(), b.name()});
      if (it == gone.end()) {
        pairs.push_back({nullptr, &b});
        continue;
      }
      pairs.push_back({it->second, &b});
      gone.erase(it);
    }
    for (const auto& [key, a] : gone) pairs.push_back({a, nullptr});
    for (const Moved& m : pairs) {
      if (m.before != nullptr) continue;
      for (const std::string& ip : m.after->ips()) {  // a new endpoint's address is no other's
        absl::StatusOr<std::string> bytes = AddressBytes(ip);
        if (!bytes.ok()) {
          return refuse(absl::StrCat("an invalid delta: ", bytes.status().message()));
        }
        for (int d : {kIngress, kEgress}) {
          if (index.dispatch[d][bytes->size() == 4 ? 0 : 1].count(*bytes) > 0) {
            return refuse("an endpoint added at an address that another endpoint has");
          }
        }
      }
    }
    for (const Moved& m : pairs) {
      const ir::Endpoint* a = m.before;
      const ir::Endpoint* b = m.after;
      if ((a == nullptr || b == nullptr) && !pods) {
        return refuse("endpoints added or deleted (a pod event)");
      }
      if (a != nullptr && b != nullptr &&
          (!std::equal(a->ips().begin(), a->ips().end(), b->ips().begin(), b->ips().end()) ||
           !std::equal(a->shared_ips().begin(), a->shared_ips().end(),
                       b->shared_ips().begin(), b->shared_ips().end()))) {
        return refuse("an endpoint's addresses change (a pod event)");
      }
      if (b != nullptr && b->selected() && b->table() >= tables) {
        return refuse("an invalid delta: an endpoint's table");
      }
      const bool was = a != nullptr && a->selected(), is = b != nullptr && b->selected();
      if (was == is && (!was || a->table() == b->table())) continue;
      if (was) {
        --selected_change[a->table()];
        ++moved_out[a->table()];
      }
      if (is) ++selected_change[b->table()];
      moved.push_back(m);
    }
  }
  auto old_selected = [&](uint32_t t) { return t < old_tables ? index.selected[t] : 0; };
  auto new_selected = [&](uint32_t t) {
    auto it = selected_change.find(t);
    return old_selected(t) + (it == selected_change.end() ? 0 : it->second);
  };

  // ---- The chains touched: tables the delta names or whose endpoints change, and the
  // tables whose rules render a replaced peer set.
  std::set<std::pair<uint32_t, int>> touched;
  for (const auto& [t, table] : new_tables) {
    for (int d : {kIngress, kEgress}) touched.insert({t, d});
  }
  for (const auto& [t, change] : selected_change) {
    for (int d : {kIngress, kEgress}) touched.insert({t, d});
  }
  for (const auto& [p, set] : new_sets) {
    auto users = index.users.find(p);
    if (users != index.users.end()) touched.insert(users->second.begin(), users->second.end());
  }
  Program before, after;  // the touched objects, without generation names yet
  Layout old_layout, new_layout;  // marks of the rendered peer sets
  std::map<uint32_t, std::set<std::pair<uint32_t, int>>> users;  // touched peer sets' users now
  auto users_of = [&](uint32_t p) -> std::set<std::pair<uint32_t, int>>& {
    auto [it, inserted] = users.try_emplace(p);
    if (inserted) {
      auto old = index.users.find(p);
      if (old != index.users.end()) it->second = old->second;
    }
    return it->second;
  };
  std::set<std::pair<uint32_t, int>> new_chains;
  // Chains that come for a table whose endpoints stay (a policy gains a direction): those
  // endpoints get dispatch entries to the new chain, as moved-in ones do.
  std::set<std::pair<uint32_t, int>> gains;
  // Renders (table, d) from `table` into `into`, noting the peer sets it renders.
  auto render = [&](const ir::Table& table, int d, const PeerSetOf& set_of, Layout& layout,
                    Program& into, bool now) {
    const std::pair<uint32_t, int> chain{table.id(), d};
    ForEachRenderedPeerSet(DirectionOf(table, d), [&](uint32_t p) {
      if (now) {
        users_of(p).insert(chain);
      } else {
        users_of(p).erase(chain);
      }
      const ir::PeerSet& set = set_of(p);
      if (NonTrivial(set) && layout.marks.count(p) == 0) layout.marks[p] = MarksOf(set);
    });
    for (PlannedChain& planned : PlanDirection(table, set_of, layout, d)) {
      into.chains.push_back(std::move(planned.chain));
    }
  };
  for (const auto& [t, d] : touched) {
    const bool had = index.chains.count({t, d}) > 0;
    const bool has = new_selected(t) > 0 && Restricted(DirectionOf(new_table(t), d));
    // Every endpoint leaving the chain (moved or gone) has its entries deleted below.
    if (had && !has && new_selected(t) > 0) {
      return refuse(absl::StrCat("chain ", ChainOf(t, d), " goes: its endpoints' dispatch "
                                 "entries would go with it"));
    }
    if (!had && has && old_selected(t) > moved_out[t]) gains.insert({t, d});
    if (has) new_chains.insert({t, d});
    edit->chains.push_back({{t, d}, has});
    if (had) render(previous.tables(static_cast<int>(t)), d, old_set, old_layout, before, false);
  }
  // Users lose the old chains first, then gain the new ones (a chain in both keeps its name).
  for (const auto& [t, d] : new_chains) render(new_table(t), d, new_set, new_layout, after, true);

  // ---- Peer sets: named sets before and after, and the identities they name.
  std::set<uint32_t> touched_sets;
  for (const auto& [p, set] : new_sets) touched_sets.insert(p);
  for (const auto& [p, u] : users) touched_sets.insert(p);
  std::map<uint32_t, int64_t> refs_change;
  for (uint32_t p : touched_sets) {
    auto old_users = index.users.find(p);
    const bool was = p < old_peer_sets && old_users != index.users.end() &&
                     !old_users->second.empty() && NonTrivial(old_set(p));
    const bool is = !users_of(p).empty() && NonTrivial(new_set(p));
    if (was) {
      const ir::PeerSet& set = old_set(p);
      std::vector<MarkInterval> marks = MarksOf(set);
      if (marks.size() > kMaxInlineMarkRuns) {
        before.sets.push_back(PeerSetDecl(p, marks));
        edit->elements -= static_cast<int64_t>(marks.size());  // the budget counts them
      }
      for (uint32_t i : set.identities()) --refs_change[i];
    }
    if (is) {
      const ir::PeerSet& set = new_set(p);
      std::vector<MarkInterval> marks = MarksOf(set);
      if (marks.size() > kMaxInlineMarkRuns) {
        after.sets.push_back(PeerSetDecl(p, marks));
        edit->elements += static_cast<int64_t>(marks.size());
      }
      for (uint32_t i : set.identities()) ++refs_change[i];
    }
    edit->users.push_back({p, users_of(p)});
  }
  std::map<uint32_t, std::string> retarget;  // identity -> its chain now
  for (const auto& [i, change] : refs_change) {
    if (change == 0) continue;
    auto old_refs = index.identity_refs.find(i);
    const int64_t was = old_refs == index.identity_refs.end() ? 0 : old_refs->second;
    const int64_t is = was + change;
    if (is < 0) return refuse("the remembered peer sets differ from the program's");
    edit->identity_refs.push_back({i, static_cast<uint32_t>(is)});
    if ((was > 0) == (is > 0)) continue;
    (was > 0 ? before : after).chains.push_back(
        IdentityChainDecl(IdentityAfter(previous, overlay.pods, i), i));
    retarget[i] = IdentityChain(i, is > 0);
  }
  // The old rules cannot tell a new identity chain's "miss" from "other" unless a chain
  // drops a miss (nft.h): PlanInPlaceUpdate sees only the touched chains, the index all.
  for (const auto& [i, target] : retarget) {
    if (target != "id_other" && index.miss_drops > 0) {
      return refuse("an identity is named anew while a tier chain drops a lookup miss");
    }
  }
  for (const Chain& c : before.chains) {
    edit->rules -= static_cast<int64_t>(c.rules.size());
    edit->miss_drops -= std::count(c.rules.begin(), c.rules.end(), MissDrop());
  }
  for (const Chain& c : after.chains) {
    edit->rules += static_cast<int64_t>(c.rules.size());
    edit->miss_drops += std::count(c.rules.begin(), c.rules.end(), MissDrop());
  }
  edit->tables = tables;
  for (const auto& [t, change] : selected_change) {
    if (new_selected(t) < 0) return refuse("the remembered endpoints differ from the delta's");
    if (change != 0) edit->selected.push_back({t, change});
  }

  // ---- The maps, named for the installed generation (their elements too).
  const std::string suffix = absl::StrCat("_g", index.generation);
  before = WithGeneration(before, index.generation);
  after = WithGeneration(after, index.generation);
  // [0, 1]: identity4/6; 2 + 2 * (d == ingress) + f: the dispatch maps.
  std::vector<Set> maps_before, maps_after;
  for (std::vector<Set>* maps : {&maps_before, &maps_after}) {
    for (int f = 0; f < 2; ++f) maps->push_back(IdentityMapDecl(f));
    for (int d : {kEgress, kIngress}) {
      for (int f = 0; f < 2; ++f) maps->push_back(DispatchMapDecl(d, f));
    }
    for (Set& m : *maps) m.name += suffix;
  }
  // Identity pieces: the ranges of the identities whose chain changes (one pass over the
  // ranges: the index keeps pieces by address, not by identity).
  if (!retarget.empty()) {
    for (int f = 0; f < 2; ++f) {
      std::vector<PieceAt> changes;
      static const ir::CompiledPolicyDelta kNone;
      const ir::CompiledPolicyDelta& in_kernel = applied != nullptr ? *applied : kNone;
      ForEachRangeAfter(f == 0 ? previous.ipv4() : previous.ipv6(),
                        f == 0 ? in_kernel.ipv4() : in_kernel.ipv6(),
                        [&](const ir::AddressRange& r) {
        auto it = retarget.find(r.identity());
        // One change per range: a range lies within one piece (pieces merge whole ranges).
        if (it != retarget.end()) changes.push_back({r.first(), {r.last(), it->second}});
      });
      std::vector<PieceAt> old_pieces, new_pieces;
      RetargetPieces(index.identity[f], changes, &old_pieces, &new_pieces);
      auto key = [](const PieceAt& x) { return std::tie(x.first, x.piece.last, x.piece.target); };
      std::set<std::tuple<const std::string&, const std::string&, const std::string&>> old_keys,
          new_keys;
      for (const PieceAt& o : old_pieces) old_keys.insert(key(o));
      for (const PieceAt& n : new_pieces) new_keys.insert(key(n));
      for (const PieceAt& o : old_pieces) {
        maps_before[f].elements.push_back(IdentityElement(o.first, o.piece, suffix));
        if (new_keys.count(key(o)) == 0) {
          edit->identity_erase[f].push_back(o.first);
          --edit->elements;
        }
      }
      for (const PieceAt& n : new_pieces) {
        maps_after[f].elements.push_back(IdentityElement(n.first, n.piece, suffix));
        if (old_keys.count(key(n)) == 0) {
          edit->identity_insert[f].push_back({n.first, n.piece});
          ++edit->elements;
        }
      }
    }
  }
  // Dispatch entries of the moved endpoints (sets 2..5: egress4/6, ingress4/6), and of the
  // endpoints that stay in a table gaining a chain (one pass over the endpoints, then only).
  // `had`: `e`'s entries to t<table>_<d> go (they must be what the index holds); else they come.
  std::string dispatch_error;
  auto dispatch = [&](const ir::Endpoint& e, uint32_t table, int d, bool had) {
    for (const std::string& ip : e.ips()) {
      absl::StatusOr<std::string> bytes = AddressBytes(ip);
      if (!bytes.ok()) {
        dispatch_error = std::string(bytes.status().message());
        return false;
      }
      const int f = bytes->size() == 4 ? 0 : 1;
      const size_t set = 2 + (d == kEgress ? 0 : 2) + static_cast<size_t>(f);
      (had ? maps_before : maps_after)[set].elements.push_back(
          DispatchElement(*bytes, table, d, suffix));
      if (had) {
        auto found = index.dispatch[d][f].find(*bytes);
        if (found == index.dispatch[d][f].end() || found->second != table) {
          dispatch_error = "the remembered dispatch map differs from the delta's endpoints";
          return false;
        }
        edit->dispatch_erase[d][f].push_back(*bytes);
      } else {
        edit->dispatch_insert[d][f].push_back({*bytes, table});
      }
      edit->elements += had ? -1 : 1;
    }
    return true;
  };
  if (!gains.empty()) {
    std::set<const ir::Endpoint*> moved_from;
    for (const Moved& m : moved) {
      if (m.before != nullptr) moved_from.insert(m.before);
    }
    for (const ir::Endpoint& e : previous.endpoints()) {
      if (!e.selected() || moved_from.count(&e) > 0) continue;
      for (int d : {kIngress, kEgress}) {
        if (gains.count({e.table(), d}) > 0 && !dispatch(e, e.table(), d, false)) {
          return refuse(dispatch_error);
        }
      }
    }
  }
  for (const Moved& m : moved) {
    // `moves_left_out` (PlanMoveDelta): an endpoint that stays but changes table has its
    // entries edited by the caller, through indirection chains (nft.h).
    if (moves_left_out && m.before != nullptr && m.after != nullptr) continue;
    for (int d : {kIngress, kEgress}) {
      if (m.before != nullptr && m.before->selected() &&
          index.chains.count({m.before->table(), d}) > 0 &&
          !dispatch(*m.before, m.before->table(), d, true)) {
        return refuse(dispatch_error);
      }
      if (m.after != nullptr && m.after->selected() &&
          new_chains.count({m.after->table(), d}) > 0 &&
          !dispatch(*m.after, m.after->table(), d, false)) {
        return refuse(dispatch_error);
      }
    }
  }
  for (Set& m : maps_before) before.sets.push_back(std::move(m));
  for (Set& m : maps_after) after.sets.push_back(std::move(m));
  const int64_t whole = static_cast<int64_t>(index.rules + index.elements) + edit->rules + edit->elements;
  InPlacePlan plan = PlanInPlaceUpdate(before, after, static_cast<size_t>(std::max<int64_t>(whole, 1)));
  if (!plan.fallback.empty()) return refuse(plan.fallback);
  if (edit->elements > 0 && index.element_budget > 0 &&
      index.elements + static_cast<uint64_t>(edit->elements) > index.element_budget) {
    return refuse("past the set element budget");
  }
  return plan;
}

}  // namespace

InPlacePlan PlanPolicyDelta(const DeltaIndex& index, const ir::CompiledPolicy& previous,
                            const ir::CompiledPolicyDelta& delta, DeltaIndexEdit* edit) {
  if (!delta.ipv4().empty() || !delta.ipv6().empty() || !delta.identity_pods().empty()) {
    *edit = DeltaIndexEdit();
    InPlacePlan plan;
    plan.fallback = "a policy delta with pod parts (address ranges, identities' pods)";
    return plan;
  }
  return PlanTables(index, previous, delta, /*pods=*/false, /*applied=*/nullptr, edit);
}

namespace {

// `edit` as an `nft -f` line (the form PlanPodEdits writes).
std::string ElementEditText(const SetElementEdit& edit) {
  std::vector<std::string> parts;
  for (const SetElementEdit::Element& x : edit.elements) {
    parts.push_back(x.jump.empty() ? RangeText(x.first, x.last)
                                   : absl::StrCat(RangeText(x.first, x.last), " : jump ", x.jump));
  }
  return absl::StrCat(edit.add ? "add" : "delete", " element inet ", kTableName, " ", edit.set,
                      " { ", absl::StrJoin(parts, ", "), " }\n");
}

// `chains` (and their rules) as `nft -f` text without the table's preamble.
std::string ChainsText(const std::vector<Chain>& chains) {
  if (chains.empty()) return "";
  Program beside;
  beside.chains = chains;
  std::string text = Text(beside);
  text.erase(0, text.find(absl::StrCat("table inet ", kTableName, " {\n")));
  return text;
}

// The pod part's one transaction, parsed; `why` when it is not one transaction of element edits.
std::optional<std::vector<SetElementEdit>> PodPartEdits(const ElementPlan& pods, std::string* why) {
  if (pods.transactions.size() > 1 || pods.grace_period) {
    *why = "the pod part is two commits";
    return std::nullopt;
  }
  if (pods.transactions.empty()) return std::vector<SetElementEdit>();
  absl::StatusOr<std::vector<SetElementEdit>> edits = ParseElementTransaction(pods.transactions[0]);
  if (!edits.ok()) {
    *why = std::string(edits.status().message());
    return std::nullopt;
  }
  return *std::move(edits);
}

// An endpoint comes in one commit (nft.h PlanPodTableDelta): the table part's transaction with
// the pod part's identity edits, each changed address pointed at an alias chain created in
// the same commit; the aliases retired later. Empty when `plan` now holds that form, else why
// not. `index`: what is installed (the table part must leave its identity maps alone).
std::string OneCommitComing(const DeltaIndex& index, PodTablePlan* plan) {
  for (int f = 0; f < 2; ++f) {
    if (!plan->tables_edit.identity_erase[f].empty() || !plan->tables_edit.identity_insert[f].empty()) {
      return "the table part edits identity elements too (an identity named anew)";
    }
  }
  if (!plan->tables.cleanup_text.empty()) return "the table part retires an identity";
  std::string why;
  std::optional<std::vector<SetElementEdit>> edits = PodPartEdits(plan->pods, &why);
  if (!edits.has_value()) return why;
  const std::string suffix = absl::StrCat("_g", index.generation);
  InPlacePlan commit = plan->tables;
  std::vector<Chain> aliases;
  std::vector<SetElementEdit> later_deletes, later_adds;
  std::string pods_text;
  for (SetElementEdit& e : *edits) {
    if (!e.interval) return absl::StrCat("the pod part edits ", e.set);
    if (!e.add) {
      commit.batch.first_element_deletes.push_back(e);
      absl::StrAppend(&pods_text, ElementEditText(e));
      continue;
    }
    SetElementEdit aliased{e.set, true, true, {}};
    SetElementEdit undo{e.set, false, true, {}};
    for (const SetElementEdit::Element& x : e.elements) {
      const int f = x.first.size() == 4 ? 0 : 1;
      const std::map<std::string, DeltaIndex::Piece>& pieces = index.identity[f];
      auto it = pieces.upper_bound(x.first);
      if (it == pieces.begin()) return "the remembered identity map does not cover the edit";
      --it;
      // The addresses of x whose answer changes: one at most (PlanPodEdits), from id_other.
      std::optional<std::string> changed;
      for (; it != pieces.end() && it->first <= x.last; ++it) {
        if (absl::StrCat(it->second.target, suffix) == x.jump) continue;
        const std::string lo = std::max(it->first, x.first), hi = std::min(it->second.last, x.last);
        if (lo != hi || changed.has_value()) return "more than one address changes identity";
        if (it->second.target != "id_other") {
          return absl::StrCat(AddressText(lo), " was ", it->second.target, ", not id_other");
        }
        if (index.miss_drops > 0) return "a tier chain drops a lookup miss";
        changed = lo;
      }
      if (!changed.has_value()) {
        aliased.elements.push_back(x);
        continue;
      }
      absl::string_view base = BaseName(x.jump);
      uint32_t id = 0;
      if (!absl::ConsumePrefix(&base, "id_") || !absl::SimpleAtoi(base, &id) || id >= kMaxIdentities) {
        return absl::StrCat("the pod part's target ", x.jump, " is no identity chain");
      }
      const std::string alias = absl::StrCat("idp_", id, suffix);
      if (std::none_of(aliases.begin(), aliases.end(), [&](const Chain& c) { return c.name == alias; })) {
        Chain c = IdentityChainDecl(ir::Identity(), id);  // id_<id>'s rule under another name
        c.name = alias;
        c.comment = absl::StrCat("identity ", id, " until the next grace period (nft.h)");
        aliases.push_back(std::move(c));
      }
      // x split around the changed address, which takes the alias; x itself comes later.
      std::vector<SetElementEdit::Element> split;
      if (x.first < *changed) split.push_back({x.first, Predecessor(*changed), x.jump});
      split.push_back({*changed, *changed, alias});
      if (*changed < x.last) split.push_back({Successor(*changed), x.last, x.jump});
      for (const SetElementEdit::Element& y : split) {
        aliased.elements.push_back(y);
        undo.elements.push_back({y.first, y.last, ""});
      }
      later_adds.push_back({e.set, true, true, {x}});
    }
    if (!undo.elements.empty()) later_deletes.push_back(std::move(undo));
    absl::StrAppend(&pods_text, ElementEditText(aliased));
    commit.batch.last_element_adds.push_back(std::move(aliased));
  }
  for (const Chain& c : aliases) {
    WholeChain w;
    w.name = c.name;
    w.comment = c.comment;
    w.rules = c.rules;
    commit.batch.chains.push_back(std::move(w));
  }
  absl::StrAppend(&commit.text, ChainsText(aliases), pods_text);
  InPlacePlan retire;
  for (const Chain& c : aliases) {
    retire.batch.first_flush.push_back(c.name);
    retire.batch.first_delete_chains.push_back(c.name);
    absl::StrAppend(&retire.text, "flush chain inet ", kTableName, " ", c.name, "\n");
  }
  retire.batch.first_element_deletes = later_deletes;
  retire.batch.last_element_adds = later_adds;
  for (const SetElementEdit& e : later_deletes) absl::StrAppend(&retire.text, ElementEditText(e));
  for (const Chain& c : aliases) {
    absl::StrAppend(&retire.text, "delete chain inet ", kTableName, " ", c.name, "\n");
  }
  for (const SetElementEdit& e : later_adds) absl::StrAppend(&retire.text, ElementEditText(e));
  plan->commit = std::move(commit);
  plan->later.clear();
  if (!aliases.empty()) plan->later.push_back(std::move(retire));
  plan->one_commit = true;
  return "";
}

// An endpoint goes in one commit (nft.h PlanPodTableDelta): the pod part with a flush of the
// chains the table part deletes; the table part and its cleanup later. Empty when `plan` now
// holds that form, else why not.
std::string OneCommitLeaving(PodTablePlan* plan) {
  const InPlacePlan& tables = plan->tables;
  // Deferred, it must change no verdict once the chains are empty: it may only delete.
  if (!tables.sets_first_text.empty() || !tables.batch.chains.empty() ||
      !tables.batch.sets.empty() || !tables.batch.last_element_adds.empty()) {
    return "the table part writes rules, sets or elements";
  }
  std::string why;
  std::optional<std::vector<SetElementEdit>> edits = PodPartEdits(plan->pods, &why);
  if (!edits.has_value()) return why;
  InPlacePlan commit;
  commit.batch.first_flush = tables.batch.first_delete_chains;
  for (const std::string& name : commit.batch.first_flush) {
    absl::StrAppend(&commit.text, "flush chain inet ", kTableName, " ", name, "\n");
  }
  for (SetElementEdit& e : *edits) {
    absl::StrAppend(&commit.text, ElementEditText(e));
    (e.add ? commit.batch.last_element_adds : commit.batch.first_element_deletes).push_back(std::move(e));
  }
  plan->later.clear();
  if (!tables.text.empty()) {
    InPlacePlan t;
    t.batch = tables.batch;
    t.text = tables.text;
    plan->later.push_back(std::move(t));
  }
  if (!tables.cleanup_text.empty()) {
    InPlacePlan c;
    c.batch = tables.cleanup;
    c.text = tables.cleanup_text;
    plan->later.push_back(std::move(c));
  }
  plan->commit = std::move(commit);
  plan->one_commit = true;
  return "";
}

// Whether the identities the delta appends take the program past the mark's layout (nft.h
// Capacity): the planners refuse, and the full path reports the limit.
bool PastIdentityLimit(const ir::CompiledPolicy& previous, const ir::CompiledPolicyDelta& delta) {
  return previous.identities_size() + static_cast<uint64_t>(delta.identities_size()) > kMaxIdentities;
}

// A delta's two parts as the planners take them apart: the table part (peer sets, tables,
// endpoints: PlanTables) and the pod part (address ranges and identities' pods, plus the
// appended identities when `identities`: PlanPodEdits / PlanDeltaUpdate).
ir::CompiledPolicyDelta TablePart(const ir::CompiledPolicyDelta& delta) {
  ir::CompiledPolicyDelta tables;
  *tables.mutable_peer_sets() = delta.peer_sets();
  *tables.mutable_tables() = delta.tables();
  *tables.mutable_endpoints() = delta.endpoints();
  return tables;
}
ir::CompiledPolicyDelta PodPart(const ir::CompiledPolicyDelta& delta, bool identities) {
  ir::CompiledPolicyDelta pods;
  *pods.mutable_ipv4() = delta.ipv4();
  *pods.mutable_ipv6() = delta.ipv6();
  *pods.mutable_identity_pods() = delta.identity_pods();
  if (identities) *pods.mutable_identities() = delta.identities();
  return pods;
}

}  // namespace

PodTablePlan PlanPodTableDelta(DeltaIndex* index, const ir::CompiledPolicy& previous,
                               const ir::CompiledPolicyDelta& delta) {
  PodTablePlan plan;
  auto refuse = [&](std::string why) { return Refused(&plan, std::move(why)); };
  if (!delta.identities().empty()) return refuse("the delta appends identities");
  const ir::CompiledPolicyDelta tables = TablePart(delta), pods = PodPart(delta, false);
  // An endpoint leaves (its table is retired): its addresses first, its dispatch entries and
  // chains after. Else the chains and the new endpoint's entries first, its addresses after.
  plan.tables_first = true;
  for (const ir::EndpointSliceEdit& x : delta.endpoints()) {
    if (x.end() < x.begin() || x.end() - x.begin() > static_cast<uint32_t>(x.endpoints_size())) {
      plan.tables_first = false;
    }
  }
  // The second step is planned on the index as the first leaves it, then the index is put
  // back: nothing changes until the caller has committed both.
  DeltaIndexEdit undo;
  if (plan.tables_first) {
    plan.tables = PlanTables(*index, previous, tables, true, nullptr, &plan.tables_edit);
    if (!plan.tables.fallback.empty()) return refuse(plan.tables.fallback);
    ApplyIndexEdit(plan.tables_edit, index, &undo);
    plan.pods = PlanPodEdits(*index, previous, pods, index->selected.size(), &plan.pods_edit);
  } else {
    plan.pods = PlanDeltaUpdate(*index, previous, pods, &plan.pods_edit);
    if (!plan.pods.fallback.empty()) return refuse(plan.pods.fallback);
    ApplyIndexEdit(plan.pods_edit, index, &undo);
    plan.tables = PlanTables(*index, previous, tables, true, &pods, &plan.tables_edit);
  }
  ApplyIndexEdit(undo, index);
  if (!plan.tables.fallback.empty()) return refuse(plan.tables.fallback);
  if (!plan.pods.fallback.empty()) return refuse(plan.pods.fallback);
  if (getenv("NP_NFT_POD_TABLE_TWO_COMMITS") != nullptr) {
    plan.two_commits = "NP_NFT_POD_TABLE_TWO_COMMITS";
  } else {
    plan.two_commits = plan.tables_first ? OneCommitComing(*index, &plan) : OneCommitLeaving(&plan);
  }
  return plan;
}

PodTablePlan PlanSplitDelta(DeltaIndex* index, const ir::CompiledPolicy& previous,
                            const ir::CompiledPolicyDelta& delta) {
  PodTablePlan plan;
  auto refuse = [&](std::string why) { return Refused(&plan, std::move(why)); };
  if (delta.tables().empty() && delta.peer_sets().empty()) return refuse("no policy part");
  for (const ir::EndpointSliceEdit& x : delta.endpoints()) {
    if (x.end() - x.begin() != static_cast<uint32_t>(x.endpoints_size())) {
      return refuse("endpoints come or go");
    }
  }
  if (PastIdentityLimit(previous, delta)) return refuse("past the identity limit");
  const ir::CompiledPolicyDelta tables = TablePart(delta), pods = PodPart(delta, true);
  // The table part read with the addresses already moved: an identity named anew gets its
  // addresses' elements (id_other -> its new chain) in the same transaction.
  plan.tables = PlanTables(*index, previous, tables, false, &pods, &plan.tables_edit,
                           Overlay{&delta, nullptr});
  if (!plan.tables.fallback.empty()) return refuse(plan.tables.fallback);
  // What the pod part still changes once the table part is in: nothing, or it is not a split.
  DeltaIndexEdit undo;
  ApplyIndexEdit(plan.tables_edit, index, &undo);
  plan.pods = PlanPodEdits(*index, previous, pods, index->selected.size(), &plan.pods_edit);
  ApplyIndexEdit(undo, index);
  if (!plan.pods.fallback.empty()) return refuse(plan.pods.fallback);
  if (!plan.pods.transactions.empty()) {
    return refuse("addresses change identity beyond those of identities named anew");
  }
  return plan;
}

IdentityPlan PlanIdentityDelta(DeltaIndex* index, const ir::CompiledPolicy& previous,
                               const ir::CompiledPolicyDelta& delta) {
  IdentityPlan plan;
  auto refuse = [&](std::string why) { return Refused(&plan, std::move(why)); };
  if (!delta.tables().empty() || !delta.endpoints().empty()) {
    return refuse("identities with tables or endpoints (a pod of this node)");
  }
  if (PastIdentityLimit(previous, delta)) return refuse("past the identity limit");
  // pods_of counts an edit's pods: its names are checked first.
  if (!CheckIdentityPodsEdits(previous, delta).ok()) {
    return refuse("an invalid delta: identity_pods");
  }
  const uint32_t count = static_cast<uint32_t>(previous.identities_size());
  // Whether identity `id` has addresses before (after) the delta: an identity's addresses
  // are its pods' (or external ones), so one without pods and not external has none
  // (np/lower_align.h: an unused identity is in no range).
  auto pods_of = [&](uint32_t id, bool after) -> int {
    if (id >= count) return after ? delta.identities(static_cast<int>(id - count)).pods_size() : 0;
    if (previous.identities(static_cast<int>(id)).external()) return 1;
    const ir::IdentityPodsEdit* edit = after ? PodsEditOf(delta, id) : nullptr;
    return edit != nullptr ? PodsAfterEdit(previous, delta, *edit)
                           : previous.identities(static_cast<int>(id)).pods_size();
  };
  const uint32_t identities = count + static_cast<uint32_t>(delta.identities_size());
  // Per peer set: the gains commit's version (old and new members), and the new one where
  // it drops members (the losses, deferred past a grace period after the addresses move).
  ir::CompiledPolicyDelta gains, losses;
  std::map<uint32_t, ir::PeerSet> union_sets;
  const uint32_t old_sets = static_cast<uint32_t>(previous.peer_sets_size());
  for (const ir::PeerSet& next : delta.peer_sets()) {
    if (absl::Status st = CheckPeerSet(next, next.id(), identities); !st.ok()) {
      return refuse(absl::StrCat("an invalid delta: ", st.message()));
    }
    if (next.id() >= old_sets) {
      *gains.add_peer_sets() = next;  // no rule names it: PlanTables refuses otherwise
      continue;
    }
    const ir::PeerSet& old = previous.peer_sets(static_cast<int>(next.id()));
    if (old.all() != next.all()) return refuse(absl::StrCat("peer set ", next.id(), " turns `all`"));
    std::vector<uint32_t> both;
    std::set_union(old.identities().begin(), old.identities().end(), next.identities().begin(),
                   next.identities().end(), std::back_inserter(both));
    for (uint32_t id : both) {
      const bool was = std::binary_search(old.identities().begin(), old.identities().end(), id);
      const bool is = std::binary_search(next.identities().begin(), next.identities().end(), id);
      // A member that comes or goes while it has addresses changes a verdict by itself: a
      // policy event's, not a relabel's (the other planners decide).
      if (!was && pods_of(id, false) > 0) {
        return refuse(absl::StrCat("peer set ", next.id(), " gains identity ", id, ", which has addresses"));
      }
      if (!is && pods_of(id, true) > 0) {
        return refuse(absl::StrCat("peer set ", next.id(), " loses identity ", id, ", which keeps addresses"));
      }
    }
    ir::PeerSet u = next;
    u.clear_identities();
    for (uint32_t id : both) u.add_identities(id);
    if (both.size() != static_cast<size_t>(old.identities_size())) *gains.add_peer_sets() = u;
    if (both.size() != static_cast<size_t>(next.identities_size())) *losses.add_peer_sets() = next;
    union_sets[next.id()] = std::move(u);
  }
  const ir::CompiledPolicyDelta pods = PodPart(delta, true);
  // The gains are planned from `previous`'s peer sets, the losses from the union installed.
  const Overlay as_previous{&delta, nullptr}, as_gained{&delta, &union_sets};
  // Each step is planned on the index as the steps before leave it, then the index is put
  // back: nothing changes until the caller has committed them.
  DeltaIndexEdit undo_gains, undo_pods;
  if (!gains.peer_sets().empty()) {
    plan.gains = PlanTables(*index, previous, gains, false, nullptr, &plan.gains_edit, as_previous);
    if (!plan.gains.fallback.empty()) return refuse(plan.gains.fallback);
    if (!plan.gains.cleanup_text.empty()) return refuse("the gains retire an identity");
  }
  ApplyIndexEdit(plan.gains_edit, index, &undo_gains);
  plan.pods = PlanPodEdits(*index, previous, pods, index->selected.size(), &plan.pods_edit);
  if (plan.pods.fallback.empty() && !losses.peer_sets().empty()) {
    ApplyIndexEdit(plan.pods_edit, index, &undo_pods);
    plan.losses = PlanTables(*index, previous, losses, false, &pods, &plan.losses_edit, as_gained);
    ApplyIndexEdit(undo_pods, index);
  }
  ApplyIndexEdit(undo_gains, index);
  if (!plan.pods.fallback.empty()) return refuse(plan.pods.fallback);
  if (!plan.losses.fallback.empty()) return refuse(plan.losses.fallback);
  if (!plan.losses.cleanup_text.empty()) return refuse("the losses retire an identity with addresses");
  return plan;
}

namespace {

// The indirection chains of PlanMoveDelta (nft.h), without the generation suffix.
std::string MoveChainOf(int d) { return absl::StrCat("mv_", DirName(d)); }
constexpr char kMoveIdentityChain[] = "mv_identity";

// The rule of an identity chain, `id_<n>` or `id_other` (BuildProgram's), by target name;
// nullopt for anything else.
std::optional<std::string> MarkRuleOfTarget(absl::string_view target) {
  if (target == "id_other") return MarkRule(kOtherIdentity);
  uint32_t id = 0;
  if (!absl::ConsumePrefix(&target, "id_") || !absl::SimpleAtoi(target, &id) || id >= kMaxIdentities) {
    return std::nullopt;
  }
  return MarkRule(id);
}

// `chains` declared (netlink) and as `nft -f` text.
void AddChains(const std::vector<Chain>& chains, InPlacePlan* plan) {
  for (const Chain& c : chains) {
    WholeChain w;
    w.name = c.name;
    w.comment = c.comment;
    w.rules = c.rules;
    plan->batch.chains.push_back(std::move(w));
  }
  absl::StrAppend(&plan->text, ChainsText(chains));
}

}  // namespace

MovePlan PlanMoveDelta(DeltaIndex* index_in, const ir::CompiledPolicy& previous,
                       const ir::CompiledPolicyDelta& delta) {
  MovePlan plan;
  InPlacePlan table_plan;
  // The move's part is planned on the index as a coming table part leaves it; `index_in` is
  // put back before this returns (nothing changes until the caller has committed).
  DeltaIndexEdit undo_tables;
  bool undo = false;
  auto refuse = [&](std::string why) {
    if (undo) ApplyIndexEdit(undo_tables, index_in);
    undo = false;
    return Refused(&plan, std::move(why));
  };
  if (!delta.identities().empty()) return refuse("the delta appends identities");
  const bool table_part = !delta.peer_sets().empty() || !delta.tables().empty();
  if (table_part && getenv("NP_NFT_NO_MOVE_TABLES") != nullptr) {
    return refuse("the delta edits peer sets or tables (NP_NFT_NO_MOVE_TABLES)");
  }
  // A table that comes or goes with the move (nft.h): its part planned as PlanPodTableDelta
  // plans it (PlanTables), the moved endpoint's own entries left to the indirection below.
  // Coming: the table part only writes (chains, peer sets, identities named anew with their
  // addresses' elements), planned on the index as it is and committed in (1). Going: it only
  // deletes, planned on the index as the move leaves it, deferred with (3).
  const ir::CompiledPolicyDelta tables = TablePart(delta);
  ir::CompiledPolicyDelta pods_and_endpoints = PodPart(delta, false);
  *pods_and_endpoints.mutable_endpoints() = delta.endpoints();
  if (table_part) {
    table_plan = PlanTables(*index_in, previous, tables, /*pods=*/true, /*applied=*/nullptr,
                             &plan.tables_edit, Overlay{}, /*moves_left_out=*/true);
    if (!table_plan.fallback.empty()) return refuse(absl::StrCat("the table part: ", table_plan.fallback));
    const WholeBatch& b = table_plan.batch;
    const bool writes = !table_plan.sets_first_text.empty() || !b.chains.empty() || !b.sets.empty() ||
                        !b.last_element_adds.empty();
    const bool deletes = !b.first_flush.empty() || !b.flush.empty() || !b.first_delete_sets.empty() ||
                         !b.first_delete_chains.empty() || !b.delete_sets.empty() ||
                         !b.delete_chains.empty() || !table_plan.cleanup_text.empty();
    // Beside writes, only identity pieces may be deleted (retargeted to an identity named
    // anew); a dispatch deletion would be another endpoint leaving.
    bool other_deletes = false;
    for (const SetElementEdit& e : b.first_element_deletes) other_deletes = other_deletes || !e.interval;
    if (writes && (deletes || other_deletes)) {
      return refuse("the table part both writes and deletes (a table comes and another goes)");
    }
    plan.tables_first = writes;
    if (writes) {
      ApplyIndexEdit(plan.tables_edit, index_in, &undo_tables);
      undo = true;
    } else if (!b.first_element_deletes.empty()) {
      return refuse("the table part deletes elements of its own");
    }
  }
  const DeltaIndex& index = *index_in;
  // The element edits PlanDeltaUpdate would make, whatever their order (no order is safe for
  // a move: that is what the indirection is for).
  ElementPlan pods = PlanPodEdits(index, previous, table_part ? pods_and_endpoints : delta,
                                  index.selected.size(), &plan.edit, /*unordered=*/true,
                                  /*selected_planned=*/table_part);
  if (!pods.fallback.empty()) return refuse(pods.fallback);
  const DeltaIndexEdit& edit = plan.edit;
  const std::string suffix = absl::StrCat("_g", index.generation);
  // Per family, the one address that changes (PlanPodEdits allows one a family), and per
  // direction the table whose chain its dispatch entry jumps to, before and after (-1: none).
  std::optional<std::string> address[2];
  int64_t old_table[2][2], new_table[2][2];
  for (int f = 0; f < 2; ++f) {
    auto note = [&](const std::string& a) {
      if (address[f].has_value() && *address[f] != a) return false;
      address[f] = a;
      return true;
    };
    for (int d : {kIngress, kEgress}) {
      for (const std::string& a : edit.dispatch_erase[d][f]) {
        if (!note(a)) return refuse("more than one address of a family changes");
      }
      for (const auto& [a, table] : edit.dispatch_insert[d][f]) {
        if (!note(a)) return refuse("more than one address of a family changes");
      }
    }
    if (!address[f].has_value()) {
      if (!edit.identity_erase[f].empty() || !edit.identity_insert[f].empty()) return refuse("not a move: an identity edit without the endpoint's");
      continue;
    }
    for (int d : {kIngress, kEgress}) {
      auto found = index.dispatch[d][f].find(*address[f]);
      old_table[d][f] = found == index.dispatch[d][f].end() ? -1 : found->second;
      new_table[d][f] = old_table[d][f];
      if (!edit.dispatch_erase[d][f].empty()) new_table[d][f] = -1;
      for (const auto& [a, table] : edit.dispatch_insert[d][f]) new_table[d][f] = table;
    }
  }
  if (!address[0].has_value() && !address[1].has_value()) return refuse("no endpoint changes");
  // One endpoint: both families agree on its tables (an endpoint has one table).
  int64_t old_of[2] = {-2, -2}, new_of[2] = {-2, -2};
  for (int d : {kIngress, kEgress}) {
    for (int f = 0; f < 2; ++f) {
      if (!address[f].has_value()) continue;
      if ((old_of[d] != -2 && old_of[d] != old_table[d][f]) ||
          (new_of[d] != -2 && new_of[d] != new_table[d][f])) {
        return refuse("the families' dispatch entries disagree");
      }
      old_of[d] = old_table[d][f];
      new_of[d] = new_table[d][f];
    }
  }
  // Per family, the identity map's answer for the address before and after.
  std::string old_target[2], new_target[2];
  for (int f = 0; f < 2; ++f) {
    if (!address[f].has_value()) continue;
    const std::string& a = *address[f];
    auto it = index.identity[f].upper_bound(a);
    if (it == index.identity[f].begin()) return refuse("the remembered identity map does not cover the address");
    --it;
    if (it->second.last < a) return refuse("the remembered identity map does not cover the address");
    old_target[f] = new_target[f] = it->second.target;
    for (const auto& [first, piece] : edit.identity_insert[f]) {
      if (first <= a && a <= piece.last) new_target[f] = piece.target;
    }
  }
  std::optional<std::string> old_mark, new_mark;
  bool identity_changes = false;
  for (int f = 0; f < 2; ++f) {
    if (!address[f].has_value() || old_target[f] == new_target[f]) continue;
    identity_changes = true;
    std::optional<std::string> o = MarkRuleOfTarget(old_target[f]), n = MarkRuleOfTarget(new_target[f]);
    if (!o.has_value() || !n.has_value()) return refuse("an identity element that is no identity chain");
    if ((old_mark.has_value() && *old_mark != *o) || (new_mark.has_value() && *new_mark != *n)) {
      return refuse("the families' identities disagree");
    }
    old_mark = o;
    new_mark = n;
  }
  bool side_changes = false;
  for (int d : {kIngress, kEgress}) side_changes = side_changes || old_of[d] != new_of[d];
  // Only one of the two: PlanDeltaUpdate's one transaction (or its two) is safe, and cheaper.
  if (!identity_changes || !side_changes) return refuse("not a move: the identity or the side stays");

  // The indirection: per direction whose entry changes, E_d (`jump` the old table's chain,
  // then the new one's; none: no rule, the side allows), and P (the old mark, then the new).
  std::vector<Chain> old_chains, new_chains;
  for (int d : {kIngress, kEgress}) {
    if (old_of[d] == new_of[d]) continue;
    Chain c;
    c.name = MoveChainOf(d) + suffix;
    c.comment = "a pod's dispatch while it moves (nft.h PlanMoveDelta)";
    Chain n = c;
    if (old_of[d] >= 0) c.rules.push_back(absl::StrCat("jump ", ChainOf(static_cast<uint32_t>(old_of[d]), d), suffix));
    if (new_of[d] >= 0) n.rules.push_back(absl::StrCat("jump ", ChainOf(static_cast<uint32_t>(new_of[d]), d), suffix));
    old_chains.push_back(std::move(c));
    new_chains.push_back(std::move(n));
  }
  {
    Chain c;
    c.name = absl::StrCat(kMoveIdentityChain, suffix);
    c.comment = "a pod's identity while it moves (nft.h PlanMoveDelta)";
    Chain n = c;
    c.rules.push_back(*old_mark);
    n.rules.push_back(*new_mark);
    old_chains.push_back(std::move(c));
    new_chains.push_back(std::move(n));
  }
  auto move_chain_for = [&](int d) { return MoveChainOf(d) + suffix; };

  // (1) The chains, reached by nothing yet. Exclusive: a chain of that name left over (np
  // retires them before it plans) would get these rules appended to its own.
  for (const Chain& c : old_chains) absl::StrAppend(&plan.create.text, "create chain inet ", kTableName, " ", c.name, "\n");
  AddChains(old_chains, &plan.create);
  for (WholeChain& w : plan.create.batch.chains) w.exclusive = true;

  // (2) The address's elements pointed at the chains, which get their new rules.
  for (const Chain& c : new_chains) {
    plan.commit.batch.first_flush.push_back(c.name);
    absl::StrAppend(&plan.commit.text, "flush chain inet ", kTableName, " ", c.name, "\n");
  }
  // (3) Deferred: the address's elements pointed at their new targets, the chains deleted.
  for (const Chain& c : new_chains) {
    plan.retire.batch.first_flush.push_back(c.name);
    plan.retire.batch.first_delete_chains.push_back(c.name);
    absl::StrAppend(&plan.retire.text, "flush chain inet ", kTableName, " ", c.name, "\n");
  }
  std::vector<SetElementEdit> commit_deletes, commit_adds, retire_deletes, retire_adds;
  for (int f = 0; f < 2; ++f) {
    if (!address[f].has_value()) continue;
    const std::string& a = *address[f];
    // The identity map: PlanPodEdits' pieces, the one holding the address split around it.
    const std::string map = MapName("identity", f, suffix);
    SetElementEdit erase{map, false, true, {}}, insert{map, true, true, {}};
    SetElementEdit aliased_erase{map, false, true, {}}, direct{map, true, true, {}};
    for (const std::string& first : edit.identity_erase[f]) {
      auto it = index.identity[f].find(first);
      if (it == index.identity[f].end()) return refuse("the remembered identity map lacks a piece");
      erase.elements.push_back({first, it->second.last, ""});
    }
    for (const auto& [first, piece] : edit.identity_insert[f]) {
      const std::string jump = piece.target + suffix;
      if (!(first <= a && a <= piece.last) || old_target[f] == new_target[f]) {
        insert.elements.push_back({first, piece.last, jump});
        continue;
      }
      std::vector<SetElementEdit::Element> split;
      if (first < a) split.push_back({first, Predecessor(a), jump});
      split.push_back({a, a, absl::StrCat(kMoveIdentityChain, suffix)});
      if (a < piece.last) split.push_back({Successor(a), piece.last, jump});
      for (const SetElementEdit::Element& y : split) {
        insert.elements.push_back(y);
        aliased_erase.elements.push_back({y.first, y.last, ""});
      }
      direct.elements.push_back({first, piece.last, jump});
    }
    if (!erase.elements.empty()) commit_deletes.push_back(std::move(erase));
    if (!insert.elements.empty()) commit_adds.push_back(std::move(insert));
    if (!aliased_erase.elements.empty()) retire_deletes.push_back(std::move(aliased_erase));
    if (!direct.elements.empty()) retire_adds.push_back(std::move(direct));
    // The dispatch maps: the address's entry to E_d wherever the side changes.
    for (int d : {kEgress, kIngress}) {
      if (old_of[d] == new_of[d]) continue;
      const std::string dmap = MapName(DirName(d), f, suffix);
      if (old_table[d][f] >= 0) commit_deletes.push_back({dmap, false, false, {{a, a, ""}}});
      commit_adds.push_back({dmap, true, false, {{a, a, move_chain_for(d)}}});
      retire_deletes.push_back({dmap, false, false, {{a, a, ""}}});
      if (new_table[d][f] >= 0) {
        retire_adds.push_back(
            {dmap, true, false, {{a, a, ChainOf(static_cast<uint32_t>(new_table[d][f]), d) + suffix}}});
      }
    }
  }
  for (SetElementEdit& e : commit_deletes) {
    absl::StrAppend(&plan.commit.text, ElementEditText(e));
    plan.commit.batch.first_element_deletes.push_back(std::move(e));
  }
  AddChains(new_chains, &plan.commit);
  for (SetElementEdit& e : commit_adds) {
    absl::StrAppend(&plan.commit.text, ElementEditText(e));
    plan.commit.batch.last_element_adds.push_back(std::move(e));
  }
  for (SetElementEdit& e : retire_deletes) {
    absl::StrAppend(&plan.retire.text, ElementEditText(e));
    plan.retire.batch.first_element_deletes.push_back(std::move(e));
  }
  for (const Chain& c : new_chains) {
    absl::StrAppend(&plan.retire.text, "delete chain inet ", kTableName, " ", c.name, "\n");
  }
  for (SetElementEdit& e : retire_adds) {
    absl::StrAppend(&plan.retire.text, ElementEditText(e));
    plan.retire.batch.last_element_adds.push_back(std::move(e));
  }
  if (!table_part) return plan;
  if (plan.tables_first) {
    // A coming table: its part and the indirection in one commit (1), its new peer sets a
    // commit ahead (sets_first). Reached by nothing until (2) points A's entries at E_d.
    InPlacePlan create = table_plan;
    for (WholeChain& w : plan.create.batch.chains) create.batch.chains.push_back(std::move(w));
    absl::StrAppend(&create.text, plan.create.text);
    plan.create = std::move(create);
    ApplyIndexEdit(undo_tables, index_in);
    undo = false;
    return plan;
  }
  // A going table: planned on the index as the move leaves it (A's entries at Ty), with the
  // addresses as the pod part leaves them (an identity that no rule names any more retires in
  // its cleanup, its addresses, A's among them, to id_other). Deferred after (3).
  DeltaIndexEdit undo_move;
  ApplyIndexEdit(plan.edit, index_in, &undo_move);
  const ir::CompiledPolicyDelta pods_part = PodPart(delta, false);
  table_plan = PlanTables(*index_in, previous, tables, /*pods=*/true, &pods_part,
                           &plan.tables_edit, Overlay{}, /*moves_left_out=*/true);
  ApplyIndexEdit(undo_move, index_in);
  if (!table_plan.fallback.empty()) return refuse(absl::StrCat("the table part: ", table_plan.fallback));
  const WholeBatch& b = table_plan.batch;
  if (!table_plan.sets_first_text.empty() || !b.chains.empty() || !b.sets.empty() ||
      !b.last_element_adds.empty() || !b.first_element_deletes.empty()) {
    return refuse("the going table part writes rules, sets or elements");
  }
  // Into (3)'s own transaction when it only flushes and deletes chains and sets (one commit
  // less on the next call's path: every walker then began after (2), nft.h), else after it.
  if (b.flush.empty() && b.delete_sets.empty() && b.delete_chains.empty() && !b.add_table) {
    WholeBatch& r = plan.retire.batch;
    r.first_flush.insert(r.first_flush.end(), b.first_flush.begin(), b.first_flush.end());
    r.first_delete_sets.insert(r.first_delete_sets.end(), b.first_delete_sets.begin(), b.first_delete_sets.end());
    r.first_delete_chains.insert(r.first_delete_chains.end(), b.first_delete_chains.begin(),
                                 b.first_delete_chains.end());
    absl::StrAppend(&plan.retire.text, table_plan.text);
  } else if (!table_plan.text.empty()) {
    InPlacePlan t;
    t.batch = table_plan.batch;
    t.text = table_plan.text;
    plan.later.push_back(std::move(t));
  }
  if (!table_plan.cleanup_text.empty()) {
    InPlacePlan c;
    c.batch = table_plan.cleanup;
    c.text = table_plan.cleanup_text;
    plan.later.push_back(std::move(c));
  }
  return plan;
}

namespace {

// The edit that puts `index` back as it is now once `edit` is applied to it: every key the
// edit touches erased, then given its value now (if it has one), counters negated.
DeltaIndexEdit UndoOf(const DeltaIndexEdit& edit, const DeltaIndex& index) {
  DeltaIndexEdit undo;
  auto restore = [](const auto& map, const auto& erased, const auto& inserted, auto* erase,
                    auto* insert) {
    std::set<std::string> keys(erased.begin(), erased.end());
    for (const auto& [key, value] : inserted) keys.insert(key);
    for (const std::string& key : keys) {
      erase->push_back(key);
      auto it = map.find(key);
      if (it != map.end()) insert->push_back(*it);
    }
  };
  for (int f = 0; f < 2; ++f) {
    restore(index.identity[f], edit.identity_erase[f], edit.identity_insert[f],
            &undo.identity_erase[f], &undo.identity_insert[f]);
    for (int d = 0; d < 2; ++d) {
      restore(index.dispatch[d][f], edit.dispatch_erase[d][f], edit.dispatch_insert[d][f],
              &undo.dispatch_erase[d][f], &undo.dispatch_insert[d][f]);
    }
  }
  const size_t tables = index.selected.size();
  if (edit.tables != 0 && edit.tables != tables) undo.tables = static_cast<uint32_t>(tables);
  for (const auto& [table, change] : edit.selected) {
    if (table < tables) undo.selected.push_back({table, -change});  // else resized away
  }
  for (const auto& [peer_set, users] : edit.users) {
    auto it = index.users.find(peer_set);
    undo.users.push_back({peer_set, it == index.users.end() ? decltype(users){} : it->second});
  }
  for (const auto& [identity, refs] : edit.identity_refs) {
    auto it = index.identity_refs.find(identity);
    undo.identity_refs.push_back({identity, it == index.identity_refs.end() ? 0 : it->second});
  }
  for (const auto& [chain, exists] : edit.chains) {
    undo.chains.push_back({chain, index.chains.count(chain) > 0});
  }
  undo.miss_drops = -edit.miss_drops;
  undo.rules = -edit.rules;
  undo.elements = -edit.elements;
  return undo;
}

}  // namespace

void ApplyIndexEdit(const DeltaIndexEdit& edit, DeltaIndex* index, DeltaIndexEdit* undo) {
  if (undo != nullptr) *undo = UndoOf(edit, *index);
  for (int f = 0; f < 2; ++f) {
    for (const std::string& first : edit.identity_erase[f]) index->identity[f].erase(first);
    for (const auto& [first, piece] : edit.identity_insert[f]) index->identity[f][first] = piece;
    for (int d = 0; d < 2; ++d) {
      for (const std::string& a : edit.dispatch_erase[d][f]) index->dispatch[d][f].erase(a);
      for (const auto& [a, table] : edit.dispatch_insert[d][f]) index->dispatch[d][f][a] = table;
    }
  }
  if (edit.tables != 0) index->selected.resize(edit.tables, 0);  // an undo may shrink it
  for (const auto& [table, change] : edit.selected) index->selected[table] += change;
  for (const auto& [peer_set, users] : edit.users) {
    if (users.empty()) {
      index->users.erase(peer_set);
    } else {
      index->users[peer_set] = users;
    }
  }
  for (const auto& [identity, refs] : edit.identity_refs) {
    if (refs == 0) {
      index->identity_refs.erase(identity);
      index->referenced.erase(identity);
    } else {
      index->identity_refs[identity] = refs;
      index->referenced.insert(identity);
    }
  }
  for (const auto& [chain, exists] : edit.chains) {
    if (exists) {
      index->chains.insert(chain);
    } else {
      index->chains.erase(chain);
    }
  }
  index->miss_drops = static_cast<uint64_t>(static_cast<int64_t>(index->miss_drops) + edit.miss_drops);
  index->rules = static_cast<uint64_t>(static_cast<int64_t>(index->rules) + edit.rules);
  index->elements = static_cast<uint64_t>(static_cast<int64_t>(index->elements) + edit.elements);
}

void MaterializeElements(const DeltaIndex& index, Program* installed) {
  const std::string suffix = absl::StrCat("_g", index.generation);
  for (Set& s : installed->sets) {
    const absl::string_view base = BaseName(s.name);
    for (int f = 0; f < 2; ++f) {
      if (base == MapName("identity", f, "")) {
        s.elements.clear();
        for (const auto& [first, piece] : index.identity[f]) {
          s.elements.push_back(IdentityElement(first, piece, suffix));
        }
      }
      for (int d : {kIngress, kEgress}) {
        if (base != MapName(DirName(d), f, "")) continue;
        s.elements.clear();
        for (const auto& [address, table] : index.dispatch[d][f]) {
          s.elements.push_back(DispatchElement(address, table, d, suffix));
        }
      }
    }
  }
}

absl::StatusOr<std::vector<SetElementEdit>> ParseElementTransaction(const std::string& text) {
  std::vector<SetElementEdit> out;
  const std::string table_prefix = absl::StrCat(" element inet ", kTableName, " ");
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    SetElementEdit edit;
    if (absl::ConsumePrefix(&line, "add")) {
      edit.add = true;
    } else if (!absl::ConsumePrefix(&line, "delete")) {
      return absl::InvalidArgumentError(absl::StrCat("not an element edit: ", line));
    }
    const size_t open = line.find(" { ");
    if (!absl::ConsumePrefix(&line, table_prefix) || open == absl::string_view::npos ||
        !absl::ConsumeSuffix(&line, " }")) {
      return absl::InvalidArgumentError(absl::StrCat("not an element edit: ", line));
    }
    const size_t name_end = line.find(" { ");
    edit.set = std::string(line.substr(0, name_end));
    edit.interval = absl::StartsWith(BaseName(edit.set), "identity");
    for (absl::string_view element : absl::StrSplit(line.substr(name_end + 3), ", ")) {
      // A deleted key has no data: give it some so that ParseElement reads it.
      absl::StatusOr<Element> e =
          ParseElement(edit.add ? std::string(element) : absl::StrCat(element, " : -"));
      if (!e.ok()) return e.status();
      SetElementEdit::Element x{e->first, e->last, ""};
      if (edit.add) {
        absl::string_view target = e->target;
        if (!absl::ConsumePrefix(&target, "jump ")) {
          return absl::InvalidArgumentError(absl::StrCat("not a jump: ", element));
        }
        x.jump = std::string(target);
      }
      edit.elements.push_back(std::move(x));
    }
    out.push_back(std::move(edit));
  }
  return out;
}

WholeBatch RetireBatch(const Installed& installed, const Program& next) {
  WholeBatch batch;
  for (const Installed::Object& o : Retired(installed, next)) {
    if (o.kind == "chain") {
      batch.flush.push_back(o.name);
      batch.delete_chains.push_back(o.name);
    } else {
      batch.delete_sets.push_back(o.name);
    }
  }
  return batch;
}

absl::StatusOr<WholeBatch> SwitchBatch(const Program& next, SwitchPart part) {
  WholeBatch batch;
  batch.add_table = true;
  for (const Chain& c : next.chains) {
    if (c.hook.empty() != (part == SwitchPart::kObjects)) continue;
    WholeChain w;
    w.name = c.name;
    if (!c.hook.empty()) {
      if (c.hook != "type filter hook forward priority filter; policy accept;") {
        return absl::UnimplementedError(absl::StrCat("no netlink encoding for hook `", c.hook, "`"));
      }
      w.forward_hook = true;
      batch.flush.push_back(c.name);
    }
    w.comment = c.comment.empty() ? "" : CommentText(c.comment, kNftCommentMax);
    w.rules = c.rules;
    batch.chains.push_back(std::move(w));
  }
  if (part == SwitchPart::kBaseChains) return batch;
  // The guard, as SwitchText's caller writes it: the new generation's first chain must not
  // exist yet (else what np believes is installed is not).
  if (!batch.chains.empty()) batch.chains.front().exclusive = true;
  for (const Set& s : next.sets) {
    WholeSet w;
    w.name = s.name;
    w.map = s.map;
    w.interval = s.interval;
    w.comment = s.comment.empty() ? "" : CommentText(s.comment, kNftCommentMax);
    if (s.type == "ipv4_addr : verdict" && s.map) {
      w.key = WholeSet::kIpv4;
    } else if (s.type == "ipv6_addr : verdict" && s.map) {
      w.key = WholeSet::kIpv6;
    } else if (s.type == "mark" && !s.map) {
      w.key = WholeSet::kMark;
    } else {
      return absl::UnimplementedError(absl::StrCat("no netlink encoding for set type `", s.type, "`"));
    }
    for (const std::string& text : s.elements) {
      SetElementEdit::Element x;
      if (w.key == WholeSet::kMark) {
        absl::StatusOr<SetElementEdit::Element> mark = MarkElement(text);
        if (!mark.ok()) {
          return absl::UnimplementedError(absl::StrCat("no netlink encoding for `", text, "`"));
        }
        x = *std::move(mark);
      } else {
        absl::StatusOr<Element> e = ParseElement(text);
        if (!e.ok()) return e.status();
        absl::string_view target = e->target;
        if (!absl::ConsumePrefix(&target, "jump ")) {
          return absl::UnimplementedError(absl::StrCat("no netlink encoding for `", text, "`"));
        }
        x = {e->first, e->last, std::string(target)};
      }
      w.elements.push_back(std::move(x));
    }
    SortByStart(&w.elements);
    batch.sets.push_back(std::move(w));
  }
  return batch;
}

}  // namespace nft

namespace {

// ---- Running nft: in-process through libnftables when it is there, else the `nft` binary --
// libnftables (the library the nft binary is built on) is loaded at run time, so that np
// neither links against it nor needs its headers; these are the prototypes of `man
// libnftables` that np uses.
struct NftLibrary {
  void* (*ctx_new)(uint32_t flags);
  void (*ctx_free)(void* ctx);
  int (*run_cmd_from_buffer)(void* ctx, const char* buffer);
  int (*ctx_buffer_output)(void* ctx);
  int (*ctx_buffer_error)(void* ctx);
  const char* (*ctx_get_output_buffer)(void* ctx);
  const char* (*ctx_get_error_buffer)(void* ctx);
  void (*ctx_output_set_flags)(void* ctx, unsigned int flags);

  static constexpr unsigned int kOutputTerse = 1u << 11;  // NFT_CTX_OUTPUT_TERSE

  // Null when the library or one of its functions is missing (then np spawns `nft`).
  static const NftLibrary* Get() {
    static const NftLibrary* library = []() -> const NftLibrary* {
      if (getenv("NP_NFT_NO_LIBRARY") != nullptr) return nullptr;  // tests of the fallback
      void* handle = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) return nullptr;
      auto* l = new NftLibrary;
      bool ok = true;
      auto load = [&](auto& fn, const char* name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, name));
        ok = ok && fn != nullptr;
      };
      load(l->ctx_new, "nft_ctx_new");
      load(l->ctx_free, "nft_ctx_free");
      load(l->run_cmd_from_buffer, "nft_run_cmd_from_buffer");
      load(l->ctx_buffer_output, "nft_ctx_buffer_output");
      load(l->ctx_buffer_error, "nft_ctx_buffer_error");
      load(l->ctx_get_output_buffer, "nft_ctx_get_output_buffer");
      load(l->ctx_get_error_buffer, "nft_ctx_get_error_buffer");
      load(l->ctx_output_set_flags, "nft_ctx_output_set_flags");
      if (!ok) {
        delete l;
        return nullptr;
      }
      return l;
    }();
    return library;
  }
  // libnftables keeps some process-wide state (its parser's and gmp's set-up): one call at
  // a time across every context.
  static absl::Mutex& CallMutex() {
    static absl::Mutex* mu = new absl::Mutex;
    return *mu;
  }
};

// One libnftables context on a thread of its own that lives in the target network
// namespace. Why a thread: setns() moves only the calling thread, and the context's netlink
// socket talks to the namespace it was opened in; a dedicated thread keeps both in the
// target namespace without ever moving the caller's thread.
class NftSession {
 public:
  // `netns`: a name under /run/netns (`ip netns`), or empty: the caller's namespace (the new
  // thread inherits it).
  static absl::StatusOr<std::unique_ptr<NftSession>> Start(const NftLibrary& library,
                                                           const std::string& netns) {
    std::unique_ptr<NftSession> session(new NftSession(library));
    absl::Notification started;
    absl::Status start_status;
    session->thread_ = std::thread([&, s = session.get()] { s->Loop(netns, &start_status, &started); });
    started.WaitForNotification();
    if (!start_status.ok()) {
      session->thread_.join();
      session->thread_ = std::thread();
      return start_status;
    }
    return session;
  }

  ~NftSession() {
    if (!thread_.joinable()) return;
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

  // `nft -f -` of `commands` (with `terse`: `nft -t`); the output, or the error text.
  absl::StatusOr<std::string> Run(const std::string& commands, bool terse) {
    absl::MutexLock lock(&mu_);
    request_ = &commands;
    terse_ = terse;
    done_ = false;
    mu_.Await(absl::Condition(&done_));
    request_ = nullptr;
    return std::move(result_);
  }

 private:
  explicit NftSession(const NftLibrary& library) : library_(library) {}

  void Loop(const std::string& netns, absl::Status* start_status, absl::Notification* started) {
    if (!netns.empty()) {
      const std::string path = absl::StrCat("/run/netns/", netns);
      int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        *start_status = absl::UnavailableError(
            absl::StrCat("entering network namespace ", path, ": ", std::strerror(errno)));
        if (fd >= 0) close(fd);
        started->Notify();
        return;
      }
      close(fd);
    }
    void* ctx = nullptr;
    {
      absl::MutexLock call(&NftLibrary::CallMutex());
      ctx = library_.ctx_new(0);
      if (ctx != nullptr &&
          (library_.ctx_buffer_output(ctx) != 0 || library_.ctx_buffer_error(ctx) != 0)) {
        library_.ctx_free(ctx);
        ctx = nullptr;
      }
    }
    if (ctx == nullptr) {
      *start_status = absl::UnavailableError("libnftables: no context");
      started->Notify();
      return;
    }
    started->Notify();
    while (true) {
      absl::MutexLock lock(&mu_);
      auto has_work = [this] { return stop_ || (request_ != nullptr && !done_); };
      mu_.Await(absl::Condition(&has_work));
      if (stop_) break;
      absl::MutexLock call(&NftLibrary::CallMutex());
      library_.ctx_output_set_flags(ctx, terse_ ? NftLibrary::kOutputTerse : 0);
      int rc = library_.run_cmd_from_buffer(ctx, request_->c_str());
      // Reading a buffer rewinds it for the next command.
      std::string out = library_.ctx_get_output_buffer(ctx);
      std::string err = library_.ctx_get_error_buffer(ctx);
      if (rc == 0) {
        result_ = std::move(out);
      } else {
        result_ = absl::InternalError(absl::StrCat("nft (libnftables): ", err));
      }
      done_ = true;
    }
    absl::MutexLock call(&NftLibrary::CallMutex());
    library_.ctx_free(ctx);
  }

  const NftLibrary& library_;
  std::thread thread_;
  absl::Mutex mu_;
  const std::string* request_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool terse_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusOr<std::string> result_ ABSL_GUARDED_BY(mu_);
};

// The key of a network namespace: its inode. For the empty attachment netns, the caller's: a
// thread that moved (tests unshare) gets a session and a cache of its own. For a named one,
// the name's: a namespace deleted and created again under the same name is another one (a
// session's thread would otherwise still talk to the old one).
std::string NetnsKey(const std::string& netns) {
  const std::string path =
      netns.empty() ? "/proc/thread-self/ns/net" : absl::StrCat("/run/netns/", netns);
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return absl::StrCat("unknown:", netns);
  return absl::StrCat(netns.empty() ? "current" : "name:" + netns, "@", st.st_dev, ":",
                      st.st_ino);
}

// Waits until every CPU has passed a quiescent state: a packet that began its walk of the
// forward hook (an RCU read-side section) before this call has finished it on return.
// membarrier(MEMBARRIER_CMD_GLOBAL) is synchronize_rcu() in kernel/sched/membarrier.c.
absl::Status WaitForGracePeriod() {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0) {
    return absl::UnavailableError(absl::StrCat("membarrier: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// The calling thread's CPU time: what the kernel does inside a netlink send is charged to it.
uint64_t ThreadCpuNs() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000u + static_cast<uint64_t>(t.tv_nsec);
}

// Whether a delta carries pod edits: address ranges, identities' pods, endpoints that come or go.
bool HasPodParts(const ir::CompiledPolicyDelta& delta) {
  if (!delta.ipv4().empty() || !delta.ipv6().empty() || !delta.identity_pods().empty()) return true;
  for (const ir::EndpointSliceEdit& x : delta.endpoints()) {
    if (x.end() - x.begin() != static_cast<uint32_t>(x.endpoints_size())) return true;
  }
  return false;
}

class NftBackend : public Backend {
 public:
  explicit NftBackend(BackendOptions options) : options_(std::move(options)) {}
  std::string name() const override { return "nft"; }

  absl::StatusOr<ir::BackendCapacity> Capacity(const ir::CompiledPolicy& ir) const override {
    absl::StatusOr<Measured> m = Measure(ir, /*quick_refusal=*/false);
    if (!m.ok()) return m.status();
    return std::move(m->capacity);
  }

  absl::StatusOr<std::string> Render(const ir::CompiledPolicy& ir) const override {
    absl::StatusOr<Measured> m = Measure(ir, /*quick_refusal=*/true);
    if (!m.ok()) return m.status();
    if (absl::Status s = CheckCapacity(m->capacity); !s.ok()) return s;
    return nft::Text(m->program);
  }

  // A generation switch (nft.h says why not the whole replace): commit 1 adds the new
  // generation and points the base chains at it, commit 2 deletes the old one.
  absl::Status Apply(const ir::CompiledPolicy& ir, const Attachment& attachment) override {
    absl::StatusOr<Measured> m = Measure(ir, /*quick_refusal=*/true);
    if (!m.ok()) return m.status();
    if (absl::Status s = CheckCapacity(m->capacity); !s.ok()) return s;
    Namespace& ns = NamespaceFor(attachment);
    FinishCleanup(ns);
    return SwitchAndRemember(ir, *m, ns);
  }

  // Element edits in place when PlanElementUpdate finds them safe (nft.h), else one in-place
  // transaction (and perhaps its cleanup) when PlanInPlaceUpdate does, else Apply. The
  // plan starts from the program this instance installed last (which the contract says is
  // `previous`'s), kept since that Apply or Update: no listing, no second Build.
  absl::Status Update(const ir::CompiledPolicy& previous, const ir::CompiledPolicy& next,
                      const Attachment& attachment) override {
    absl::StatusOr<Measured> m = Measure(next, /*quick_refusal=*/true);
    if (!m.ok()) return m.status();
    if (absl::Status s = CheckCapacity(m->capacity); !s.ok()) return s;
    Namespace& ns = NamespaceFor(attachment);
    FinishCleanup(ns);
    if (ns.installed_stale && ns.installed.has_value() && ns.index.has_value()) {
      // Policy deltas edited chains and sets in place since the last full install; the
      // contract says `previous` is what is installed, so its program is (comments aside).
      absl::StatusOr<nft::Program> program = nft::Build(previous);
      if (program.ok()) {
        ns.installed = nft::WithGeneration(*program, ns.index->generation);
        ns.elements_stale = false;
      } else {
        ns.installed.reset();
      }
    }
    ns.installed_stale = false;
    if (!ns.installed.has_value()) return SwitchAndRemember(next, *m, ns);
    if (ns.elements_stale && ns.index.has_value()) {
      nft::MaterializeElements(*ns.index, &*ns.installed);
      ns.elements_stale = false;
    }
    const uint64_t generation = nft::InstalledOf(*ns.installed).last_generation;
    nft::Program renamed = nft::WithGeneration(m->program, generation);
    nft::ElementPlan plan = nft::PlanElementUpdate(*ns.installed, renamed);
    if (!plan.fallback.empty()) {
      // A policy event on stably numbered programs: one transaction in place (nft.h).
      nft::InPlacePlan in_place;
      if (getenv("NP_NFT_NO_IN_PLACE") != nullptr) {
        in_place.fallback = "NP_NFT_NO_IN_PLACE";
      } else {
        in_place = nft::PlanInPlaceUpdate(*ns.installed, renamed);
      }
      if (!in_place.fallback.empty()) {
        ++stats_.update_switch;
        stats_.last_update = absl::StrCat("switch: ", plan.fallback, "; ", in_place.fallback);
        return SwitchAndRemember(next, *m, ns);
      }
      absl::Status s = absl::OkStatus();
      s = CommitPlanned(ns, in_place);
      if (s.ok()) DeferCleanup(ns, in_place);
      if (!s.ok()) {
        ++stats_.update_switch;
        stats_.last_update = absl::StrCat("switch: nft refused the edit: ", s.message());
        ns.installed.reset();
        return SwitchAndRemember(next, *m, ns);
      }
      ++stats_.update_in_place;
      stats_.last_update = "in place";
      ns.installed = std::move(renamed);
      Remember(ns, next, *m);
      return absl::OkStatus();
    }
    ++stats_.update_elements;
    stats_.last_update = "elements";
    for (size_t i = 0; i < plan.transactions.size(); ++i) {
      absl::Status s = i > 0 && plan.grace_period ? WaitForGracePeriod() : absl::OkStatus();
      if (s.ok()) s = CommitElements(ns, plan.transactions[i]);
      if (!s.ok()) {
        // What is installed is no longer known for sure (another writer, a half-done
        // update): the generation switch from a fresh listing recovers.
        ns.installed.reset();
        return SwitchAndRemember(next, *m, ns);
      }
    }
    ns.installed = std::move(renamed);
    Remember(ns, next, *m);
    return absl::OkStatus();
  }

  // PlanDeltaUpdate's edits from what this instance remembers (no Build, no diff of whole
  // programs); anything it will not do in place goes to Backend::UpdateDelta's default
  // (ApplyDelta on a copy, then Update), which also refuses an invalid delta.
  absl::Status UpdateDelta(const ir::CompiledPolicy& previous, const ir::CompiledPolicyDelta& delta,
                           const Attachment& attachment) override {
    Namespace& ns = NamespaceFor(attachment);
    FinishCleanup(ns);
    const bool policy = !delta.peer_sets().empty() || !delta.tables().empty();
    // NP_NFT_NO_POLICY_DELTA: policy deltas take the default path (comparisons).
    const bool policy_off =
        getenv("NP_NFT_NO_IN_PLACE") != nullptr || getenv("NP_NFT_NO_POLICY_DELTA") != nullptr;
    // Identities appended, or peer sets with pod parts and no table or endpoint: a relabel,
    // or a class's first or last pod, with no table coming, going or changing
    // (PlanIdentityDelta; NP_NFT_NO_IDENTITY_DELTA turns it off for comparisons). What it
    // refuses goes on below.
    const bool identities = !delta.identities().empty() ||
                            (!delta.peer_sets().empty() && delta.tables().empty() &&
                             delta.endpoints().empty() && HasPodParts(delta));
    std::string refused = "the delta appends identities";
    if (identities && ns.installed.has_value() && ns.index.has_value() && !policy_off &&
        getenv("NP_NFT_NO_IDENTITY_DELTA") == nullptr) {
      nft::IdentityPlan plan = nft::PlanIdentityDelta(&*ns.index, previous, delta);
      stats_.last_fallback = plan.fallback;
      absl::StrAppend(&refused, ": ", plan.fallback);
      if (plan.fallback.empty()) {
        const bool gains = !plan.gains.text.empty() || !plan.gains.sets_first_text.empty();
        const bool pods = !plan.pods.transactions.empty();
        absl::Status s = absl::OkStatus();
        // No grace period between the gains and the addresses (nft.h says why).
        if (gains) s = CommitPlanned(ns, plan.gains);
        if (s.ok() && pods) s = CommitElementPlan(ns, plan.pods);
        if (s.ok()) {
          // The losses wait for a grace period after the addresses moved (nft.h).
          DeferCommits(ns, {plan.losses});
          for (const nft::DeltaIndexEdit* edit : {&plan.gains_edit, &plan.pods_edit, &plan.losses_edit}) {
            nft::ApplyIndexEdit(*edit, &*ns.index);
          }
          const bool losses = !plan.losses.text.empty() || !plan.losses.sets_first_text.empty();
          if (gains || losses) ns.installed_stale = true;  // chains and sets: Update rebuilds
          if (pods) ns.elements_stale = true;
          ++stats_.in_place;
          ++stats_.identity_in_place;
          return absl::OkStatus();
        }
        refused = absl::StrCat("nft refused the edit: ", s.message());
        ForgetInstalled(ns);
      }
    }
    // A policy event that splits an identity (PlanSplitDelta): one transaction.
    if (identities && !delta.tables().empty() && ns.installed.has_value() && ns.index.has_value() &&
        !policy_off) {
      nft::PodTablePlan plan = nft::PlanSplitDelta(&*ns.index, previous, delta);
      absl::StrAppend(&refused, "; as a split: ", plan.fallback);
      if (plan.fallback.empty()) {
        absl::Status s = CommitPlanned(ns, plan.tables);
        if (s.ok()) {
          DeferCleanup(ns, plan.tables);
          nft::ApplyIndexEdit(plan.tables_edit, &*ns.index);
          nft::ApplyIndexEdit(plan.pods_edit, &*ns.index);
          ns.installed_stale = true;
          ns.elements_stale = true;
          ++stats_.in_place;
          ++stats_.policy_in_place;
          ++stats_.split_in_place;
          return absl::OkStatus();
        }
        refused = absl::StrCat("nft refused the edit: ", s.message());
        ForgetInstalled(ns);
      }
    }
    // The planners below do not know appended identities, nor peer sets changing with pod
    // parts and no table (PlanPodTableDelta orders a table's coming or going, not that):
    // the default path (Update) decides.
    if (identities) {
      stats_.last_fallback = refused;
      ++stats_.full_path;
      return Backend::UpdateDelta(previous, delta, attachment);
    }
    if (policy && HasPodParts(delta) && ns.installed.has_value() && ns.index.has_value() &&
        !policy_off) {
      nft::PodTablePlan plan = nft::PlanPodTableDelta(&*ns.index, previous, delta);
      stats_.last_fallback = plan.fallback;
      if (plan.fallback.empty()) {
        // One commit, the rest deferred past a grace period; else the two parts in their
        // order, a grace period between (nft.h).
        absl::Status s = absl::OkStatus();
        bool committed = false;
        if (plan.one_commit) s = CommitPlanned(ns, plan.commit);
        for (int step = 0; step < 2 && s.ok() && !plan.one_commit; ++step) {
          const bool tables = (step == 0) == plan.tables_first;
          const bool empty = tables ? plan.tables.text.empty() && plan.tables.sets_first_text.empty()
                                    : plan.pods.transactions.empty();
          if (empty) continue;
          if (committed) s = WaitForGracePeriod();
          if (s.ok()) s = tables ? CommitPlanned(ns, plan.tables)
                                 : CommitElementPlan(ns, plan.pods);
          committed = true;
        }
        if (s.ok()) {
          stats_.last_two_commits = plan.two_commits;
          if (plan.one_commit) {
            DeferCommits(ns, plan.later);
            ++stats_.pod_table_one_commit;
          } else {
            DeferCleanup(ns, plan.tables);
          }
          for (int step = 0; step < 2; ++step) {
            const bool tables = (step == 0) == plan.tables_first;
            nft::ApplyIndexEdit(tables ? plan.tables_edit : plan.pods_edit, &*ns.index);
          }
          ns.installed_stale = true;
          ns.elements_stale = true;
          ++stats_.in_place;
          ++stats_.pod_table_in_place;
          return absl::OkStatus();
        }
        stats_.last_fallback = absl::StrCat("nft refused the edit: ", s.message());
        ForgetInstalled(ns);
      } else if (getenv("NP_NFT_NO_MOVE_DELTA") == nullptr) {
        // A node-0 pod into another existing class whose old table goes or new table comes
        // with it (nft.h PlanMoveDelta): the table part beside the indirection.
        if (TryMove(ns, previous, delta)) return absl::OkStatus();
      }
    } else if (policy && ns.installed.has_value() && ns.index.has_value() && !policy_off) {
      nft::DeltaIndexEdit edit;
      nft::InPlacePlan plan = nft::PlanPolicyDelta(*ns.index, previous, delta, &edit);
      stats_.last_fallback = plan.fallback;
      if (plan.fallback.empty()) {
        absl::Status s = absl::OkStatus();
        s = CommitPlanned(ns, plan);
        if (s.ok()) {
          DeferCleanup(ns, plan);
          nft::ApplyIndexEdit(edit, &*ns.index);
          ns.installed_stale = true;  // chains and sets changed: Update rebuilds from `previous`
          ++stats_.in_place;
          ++stats_.policy_in_place;
          return absl::OkStatus();
        }
        stats_.last_fallback = absl::StrCat("nft refused the edit: ", s.message());
        ForgetInstalled(ns);
      }
    } else if (policy) {
      stats_.last_fallback = policy_off ? "NP_NFT_NO_IN_PLACE or NP_NFT_NO_POLICY_DELTA"
                                        : "nothing remembered for this namespace";
    } else if (ns.installed.has_value() && ns.index.has_value()) {
      nft::DeltaIndexEdit edit;
      nft::ElementPlan plan = nft::PlanDeltaUpdate(*ns.index, previous, delta, &edit);
      stats_.last_fallback = plan.fallback;
      if (plan.fallback.empty()) {
        absl::Status s = CommitElementPlan(ns, plan);
        if (s.ok()) {
          nft::ApplyIndexEdit(edit, &*ns.index);
          if (!plan.transactions.empty()) ns.elements_stale = true;
          ++stats_.in_place;
          return absl::OkStatus();
        }
        // A half-done edit or another writer: the full path lists the kernel and switches.
        stats_.last_fallback = absl::StrCat("nft refused the edit: ", s.message());
        ForgetInstalled(ns);
      } else if (getenv("NP_NFT_NO_MOVE_DELTA") == nullptr &&
                 getenv("NP_NFT_NO_IN_PLACE") == nullptr) {
        // A node-0 pod into another existing class (nft.h PlanMoveDelta): the indirection
        // created, a grace period, A's elements pointed at it with its new rules; its
        // retirement deferred past a grace period.
        if (TryMove(ns, previous, delta)) return absl::OkStatus();
      }
    } else {
      stats_.last_fallback = "nothing remembered for this namespace";
    }
    ++stats_.full_path;
    return Backend::UpdateDelta(previous, delta, attachment);
  }

  absl::Status SettleCleanups() {
    for (auto& [key, ns] : namespaces_) {
      const bool pending = ns.cleanup != nullptr;
      FinishCleanup(ns);
      if (pending && !ns.index.has_value()) {
        return absl::InternalError(absl::StrCat("nft: the deferred cleanup failed: ", stats_.last_fallback));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Remove(const Attachment& attachment) override {
    Namespace& ns = NamespaceFor(attachment);
    ns.cleanup.reset();  // the table goes, and what the cleanup would delete with it
    ForgetInstalled(ns);
    // Declaring the table first makes the delete succeed whether or not it exists.
    return RunNft(ns, absl::StrCat("table inet ", nft::kTableName, " {}\ndelete table inet ",
                                   nft::kTableName, "\n"))
        .status();
  }

  absl::StatusOr<std::string> Explain(const ir::CompiledPolicy& ir,
                                      const FlowQuery& flow) const override {
    if (absl::Status s = nft::CheckIdentities(ir); !s.ok()) return s;
    absl::StatusOr<nft::Layout> layout = nft::MakeLayout(ir);
    if (!layout.ok()) return layout.status();
    absl::StatusOr<FlowAddresses> ends = ParseFlowAddresses(flow);
    if (!ends.ok()) return ends.status();
    const std::string* src = &ends->source;
    const std::string* dst = &ends->destination;
    if (*src == *dst) {
      return absl::StrCat(AddressText(*src),
                          " -> itself: a pod's traffic to its own address never leaves its "
                          "network namespace; no rule of table inet ", nft::kTableName,
                          " sees it (allowed)\n");
    }
    std::string proto = flow.protocol == 6 ? "tcp" : flow.protocol == 17 ? "udp"
                        : flow.protocol == 132 ? "sctp" : absl::StrCat("protocol ", flow.protocol);
    std::string out = absl::StrCat(
        "table inet ", nft::kTableName, ", chain forward: ", AddressText(*src), " -> ",
        AddressText(*dst), " ", proto, " dport ", flow.port,
        "\n(a new connection; its replies and the packets of established connections match "
        "\"ct state established,related accept\" first)\n");
    bool egress = nft::ExplainSide(ir, *layout, nft::kEgress, *src, *dst, flow, &out);
    if (!egress) {
      absl::StrAppend(&out, "verdict: DROP (egress)\n");
      return out;
    }
    bool ingress = nft::ExplainSide(ir, *layout, nft::kIngress, *dst, *src, flow, &out);
    absl::StrAppend(&out, "verdict: ", ingress ? "ACCEPT (chain forward's policy)" : "DROP (ingress)",
                    "\n");
    return out;
  }

 private:
  struct Measured {
    nft::Program program;
    ir::BackendCapacity capacity;
    nft::Layout layout;
  };
  // The program and what it asks of the kernel (the identity limit is an item there). With
  // `quick_refusal`, too many identities end it before the program is built: the report
  // then has that item only.
  absl::StatusOr<Measured> Measure(const ir::CompiledPolicy& ir, bool quick_refusal) const {
    absl::StatusOr<nft::Layout> layout = nft::MakeLayout(ir);
    if (!layout.ok()) return layout.status();
    Measured m;
    m.capacity = nft::ProgramCapacity(ir, m.program);
    if (quick_refusal && !nft::CheckIdentities(ir).ok()) {
      m.capacity.mutable_items()->DeleteSubrange(1, m.capacity.items_size() - 1);
      m.capacity.set_fits(false);
      return m;
    }
    m.program = nft::BuildProgram(ir, &*layout);
    m.capacity = nft::ProgramCapacity(ir, m.program);
    if (absl::Status s = FinishCapacity(m.capacity, options_); !s.ok()) return s;
    m.layout = *std::move(layout);
    return m;
  }

  // The retirement of identity chains no rule names any more (InPlacePlan's cleanup), after
  // an RCU grace period. Why deferred: the grace period (membarrier) is most of a policy
  // delete's cost, and nothing needs the retirement soon — until it commits, the new rules
  // read the retired identities' marks as they read id_other's (nft.h), so the state between
  // is the new program's verdicts. A thread waits for the grace period at once (as the eBPF
  // backend's slot reclaimer does), but the commit stays with the caller's thread, at the
  // start of the next call on the namespace (FinishCleanup): one writer per namespace, and
  // every plan is made after the retirement is in the kernel, so no plan can name a chain
  // that a retirement still to come would delete (the index already says it is gone, so a
  // plan naming it again creates it, after the retirement deleted it). Remove drops it
  // (the table goes), Apply and Update finish it first.
  struct PendingCleanup {
    // In order, each one transaction (a batch, and its text for libnftables).
    std::vector<std::pair<nft::WholeBatch, std::string>> commits;
    absl::Time since;
    absl::Status grace;     // written by `waiter` before it ends
    std::thread waiter;
    ~PendingCleanup() {
      if (waiter.joinable()) waiter.join();
    }
  };

  // Per network namespace: how np talks to nft there, and what it installed.
  struct Namespace {
    std::string netns;                       // the attachment's; empty: the caller's
    std::unique_ptr<NftSession> session;     // null: spawn `nft`
    std::optional<nft::Program> installed;   // with generation names; unset: list to know
    // What UpdateDelta edits from; set with `installed` by every full install.
    std::optional<nft::DeltaIndex> index;
    // `installed`'s map elements are behind `index` (in-place delta edits since): Update
    // rewrites them (MaterializeElements) before it plans.
    bool elements_stale = false;
    // `installed`'s chains and sets are behind `index` (policy deltas in place since): Update
    // builds it again from its `previous`, a switch lists the kernel.
    bool installed_stale = false;
    // An in-place plan's cleanup (identity chains retired), waiting for its grace period.
    std::unique_ptr<PendingCleanup> cleanup;
    // The netlink socket for element edits (null: not opened yet, or it cannot be), and the
    // ruleset generation after np's last commit through it (unset: ask the kernel first).
    std::unique_ptr<nft::NftNetlink> netlink;
    bool netlink_tried = false;
    std::optional<uint32_t> genid;
  };

  // An in-place transaction: one netlink batch, or libnftables when that cannot be done.
  // A batch refused because the ruleset's generation moved (another writer committed since
  // np did: on a node, kube-proxy in nftables mode, firewalld, another np instance) is sent
  // again at the kernel's generation, once. Why not the full path: a foreign commit is
  // usually to another table, and a generation switch costs 0.1-1 s; a foreign change to the
  // elements np edits makes the kernel refuse the batch itself (a deleted element that is
  // not there, an added key that is there with another verdict, an interval that overlaps),
  // which goes to libnftables and then to the full path. The check a generation gives is the
  // one the text path gave before, no weaker.
  absl::Status CommitElements(Namespace& ns, const std::string& text) {
    const absl::StatusOr<std::vector<nft::SetElementEdit>> edits = nft::ParseElementTransaction(text);
    // A transaction np cannot read goes to libnftables as text: counted as validating.
    CountInPlaceCommit(!edits.ok() || nft::MarksTableForValidation(*edits));
    if (NetlinkOf(ns) != nullptr) {
      const absl::Time start = absl::Now();
      const uint64_t cpu_start = ThreadCpuNs();
      absl::Status s = CommitByNetlink(ns, edits);
      if (absl::IsAborted(s)) {
        ++stats_.netlink_aborts;
        stats_.last_netlink_error = std::string(s.message());
        s = CommitByNetlink(ns, edits);  // at the kernel's generation (CommitByNetlink asks it)
      }
      stats_.netlink_ns += static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::Now() - start));
      stats_.netlink_cpu_ns += ThreadCpuNs() - cpu_start;
      if (s.ok()) {
        ++stats_.netlink_batches;
        return s;
      }
      stats_.last_netlink_error = std::string(s.message());
      ++stats_.netlink_fallbacks;
    }
    return RunNft(ns, text).status();
  }

  // PlanInPlaceUpdate's transaction: its batch over netlink at the generation np expects
  // (sent again at the kernel's when another writer committed), else its text through
  // libnftables — as CommitElements, for the same reasons.
  // An element plan's transactions in order (a grace period between two when it says so).
  absl::Status CommitElementPlan(Namespace& ns, const nft::ElementPlan& plan) {
    absl::Status s = absl::OkStatus();
    for (size_t i = 0; i < plan.transactions.size() && s.ok(); ++i) {
      if (i > 0 && plan.grace_period) s = WaitForGracePeriod();
      if (s.ok()) s = CommitElements(ns, plan.transactions[i]);
    }
    return s;
  }

  // An in-place plan's commits: its new sets first (nft.h), then its transaction.
  // PlanMoveDelta's commits (nft.h): (1), a grace period, (2); (3) and a going table's part
  // deferred past a grace period. True when the move is in; else the full path decides
  // (stats_.last_fallback says why not).
  bool TryMove(Namespace& ns, const ir::CompiledPolicy& previous, const ir::CompiledPolicyDelta& delta) {
    nft::MovePlan move = nft::PlanMoveDelta(&*ns.index, previous, delta);
    absl::StrAppend(&stats_.last_fallback, "; as a move: ", move.fallback);
    if (!move.fallback.empty()) return false;
    absl::Status s = CommitPlanned(ns, move.create);
    if (s.ok()) s = WaitForGracePeriod();
    if (s.ok()) s = CommitPlanned(ns, move.commit);
    if (!s.ok()) {
      stats_.last_fallback = absl::StrCat("nft refused the move: ", s.message());
      ForgetInstalled(ns);
      return false;
    }
    const bool tables = move.tables_edit.tables != 0;  // a table part was planned
    std::vector<nft::InPlacePlan> deferred = {move.retire};
    for (nft::InPlacePlan& p : move.later) deferred.push_back(std::move(p));
    DeferCommits(ns, deferred);
    if (move.tables_first) nft::ApplyIndexEdit(move.tables_edit, &*ns.index);
    nft::ApplyIndexEdit(move.edit, &*ns.index);
    if (!move.tables_first) nft::ApplyIndexEdit(move.tables_edit, &*ns.index);
    ns.elements_stale = true;
    if (tables) ns.installed_stale = true;  // chains and sets: Update rebuilds
    ++stats_.in_place;
    ++stats_.move_in_place;
    if (tables) ++stats_.move_tables_in_place;
    stats_.last_fallback.clear();
    return true;
  }

  absl::Status CommitPlanned(Namespace& ns, const nft::InPlacePlan& plan) {
    if (!plan.sets_first_text.empty()) {
      absl::Status s = CommitInPlace(ns, plan.sets_first, plan.sets_first_text);
      if (!s.ok()) return s;
    }
    if (plan.text.empty()) return absl::OkStatus();
    return CommitInPlace(ns, plan.batch, plan.text);
  }

  absl::Status CommitInPlace(Namespace& ns, const nft::WholeBatch& batch, const std::string& text) {
    CountInPlaceCommit(nft::MarksTableForValidation(batch));
    if (NetlinkOf(ns) != nullptr) {
      absl::Status s = absl::OkStatus();
      for (int attempt = 0; attempt < 2; ++attempt) {
        if (!ns.genid.has_value()) {
          absl::StatusOr<uint32_t> genid = ns.netlink->GenerationId();
          if (!genid.ok()) {
            s = genid.status();
            break;
          }
          ns.genid = *genid;
        }
        const absl::Time start = absl::Now();
        s = ns.netlink->CommitWhole(nft::kTableName, batch, *ns.genid);
        stats_.in_place_netlink_ns +=
            static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::Now() - start));
        if (s.ok()) {
          ns.genid = nft::NftNetlink::NextGeneration(*ns.genid);
          return s;
        }
        ns.genid.reset();
        if (!absl::IsAborted(s)) break;
        ++stats_.netlink_aborts;
      }
      stats_.last_netlink_error = std::string(s.message());
    }
    ++stats_.update_in_place_text;
    return RunNft(ns, text).status();
  }

  // The namespace's netlink socket, opened on first use; null when it cannot be or
  // NP_NFT_NO_NETLINK is set (comparisons, tests of the fallback).
  nft::NftNetlink* NetlinkOf(Namespace& ns) {
    if (!ns.netlink_tried) {
      ns.netlink_tried = true;
      if (getenv("NP_NFT_NO_NETLINK") == nullptr) {
        absl::StatusOr<std::unique_ptr<nft::NftNetlink>> nl = OpenNetlinkIn(ns.netns);
        if (nl.ok()) {
          ns.netlink = *std::move(nl);
        } else {
          stats_.last_netlink_error = std::string(nl.status().message());
        }
      }
    }
    return ns.netlink.get();
  }

  // One commit of the whole path (the generation switch or the retirement): the batch over
  // netlink, else `text` through libnftables — when NP_NFT_TEXT_WHOLE or NP_NFT_NO_NETLINK is
  // set, the program has something the encoder does not know, or the kernel refused the
  // batch (it then changed nothing; libnftables gets to try, and to say why).
  absl::Status CommitWhole(Namespace& ns, const absl::StatusOr<nft::WholeBatch>& batch,
                           const std::function<std::string()>& text) {
    if (!batch.ok()) {
      stats_.last_netlink_error = std::string(batch.status().message());
      ++stats_.whole_netlink_fallbacks;
    } else if (getenv("NP_NFT_TEXT_WHOLE") == nullptr && NetlinkOf(ns) != nullptr) {
      const absl::Time start = absl::Now();
      // No generation check: like the text, the switch's guard (an exclusive create of the
      // new generation's first chain) finds another writer's work.
      absl::Status s = ns.netlink->CommitWhole(nft::kTableName, *batch, 0);
      ns.genid.reset();
      stats_.whole_netlink_ns += static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::Now() - start));
      if (s.ok()) {
        ++stats_.whole_netlink;
        return s;
      }
      stats_.last_netlink_error = std::string(s.message());
      ++stats_.whole_netlink_fallbacks;
    }
    ++stats_.whole_text;
    return RunNft(ns, text()).status();
  }

  // Counted before the commit is tried (a commit sent again, or through libnftables after
  // netlink refused it, is one commit): `validates` says whether it marks the table.
  void CountInPlaceCommit(bool validates) {
    ++stats_.in_place_commits;
    if (validates) ++stats_.validating_commits;
  }

  absl::Status CommitByNetlink(Namespace& ns,
                               const absl::StatusOr<std::vector<nft::SetElementEdit>>& edits) {
    if (!edits.ok()) return edits.status();
    if (!ns.genid.has_value()) {
      absl::StatusOr<uint32_t> genid = ns.netlink->GenerationId();
      if (!genid.ok()) return genid.status();
      ns.genid = *genid;
    }
    absl::Status s = ns.netlink->Commit(nft::kTableName, *edits, *ns.genid);
    if (s.ok()) {
      ns.genid = nft::NftNetlink::NextGeneration(*ns.genid);
    } else {
      ns.genid.reset();
    }
    return s;
  }

  // A socket opened in `netns` (empty: the caller's) stays there whatever thread uses it:
  // for a named namespace, a short-lived thread enters it to open one.
  static absl::StatusOr<std::unique_ptr<nft::NftNetlink>> OpenNetlinkIn(const std::string& netns) {
    if (netns.empty()) return nft::NftNetlink::Open();
    absl::StatusOr<std::unique_ptr<nft::NftNetlink>> out = absl::UnknownError("not opened");
    std::thread opener([&] {
      const std::string path = absl::StrCat("/run/netns/", netns);
      int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        out = absl::UnavailableError(
            absl::StrCat("entering network namespace ", path, ": ", std::strerror(errno)));
      } else {
        out = nft::NftNetlink::Open();
      }
      if (fd >= 0) close(fd);
    });
    opener.join();
    return out;
  }

  // What is installed is no longer known for sure: the full path lists the kernel.
  static void ForgetInstalled(Namespace& ns) {
    ns.installed.reset();
    ns.index.reset();
    ns.elements_stale = false;
    ns.installed_stale = false;
  }

  // Leaves `plan`'s cleanup (if any) to the next call (PendingCleanup says why).
  void DeferCleanup(Namespace& ns, const nft::InPlacePlan& plan) {
    if (plan.cleanup_text.empty()) return;
    auto pending = std::make_unique<PendingCleanup>();
    pending->commits.push_back({plan.cleanup, plan.cleanup_text});
    Defer(ns, std::move(pending));
  }
  // Leaves `plan`'s commits (its new sets, then its transaction; no cleanup of its own) to the
  // next call, after a grace period: PlanIdentityDelta's losses.
  // PlanPodTableDelta's one-commit form defers its `later` (each plan's batch) the same way.
  void DeferCommits(Namespace& ns, const std::vector<nft::InPlacePlan>& plans) {
    auto pending = std::make_unique<PendingCleanup>();
    for (const nft::InPlacePlan& plan : plans) {
      if (!plan.sets_first_text.empty()) pending->commits.push_back({plan.sets_first, plan.sets_first_text});
      if (!plan.text.empty()) pending->commits.push_back({plan.batch, plan.text});
    }
    if (!pending->commits.empty()) Defer(ns, std::move(pending));
  }
  void Defer(Namespace& ns, std::unique_ptr<PendingCleanup> pending) {
    pending->since = absl::Now();
    PendingCleanup* p = pending.get();
    p->waiter = std::thread([p] { p->grace = WaitForGracePeriod(); });
    ns.cleanup = std::move(pending);
    ++stats_.cleanups_deferred;
  }

  // Commits a deferred cleanup once its grace period is over; on failure what is installed
  // is unknown, and the caller's plan falls to the full path (which lists the kernel).
  void FinishCleanup(Namespace& ns) {
    if (ns.cleanup == nullptr) return;
    std::unique_ptr<PendingCleanup> pending = std::move(ns.cleanup);
    const absl::Time start = absl::Now();
    pending->waiter.join();
    stats_.cleanup_wait_ns += static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::Now() - start));
    absl::Status s = pending->grace;
    for (size_t i = 0; i < pending->commits.size() && s.ok(); ++i) {
      s = CommitInPlace(ns, pending->commits[i].first, pending->commits[i].second);
    }
    if (s.ok()) {
      ++stats_.cleanups_committed;
      return;
    }
    stats_.last_fallback = absl::StrCat("the deferred cleanup failed: ", s.message());
    ForgetInstalled(ns);
  }

  // The delta index of `ir`'s program, now installed (or forgotten when nothing is).
  void Remember(Namespace& ns, const ir::CompiledPolicy& ir, const Measured& m) {
    ns.elements_stale = false;
    ns.index.reset();
    if (!ns.installed.has_value()) return;
    uint64_t budget = 0;
    for (const ir::CapacityItem& item : m.capacity.items()) {
      if (item.name() == "set_elements") budget = item.budget();
    }
    ns.index = nft::IndexOf(ir, m.layout, m.program, budget,
                            nft::InstalledOf(*ns.installed).last_generation);
  }

  absl::Status SwitchAndRemember(const ir::CompiledPolicy& ir, const Measured& m, Namespace& ns) {
    absl::Status s = Switch(m.program, ns);
    ns.index.reset();
    ns.elements_stale = false;
    if (s.ok()) Remember(ns, ir, m);
    return s;
  }

  Namespace& NamespaceFor(const Attachment& attachment) {
    auto [it, inserted] = namespaces_.try_emplace(NetnsKey(attachment.netns));
    Namespace& ns = it->second;
    if (inserted) {
      ns.netns = attachment.netns;
      if (const NftLibrary* library = NftLibrary::Get(); library != nullptr) {
        absl::StatusOr<std::unique_ptr<NftSession>> session =
            NftSession::Start(*library, attachment.netns);
        if (session.ok()) ns.session = *std::move(session);
      }
    }
    return ns;
  }

  // `nft -f -` (or with `list`: `nft -t`) in the namespace.
  absl::StatusOr<std::string> RunNft(Namespace& ns, const std::string& commands,
                                     bool terse = false) {
    ns.genid.reset();  // libnftables may commit: the generation is the kernel's to tell
    if (ns.session != nullptr) return ns.session->Run(commands, terse);
    std::vector<std::string> argv = {"nft"};
    if (terse) argv.push_back("-t");
    argv.insert(argv.end(), {"-f", "-"});
    return RunCommand(argv, commands, ns.netns);
  }

  // The generation switch to `program` (without generation names); recovers once from a
  // stale idea of what is installed by listing the kernel.
  absl::Status Switch(const nft::Program& program, Namespace& ns) {
    // After policy deltas the remembered names are behind the kernel's: list them.
    if (ns.installed_stale) ForgetInstalled(ns);
    const bool from_memory = ns.installed.has_value();
    absl::Status s = SwitchOnce(program, ns);
    if (s.ok() || !from_memory) return s;
    return SwitchOnce(program, ns);  // ns.installed is unset now: this one lists
  }

  absl::Status SwitchOnce(const nft::Program& program, Namespace& ns) {
    nft::Installed installed;
    const bool known = ns.installed.has_value();
    if (known) {
      installed = nft::InstalledOf(*ns.installed);
    } else {
      // No table yet (the listing fails) is the first install: the switch creates it.
      absl::StatusOr<std::string> listing =
          RunNft(ns, absl::StrCat("list table inet ", nft::kTableName), /*terse=*/true);
      if (listing.ok()) installed = nft::ParseInstalled(*listing);
    }
    ns.installed.reset();  // unknown until this succeeds
    nft::Program next = nft::WithGeneration(program, installed.last_generation + 1);
    if (!nft::CanSwitch(installed, next)) {
      absl::Status s = RunNft(ns, nft::Text(next)).status();
      if (s.ok()) ns.installed = std::move(next);
      return s;
    }
    // The guard: `create` fails when the new generation's names exist already, i.e. when
    // what np believes is installed is not (another writer); nothing is committed then.
    // (SwitchBatch guards the same chain: the first regular one.)
    std::string guard;
    for (const nft::Chain& c : next.chains) {
      if (!c.hook.empty()) continue;
      guard = absl::StrCat("table inet ", nft::kTableName, " {}\ncreate chain inet ",
                           nft::kTableName, " ", c.name, "\n");
      break;
    }
    // Two commits (nft.h): the new generation's sets and chains, then the base chains that
    // reach them — never a set and the rules that look it up in one commit. The texts only
    // when libnftables is to run them (they cost a few ms at 1,000 pods).
    absl::Status added = CommitWhole(ns, nft::SwitchBatch(next, nft::SwitchPart::kObjects), [&] {
      return guard + nft::SwitchText(next, nft::SwitchPart::kObjects);
    });
    if (!added.ok()) return added;
    absl::Status switched =
        CommitWhole(ns, nft::SwitchBatch(next, nft::SwitchPart::kBaseChains),
                    [&] { return nft::SwitchText(next, nft::SwitchPart::kBaseChains); });
    if (!switched.ok()) {
      // The new generation sits beside the old one, unreached; the next call lists the
      // kernel (ns.installed is unset) and its switch retires it.
      return switched;
    }
    const nft::WholeBatch retire = nft::RetireBatch(installed, next);
    if (!retire.flush.empty() || !retire.delete_sets.empty()) {
      absl::Status retired =
          CommitWhole(ns, retire, [&] { return nft::RetireText(installed, next); });
      if (!retired.ok()) {
        return absl::InternalError(absl::StrCat(
            "nft: the new rules are in force, but the previous generation was not deleted (the "
            "next Apply deletes it): ", retired.message()));
      }
    }
    ns.installed = std::move(next);
    return absl::OkStatus();
  }

  BackendOptions options_;
  std::map<std::string, Namespace> namespaces_;

 public:
  nft::DeltaStats stats_;
};

}  // namespace

std::unique_ptr<Backend> MakeNftBackend(const BackendOptions& options) {
  return std::make_unique<NftBackend>(options);
}

absl::Status nft::SettleCleanups(Backend& backend) {
  auto* nft = dynamic_cast<NftBackend*>(&backend);
  return nft == nullptr ? absl::OkStatus() : nft->SettleCleanups();
}

nft::DeltaStats nft::DeltaStatsOf(const Backend& backend) {
  const auto* nft = dynamic_cast<const NftBackend*>(&backend);
  return nft == nullptr ? DeltaStats() : nft->stats_;
}

}  // namespace np::backends

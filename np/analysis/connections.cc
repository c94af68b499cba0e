// Connection listing and diff from the engine's compiled tables. A side's table maps each
// protocol's port intervals to the peer classes they admit, so the ports a pair may use are
// the intervals whose peer set holds the other end's class — egress at the source
// intersected with ingress at the destination. Pods that share their target and peer
// classes behave alike: the ports are computed once per pair of such behaviours.
#include "np/analysis/connections.h"

#include <algorithm>
#include <deque>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "google/protobuf/util/message_differencer.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "np/internal/engine_state.h"
#include "np/verdict.h"

namespace np::analysis {
namespace {

using internal::EngineAccess;
using internal::EngineState;
using internal::kNone;
using internal::kSharedPeer;
using internal::U128;

constexpr uint16_t kFirstPort = 1;  // port 0 carries no connection
const PortRange kAllPorts{kFirstPort, 65535};

using Ranges = std::vector<PortRange>;

Ranges IntersectRanges(const Ranges& a, const Ranges& b) {
  Ranges out;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    uint16_t first = std::max(a[i].first, b[j].first);
    uint16_t last = std::min(a[i].last, b[j].last);
    if (first <= last) out.push_back({first, last});
    (a[i].last < b[j].last) ? ++i : ++j;
  }
  return out;
}

Ranges SubtractRanges(const Ranges& a, const Ranges& b) {
  Ranges out;
  size_t j = 0;
  for (PortRange r : a) {
    uint32_t cursor = r.first;
    while (j < b.size() && b[j].last < cursor) ++j;
    for (size_t k = j; k < b.size() && b[k].first <= r.last; ++k) {
      if (b[k].first > cursor) out.push_back({static_cast<uint16_t>(cursor),
                                              static_cast<uint16_t>(b[k].first - 1)});
      cursor = std::max<uint32_t>(cursor, uint32_t{b[k].last} + 1);
    }
    if (cursor <= r.last) out.push_back({static_cast<uint16_t>(cursor), r.last});
  }
  return out;
}

// Appends [first, last] to sorted `out`, merging with the previous range when they touch.
void Append(Ranges& out, uint32_t first, uint32_t last) {
  first = std::max<uint32_t>(first, kFirstPort);
  if (first > last) return;
  if (!out.empty() && uint32_t{out.back().last} + 1 >= first) {
    out.back().last = static_cast<uint16_t>(std::max<uint32_t>(out.back().last, last));
    return;
  }
  out.push_back({static_cast<uint16_t>(first), static_cast<uint16_t>(last)});
}

// Whether an interval admits peer class `peer`, as EngineState::IntervalAllows decides a
// verdict: a table that holds tier policies lists the denied classes (`negated`), and then
// a shared address (kSharedPeer), which is in no list, is admitted.
bool IntervalAdmits(const internal::TableView& table, const internal::Interval& iv,
                    uint32_t peer) {
  if (iv.all_peers) return true;
  if (peer >= kSharedPeer) return iv.negated;
  return table.Allows(iv, peer);
}

// The ports one side admits toward a peer of class `peer` on protocol `pi`.
Ranges SidePorts(const EngineState& s, uint32_t target, Direction direction, int pi,
                 uint32_t peer) {
  if (target == kNone) return {kAllPorts};
  const internal::TableView table = s.target_classes[target].table->view();
  const internal::DirectionTable& dt = table.direction(static_cast<int>(direction));
  if (!dt.isolated) return {kAllPorts};
  Ranges out;
  for (uint32_t i = dt.begin[pi]; i < dt.end[pi]; ++i) {
    const internal::Interval& iv = table.intervals(static_cast<int>(direction))[i];
    uint32_t last = i + 1 < dt.end[pi] ? table.intervals(static_cast<int>(direction))[i + 1].first - 1u : 65535u;
    if (IntervalAdmits(table, iv, peer)) Append(out, iv.first, last);
  }
  return out;
}

// One end as the tables see it: its target class (kNone: nothing enforced there) and its
// peer class in the flow's family.
struct SideKey {
  uint32_t target;
  uint32_t peer;
};

// Whether a side admits the peer on some port of protocol `pi` (no allocation: most pairs of
// a cluster are denied, and a listing visits every pair of behaviours).
bool SideAdmitsAny(const EngineState& s, uint32_t target, Direction direction, int pi,
                   uint32_t peer) {
  if (target == kNone) return true;
  const internal::TableView table = s.target_classes[target].table->view();
  const internal::DirectionTable& dt = table.direction(static_cast<int>(direction));
  if (!dt.isolated) return true;
  for (uint32_t i = dt.begin[pi]; i < dt.end[pi]; ++i) {
    const internal::Interval& iv = table.intervals(static_cast<int>(direction))[i];
    if (IntervalAdmits(table, iv, peer)) return true;
  }
  return false;
}

PortSet PairPorts(const EngineState& s, SideKey source, SideKey destination) {
  PortSet out;
  bool any = false;
  for (int pi = 0; pi < 3 && !any; ++pi) {
    any = SideAdmitsAny(s, source.target, Direction::kEgress, pi, destination.peer) &&
          SideAdmitsAny(s, destination.target, Direction::kIngress, pi, source.peer);
  }
  if (!any) return out;
  for (int pi = 0; pi < 3; ++pi) {
    Ranges egress = SidePorts(s, source.target, Direction::kEgress, pi, destination.peer);
    if (egress.empty()) continue;
    Ranges ingress = SidePorts(s, destination.target, Direction::kIngress, pi, source.peer);
    out.by_protocol[pi] = IntersectRanges(egress, ingress);
  }
  return out;
}

std::string RangeName(const IpAddress& first, const IpAddress& last) {
  return absl::StrCat(first.ToString(), "-", last.ToString());
}

IpAddress FromU128(U128 v, int family) {
  if (family == 0) return IpAddress::V4(static_cast<uint32_t>(v));
  return IpAddress::V6(static_cast<uint64_t>(v >> 64), static_cast<uint64_t>(v));
}
U128 FamilyMax(int family) { return family == 0 ? U128{0xffffffffu} : ~U128{0}; }

// An external range with its peer class in each snapshot listed together (one or two).
struct ExternalRange {
  int family;
  U128 first, last;
  uint32_t peer[2];
};

// The external ranges of `engines` (one or two snapshots), cut at every boundary any of them
// has; neighbours that every snapshot classes alike are merged.
std::vector<ExternalRange> ExternalRanges(const std::vector<const EngineState*>& engines) {
  std::vector<ExternalRange> out;
  for (int f = 0; f < 2; ++f) {
    std::vector<U128> starts;
    for (const EngineState* s : engines) {
      starts.insert(starts.end(), s->atoms[f]->starts.begin(), s->atoms[f]->starts.end());
    }
    std::sort(starts.begin(), starts.end());
    starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
    for (size_t i = 0; i < starts.size(); ++i) {
      ExternalRange r{f, starts[i], i + 1 < starts.size() ? starts[i + 1] - 1 : FamilyMax(f),
                      {kNone, kNone}};
      for (size_t e = 0; e < engines.size(); ++e) {
        const internal::AtomTable& atoms = *engines[e]->atoms[f];
        r.peer[e] = atoms.peer_class[atoms.Find(r.first)];
      }
      if (!out.empty() && out.back().family == f && out.back().peer[0] == r.peer[0] &&
          out.back().peer[1] == r.peer[1]) {
        out.back().last = r.last;
      } else {
        out.push_back(r);
      }
    }
  }
  return out;
}

// --- filters

bool Glob(absl::string_view pattern, absl::string_view text) {
  // Iterative '*' matching with backtracking to the last star.
  size_t p = 0, t = 0, star = absl::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != absl::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

class EndFilter {
 public:
  static absl::StatusOr<EndFilter> Parse(const std::string& text) {
    EndFilter f;
    f.text_ = text;
    if (text.empty()) return f;
    if (absl::StatusOr<IpAddress> a = IpAddress::Parse(text); a.ok()) {
      f.prefix_ = IpPrefix(*a, a->bit_width());
      f.kind_ = Kind::kPrefix;
      return f;
    }
    if (text.find('/') != std::string::npos && text.find_first_of(":.") != std::string::npos) {
      absl::StatusOr<IpPrefix> p = IpPrefix::Parse(text);
      if (p.ok()) {
        f.prefix_ = *p;
        f.kind_ = Kind::kPrefix;
        return f;
      }
    }
    if (text.find('/') == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad end \"", text, "\": write namespace/name (globs with *), an IP address or a CIDR"));
    }
    f.kind_ = Kind::kGlob;
    return f;
  }
  bool MatchesPod(const internal::PodState& pod) const { return MatchesPod(pod.key, pod.ips); }
  bool MatchesPod(absl::string_view key, const std::vector<IpAddress>& ips) const {
    switch (kind_) {
      case Kind::kAll:
        return true;
      case Kind::kGlob:
        return Glob(text_, key);
      case Kind::kPrefix:
        for (const IpAddress& a : ips) {
          if (prefix_.Contains(a)) return true;
        }
        return false;
    }
    return false;
  }
  bool is_glob() const { return kind_ == Kind::kGlob; }
  bool is_all() const { return kind_ == Kind::kAll; }
  bool MatchesRange(const IpAddress& first, const IpAddress& last) const {
    switch (kind_) {
      case Kind::kAll:
        return true;
      case Kind::kGlob:
        return false;
      case Kind::kPrefix: {
        if (first.family() != prefix_.family()) return false;
        // Overlap: the prefix's network is not after `last` and its end not before `first`.
        IpAddress net = prefix_.network();
        U128 pf = internal::ToU128(net);
        int host = (prefix_.family() == AddressFamily::kIPv4 ? 32 : 128) - prefix_.length();
        U128 pl = host == 128 ? ~U128{0} : pf | ((U128{1} << host) - 1);
        return pf <= internal::ToU128(last) && pl >= internal::ToU128(first);
      }
    }
    return false;
  }

 private:
  enum class Kind { kAll, kGlob, kPrefix };
  Kind kind_ = Kind::kAll;
  std::string text_;
  IpPrefix prefix_;
};

// `named`: the destination pod's container ports (null for a range outside the cluster).
PortSet Restrict(PortSet ports, const ConnectionOptions& options,
                 const std::vector<NamedPort>* named) {
  const bool by_port = !options.ports.empty() || !options.port_names.empty();
  for (int pi = 0; pi < 3; ++pi) {
    if (!options.protocols.empty() &&
        std::find_if(options.protocols.begin(), options.protocols.end(), [&](Protocol p) {
          return ProtocolIndex(p) == pi;
        }) == options.protocols.end()) {
      ports.by_protocol[pi].clear();
      continue;
    }
    if (by_port) {
      Ranges wanted;
      Ranges sorted = options.ports;
      for (const std::string& name : options.port_names) {
        if (named == nullptr) continue;
        for (const NamedPort& np : *named) {
          if (np.name == name && ProtocolIndex(np.protocol) == pi) sorted.push_back({np.port, np.port});
        }
      }
      std::sort(sorted.begin(), sorted.end(),
                [](const PortRange& a, const PortRange& b) { return a.first < b.first; });
      for (PortRange r : sorted) Append(wanted, r.first, r.last);
      ports.by_protocol[pi] = IntersectRanges(ports.by_protocol[pi], wanted);
    }
  }
  return ports;
}

// Every end of the listing, in output order: pods by key, then ranges by address.
// What the tables see of an end, per snapshot: target class and peer class per family
// [v4, v6, none] (all kNone in a snapshot that lacks the end).
struct EndClasses {
  bool is_pod = false;
  int range_family = -1;  // external: 0 IPv4, 1 IPv6
  uint32_t target[2] = {kNone, kNone};
  uint32_t peer[2][3] = {{kNone, kNone, kNone}, {kNone, kNone, kNone}};
};
struct End {
  ConnectionEnd end;
  EndClasses classes;
};

// Lists the connections of snapshot `which` of `engines` (pods by key must exist in every
// snapshot to be listed against it; a diff takes pods from both).
absl::StatusOr<std::vector<End>> Ends(const std::vector<const EngineState*>& engines,
                                      const std::vector<ExternalRange>& ranges,
                                      bool external) {
  std::map<std::string, End> pods;
  for (size_t e = 0; e < engines.size(); ++e) {
    const EngineState& s = *engines[e];
    for (uint32_t p = 0; p < s.pods.size(); ++p) {
      const auto& state = s.pods[p].state;
      if (state == nullptr) continue;
      End& end = pods[state->key];
      end.end.is_pod = true;
      end.classes.is_pod = true;
      end.end.name = state->key;
      if (e == 0) end.end.pod = p;
      const internal::PodRecord& record = s.records[p];
      end.classes.target[e] = record.target;
      for (int f = 0; f < 3; ++f) end.classes.peer[e][f] = record.peer[f];
    }
  }
  std::vector<End> out;
  out.reserve(pods.size() + ranges.size());
  for (auto& [key, end] : pods) out.push_back(std::move(end));
  if (!external) return out;
  for (const ExternalRange& r : ranges) {
    End end;
    end.end.first = FromU128(r.first, r.family);
    end.end.last = FromU128(r.last, r.family);
    end.end.name = RangeName(end.end.first, end.end.last);
    end.classes.range_family = r.family;
    for (size_t e = 0; e < engines.size(); ++e) end.classes.peer[e][r.family] = r.peer[e];
    out.push_back(std::move(end));
  }
  return out;
}

// Port sets by the classes that decide them, computed once each; references stay valid.
class PortCache {
 public:
  const PortSet& Get(const EngineState& s, SideKey source, SideKey destination) {
    auto key = std::make_tuple(source.target, destination.peer, destination.target, source.peer);
    auto it = index_.find(key);
    if (it != index_.end()) return *it->second;
    sets_.push_back(PairPorts(s, source, destination));
    index_.emplace(key, &sets_.back());
    return sets_.back();
  }
  const PortSet& None() const { return none_; }

 private:
  absl::flat_hash_map<std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>, const PortSet*> index_;
  std::deque<PortSet> sets_;
  PortSet none_;
};

// Which peer classes one side can admit on some port: `open` when it may admit a class no
// list names (no table, a direction it does not isolate, an interval for every peer or one
// that lists the denied classes); else exactly the classes its intervals list (sorted).
struct SideReach {
  bool open = true;
  std::vector<uint32_t> listed;
};

// SideReach per (target class, direction), computed once each; references stay valid.
class ReachCache {
 public:
  explicit ReachCache(const EngineState& s) : s_(s) {}
  const SideReach& Get(uint32_t target, Direction direction) {
    if (target == kNone) return open_;
    auto key = std::make_pair(target, static_cast<int>(direction));
    auto it = index_.find(key);
    if (it != index_.end()) return *it->second;
    reaches_.push_back(Compute(target, direction));
    index_.emplace(key, &reaches_.back());
    return reaches_.back();
  }

 private:
  SideReach Compute(uint32_t target, Direction direction) const {
    SideReach out;
    const internal::TableView table = s_.target_classes[target].table->view();
    const internal::DirectionTable& dt = table.direction(static_cast<int>(direction));
    if (!dt.isolated) return out;
    for (int pi = 0; pi < 3; ++pi) {
      for (uint32_t i = dt.begin[pi]; i < dt.end[pi]; ++i) {
        const internal::Interval& iv = table.intervals(static_cast<int>(direction))[i];
        if (iv.all_peers || iv.negated) return out;
        table.ForEachPeer(iv, [&](uint32_t id) { out.listed.push_back(id); });
      }
    }
    std::sort(out.listed.begin(), out.listed.end());
    out.listed.erase(std::unique(out.listed.begin(), out.listed.end()), out.listed.end());
    out.open = false;
    return out;
  }

  const EngineState& s_;
  const SideReach open_;
  absl::flat_hash_map<std::pair<uint32_t, int>, const SideReach*> index_;
  std::deque<SideReach> reaches_;
};

// The classes that decide a pair in snapshot `e`; false when the pair has no flow there (an
// end missing from that snapshot, a pod without the range's family, two ranges).
bool PairKeys(int e, const EndClasses& src, const EndClasses& dst, SideKey* source, SideKey* destination) {
  if (!src.is_pod && !dst.is_pod) return false;
  int f;
  if (src.is_pod && dst.is_pod) {
    bool v4 = src.peer[e][0] != kNone && dst.peer[e][0] != kNone;
    bool v6 = src.peer[e][1] != kNone && dst.peer[e][1] != kNone;
    f = v4 ? 0 : v6 ? 1 : 2;
    if (src.peer[e][f] == kNone || dst.peer[e][f] == kNone) return false;  // absent
  } else {
    f = src.is_pod ? dst.range_family : src.range_family;
    const EndClasses& pod = src.is_pod ? src : dst;
    if (pod.peer[e][f] == kNone) return false;  // no address of that family
  }
  *source = SideKey{src.is_pod ? src.target[e] : kNone, src.peer[e][f]};
  *destination = SideKey{dst.is_pod ? dst.target[e] : kNone, dst.peer[e][f]};
  return true;
}

// The ports from `src` to `dst` in snapshot `e` (nothing for self or a pair without a flow).
const PortSet& PortsOf(const EngineState& s, int e, const End& src, const End& dst,
                       PortCache& cache) {
  if (src.end.is_pod && dst.end.is_pod && src.end.name == dst.end.name) return cache.None();
  SideKey source, destination;
  if (!PairKeys(e, src.classes, dst.classes, &source, &destination)) return cache.None();
  return cache.Get(s, source, destination);
}

bool Filtered(const ConnectionOptions& options) {
  return !options.protocols.empty() || !options.ports.empty() || !options.port_names.empty();
}

// The container ports of a destination pod in snapshot `s` (null: a range, or no such pod).
const std::vector<NamedPort>* NamedPortsOf(const EngineState& s, const End& dst) {
  if (!dst.end.is_pod) return nullptr;
  const uint32_t* id = s.pod_by_key.Find(dst.end.name);
  if (id == nullptr || s.pods[*id].state == nullptr) return nullptr;
  return s.named_maps[s.pods[*id].state->named_map].get();
}

// --- explanations

// Adds the port numbers at which one of `pod`'s rules of `direction` (NetworkPolicy and
// tier) starts or stops covering a port: between two cuts every rule matches all ports or
// none, so one explanation speaks for the whole run. Named ports are cut by the caller.
void AddRuleCuts(const EngineState& s, uint32_t pod, Direction direction,
                 std::vector<uint32_t>* cuts) {
  const internal::IdentitySlot& identity = s.identities[s.pods[pod].identity];
  const int d = static_cast<int>(direction);
  auto add = [&](const std::vector<internal::CompiledPort>& ports) {
    for (const internal::CompiledPort& port : ports) {
      if (port.kind != internal::CompiledPort::Kind::kRange) continue;
      cuts->push_back(port.first);
      cuts->push_back(uint32_t{port.last} + 1);
    }
  };
  if (identity.target_policies != kNone) {
    for (uint32_t p : s.IdList(identity.target_policies)) {
      for (const internal::CompiledRule& rule : s.policies[p]->rules[d]) add(rule.ports);
    }
  }
  if (identity.tier_policies != kNone && s.has_tier_policies()) {
    for (uint32_t t : s.IdList(identity.tier_policies)) {
      for (const internal::CompiledTierRule& rule : (*s.tier_policies)[t].rules[d]) add(rule.ports);
    }
  }
}

}  // namespace

std::vector<std::string> Deciders(const DirectionVerdict& v) {
  if (!v.applies) return {};
  if (!v.shared_addresses.empty()) {
    return {absl::StrCat("shared address ", absl::StrJoin(v.shared_addresses, ", "))};
  }
  if (v.admin_rule && v.admin_rule->action != tiers::Action::kPass) {
    return {v.admin_rule->ToString()};
  }
  if (v.isolated) {
    if (v.allowing_rules.empty()) {
      return {absl::StrCat("isolated by ", absl::StrJoin(v.isolating_policies, ", "),
                           "; no rule admits")};
    }
    std::vector<std::string> out;
    for (const RuleRef& rule : v.allowing_rules) out.push_back(rule.ToString());
    return out;
  }
  if (v.baseline_rule && v.baseline_rule->action != tiers::Action::kPass) {
    return {v.baseline_rule->ToString()};
  }
  return {"not isolated"};
}

namespace {

// Adds the deciders of one side when its verdict is `allowed`.
void AddDeciders(const DirectionVerdict& v, bool allowed, std::set<std::string>* out) {
  if (v.allowed() != allowed) return;
  for (std::string& d : Deciders(v)) out->insert(std::move(d));
}

// What decides `ports` from `from` to `to` in `engine`: per side, the deciders of the ports
// that side `allowed` (true) or denies (false).
Reasons ExplainPorts(const Engine& engine, const ConnectionEnd& from, const ConnectionEnd& to,
                     const PortSet& ports, bool allowed) {
  const EngineState& s = EngineAccess::State(engine);
  auto endpoint = [&](const ConnectionEnd& e) -> std::optional<Endpoint> {
    if (!e.is_pod) return Endpoint::External(e.first);
    const uint32_t* id = s.pod_by_key.Find(e.name);
    if (id == nullptr || s.pods[*id].state == nullptr) return std::nullopt;
    return Endpoint::Pod(static_cast<int>(*id));
  };
  std::optional<Endpoint> src = endpoint(from), dst = endpoint(to);
  Reasons out;
  if (!src) out.egress.push_back(absl::StrCat(from.name, " is not in this state"));
  if (!dst) out.ingress.push_back(absl::StrCat(to.name, " is not in this state"));
  if (!src || !dst) return out;
  std::vector<uint32_t> cuts;
  if (src->is_pod) AddRuleCuts(s, src->pod_index, Direction::kEgress, &cuts);
  if (dst->is_pod) {
    AddRuleCuts(s, dst->pod_index, Direction::kIngress, &cuts);
    // A named port of any rule resolves to one of the destination's container ports.
    for (const NamedPort& port : *s.named_maps[s.pods[dst->pod_index].state->named_map]) {
      cuts.push_back(port.port);
      cuts.push_back(uint32_t{port.port} + 1);
    }
  }
  std::sort(cuts.begin(), cuts.end());
  std::set<std::string> egress, ingress;
  for (Protocol protocol : kAllProtocols) {
    for (const PortRange& r : ports.by_protocol[ProtocolIndex(protocol)]) {
      for (uint32_t port = r.first; port <= r.last;) {
        const Verdict v = engine.Explain(*src, *dst, protocol, static_cast<uint16_t>(port));
        AddDeciders(v.egress, allowed, &egress);
        AddDeciders(v.ingress, allowed, &ingress);
        auto next = std::upper_bound(cuts.begin(), cuts.end(), port);
        port = next == cuts.end() ? uint32_t{r.last} + 1 : *next;
      }
    }
  }
  out.egress.assign(egress.begin(), egress.end());
  out.ingress.assign(ingress.begin(), ingress.end());
  return out;
}

// Fills why / why_not of a diff's entries from the two states.
void ExplainDiff(const Engine& before, const Engine& after, ConnectionDiff* diff) {
  for (Connection& c : diff->added) {
    c.why = ExplainPorts(after, c.from, c.to, c.ports, /*allowed=*/true);
    c.why_not = ExplainPorts(before, c.from, c.to, c.ports, /*allowed=*/false);
  }
  for (Connection& c : diff->removed) {
    c.why = ExplainPorts(before, c.from, c.to, c.ports, /*allowed=*/true);
    c.why_not = ExplainPorts(after, c.from, c.to, c.ports, /*allowed=*/false);
  }
}

void AppendReasonsJson(std::string* out, absl::string_view key, const Reasons& reasons) {
  absl::StrAppend(out, ", \"", key, "\": {");
  for (const auto& [side, list] : {std::pair<absl::string_view, const std::vector<std::string>*>{
                                       "egress", &reasons.egress},
                                   {"ingress", &reasons.ingress}}) {
    absl::StrAppend(out, side == "egress" ? "" : ", ", "\"", side, "\": [");
    for (size_t i = 0; i < list->size(); ++i) {
      absl::StrAppend(out, i ? ", " : "", JsonQuote((*list)[i]));
    }
    absl::StrAppend(out, "]");
  }
  absl::StrAppend(out, "}");
}

void AppendRangesJson(std::string* out, const Ranges& ranges) {
  absl::StrAppend(out, "[");
  for (size_t i = 0; i < ranges.size(); ++i) {
    absl::StrAppend(out, i ? ", " : "", "[", ranges[i].first, ", ", ranges[i].last, "]");
  }
  absl::StrAppend(out, "]");
}

void AppendConnectionsJson(std::string* out, const std::vector<Connection>& list) {
  absl::StrAppend(out, "[");
  for (size_t i = 0; i < list.size(); ++i) {
    const Connection& c = list[i];
    absl::StrAppend(out, i ? ",\n  " : "\n  ", "{\"from\": ", JsonQuote(c.from.name),
                    ", \"to\": ", JsonQuote(c.to.name), ", \"ports\": {");
    bool first = true;
    for (Protocol p : kAllProtocols) {
      const Ranges& r = c.ports.by_protocol[ProtocolIndex(p)];
      if (r.empty()) continue;
      absl::StrAppend(out, first ? "" : ", ", "\"", ProtocolName(p), "\": ");
      AppendRangesJson(out, r);
      first = false;
    }
    absl::StrAppend(out, "}");
    if (!c.why.empty()) AppendReasonsJson(out, "why", c.why);
    if (!c.why_not.empty()) AppendReasonsJson(out, "why_not", c.why_not);
    absl::StrAppend(out, "}");
  }
  absl::StrAppend(out, list.empty() ? "]" : "\n]");
}

// Indented lines under an explained entry: "    egress at x/a: not isolated", each side's
// deciders prefixed with `when` ("", "before: ", "after: ").
void AppendReasonLines(std::string* out, const Connection& c, const Reasons& reasons,
                       absl::string_view when) {
  if (!reasons.egress.empty()) {
    absl::StrAppend(out, "    ", when, "egress at ", c.from.name, ": ",
                    absl::StrJoin(reasons.egress, " | "), "\n");
  }
  if (!reasons.ingress.empty()) {
    absl::StrAppend(out, "    ", when, "ingress at ", c.to.name, ": ",
                    absl::StrJoin(reasons.ingress, " | "), "\n");
  }
}

std::string FormatLines(const std::vector<Connection>& list, absl::string_view prefix) {
  size_t width_from = 0, width_to = 0;
  for (const Connection& c : list) {
    width_from = std::max(width_from, c.from.name.size());
    width_to = std::max(width_to, c.to.name.size());
  }
  std::string out;
  for (const Connection& c : list) {
    absl::StrAppend(&out, prefix, c.from.name, std::string(width_from - c.from.name.size(), ' '),
                    " => ", c.to.name, std::string(width_to - c.to.name.size(), ' '), " : ",
                    c.ports.ToString(), "\n");
    // In a diff, "+" lines are allowed now and were denied before; "-" lines the reverse.
    const bool removed = prefix == "- ";
    AppendReasonLines(&out, c, c.why, prefix.empty() ? "" : removed ? "before: " : "after: ");
    AppendReasonLines(&out, c, c.why_not, removed ? "after: " : "before: ");
  }
  return out;
}

}  // namespace

bool PortSet::empty() const {
  for (const auto& r : by_protocol) {
    if (!r.empty()) return false;
  }
  return true;
}

bool PortSet::all() const {
  for (const auto& r : by_protocol) {
    if (r.size() != 1 || !(r[0] == kAllPorts)) return false;
  }
  return true;
}

bool PortSet::Contains(Protocol protocol, uint16_t port) const {
  for (const PortRange& r : by_protocol[ProtocolIndex(protocol)]) {
    if (r.Contains(port)) return true;
  }
  return false;
}

std::string PortSet::ToString() const {
  if (all()) return "All connections";
  if (empty()) return "No connections";
  std::vector<std::string> parts;
  for (Protocol p : kAllProtocols) {
    const Ranges& ranges = by_protocol[ProtocolIndex(p)];
    if (ranges.empty()) continue;
    std::vector<std::string> items;
    for (const PortRange& r : ranges) {
      items.push_back(r.first == r.last ? absl::StrCat(r.first)
                                        : absl::StrCat(r.first, "-", r.last));
    }
    parts.push_back(absl::StrCat(ProtocolName(p), " ", absl::StrJoin(items, ",")));
  }
  return absl::StrJoin(parts, "; ");
}

PortSet Intersect(const PortSet& a, const PortSet& b) {
  PortSet out;
  for (int pi = 0; pi < 3; ++pi) out.by_protocol[pi] = IntersectRanges(a.by_protocol[pi], b.by_protocol[pi]);
  return out;
}

PortSet Subtract(const PortSet& a, const PortSet& b) {
  PortSet out;
  for (int pi = 0; pi < 3; ++pi) out.by_protocol[pi] = SubtractRanges(a.by_protocol[pi], b.by_protocol[pi]);
  return out;
}

absl::Status CheckFiltersMatch(const std::vector<const Cluster*>& clusters,
                               const ConnectionOptions& options) {
  for (const auto& [what, text] : {std::pair<absl::string_view, const std::string&>{"from", options.from},
                                   {"to", options.to}}) {
    absl::StatusOr<EndFilter> filter = EndFilter::Parse(text);
    if (!filter.ok()) return filter.status();
    // Outside the cluster every address is some range's: only globs, and addresses without
    // the ranges, can miss.
    if (!filter->is_glob() && (options.external || filter->is_all())) continue;
    bool matched = false;
    for (const Cluster* cluster : clusters) {
      for (int i = 0; i < cluster->pod_count() && !matched; ++i) {
        matched = filter->MatchesPod(cluster->pod(i).Key(), cluster->pod(i).ips);
      }
    }
    if (!matched) {
      // A workload's name: its pods are WORKLOAD-0, ... (np/workloads.h).
      bool workload = false;
      for (const Cluster* cluster : clusters) workload |= cluster->FindPod(text).has_value();
      return absl::InvalidArgumentError(absl::StrCat(
          what, " \"", text, "\" matches no pod of the input",
          !filter->is_glob() ? " (and ranges outside the cluster are left out)"
          : workload         ? absl::StrCat(" (it names a workload: its pods are ", text, "-*)")
                             : ""));
    }
  }
  for (const std::string& name : options.port_names) {
    bool defined = false;
    for (const Cluster* cluster : clusters) {
      for (int i = 0; i < cluster->pod_count() && !defined; ++i) {
        for (const NamedPort& port : cluster->pod(i).named_ports) defined |= port.name == name;
      }
    }
    if (!defined) {
      return absl::InvalidArgumentError(absl::StrCat(
          "port \"", name, "\" is the name of no container port of the input"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Connections> ListConnections(const Engine& engine,
                                            const ConnectionOptions& options) {
  absl::StatusOr<EndFilter> from = EndFilter::Parse(options.from);
  if (!from.ok()) return from.status();
  absl::StatusOr<EndFilter> to = EndFilter::Parse(options.to);
  if (!to.ok()) return to.status();
  const EngineState& s = EngineAccess::State(engine);
  std::vector<const EngineState*> engines = {&s};
  absl::StatusOr<std::vector<End>> ends = Ends(engines, ExternalRanges(engines), options.external);
  if (!ends.ok()) return ends.status();
  auto matches = [&](const EndFilter& filter, const End& e) {
    return e.end.is_pod ? filter.MatchesPod(*s.pods[e.end.pod].state)
                        : filter.MatchesRange(e.end.first, e.end.last);
  };
  Connections out;
  for (const End& e : *ends) {
    if (matches(*from, e) || matches(*to, e)) out.ends.push_back(e.end);
  }
  // Ends that the tables cannot tell apart (same target class and peer classes: same
  // behaviour) get the same ports toward anything: compute each pair of behaviours once,
  // then expand to the ends — pod pairs cost what the allowed pairs cost, not pods squared.
  struct Behaviour {
    size_t representative;                      // one of its ends
    std::vector<size_t> sources, destinations;  // indexes into *ends
  };
  std::vector<Behaviour> behaviours;
  absl::flat_hash_map<std::tuple<bool, int, uint32_t, uint32_t, uint32_t, uint32_t>, size_t> ids;
  for (size_t i = 0; i < ends->size(); ++i) {
    const End& e = (*ends)[i];
    const EndClasses& c = e.classes;
    auto key = std::make_tuple(c.is_pod, c.range_family, c.target[0], c.peer[0][0],
                               c.peer[0][1], c.peer[0][2]);
    auto [it, inserted] = ids.emplace(key, behaviours.size());
    if (inserted) behaviours.push_back(Behaviour{i, {}, {}});
    Behaviour& b = behaviours[it->second];
    if (matches(*from, e)) b.sources.push_back(i);
    if (matches(*to, e)) b.destinations.push_back(i);
  }
  std::deque<PortSet> allowed;  // each behaviour pair is visited once: no cache needed
  const bool filtered = Filtered(options);
  struct Found {
    size_t src, dst;
    const PortSet* ports;
  };
  std::vector<Found> found;
  auto visit = [&](const Behaviour& bs, const Behaviour& bd) {
    SideKey source, destination;
    if (!PairKeys(0, (*ends)[bs.representative].classes, (*ends)[bd.representative].classes,
                  &source, &destination)) {
      return;
    }
    PortSet ports = PairPorts(s, source, destination);
    if (ports.empty()) return;
    allowed.push_back(std::move(ports));
    const PortSet& raw = allowed.back();
    for (size_t i : bs.sources) {
      for (size_t j : bd.destinations) {
        if (i != j) found.push_back(Found{i, j, &raw});
      }
    }
  };
  // A pair of behaviours can be allowed only when each side admits the other's peer class on
  // some port: a side that names the classes it admits (SideReach) lists the only partners it
  // can have. So pairs are enumerated from those lists — every pair that an explicit ingress
  // admits, then every pair with an open ingress that an explicit egress admits, then the
  // pairs open on both sides (most of which are allowed) — and the cost follows the allowed
  // pairs, not the square of the behaviours. Each pair is visited at most once.
  ReachCache reach(s);
  std::vector<std::vector<uint32_t>> by_peer(s.peer_classes.size());
  std::vector<const SideReach*> egress(behaviours.size()), ingress(behaviours.size());
  std::vector<uint32_t> open_sources, open_destinations;
  for (uint32_t i = 0; i < behaviours.size(); ++i) {
    const EndClasses& c = (*ends)[behaviours[i].representative].classes;
    const uint32_t target = c.is_pod ? c.target[0] : kNone;
    egress[i] = &reach.Get(target, Direction::kEgress);
    ingress[i] = &reach.Get(target, Direction::kIngress);
    for (int f = 0; f < 3; ++f) {
      const uint32_t peer = c.peer[0][f];
      if (peer >= by_peer.size() || (f > 0 && peer == c.peer[0][f - 1]) ||
          (f > 1 && peer == c.peer[0][0])) {
        continue;
      }
      by_peer[peer].push_back(i);
    }
    if (!behaviours[i].sources.empty() && egress[i]->open) open_sources.push_back(i);
    if (!behaviours[i].destinations.empty() && ingress[i]->open) open_destinations.push_back(i);
  }
  std::vector<uint32_t> seen(behaviours.size(), kNone);
  for (uint32_t d = 0; d < behaviours.size(); ++d) {
    if (behaviours[d].destinations.empty() || ingress[d]->open) continue;
    for (uint32_t peer : ingress[d]->listed) {
      if (peer >= by_peer.size()) continue;
      for (uint32_t src : by_peer[peer]) {
        if (seen[src] == d || behaviours[src].sources.empty()) continue;
        seen[src] = d;
        visit(behaviours[src], behaviours[d]);
      }
    }
  }
  std::fill(seen.begin(), seen.end(), kNone);
  for (uint32_t src = 0; src < behaviours.size(); ++src) {
    if (behaviours[src].sources.empty() || egress[src]->open) continue;
    for (uint32_t peer : egress[src]->listed) {
      if (peer >= by_peer.size()) continue;
      for (uint32_t d : by_peer[peer]) {
        if (seen[d] == src || !ingress[d]->open || behaviours[d].destinations.empty()) continue;
        seen[d] = src;
        visit(behaviours[src], behaviours[d]);
      }
    }
  }
  for (uint32_t src : open_sources) {
    for (uint32_t d : open_destinations) visit(behaviours[src], behaviours[d]);
  }
  std::sort(found.begin(), found.end(), [](const Found& x, const Found& y) {
    return std::make_pair(x.src, x.dst) < std::make_pair(y.src, y.dst);
  });
  // A Connection is large (two ends, ports, reasons): growing the vector would move each
  // one several times, which costs more than finding them.
  out.connections.reserve(found.size());
  for (const Found& f : found) {
    const End& src = (*ends)[f.src];
    const End& dst = (*ends)[f.dst];
    if (!filtered) {
      out.connections.push_back(Connection{src.end, dst.end, *f.ports});
      continue;
    }
    PortSet ports = Restrict(*f.ports, options, NamedPortsOf(s, dst));
    if (ports.empty()) continue;
    out.connections.push_back(Connection{src.end, dst.end, std::move(ports)});
  }
  if (options.explain) {
    for (Connection& c : out.connections) {
      c.why = ExplainPorts(engine, c.from, c.to, c.ports, /*allowed=*/true);
    }
  }
  return out;
}

namespace {

// Compares one pair in both snapshots and records what it gains and loses.
class PairDiffer {
 public:
  PairDiffer(const EngineState& a, const EngineState& b, const ConnectionOptions& options,
             ConnectionDiff* out)
      : a_(a), b_(b), options_(options), out_(out) {}
  void Compare(const End& src, const End& dst) {
    const PortSet& raw_was = PortsOf(a_, 0, src, dst, cache_[0]);
    const PortSet& raw_is = PortsOf(b_, 1, src, dst, cache_[1]);
    if (!Filtered(options_)) {
      if (raw_was == raw_is) return;
      Record(src, dst, raw_was, raw_is);
      return;
    }
    PortSet was = Restrict(raw_was, options_, NamedPortsOf(a_, dst));
    PortSet is = Restrict(raw_is, options_, NamedPortsOf(b_, dst));
    if (was == is) return;
    Record(src, dst, was, is);
  }

 private:
  void Record(const End& src, const End& dst, const PortSet& was, const PortSet& is) {
    PortSet added = Subtract(is, was), removed = Subtract(was, is);
    if (!added.empty()) out_->added.push_back(Connection{src.end, dst.end, std::move(added)});
    if (!removed.empty()) out_->removed.push_back(Connection{src.end, dst.end, std::move(removed)});
  }

  const EngineState& a_;
  const EngineState& b_;
  const ConnectionOptions& options_;
  ConnectionDiff* out_;
  PortCache cache_[2];
};

// Whether two tables decide one direction alike for every peer class the older snapshot
// has (ids below `old_classes`) and for a shared address: then an end whose peer class is
// the same in both snapshots gets the same ports from either table on every port. An update
// rebuilds the tables of every policy whose selectors a new peer class matches, so a new
// table pointer alone says little; what matters is whether a class that existed before is
// now treated differently. New classes (ids from `old_classes` on) belong to ends whose
// peer class changed, and those are compared pair by pair. The test is conservative: tables
// that differ only in how a set is stored may be called different, which costs comparisons
// and never misses a pair.
class TableComparer {
 public:
  explicit TableComparer(uint32_t old_classes) : old_classes_(old_classes) {}

  // Null: no table (the side admits everything).
  bool Same(const internal::TargetTable* a, const internal::TargetTable* b, Direction direction) {
    if (a == b) return true;
    auto key = std::make_tuple(a, b, static_cast<int>(direction));
    auto it = memo_.find(key);
    if (it != memo_.end()) return it->second;
    bool same = true;
    for (int pi = 0; pi < 3 && same; ++pi) same = SameProtocol(a, b, direction, pi);
    memo_.emplace(key, same);
    return same;
  }

 private:
  // One interval of a direction; `iv` null stands for "every peer" (no table, or a direction
  // the table does not isolate).
  struct Piece {
    uint32_t first;
    const internal::Interval* iv;
  };
  static void Pieces(const internal::TargetTable* t, Direction direction, int pi,
                     std::vector<Piece>* out) {
    out->clear();
    if (t != nullptr) {
      const internal::TableView view = t->view();
      const internal::DirectionTable& dt = view.direction(static_cast<int>(direction));
      if (dt.isolated) {
        for (uint32_t i = dt.begin[pi]; i < dt.end[pi]; ++i) {
          out->push_back(Piece{view.intervals(static_cast<int>(direction))[i].first, &view.intervals(static_cast<int>(direction))[i]});
        }
        // A protocol without intervals admits nothing (an empty sparse list, not negated).
        if (out->empty()) out->push_back(Piece{0, &kNothing});
        return;
      }
    }
    out->push_back(Piece{0, nullptr});
  }
  // The classes below old_classes_ that the interval lists, and whether the list is of the
  // denied ones (all peers: an empty list of denied ones).
  bool Listed(const internal::TargetTable* t, const internal::Interval* iv,
              std::vector<uint32_t>* ids) const {
    ids->clear();
    if (iv == nullptr || iv->all_peers) return true;
    t->view().ForEachPeer(*iv, [&](uint32_t id) {
      if (id < old_classes_) ids->push_back(id);
    });
    std::sort(ids->begin(), ids->end());
    return iv->negated;
  }
  bool SameProtocol(const internal::TargetTable* a, const internal::TargetTable* b,
                    Direction direction, int pi) {
    Pieces(a, direction, pi, &pieces_[0]);
    Pieces(b, direction, pi, &pieces_[1]);
    size_t i = 0, j = 0;
    while (true) {
      bool negated_a = Listed(a, pieces_[0][i].iv, &ids_[0]);
      bool negated_b = Listed(b, pieces_[1][j].iv, &ids_[1]);
      if (negated_a != negated_b || ids_[0] != ids_[1]) return false;
      const bool more_a = i + 1 < pieces_[0].size(), more_b = j + 1 < pieces_[1].size();
      if (!more_a && !more_b) return true;
      const uint32_t next_a = more_a ? pieces_[0][i + 1].first : 65536;
      const uint32_t next_b = more_b ? pieces_[1][j + 1].first : 65536;
      if (next_a <= next_b) ++i;
      if (next_b <= next_a) ++j;
    }
  }

  static const internal::Interval kNothing;
  const uint32_t old_classes_;
  std::vector<Piece> pieces_[2];
  std::vector<uint32_t> ids_[2];
  absl::flat_hash_map<std::tuple<const void*, const void*, int>, bool> memo_;
};
const internal::Interval TableComparer::kNothing = [] {
  internal::Interval iv;
  iv.sparse = 1;
  iv.negated = 0;
  return iv;
}();

const internal::TargetTable* TableOf(const EngineState& s, uint32_t target) {
  return target == kNone ? nullptr : s.target_classes[target].table.get();
}

// An end of an incremental diff: a pod by its id in each snapshot (kNone where it is
// absent), or an external range by its index.
struct DiffEnd {
  EndClasses classes;
  uint32_t pod[2] = {kNone, kNone};
  uint32_t range = kNone;
};

}  // namespace

absl::StatusOr<ConnectionDiff> DiffChanges(const Engine& before, absl::Span<const Change> changes,
                                           const ConnectionOptions& options,
                                           std::shared_ptr<const Engine>* after_out) {
  absl::StatusOr<EndFilter> from = EndFilter::Parse(options.from);
  if (!from.ok()) return from.status();
  absl::StatusOr<EndFilter> to = EndFilter::Parse(options.to);
  if (!to.ok()) return to.status();
  absl::StatusOr<std::shared_ptr<const Engine>> after = before.Apply(changes);
  if (!after.ok()) return after.status();
  if (after_out != nullptr) *after_out = *after;
  const EngineState& a = EngineAccess::State(before);
  const EngineState& b = EngineAccess::State(**after);
  const EngineState* states[2] = {&a, &b};
  const std::vector<ExternalRange> ranges = ExternalRanges({&a, &b});

  // The ends, read by pod id with no string work for the pods a change leaves alone: ids
  // are stable across Apply and never reused (an updated pod gets a new id, found by key).
  std::vector<DiffEnd> ends;
  ends.reserve(a.pods.size() + ranges.size() + 16);
  auto set_pod = [&](DiffEnd& end, int e, uint32_t id) {
    end.pod[e] = id;
    const internal::PodRecord& record = states[e]->records[id];
    end.classes.target[e] = record.target;
    for (int f = 0; f < 3; ++f) end.classes.peer[e][f] = record.peer[f];
  };
  auto live = [](const EngineState& s, uint32_t id) {
    return id < s.pods.size() && s.pods[id].state != nullptr;
  };
  for (uint32_t p = 0; p < a.pods.size(); ++p) {
    if (!live(a, p)) continue;
    DiffEnd end;
    end.classes.is_pod = true;
    set_pod(end, 0, p);
    if (live(b, p)) {
      set_pod(end, 1, p);
    } else if (const uint32_t* q = b.pod_by_key.Find(a.pods[p].state->key); q && live(b, *q)) {
      set_pod(end, 1, *q);
    }
    ends.push_back(end);
  }
  for (uint32_t q = static_cast<uint32_t>(a.pods.size()); q < b.pods.size(); ++q) {
    if (!live(b, q)) continue;
    const uint32_t* p = a.pod_by_key.Find(b.pods[q].state->key);
    if (p != nullptr && live(a, *p)) continue;  // paired above
    DiffEnd end;
    end.classes.is_pod = true;
    set_pod(end, 1, q);
    ends.push_back(end);
  }
  const size_t pod_ends = ends.size();
  if (options.external) {
    for (uint32_t r = 0; r < ranges.size(); ++r) {
      DiffEnd end;
      end.range = r;
      end.classes.range_family = ranges[r].family;
      for (int e = 0; e < 2; ++e) end.classes.peer[e][ranges[r].family] = ranges[r].peer[e];
      ends.push_back(end);
    }
  }
  auto pod_state = [&](const DiffEnd& end) -> const internal::PodState& {
    return end.pod[0] != kNone ? *a.pods[end.pod[0]].state : *b.pods[end.pod[1]].state;
  };
  auto matches = [&](const EndFilter& filter, const DiffEnd& end) {
    if (filter.is_all()) return true;
    if (end.range != kNone) {
      const ExternalRange& r = ranges[end.range];
      return filter.MatchesRange(FromU128(r.first, r.family), FromU128(r.last, r.family));
    }
    for (int e = 0; e < 2; ++e) {
      if (end.pod[e] != kNone && filter.MatchesPod(*states[e]->pods[end.pod[e]].state)) {
        return true;
      }
    }
    return false;
  };

  // Ends with the same classes in both snapshots behave alike: group them, decide per pair
  // of groups, expand to members only where the ports differ.
  struct Group {
    uint32_t representative;
    std::vector<uint32_t> sources, destinations;
    // Compared with every group: its egress (ingress) table treats some class that existed
    // before differently, or its peer class changed in a way selectors do not account for.
    bool source_side_changed = false;
    bool destination_side_changed = false;
    bool moved = false;  // its peer class changed, to one that differs only in selectors
  };
  std::vector<Group> groups;
  absl::flat_hash_map<std::tuple<bool, int, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t,
                                 uint32_t, uint32_t, uint32_t>,
                      uint32_t>
      group_of;
  for (uint32_t i = 0; i < ends.size(); ++i) {
    const EndClasses& c = ends[i].classes;
    auto key = std::make_tuple(c.is_pod, c.range_family, c.target[0], c.peer[0][0], c.peer[0][1],
                               c.peer[0][2], c.target[1], c.peer[1][0], c.peer[1][1],
                               c.peer[1][2]);
    auto [it, inserted] = group_of.emplace(key, static_cast<uint32_t>(groups.size()));
    if (inserted) groups.push_back(Group{i, {}, {}});
    Group& g = groups[it->second];
    if (matches(*from, ends[i])) g.sources.push_back(i);
    if (matches(*to, ends[i])) g.destinations.push_back(i);
  }
  // A pair's ports are its source's egress toward the destination's peer class intersected
  // with its destination's ingress toward the source's peer class: they can change only
  // where one of those four changed.
  //
  // A table decides a peer class from the selectors the class is in (its key's label and
  // ipBlock parts) and its named ports. So when an end's class changes but keeps its named
  // ports and stays a real class (no address gained or lost, no shared address), the ports
  // toward it change only at tables whose rules name a selector it joined or left: those
  // "selectors of the change" are collected, and only groups whose tables name one of them
  // are compared with the moved groups.
  TableComparer tables(static_cast<uint32_t>(a.peer_classes.size()));
  absl::flat_hash_set<uint32_t> changed_selectors;
  std::vector<uint32_t> moved;
  auto selectors_of = [](const EngineState& s, uint32_t peer, std::vector<uint32_t>* out) {
    const internal::PeerClassKey& key = s.peer_classes[peer];
    out->assign(s.IdList(key.label_part).begin(), s.IdList(key.label_part).end());
    out->insert(out->end(), s.IdList(key.ipblock_part).begin(), s.IdList(key.ipblock_part).end());
    std::sort(out->begin(), out->end());
  };
  std::vector<uint32_t> was, is, difference;
  for (uint32_t gi = 0; gi < groups.size(); ++gi) {
    Group& g = groups[gi];
    const EndClasses& c = ends[g.representative].classes;
    bool peer_changed = false, accounted = true;
    for (int f = 0; f < 3; ++f) {
      const uint32_t pa = c.peer[0][f], pb = c.peer[1][f];
      if (pa == pb) continue;
      peer_changed = true;
      if (pa >= kSharedPeer || pb >= kSharedPeer ||
          a.peer_classes[pa].named_map != b.peer_classes[pb].named_map) {
        accounted = false;
        continue;
      }
      selectors_of(a, pa, &was);
      selectors_of(b, pb, &is);
      difference.clear();
      std::set_symmetric_difference(was.begin(), was.end(), is.begin(), is.end(),
                                    std::back_inserter(difference));
      changed_selectors.insert(difference.begin(), difference.end());
    }
    const internal::TargetTable* ta = TableOf(a, c.target[0]);
    const internal::TargetTable* tb = TableOf(b, c.target[1]);
    const bool wild = peer_changed && !accounted;
    g.source_side_changed = wild || !tables.Same(ta, tb, Direction::kEgress);
    g.destination_side_changed = wild || !tables.Same(ta, tb, Direction::kIngress);
    g.moved = peer_changed && accounted;
    if (g.moved) moved.push_back(gi);
  }
  // Per target class of `after` and direction: whether its rules name a selector of the change.
  absl::flat_hash_map<std::pair<uint32_t, int>, bool> names_changed;
  auto names_a_changed_selector = [&](uint32_t target, Direction direction) {
    if (target == kNone || changed_selectors.empty()) return false;
    const int d = static_cast<int>(direction);
    auto [it, inserted] = names_changed.emplace(std::make_pair(target, d), false);
    if (!inserted) return it->second;
    const internal::TargetClassKey& key = b.target_classes[target].key;
    bool found = false;
    for (uint32_t p : b.IdList(key.policies)) {
      for (const internal::CompiledRule& rule : b.policies[p]->rules[d]) {
        for (uint32_t sel : rule.selectors) found |= changed_selectors.contains(sel);
      }
    }
    if (key.tier_policies != kNone && b.has_tier_policies()) {
      for (uint32_t t : b.IdList(key.tier_policies)) {
        for (const internal::CompiledTierRule& rule : (*b.tier_policies)[t].rules[d]) {
          for (const internal::CompiledTierPeer& peer : rule.peers) {
            for (uint32_t sel : peer.selectors) found |= changed_selectors.contains(sel);
          }
        }
      }
    }
    names_changed[std::make_pair(target, d)] = found;
    return found;
  };
  // Groups not compared with everything whose egress (ingress) names a selector of the change.
  std::vector<uint32_t> egress_naming, ingress_naming;
  if (!moved.empty()) {
    for (uint32_t gi = 0; gi < groups.size(); ++gi) {
      const Group& g = groups[gi];
      const uint32_t target = ends[g.representative].classes.target[1];
      if (!g.source_side_changed && !g.sources.empty() &&
          names_a_changed_selector(target, Direction::kEgress)) {
        egress_naming.push_back(gi);
      }
      if (!g.destination_side_changed && !g.destinations.empty() &&
          names_a_changed_selector(target, Direction::kIngress)) {
        ingress_naming.push_back(gi);
      }
    }
  }

  PortCache cache[2];
  const PortSet none;
  const bool filtered = Filtered(options);
  auto ports = [&](int e, const EndClasses& src, const EndClasses& dst) -> const PortSet& {
    SideKey source, destination;
    if (!PairKeys(e, src, dst, &source, &destination)) return none;
    return cache[e].Get(*states[e], source, destination);
  };
  auto named_ports = [&](int e, const DiffEnd& dst) -> const std::vector<NamedPort>* {
    if (dst.range != kNone || dst.pod[e] == kNone) return nullptr;
    const EngineState& s = *states[e];
    return s.named_maps[s.pods[dst.pod[e]].state->named_map].get();
  };
  struct Found {
    uint32_t src, dst;
    PortSet added, removed;
  };
  std::vector<Found> found;
  auto compare = [&](const Group& gs, const Group& gd) {
    const EndClasses& src = ends[gs.representative].classes;
    const EndClasses& dst = ends[gd.representative].classes;
    const PortSet& raw_was = ports(0, src, dst);
    const PortSet& raw_is = ports(1, src, dst);
    if (!filtered && raw_was == raw_is) return;
    for (uint32_t i : gs.sources) {
      for (uint32_t j : gd.destinations) {
        if (i == j) continue;
        PortSet was = filtered ? Restrict(raw_was, options, named_ports(0, ends[j])) : raw_was;
        PortSet is = filtered ? Restrict(raw_is, options, named_ports(1, ends[j])) : raw_is;
        if (was == is) continue;
        found.push_back(Found{i, j, Subtract(is, was), Subtract(was, is)});
      }
    }
  };
  // Every pair with a changed side, each once: changed sources against every destination,
  // then changed destinations against the sources not visited yet, then moved groups against
  // the groups whose tables name a selector of the change.
  for (const Group& gs : groups) {
    if (!gs.source_side_changed || gs.sources.empty()) continue;
    for (const Group& gd : groups) {
      if (!gd.destinations.empty()) compare(gs, gd);
    }
  }
  for (const Group& gd : groups) {
    if (!gd.destination_side_changed || gd.destinations.empty()) continue;
    for (const Group& gs : groups) {
      if (!gs.source_side_changed && !gs.sources.empty()) compare(gs, gd);
    }
  }
  absl::flat_hash_set<std::pair<uint32_t, uint32_t>> visited;
  for (uint32_t m : moved) {
    const Group& g = groups[m];
    if (!g.destination_side_changed && !g.destinations.empty()) {
      for (uint32_t gs : egress_naming) {
        if (visited.insert({gs, m}).second) compare(groups[gs], g);
      }
    }
    if (!g.source_side_changed && !g.sources.empty()) {
      for (uint32_t gd : ingress_naming) {
        if (visited.insert({m, gd}).second) compare(g, groups[gd]);
      }
    }
  }

  // The full diff's order: pods by key, then ranges in address order.
  auto before_end = [&](uint32_t x, uint32_t y) {
    const bool pod_x = x < pod_ends, pod_y = y < pod_ends;
    if (pod_x != pod_y) return pod_x;
    if (!pod_x) return ends[x].range < ends[y].range;
    return pod_state(ends[x]).key < pod_state(ends[y]).key;
  };
  std::sort(found.begin(), found.end(), [&](const Found& x, const Found& y) {
    if (x.src != y.src) return before_end(x.src, y.src);
    return before_end(x.dst, y.dst);
  });
  auto connection_end = [&](uint32_t i) {
    ConnectionEnd out;
    const DiffEnd& end = ends[i];
    if (end.range == kNone) {
      out.is_pod = true;
      out.name = pod_state(end).key;
      out.pod = end.pod[0] != kNone ? end.pod[0] : 0;
      return out;
    }
    const ExternalRange& r = ranges[end.range];
    out.first = FromU128(r.first, r.family);
    out.last = FromU128(r.last, r.family);
    out.name = RangeName(out.first, out.last);
    return out;
  };
  ConnectionDiff out;
  for (Found& f : found) {
    if (!f.added.empty()) {
      out.added.push_back(Connection{connection_end(f.src), connection_end(f.dst), std::move(f.added)});
    }
    if (!f.removed.empty()) {
      out.removed.push_back(
          Connection{connection_end(f.src), connection_end(f.dst), std::move(f.removed)});
    }
  }
  if (options.explain) ExplainDiff(before, **after, &out);
  return out;
}

std::vector<Change> ChangesBetween(const Cluster& a, const Cluster& b) {
  ClusterObjects x = a.ToObjects(), y = b.ToObjects();
  std::vector<Change> changes;
  auto compare = [&](const auto& old_list, const auto& new_list, auto key_of) {
    std::map<std::string, const google::protobuf::Message*> old_by_key;
    for (const auto& o : old_list) old_by_key[key_of(o.object)] = &o.object;
    std::set<std::string> seen;
    for (const auto& n : new_list) {
      std::string key = key_of(n.object);
      seen.insert(key);
      auto it = old_by_key.find(key);
      if (it == old_by_key.end() ||
          !google::protobuf::util::MessageDifferencer::Equals(*it->second, n.object)) {
        changes.push_back(Change{Change::Op::kUpsert, n.object});
      }
    }
    for (const auto& o : old_list) {
      if (!seen.count(key_of(o.object))) changes.push_back(Change{Change::Op::kDelete, o.object});
    }
  };
  auto namespaced = [](const auto& o) {
    return absl::StrCat(o.metadata().namespace_(), "/", o.metadata().name());
  };
  auto cluster_scoped = [](const auto& o) { return o.metadata().name(); };
  // Nodes first (the tier policies' `nodes` peers read them), then Namespaces (pods may need
  // them), the policies of every tier before pods (fewer recomputations).
  compare(x.nodes, y.nodes, cluster_scoped);
  compare(x.namespaces, y.namespaces, cluster_scoped);
  compare(x.policies, y.policies, namespaced);
  compare(x.admin_network_policies, y.admin_network_policies, cluster_scoped);
  compare(x.baseline_admin_network_policies, y.baseline_admin_network_policies, cluster_scoped);
  compare(x.cluster_network_policies, y.cluster_network_policies, cluster_scoped);
  compare(x.pods, y.pods, namespaced);
  return changes;
}

absl::StatusOr<ConnectionDiff> DiffConnections(const Engine& before, const Engine& after,
                                               const ConnectionOptions& options) {
  absl::StatusOr<EndFilter> from = EndFilter::Parse(options.from);
  if (!from.ok()) return from.status();
  absl::StatusOr<EndFilter> to = EndFilter::Parse(options.to);
  if (!to.ok()) return to.status();
  const EngineState& a = EngineAccess::State(before);
  const EngineState& b = EngineAccess::State(after);
  std::vector<const EngineState*> engines = {&a, &b};
  absl::StatusOr<std::vector<End>> ends = Ends(engines, ExternalRanges(engines), options.external);
  if (!ends.ok()) return ends.status();
  // Pods are matched by key in either snapshot (a pod may exist in one only).
  auto matches = [&](const EndFilter& filter, const End& e) {
    if (!e.end.is_pod) return filter.MatchesRange(e.end.first, e.end.last);
    for (const EngineState* s : engines) {
      const uint32_t* id = s->pod_by_key.Find(e.end.name);
      if (id != nullptr && filter.MatchesPod(*s->pods[*id].state)) return true;
    }
    return false;
  };
  ConnectionDiff out;
  PairDiffer differ(a, b, options, &out);
  for (const End& src : *ends) {
    if (!matches(*from, src)) continue;
    for (const End& dst : *ends) {
      if (matches(*to, dst)) differ.Compare(src, dst);
    }
  }
  if (options.explain) ExplainDiff(before, after, &out);
  return out;
}

std::string ConnectionsJson(const Connections& connections) {
  std::string out = "{\"connections\": ";
  AppendConnectionsJson(&out, connections.connections);
  absl::StrAppend(&out, "}\n");
  return out;
}

std::string DiffJson(const ConnectionDiff& diff) {
  std::string out = "{\"added\": ";
  AppendConnectionsJson(&out, diff.added);
  absl::StrAppend(&out, ",\n\"removed\": ");
  AppendConnectionsJson(&out, diff.removed);
  absl::StrAppend(&out, "}\n");
  return out;
}

std::string FormatConnections(const Connections& connections) {
  return FormatLines(connections.connections, "");
}

std::string FormatDiff(const ConnectionDiff& diff) {
  return absl::StrCat(FormatLines(diff.added, "+ "), FormatLines(diff.removed, "- "));
}

}  // namespace np::analysis
